"""What reading a dictionary of another library shares: recognizing the folder, reading its JSON
and safetensors, checking every tensor, naming the model, and building the `SparseAutoencoder`.

Each format's module (`saelens.py`, `sparsify.py`) describes a folder as a `ForeignDictionary` in
this library's terms; `build` turns that into a dictionary. `write_folder` is what the writers
share. Nothing here knows of the hub, the results folder or the command line (`core.formats`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..config import OFFLINE_MODEL_NAME, LanguageModelConfig, SAEConfig
from ..errors import ConfigError, DictionaryLoadError
from ..files import publish, temp_sibling
from .base import CONFIG_FILENAME, SparseAutoencoder, create_dictionary
from .normalization import Normalization

FOREIGN_CONFIG = "cfg.json"
"""The config file of SAELens and of sparsify folders."""
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
SPARSIFY_RUN_CONFIG = "config.json"
"""A sparsify run's config (its `model`, `hookpoints`), one folder above each hookpoint's folder."""


def refuse(path: Path, what: str, why: str) -> DictionaryLoadError:
    return DictionaryLoadError(f"Cannot load {path.parent} exactly: {what} in {path.name}, {why}.")


def foreign_format(folder: str | Path) -> Optional[str]:
    """"saelens" or "sparsify" for a folder of those libraries, None for anything else (this
    library's folders included). Reads cfg.json only; nothing is loaded."""
    folder = Path(folder).expanduser()
    config = folder / FOREIGN_CONFIG
    if (folder / CONFIG_FILENAME).is_file() or not config.is_file():
        return None
    raw = read_json(config)
    if "d_sae" in raw or "architecture" in raw or "hook_point" in raw or "hook_name" in raw or "metadata" in raw:
        return "saelens"
    if "num_latents" in raw or "expansion_factor" in raw:
        return "sparsify"
    if (folder / SAELENS_WEIGHTS).is_file():
        return "saelens"
    if (folder / SPARSIFY_WEIGHTS).is_file():
        return "sparsify"
    raise DictionaryLoadError(f"{config} is neither a SAELens config (d_sae, architecture, metadata) nor a "
                              f"sparsify one (num_latents, expansion_factor, k); pass a dictionary folder.")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DictionaryLoadError(f"{path} is not valid JSON ({e}); the dictionary is damaged, copy or download it "
                                  f"again.") from e
    if not isinstance(data, dict):
        raise DictionaryLoadError(f"{path} must hold a JSON object, got {type(data).__name__}; the dictionary is "
                                  f"damaged, copy or download it again.")
    return data


def sparsify_run_folder_hint(folder: Path) -> Optional[str]:
    """For a sparsify run folder (config.json with hookpoints, one subfolder per hookpoint), a
    sentence naming the dictionaries inside; None otherwise."""
    inner = sorted(p.name for p in folder.iterdir() if (p / FOREIGN_CONFIG).is_file()) if folder.is_dir() else []
    if inner and (folder / SPARSIFY_RUN_CONFIG).is_file():
        return (f"{folder} is a sparsify run holding one dictionary per hookpoint ({', '.join(inner[:8])}"
                f"{', ...' if len(inner) > 8 else ''}); pass one of those folders.")
    return None



@dataclass
class ForeignDictionary:
    """A foreign dictionary described in this library's terms; tensors in float64, already converted."""

    architecture: str
    d_in: int
    d_sae: int
    d_out: Optional[int]  # transcoders only
    k: Optional[int]
    skip: bool
    hook_name: Optional[str]
    hook_out: Optional[str]
    model_name: Optional[str]
    tensors: dict[str, Tensor]  # W_enc, b_enc, W_dec, b_dec, [W_skip], [threshold: absolute]
    source: dict = field(default_factory=dict)
    """Provenance: format, version, path, the original names, the conversions applied."""
    normalization: Optional[Normalization] = None
    """What the dictionary does to raw activations besides its weights (`core.sae.normalization`): a
    `ResidualCentering` (trained on a model with centered writing weights; the centering folded into
    the encoder) or a `TokenStandardization` (SAELens's layer_norm); None: nothing."""



def read_weights(path: Path, config_path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise DictionaryLoadError(f"{path.parent} has {config_path.name} but no {path.name}; the download or copy "
                                  f"was incomplete, fetch the folder again.")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DictionaryLoadError(f"{path} is not a readable safetensors file ({e}); it is corrupt or truncated, "
                                  f"fetch the folder again.") from e


def check_tensors(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]], weights: Path,
                   config: Path, sizes: str) -> None:
    """Refuse missing, unknown, misshapen and non-finite tensors, each with one sentence."""
    missing = [name for name in expected if name not in tensors]
    unknown = [name for name in tensors if name not in expected]
    if missing or unknown:
        parts = ([f"it lacks {', '.join(missing)}"] if missing else []) + \
                ([f"it holds {', '.join(unknown)}, which this architecture does not have"] if unknown else [])
        raise DictionaryLoadError(f"{weights} does not match {config.name} ({sizes}): {'; '.join(parts)}; the files "
                                  f"come from different dictionaries or the file is damaged.")
    wrong = [f"{name} is {list(tensors[name].shape)}, expected {list(shape)}" for name, shape in expected.items()
             if tuple(tensors[name].shape) != shape]
    if wrong:
        raise DictionaryLoadError(f"{weights} does not match {config.name} ({sizes}): {'; '.join(wrong)}; the files "
                                  f"come from different dictionaries.")
    for name in expected:
        t = tensors[name]
        if not t.is_floating_point():
            raise DictionaryLoadError(f"{weights} holds {name} as {t.dtype}, not floating point; the file is damaged.")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise DictionaryLoadError(f"{weights} holds {bad} non-finite value(s) (NaN or inf) in {name}; the "
                                      f"dictionary is damaged and is not loaded.")


