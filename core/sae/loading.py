"""`load_dictionary`: the one entry point that opens a dictionary folder.

Native folders (written by `SparseAutoencoder.save`; format_version 1 and 2; and replacement models,
whose config.json has a "kind": `CrossLayerTranscoder.save`, `TranscoderSet.save`) are read here;
SAELens, sparsify and circuit-tracer folders by `saelens.py`, `sparsify.py` and `circuit_tracer.py`,
`saelens:<release>/<sae_id>` names found through `hub.py` (see `core.formats` for what each
conversion does).
Nothing is unpickled: the weights are safetensors, the config is JSON, and every mismatch
between the two is refused with one sentence naming the file and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..config import ARCHITECTURES, SAEConfig
from ..errors import ConfigError, DictionaryLoadError
from .base import CONFIG_FILENAME, FORMAT_VERSION, WEIGHTS_FILENAME, SparseAutoencoder, create_dictionary
from .normalization import IMPORTED_NORMALIZATIONS
from .circuit_tracer import is_circuit_tracer_folder, read_circuit_tracer
from .clt import CrossLayerTranscoder, load_cross_layer_transcoder
from .foreign import FOREIGN_CONFIG, build, foreign_format, sparsify_run_folder_hint
from .replacement import REPLACEMENT_FORMAT_VERSION, TranscoderSet
from .hub import download_saelens, hub_location_of_cached, is_hub_name, saelens_hub_location, HUB_PREFIX
from .saelens import read_saelens
from .sparsify import read_sparsify


def load_dictionary(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    model_name: str | None = None,
    hook_name: str | None = None,
    hook_out: str | None = None,
) -> SparseAutoencoder | CrossLayerTranscoder | TranscoderSet:
    """Load the dictionary in folder `path`, ready for raw activations: an SAE or transcoder
    (`SparseAutoencoder`), or a replacement model (`CrossLayerTranscoder`, `TranscoderSet`, whose
    folder's config.json says its "kind").

    `path` may also be a SAELens, sparsify or circuit-tracer folder, or `saelens:<release>/<sae_id>`
    (downloaded from the Hugging Face hub): see `core.formats`. For those only, `model_name` (a hub
    name or a local model folder), `hook_name` and `hook_out` replace the names the folder gives, or
    supply them where it has none (a circuit-tracer folder takes `model_name` only).
    """
    if is_hub_name(path):
        return load_foreign(path, device, dtype, model_name=model_name, hook_name=hook_name, hook_out=hook_out)
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DictionaryLoadError(f"No dictionary at {folder}: the folder does not exist; pass the folder "
                                  f"that holds {CONFIG_FILENAME} and {WEIGHTS_FILENAME} "
                                  f"(e.g. results/<exp_name>/dictionaries/<name>).")
    if not folder.is_dir():
        raise DictionaryLoadError(f"{folder} is a file, not a dictionary folder; pass the folder that "
                                  f"contains it ({folder.parent}).")
    # Foreign formats (SAELens and sparsify folders): each converted exactly into a
    # SparseAutoencoder, or refused with a sentence naming what this library cannot represent.
    if foreign_format(folder) is not None:
        return load_foreign(folder, device, dtype, model_name=model_name, hook_name=hook_name,
                                    hook_out=hook_out)
    if is_circuit_tracer_folder(folder):  # a transcoder set or CLT saved by circuit-tracer
        if hook_name is not None or hook_out is not None:
            raise DictionaryLoadError(f"hook_name and hook_out are not for circuit-tracer folders such as {folder}: its "
                                      f"config.yaml names the hooks of every layer.")
        return read_circuit_tracer(folder, model_name=model_name, device=device, dtype=dtype)
    if model_name is not None or hook_name is not None or hook_out is not None:
        raise DictionaryLoadError(f"model_name, hook_name and hook_out are for folders of other libraries; {folder} "
                                  f"is not one, and this library's folders name their own model and hooks.")
    hint = sparsify_run_folder_hint(folder)
    if hint is not None:
        raise DictionaryLoadError(hint)
    return _load_native(folder, device, dtype)


def load_foreign(source: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                 model_name: Optional[str] = None, hook_name: Optional[str] = None,
                 hook_out: Optional[str] = None) -> SparseAutoencoder:
    """Load a SAELens or sparsify folder, or a `saelens:<release>/<sae_id>` name (downloaded), as a
    SparseAutoencoder (`load_dictionary` calls this for them). `model_name`, `hook_name`, `hook_out`
    replace the folder's own (required where it has none, or names a model this library cannot map);
    the original names stay in `saved_config["source"]`."""
    hub = None
    if is_hub_name(source):
        release, _, sae_id = str(source)[len(HUB_PREFIX):].partition("/")
        hub = saelens_hub_location(release, sae_id)
        folder = download_saelens(release, sae_id)
    else:
        folder = Path(source).expanduser()
        hub = hub_location_of_cached(folder)
    fmt = foreign_format(folder)
    if fmt is None:
        raise DictionaryLoadError(f"{folder} is not a SAELens or sparsify folder (no {FOREIGN_CONFIG}).")
    foreign = read_saelens(folder, hub.overrides if hub else None) if fmt == "saelens" else read_sparsify(folder)
    if hub is not None:
        foreign.source.update(release=hub.release, sae_id=hub.sae_id, repo_id=hub.repo_id, repo_folder=hub.folder)
        foreign.model_name = foreign.model_name or hub.model
    return build(foreign, folder / FOREIGN_CONFIG, device, dtype, model_name=model_name, hook_name=hook_name,
                  hook_out=hook_out)



def is_foreign(source: str | Path) -> bool:
    """True for a SAELens hub name and for SAELens, sparsify and circuit-tracer folders."""
    if is_hub_name(source):
        return True
    folder = Path(source).expanduser()
    return folder.is_dir() and (foreign_format(folder) is not None or is_circuit_tracer_folder(folder))


# The config.json flags of imported normalizations (`core.sae.normalization`), and where they come from.
_IMPORTED_NORMALIZATIONS = {"residual_centering": "a model with centered writing weights",
                            "input_layer_norm": "SAELens with normalize_activations \"layer_norm\""}


def _load_native(folder: Path, device: str | torch.device, dtype: torch.dtype) -> SparseAutoencoder:
    config_path = folder / CONFIG_FILENAME
    if not config_path.is_file():
        raise DictionaryLoadError(f"{folder} is not a dictionary: it has no {CONFIG_FILENAME}; pass a folder "
                                  f"written by SparseAutoencoder.save (e.g. results/<exp_name>/dictionaries/<name>), or a "
                                  f"SAELens or sparsify folder (with cfg.json).")
    try:
        data = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DictionaryLoadError(f"{config_path} is not valid JSON ({e}); the dictionary is damaged, "
                                  f"save or copy it again.") from e
    if not isinstance(data, dict):
        raise DictionaryLoadError(f"{config_path} must hold a JSON object, got {type(data).__name__}; "
                                  f"the dictionary is damaged, save or copy it again.")
    if "kind" in data:  # a replacement model: a cross-layer transcoder or a transcoder set
        return _load_replacement_model(folder, data, device, dtype)
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DictionaryLoadError(f"{config_path} has format_version {version!r}, newer than this library "
                                  f"reads ({FORMAT_VERSION}); upgrade the library.")
    missing = [key for key in ("architecture", "d_in", "hook_name", "model_name", "sae") if key not in data]
    if missing:
        raise DictionaryLoadError(f"{config_path} lacks key(s) {', '.join(missing)}; it was not written by "
                                  f"SparseAutoencoder.save or is damaged.")
    architecture = data["architecture"]
    if architecture not in ARCHITECTURES:
        raise DictionaryLoadError(f"{config_path} names unknown architecture {architecture!r}; allowed: "
                                  f"{', '.join(ARCHITECTURES)}. Fix the file or upgrade the library.")
    try:
        cfg = SAEConfig.from_dict(data["sae"])
        if cfg.architecture != architecture:
            raise ConfigError(f"sae.architecture is {cfg.architecture!r} but architecture is {architecture!r}")
        # Version 1 folders are SAEs: no hook_out, no d_out.
        sae = create_dictionary(cfg, data["d_in"], hook_name=data["hook_name"], model_name=data["model_name"],
                                d_out=data.get("d_out"), hook_out=data.get("hook_out"), device=device, dtype=dtype)
    except (ConfigError, ValueError, TypeError) as e:
        raise DictionaryLoadError(f"{config_path} holds an invalid dictionary config ({e}); fix the file "
                                  f"or save the dictionary again.") from e
    if "d_sae" in data and data["d_sae"] != sae.d_sae:
        raise DictionaryLoadError(f"{config_path} says d_sae={data['d_sae']} but its sae config gives "
                                  f"{sae.d_sae}; the file is inconsistent, save the dictionary again.")

    weights_path = folder / WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise DictionaryLoadError(f"{folder} has {CONFIG_FILENAME} but no {WEIGHTS_FILENAME}; the save was "
                                  f"interrupted or the file was not copied, save or copy it again.")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DictionaryLoadError(f"{weights_path} is not a readable safetensors file ({e}); the file is "
                                  f"corrupt or truncated, save or copy the dictionary again.") from e

    if architecture == "jumprelu" and "threshold" in tensors and "log_threshold" not in tensors:
        sae.set_threshold(torch.zeros(sae.d_sae))  # absolute thresholds (imported; see JumpReLUSAE), copied below
    expected = {name: tuple(t.shape) for name, t in sae._saved_tensors().items()}
    problems = [f"{name} missing" for name in expected if name not in tensors]
    problems += [f"unexpected {name}" for name in tensors if name not in expected]
    problems += [f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}"
                 for name, shape in expected.items()
                 if name in tensors and tuple(tensors[name].shape) != shape]
    if problems:
        sizes = f"d_in={sae.d_in}, d_sae={sae.d_sae}" + (f", d_out={sae.d_out}" if sae.is_transcoder else "")
        raise DictionaryLoadError(f"{weights_path} does not match {config_path} (architecture {architecture}, "
                                  f"{sizes}): {'; '.join(problems)}. The files come from different dictionaries; "
                                  f"save the dictionary again.")
    flags = []
    for flag, imported_from in _IMPORTED_NORMALIZATIONS.items():
        value = data.get(flag, False)
        if not isinstance(value, bool) or (value and sae.is_transcoder):
            raise DictionaryLoadError(f"{config_path} has {flag} {value!r}; it is true only for an SAE imported "
                                      f"from {imported_from}, else absent. Fix the file.")
        flags += [flag] if value else []
    if len(flags) > 1:
        raise DictionaryLoadError(f"{config_path} has both {' and '.join(flags)}; a dictionary has one normalization "
                                  f"(no importer writes both). Fix the file.")
    if flags:
        sae.normalization = IMPORTED_NORMALIZATIONS[flags[0]]()
    with torch.no_grad():
        for name, target in sae._saved_tensors().items():
            target.copy_(tensors[name])
    sae.saved_config = data
    return sae


def _load_replacement_model(folder: Path, data: dict, device: str | torch.device,
                            dtype: torch.dtype) -> CrossLayerTranscoder | TranscoderSet:
    """A folder whose config.json has a "kind": a cross-layer transcoder or a transcoder set."""
    config_path = folder / CONFIG_FILENAME
    version, kind = data.get("format_version"), data["kind"]
    if not isinstance(version, int) or isinstance(version, bool) or version > REPLACEMENT_FORMAT_VERSION:
        raise DictionaryLoadError(f"{config_path} has format_version {version!r}; this library reads replacement "
                                  f"models up to version {REPLACEMENT_FORMAT_VERSION}, upgrade it.")
    if kind == CrossLayerTranscoder.kind:
        return load_cross_layer_transcoder(folder, data, device, dtype)
    if kind != TranscoderSet.kind:
        raise DictionaryLoadError(f"{config_path} names unknown kind {kind!r}; this library reads "
                                  f"{CrossLayerTranscoder.kind!r} and {TranscoderSet.kind!r}. Fix the file or upgrade.")
    layers, members = data.get("layers"), data.get("members")
    if (not isinstance(layers, list) or not isinstance(members, list) or len(layers) != len(members)
            or not layers or not all(isinstance(m, str) for m in members)):
        raise DictionaryLoadError(f"{config_path} must list the set's layers and, for each, its member folder "
                                  f"(\"layers\": [0, 1], \"members\": [\"layer_0\", \"layer_1\"]); the file is damaged.")
    loaded = {}
    for layer, name in zip(layers, members):
        member = folder / name
        if Path(name).name != name or name in ("", ".", ".."):
            raise DictionaryLoadError(f"{config_path} names member folder {name!r}, which is not a folder inside the set.")
        if not (member / CONFIG_FILENAME).is_file():
            raise DictionaryLoadError(f"{folder} is a transcoder set whose member of layer {layer} ({name}/) is missing "
                                      f"or incomplete; copy the whole folder again or save the set again.")
        sae = _load_native(member, device, dtype)
        if isinstance(sae, (CrossLayerTranscoder, TranscoderSet)) or not sae.is_transcoder:
            raise DictionaryLoadError(f"{member} is not a transcoder, so it cannot be the member of layer {layer} of "
                                      f"the transcoder set {folder}.")
        loaded[layer] = sae
    try:
        transcoders = TranscoderSet(loaded)
    except ValueError as e:
        raise DictionaryLoadError(f"{folder} holds members that do not form a transcoder set ({e}); save the set "
                                  f"again.") from e
    if list(transcoders.layers) != layers:
        raise DictionaryLoadError(f"{config_path} lists layers {layers}, which are not increasing; the file is damaged.")
    for key in ("d_in", "d_out", "d_sae", "model_name"):
        if key in data and data[key] != getattr(transcoders, key):
            raise DictionaryLoadError(f"{config_path} says {key}={data[key]!r} but its members have "
                                      f"{getattr(transcoders, key)!r}; the members come from another save, save the "
                                      f"set again.")
    transcoders.saved_config = data
    return transcoders