def positive_int(config: Path, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DictionaryLoadError(f"{config} has {key}={value!r}; it must be a positive integer. The file is damaged.")
    return value



def model_name_for(name: str) -> Optional[str]:
    """What `load_language_model` should be given for a model named `name` by another library: a
    local folder as it is; a TransformerLens name or alias as the Hugging Face name it stands for
    (`gpt2-small` -> `gpt2`); a Hugging Face repository id (`org/model`) as it is; else None."""
    if Path(name).expanduser().is_dir() or name == OFFLINE_MODEL_NAME:
        return name
    from transformer_lens.supported_models import get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None



def build(foreign: ForeignDictionary, config: Path, device: str | torch.device, dtype: torch.dtype, *,
           model_name: Optional[str], hook_name: Optional[str], hook_out: Optional[str]) -> SparseAutoencoder:
    """The SparseAutoencoder of `foreign`, names given by the caller taking precedence."""
    fmt = foreign.source["format"]
    if model_name is None:
        original = foreign.model_name
        model_name = model_name_for(original) if isinstance(original, str) and original else None
        if model_name is None:
            said = (f"names model {original!r}, which TransformerLens does not know by that name"
                    if original else ("names no model (sparsify keeps it in the run's config.json one folder up, "
                                      "which is missing)" if fmt == "sparsify" else "names no model"))
            raise DictionaryLoadError(f"{config} {said}; say which model it belongs to with a Hugging Face name or "
                                      f"a local model folder: load_dictionary(path, model_name='path/to/model') or "
                                      f"--model-name path/to/model.")
    hook_name = hook_name or foreign.hook_name
    if not hook_name:
        where = (f"sparsify hookpoint {foreign.source.get('hookpoint')!r} is a module this library has no hook for"
                 if fmt == "sparsify" else "names no hook_name")
        raise DictionaryLoadError(f"{config}: {where}; give the TransformerLens hook it reads with hook_name= "
                                  f"(--hook-name), e.g. blocks.6.hook_resid_post.")
    transcoder = foreign.d_out is not None
    hook_out = (hook_out or foreign.hook_out) if transcoder else None
    if transcoder and not hook_out:
        raise DictionaryLoadError(f"{config} is a transcoder but names no hook_name_out (the hook it predicts); give "
                                  f"it with hook_out= (--hook-out), e.g. blocks.6.hook_mlp_out.")
    if hook_out and not transcoder:
        raise DictionaryLoadError(f"hook_out is for transcoders, but {config.parent} is an SAE; leave it unset.")
    cfg = SAEConfig(architecture=foreign.architecture, d_sae=foreign.d_sae, k=foreign.k or SAEConfig.k,
                    skip_connection=foreign.skip)
    try:
        sae = create_dictionary(cfg, foreign.d_in, hook_name=hook_name, model_name=model_name, d_out=foreign.d_out,
                                hook_out=hook_out, device=device, dtype=dtype)
    except (ConfigError, ValueError) as e:
        raise DictionaryLoadError(f"{config} describes a dictionary this library cannot build ({e}).") from e
    t = foreign.tensors
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec") + (("W_skip",) if foreign.skip else ()):
            getattr(sae, name).copy_(t[name])
        if "threshold" in t:
            sae.set_threshold(t["threshold"].to(dtype))
    if foreign.normalization is not None:
        sae.normalization = foreign.normalization
    source = dict(foreign.source)
    if model_name != foreign.model_name or hook_name != foreign.hook_name or hook_out != foreign.hook_out:
        source["renamed"] = {"model_name": model_name, "hook_name": hook_name, "hook_out": hook_out}
    sae.saved_config = sae.config_dict(extra={"model": LanguageModelConfig(name=model_name).to_dict(),
                                              "source": source})
    return sae



def write_folder(folder: Path, files: dict[str, bytes | dict[str, Tensor]], config_name: str) -> Path:
    """Write `files` (JSON text or tensors) into `folder`, each through a temporary file renamed into
    place, the config last, so an interrupted export never looks complete."""
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(files, key=lambda n: n == config_name)
    for filename in order:
        content, tmp = files[filename], temp_sibling(folder / filename)
        try:
            if isinstance(content, dict):
                save_file({k: v.detach().cpu().contiguous() for k, v in content.items()}, str(tmp),
                          metadata={"format": "pt"})
            else:
                tmp.write_bytes(content)
            publish(tmp, folder / filename)
        finally:
            tmp.unlink(missing_ok=True)
    return folder

