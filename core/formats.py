"""Dictionaries from elsewhere: SAELens and sparsify folders in and out, and SAELens's hub names.

**Import.** `load_dictionary(folder)` opens, besides this library's own folders (`config.json`):

- SAELens 6.x folders: `cfg.json` (architecture, d_in, d_sae, ..., `metadata` with model_name,
  hook_name, ...) + `sae_weights.safetensors` (+ `sparsity.safetensors`, which is not needed);
- SAELens folders of before 6.0: the same files, the config in its older keys (`hook_point`,
  `activation_fn_str`, `activation_fn_kwargs.k`, a boolean `normalize_activations`, ...);
- sparsify folders: `cfg.json` + `sae.safetensors`, one hookpoint of a sparsify run, whose
  `config.json` one folder up names the model;
- `saelens:<release>/<sae_id>` (`SAELENS_RELEASES`, GPT-2's releases): the folder the SAELens
  registry names, downloaded through `huggingface_hub` into its usual cache.

Each becomes a `SparseAutoencoder` whose `encode` / `decode` / `forward` compute what the other
library's do, up to float rounding. What the conversion does (x a row vector, pre the
pre-activations):

- SAELens `apply_b_dec_to_input: false`: pre = x W_enc + b_enc = (x - b_dec) W_enc + (b_enc +
  b_dec W_enc); b_enc absorbs b_dec W_enc (in float64, rounded once).
- SAELens topk with `rescale_acts_by_decoder_norm` (n the decoder rows' norms): topk(pre * n) and
  decode (f / n) W_dec are topk of W_enc * n, b_enc * n and decode f (W_dec / n).
- SAELens jumprelu thresholds t: relu(pre) * (pre > t) = pre * (pre > max(t, 0)); kept as absolute
  values (`JumpReLUSAE.set_threshold`), never through a logarithm. SAELens saves its batchtopk and
  matryoshka SAEs as jumprelu with one threshold for every latent, which load as such.
- SAELens skip transcoders store W_skip as [d_out, d_in], this library as [d_in, d_out].
- SAELens `reshape_activations: hook_z` flattens [n_heads, d_head] heads first, as this library's
  activations of `attn.hook_z` are.
- sparsify: `encoder.weight` is W_enc transposed; it takes the top k of relu(pre), which are the
  same values as the relu of the top k of pre. Hookpoints are Hugging Face module names, mapped to
  TransformerLens hooks (`h.6` / `layers.6` -> `blocks.6.hook_resid_post`, `h.6.mlp` ->
  `blocks.6.hook_mlp_out`, a transcoder's input `blocks.6.mlp.hook_in`, ...).
- SAELens `normalize_activations: layer_norm` (an SAE): each token standardized before encoding and
  restored after decoding, as SAELens does (`SparseAutoencoder.input_layer_norm`).
- An SAE of a model with centered writing weights (`model_from_pretrained_kwargs.center_writing_weights`,
  at a hook that writes to the residual stream): SAELens saw P x, P = I - 11^T/d; P is folded into the
  encoder and the reconstruction adds the mean back (`SparseAutoencoder.residual_centering`), so on raw
  activations the features, the reconstruction error and the spliced-in CE loss are SAELens's.
- Model names become what TransformerLens loads (`gpt2-small` -> `gpt2`, by TransformerLens's own
  alias table); Hugging Face repository ids and local folders stay as they are.

What cannot be represented exactly is refused with one sentence naming the field and its value:
other architectures (gated, abstopk, ...; SAELens's batchtopk / matryoshka training checkpoints),
`normalize_activations` other than "none" and an SAE's "layer_norm" (constant_norm_rescale,
covariance_whitening; an unfolded expected_average_only_in constant is not in the folder),
activations of a TransformerLens model with other processed weights (`model_from_pretrained_kwargs`
such as fold_value_biases, or center_writing_weights under a transcoder whose hooks it centers),
one attention head
(`hook_head_index`), sparsify's groupmax, a skip path on an SAE, and weights that are missing,
of the wrong shape, or not finite.

**Export.** `export_saelens(dictionary, folder)` writes any dictionary of this library as a
SAELens 6 folder (`SAE.load_from_disk` reads it); `export_sparsify` writes a top-k one as a
sparsify folder (`SparseCoder.load_from_disk`). Normalization is folded, as in every saved
dictionary.

**Analysis.** An analysis is written inside the dictionary's folder, which for a foreign
dictionary may be another tool's output or a Hugging Face cache folder; `import_dictionary`
therefore writes a converted copy to `<results>/imported/dictionaries/<name>/` (this library's
format, with a `source` entry saying where it came from), which is analyzed and browsed like a
trained one (`imported:<name>` in the viewer). `python -m core.formats --help` is the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .config import DICTIONARIES_FOLDER, OFFLINE_MODEL_NAME, ConfigError, DatasetConfig, LanguageModelConfig, SAEConfig
from .files import publish, temp_sibling
from .lm import is_residual_hook
from .sae import CONFIG_FILENAME, DictionaryLoadError, SparseAutoencoder, load_dictionary

if TYPE_CHECKING:
    from .evals import EvalResult
    from .lm import LanguageModel

log = logging.getLogger(__name__)

FOREIGN_CONFIG = "cfg.json"
"""The config file of SAELens and of sparsify folders."""
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
SPARSIFY_RUN_CONFIG = "config.json"
"""A sparsify run's config (its `model`, `hookpoints`), one folder above each hookpoint's folder."""
HUB_PREFIX = "saelens:"
"""`saelens:<release>/<sae_id>` names a SAELens release's dictionary on the Hugging Face hub."""
IMPORTED_RUN = "imported"
"""`import_dictionary` writes to `<results>/imported/dictionaries/<name>/`."""
SAELENS_FORMAT_VERSION = "6.0.0"
"""The `metadata.sae_lens_version` that `export_saelens` writes: SAELens reads configs of a version
below 6 with its pre-6 conversion, so an exported folder says it has the 6.x layout."""

# SAELens architecture -> (this library's architecture, transcoder, skip path)
_SAELENS_ARCHITECTURES = {
    "standard": ("relu", False, False),
    "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "transcoder": ("relu", True, False),
    "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}
# Keys of SAELens configs before 6.0 and their 6.x names (SAELens's own conversion does the same).
_PRE6_RENAMES = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
                 "activation_fn_str": "activation_fn", "hook_point_layer": "hook_layer"}
_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                 "bfloat16": torch.bfloat16}
# TransformerLens loading options that do not change activations at any hook (a truthy value of any
# other option does, at some hooks: see `_check_model_kwargs`).
_HARMLESS_MODEL_KWARGS = {"center_unembed", "n_devices", "device", "dtype", "torch_dtype", "move_to_device",
                          "default_prepend_bos", "default_padding_side", "trust_remote_code", "revision",
                          "cache_dir", "local_files_only", "token"}


class DictionaryFormatError(ValueError):
    """A dictionary cannot be written in the format asked for; the message says why."""


def _refuse(path: Path, what: str, why: str) -> DictionaryLoadError:
    return DictionaryLoadError(f"Cannot load {path.parent} exactly: {what} in {path.name}, {why}.")


# ----------------------------------------------------------------------------------------------
# Recognizing a foreign dictionary


def is_hub_name(source: str | Path) -> bool:
    """True for `saelens:<release>/<sae_id>`."""
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def foreign_format(folder: str | Path) -> Optional[str]:
    """"saelens" or "sparsify" for a folder of those libraries, None for anything else (this
    library's folders included). Reads cfg.json only; nothing is loaded."""
    folder = Path(folder).expanduser()
    config = folder / FOREIGN_CONFIG
    if (folder / CONFIG_FILENAME).is_file() or not config.is_file():
        return None
    raw = _read_json(config)
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


def is_foreign(source: str | Path) -> bool:
    """True for a SAELens hub name and for SAELens and sparsify folders."""
    return is_hub_name(source) or (Path(source).expanduser().is_dir() and foreign_format(source) is not None)


def _read_json(path: Path) -> dict:
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


# ----------------------------------------------------------------------------------------------
# Reading: one description of the dictionary in this library's terms


@dataclass
class _Foreign:
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
    residual_centering: bool = False
    """Trained on a model with centered writing weights: the centering is folded into the encoder."""
    input_layer_norm: bool = False
    """SAELens's normalize_activations "layer_norm": each token standardized (SparseAutoencoder.input_layer_norm)."""


def _read_weights(path: Path, config_path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise DictionaryLoadError(f"{path.parent} has {config_path.name} but no {path.name}; the download or copy "
                                  f"was incomplete, fetch the folder again.")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DictionaryLoadError(f"{path} is not a readable safetensors file ({e}); it is corrupt or truncated, "
                                  f"fetch the folder again.") from e


def _check_tensors(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]], weights: Path,
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


def _positive_int(config: Path, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DictionaryLoadError(f"{config} has {key}={value!r}; it must be a positive integer. The file is damaged.")
    return value


def _major_version(version: Any) -> Optional[int]:
    m = re.match(r"^\s*v?(\d+)", str(version)) if version else None
    return int(m.group(1)) if m else None


def _saelens_fields(raw: dict, config: Path) -> tuple[dict, str]:
    """The config as one flat dict of SAELens 6.x names (metadata included), and the version it was
    written by. Configs of before 6.0 (no sae_lens_version, or one below 6) are converted as SAELens
    converts them."""
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    version = raw.get("sae_lens_version") or metadata.get("sae_lens_version")
    major = _major_version(version)
    if major is not None and major >= 6:
        return {**metadata, **{k: v for k, v in raw.items() if k != "metadata"}}, str(version)
    flat = {_PRE6_RENAMES.get(k, k): v for k, v in raw.items()}
    flat.setdefault("architecture", "standard")
    flat.setdefault("activation_fn", "relu")
    flat.setdefault("apply_b_dec_to_input", True)
    kwargs = flat.get("activation_fn_kwargs") or {}
    if flat["activation_fn"] == "topk":
        if not isinstance(kwargs, dict) or kwargs.get("k") is None:
            raise _refuse(config, "activation_fn_str is 'topk' without activation_fn_kwargs.k",
                          "so it does not say how many latents a token keeps")
        flat["architecture"], flat["k"] = "topk", kwargs["k"]
    elif flat["activation_fn"] != "relu":
        raise _refuse(config, f"activation_fn_str is {flat['activation_fn']!r}",
                      "an activation this library does not have (it has relu and topk)")
    if isinstance(flat.get("normalize_activations"), bool):
        flat["normalize_activations"] = "expected_average_only_in" if flat["normalize_activations"] else "none"
    flat.setdefault("reshape_activations", "hook_z" if "hook_z" in str(flat.get("hook_name", "")) else "none")
    written_by = flat.get("sae_lens_training_version") or version
    return flat, f"pre-6 ({written_by})" if written_by else "pre-6"


def _writes_residual(hook: str) -> bool:
    """Hooks whose activations are (sums of) writes to the residual stream: those that TransformerLens's
    `center_writing_weights` centers over d_model."""
    return bool(hook) and (is_residual_hook(hook) or hook.endswith("hook_pos_embed"))


def _check_model_kwargs(config: Path, kwargs: Any, hook: str, hook_out: Optional[str]) -> bool:
    """Refuse a dictionary trained on a TransformerLens model whose weights were processed in a way
    that changes the activations at its hook(s): this library runs the model's raw weights. One
    processing is represented exactly: `center_writing_weights` under an SAE, whose activations were
    the raw ones with their mean over d_model removed (a fixed projection P = I - 11^T/d, since
    every write to the residual stream is centered); True then (see `_fold_residual_centering`)."""
    if not kwargs:
        return False
    if not isinstance(kwargs, dict):
        raise _refuse(config, f"model_from_pretrained_kwargs is {kwargs!r}", "not a JSON object")
    centering = False
    for key, value in kwargs.items():
        if not value or key in _HARMLESS_MODEL_KWARGS:
            continue
        if key == "fold_ln" and not re.search(r"\.ln\w*\.|ln_final", hook + " " + (hook_out or "")):
            continue  # folding LayerNorm weights changes the ln hooks only
        if key == "center_writing_weights":
            centered = [h for h in (hook, hook_out) if h and _writes_residual(h)]
            if not centered:
                continue  # only writes to the residual stream are centered
            if hook_out is None:
                centering = True
                continue
            raise _refuse(config, f"metadata.model_from_pretrained_kwargs has {key}={value!r}",
                          f"a transcoder trained on a model with centered writing weights, where {' and '.join(centered)} "
                          f"had its mean over d_model removed; a prediction cannot add back the mean of an output "
                          f"it does not see, so it differs from one on the model's own weights, which this library runs")
        why = ("the dictionary was trained on a TransformerLens model with processed weights, whose activations "
               f"at {hook} differ from those of the model's own weights, which this library runs")
        raise _refuse(config, f"metadata.model_from_pretrained_kwargs has {key}={value!r}", why)
    return centering


def _fold_residual_centering(t: dict[str, Tensor]) -> None:
    """SAELens's pre-activations on centered activations, (P x - b_dec) W_enc + b_enc with
    P = I - 11^T/d, as this library's on raw ones, (x - b_dec) W' + b' (float64, in place):
    W' = P W_enc (each column less its mean) and b' = b_enc - b_dec (I - P) W_enc
    = b_enc - mean(b_dec) * (column sums of W_enc). `residual_centering` then adds the input's
    mean back to the reconstruction."""
    w = t["W_enc"]
    t["b_enc"] = t["b_enc"] - t["b_dec"].mean() * w.sum(0)
    t["W_enc"] = w - w.mean(0, keepdim=True)


def _read_saelens(folder: Path, overrides: Optional[dict] = None) -> _Foreign:
    config = folder / FOREIGN_CONFIG
    raw = _read_json(config)
    if overrides:  # what the SAELens registry adds to a release's configs (`saelens:` names), as SAELens adds it
        raw = {**raw, **overrides}
    flat, version = _saelens_fields(raw, config)
    architecture = flat.get("architecture")
    if architecture not in _SAELENS_ARCHITECTURES:
        why = (f"an architecture this library cannot represent (it reads {', '.join(_SAELENS_ARCHITECTURES)})")
        if architecture in ("batchtopk", "matryoshka_batchtopk"):
            why += ("; this is SAELens's training checkpoint, whose encoder takes the top k of a whole batch: SAELens "
                    "saves finished ones with save_inference_model as jumprelu folders, which load here")
        raise _refuse(config, f"architecture is {architecture!r}", why)
    ours, transcoder, skip = _SAELENS_ARCHITECTURES[architecture]
    d_in = _positive_int(config, "d_in", flat.get("d_in"))
    d_sae = _positive_int(config, "d_sae", flat.get("d_sae"))
    d_out = _positive_int(config, "d_out", flat.get("d_out")) if transcoder else None
    hook = flat.get("hook_name")
    normalize = flat.get("normalize_activations") or "none"
    layer_norm = normalize == "layer_norm" and not transcoder
    if normalize != "none" and not layer_norm:
        why = ("so its weights expect activations multiplied by a constant that is not in the folder (SAELens keeps "
               "it in its registry as norm_scaling_factor); fold that constant into W_enc, W_dec and b_dec and set "
               "it to \"none\"") if normalize == "expected_average_only_in" else (
               "a normalization of every token by its own statistics, which an affine encoder cannot fold and this "
               "library does not have" + (" for transcoders (it has SAELens's layer_norm for SAEs)"
                                          if normalize == "layer_norm" else ""))
        raise _refuse(config, f"normalize_activations is {normalize!r}", why)
    reshape = flat.get("reshape_activations") or "none"
    if reshape not in ("none", "hook_z") or (reshape == "hook_z" and not str(hook or "").endswith("hook_z")):
        raise _refuse(config, f"reshape_activations is {reshape!r} (hook {hook!r})",
                      "a reshaping this library does not do (it flattens the heads of attn.hook_z only)")
    if flat.get("hook_head_index") is not None:
        raise _refuse(config, f"hook_head_index is {flat['hook_head_index']!r}",
                      "so the dictionary reads one attention head's part of the hook, which this library's "
                      "activations do not select")
    if flat.get("finetuning_scaling_factor"):
        raise _refuse(config, "finetuning_scaling_factor is true", "a learned rescaling of the latents that "
                      "this library does not have")
    apply_b_dec = flat.get("apply_b_dec_to_input", True)
    if transcoder and apply_b_dec:
        raise _refuse(config, "apply_b_dec_to_input is true", "but a transcoder's b_dec lives in its output space "
                      "(SAELens refuses this too)")
    centering = _check_model_kwargs(config, flat.get("model_from_pretrained_kwargs"), str(hook or ""),
                                    flat.get("hook_name_out") if transcoder else None)
    dtype_name = str(flat.get("dtype") or "float32").removeprefix("torch.")
    if dtype_name not in _TORCH_DTYPES:
        raise _refuse(config, f"dtype is {flat.get('dtype')!r}", f"not one of {', '.join(_TORCH_DTYPES)}")
    k = None
    if ours == "topk":
        k = _positive_int(config, "k", flat.get("k"))
        if k > d_sae:
            raise _refuse(config, f"k is {k}", f"more than its d_sae={d_sae} latents")

    weights = folder / SAELENS_WEIGHTS
    tensors = _read_weights(weights, config)
    conversions = []
    scaling = tensors.pop("scaling_factor", None)  # SAELens < 6 wrote it; ones mean no scaling
    if scaling is not None and not bool((scaling == 1).all()):
        raise DictionaryLoadError(f"Cannot load {folder} exactly: {weights.name} holds a scaling_factor other than "
                                  f"1, a learned rescaling of the latents that this library does not have.")
    width = d_out or d_in
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, width), "b_dec": (width,)}
    if ours == "jumprelu":
        expected["threshold"] = (d_sae,)
    if skip:
        expected["W_skip"] = (width, d_in)
    sizes = f"d_in={d_in}, d_sae={d_sae}" + (f", d_out={d_out}" if transcoder else "")
    _check_tensors(tensors, expected, weights, config, sizes)
    # As SAELens reads them: in the config's dtype; then float64 for the conversions below.
    t = {name: tensors[name].to(_TORCH_DTYPES[dtype_name]).double() for name in expected}
    if not transcoder and not apply_b_dec:
        t["b_enc"] = t["b_enc"] + t["b_dec"] @ t["W_enc"]
        conversions.append("apply_b_dec_to_input=false: b_dec @ W_enc added to b_enc")
    if centering and layer_norm:
        centering = False  # standardizing removes the mean anyway, and un-standardizing adds the raw one back
        conversions.append("center_writing_weights: nothing to fold, since layer_norm removes each token's mean and "
                           "restores it")
    if centering:
        _fold_residual_centering(t)
        conversions.append("center_writing_weights: the mean over d_model projected out of W_enc (each column less "
                           "its mean, b_enc less mean(b_dec) times its column sums); the reconstruction adds the "
                           "input's mean back (residual_centering)")
    if ours == "topk" and flat.get("rescale_acts_by_decoder_norm"):
        norms = t["W_dec"].norm(dim=1)
        if bool((norms == 0).any()):
            raise _refuse(config, "rescale_acts_by_decoder_norm is true",
                          f"but {int((norms == 0).sum())} decoder row(s) are zero, which SAELens divides by")
        t["W_enc"], t["b_enc"], t["W_dec"] = t["W_enc"] * norms, t["b_enc"] * norms, t["W_dec"] / norms[:, None]
        conversions.append("rescale_acts_by_decoder_norm: W_enc and b_enc multiplied, W_dec divided by the decoder "
                           "row norms")
    if layer_norm:
        conversions.append("normalize_activations=layer_norm: each token standardized before encoding (less its mean, "
                           "divided by its standard deviation + 1e-5) and the reconstruction un-standardized "
                           "(input_layer_norm)")
    if ours == "jumprelu":
        t["threshold"] = t["threshold"].clamp_min(0.0)
        conversions.append("thresholds kept as absolute values; negative ones are 0 (SAELens applies a ReLU first)")
    if skip:
        t["W_skip"] = t["W_skip"].T
        conversions.append("W_skip transposed to [d_in, d_out]")
    if reshape == "hook_z":
        conversions.append("hook_z: heads flattened as SAELens flattens them")
    source = {"format": "saelens", "version": version, "path": str(folder.resolve()), "architecture": architecture,
              "model_name": flat.get("model_name"), "hook_name": hook, "dtype": dtype_name,
              **{key: flat[key] for key in ("hook_name_out", "training_architecture", "context_size", "prepend_bos",
                                            "dataset_path", "neuronpedia_id", "model_from_pretrained_kwargs")
                 if flat.get(key) not in (None, {}, "")},
              "conversions": conversions}
    return _Foreign(architecture=ours, d_in=d_in, d_sae=d_sae, d_out=d_out, k=k, skip=skip, hook_name=hook,
                    hook_out=flat.get("hook_name_out"), model_name=flat.get("model_name"), tensors=t, source=source,
                    residual_centering=centering, input_layer_norm=layer_norm)


# sparsify hookpoints (Hugging Face module names) -> (SAE hook, transcoder in-hook, transcoder out-hook)
_SPARSIFY_HOOKPOINTS = [
    (re.compile(r"^(?:h|layers|transformer\.h|model\.layers|gpt_neox\.layers)\.(\d+)$"),
     "blocks.{}.hook_resid_post", "blocks.{}.hook_resid_pre", "blocks.{}.hook_resid_post"),
    (re.compile(r"^(?:h|layers|transformer\.h|model\.layers|gpt_neox\.layers)\.(\d+)\.mlp$"),
     "blocks.{}.hook_mlp_out", "blocks.{}.mlp.hook_in", "blocks.{}.hook_mlp_out"),
    (re.compile(r"^(?:h|layers|transformer\.h|model\.layers|gpt_neox\.layers)\.(\d+)\.(?:attn|self_attn|attention)$"),
     "blocks.{}.hook_attn_out", "blocks.{}.attn.hook_in", "blocks.{}.hook_attn_out"),
]


def sparsify_hooks(hookpoint: str, transcoder: bool) -> Optional[tuple[str, Optional[str]]]:
    """(hook_name, hook_out) of a sparsify hookpoint (a module of the model's base model: its output,
    and for a transcoder its input -> its output); None for a module this library has no hook for."""
    for pattern, sae_hook, hook_in, hook_out in _SPARSIFY_HOOKPOINTS:
        m = pattern.match(hookpoint)
        if m:
            layer = m.group(1)
            return (hook_in.format(layer), hook_out.format(layer)) if transcoder else (sae_hook.format(layer), None)
    return None


def _read_sparsify(folder: Path) -> _Foreign:
    config = folder / FOREIGN_CONFIG
    raw = _read_json(config)
    activation = raw.get("activation", "topk")
    if activation != "topk":
        raise _refuse(config, f"activation is {activation!r}", "an activation this library does not have (it has "
                      "sparsify's topk)")
    if raw.get("signed"):
        raise _refuse(config, "signed is true", "signed latents, which this library does not have")
    d_in = _positive_int(config, "d_in", raw.get("d_in"))
    num_latents = raw.get("num_latents") or 0
    d_sae = _positive_int(config, "num_latents", num_latents) if num_latents else \
        d_in * _positive_int(config, "expansion_factor", raw.get("expansion_factor", 32))
    k = _positive_int(config, "k", raw.get("k", 32))
    if k > d_sae:
        raise _refuse(config, f"k is {k}", f"more than its {d_sae} latents")
    transcoder, skip = bool(raw.get("transcode")), bool(raw.get("skip_connection"))
    if skip and not transcoder:
        raise _refuse(config, "skip_connection is true on an autoencoder (transcode is false)",
                      "a linear path from the input to its own reconstruction, which this library's SAEs do not have")
    # The hookpoint is the folder's name (`<hookpoint>/seed<N>` when a run trained several seeds).
    hook_folder = folder.parent if re.fullmatch(r"seed\d+", folder.name) else folder
    hookpoint = hook_folder.name
    hooks = sparsify_hooks(hookpoint, transcoder)
    run_config = hook_folder.parent / SPARSIFY_RUN_CONFIG
    model = _read_json(run_config).get("model") if run_config.is_file() else None

    weights = folder / SPARSIFY_WEIGHTS
    tensors = _read_weights(weights, config)
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if skip:
        expected["W_skip"] = (d_in, d_in)
    _check_tensors(tensors, expected, weights, config, f"d_in={d_in}, {d_sae} latents")
    t = {"W_enc": tensors["encoder.weight"].double().T, "b_enc": tensors["encoder.bias"].double(),
         "W_dec": tensors["W_dec"].double(), "b_dec": tensors["b_dec"].double()}
    conversions = ["encoder.weight transposed to W_enc"]
    if skip:
        t["W_skip"] = tensors["W_skip"].double().T
        conversions.append("W_skip transposed to [d_in, d_out]")
    source = {"format": "sparsify", "version": "sparse_coder", "path": str(folder.resolve()), "hookpoint": hookpoint,
              "transcode": transcoder, "model_name": model, "dtype": str(tensors["W_dec"].dtype).removeprefix("torch."),
              "conversions": conversions}
    return _Foreign(architecture="topk", d_in=d_in, d_sae=d_sae, d_out=d_in if transcoder else None, k=k,
                    skip=skip, hook_name=hooks[0] if hooks else None, hook_out=hooks[1] if hooks else None,
                    model_name=model, tensors=t, source=source)


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


def _build(foreign: _Foreign, config: Path, device: str | torch.device, dtype: torch.dtype, *,
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
        sae = SparseAutoencoder(cfg, foreign.d_in, hook_name=hook_name, model_name=model_name, d_out=foreign.d_out,
                                hook_out=hook_out, device=device, dtype=dtype)
    except (ConfigError, ValueError) as e:
        raise DictionaryLoadError(f"{config} describes a dictionary this library cannot build ({e}).") from e
    t = foreign.tensors
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec") + (("W_skip",) if foreign.skip else ()):
            getattr(sae, name).copy_(t[name])
        if "threshold" in t:
            sae.set_threshold(t["threshold"].to(dtype))
    sae.residual_centering = foreign.residual_centering
    sae.input_layer_norm = foreign.input_layer_norm
    source = dict(foreign.source)
    if model_name != foreign.model_name or hook_name != foreign.hook_name or hook_out != foreign.hook_out:
        source["renamed"] = {"model_name": model_name, "hook_name": hook_name, "hook_out": hook_out}
    sae.saved_config = sae.config_dict(extra={"model": LanguageModelConfig(name=model_name).to_dict(),
                                              "source": source})
    return sae


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
    foreign = _read_saelens(folder, hub.overrides if hub else None) if fmt == "saelens" else _read_sparsify(folder)
    if hub is not None:
        foreign.source.update(release=hub.release, sae_id=hub.sae_id, repo_id=hub.repo_id, repo_folder=hub.folder)
        foreign.model_name = foreign.model_name or hub.model
    return _build(foreign, folder / FOREIGN_CONFIG, device, dtype, model_name=model_name, hook_name=hook_name,
                  hook_out=hook_out)


# ----------------------------------------------------------------------------------------------
# SAELens's hub names (a small table for GPT-2's releases; SAELens's registry has them all)


@dataclass(frozen=True)
class SAELensRelease:
    """Where a SAELens release lives on the Hugging Face hub."""

    repo_id: str
    folders: dict[str, str]
    """sae_id -> the folder of the repository holding its cfg.json and sae_weights.safetensors."""
    model: str = "gpt2-small"
    overrides: dict = field(default_factory=dict)
    """What SAELens's registry adds to each config of the release (its config_overrides)."""


def _per_layer(sae_id: str, folder: str, layers=range(12)) -> dict[str, str]:
    return {sae_id.format(layer): folder.format(layer) for layer in layers}


_CENTERED = {"model_from_pretrained_kwargs": {"center_writing_weights": True}}
_OPENWEBTEXT = {"dataset_path": "Skylion007/openwebtext"}
SAELENS_RELEASES: dict[str, SAELensRelease] = {
    "gpt2-small-res-jb": SAELensRelease(
        "jbloom/GPT2-Small-SAEs-Reformatted",
        {**_per_layer("blocks.{}.hook_resid_pre", "blocks.{}.hook_resid_pre"),
         "blocks.11.hook_resid_post": "blocks.11.hook_resid_post"}, overrides=_CENTERED),
    "gpt2-small-res-jb-feature-splitting": SAELensRelease(
        "jbloom/GPT2-Small-Feature-Splitting-Experiment-Layer-8",
        {f"blocks.8.hook_resid_pre_{w}": f"blocks.8.hook_resid_pre_{w}"
         for w in (768, 1536, 3072, 6144, 12288, 24576, 49152, 98304)}, overrides=_CENTERED),
    **{f"gpt2-small-{kind}-v5-{size}": SAELensRelease(
        f"jbloom/GPT2-Small-OAI-v5-{size}-{kind}-SAEs",
        # (the registry's folders of resid-post 32k end in ".pt")
        _per_layer(f"blocks.{{}}.hook_{kind.replace('-', '_')}",
                   f"v5_{size}_layer_{{}}" + (".pt" if (kind, size) == ("resid-post", "32k") else "")),
        overrides=_OPENWEBTEXT)
       for kind in ("resid-post", "resid-mid", "mlp-out", "attn-out") for size in ("32k", "128k")},
    **{f"gpt2-small-res_{variant}-ajt": SAELensRelease(
        f"neuronpedia/gpt2-small__res_{variant}-ajt",
        _per_layer("blocks.{}.hook_resid_pre", f"{{}}-res_{variant}-ajt", layers=(2, 6, 10)))
       for variant in ("sce", "scefr", "scl", "sle", "slefr", "sll")},
}


@dataclass(frozen=True)
class HubLocation:
    release: str
    sae_id: str
    repo_id: str
    folder: str
    model: str
    overrides: dict


def saelens_hub_location(release: str, sae_id: str) -> HubLocation:
    """The Hugging Face repository and folder of SAELens release `release`'s dictionary `sae_id`."""
    entry = SAELENS_RELEASES.get(release)
    if entry is None:
        raise DictionaryLoadError(f"Unknown SAELens release {release!r}; this library knows GPT-2's: "
                                  f"{', '.join(sorted(SAELENS_RELEASES))}. For others, download the folder (SAELens's "
                                  f"pretrained_saes.yaml names its repository and path) and pass its local path.")
    if sae_id not in entry.folders:
        ids = list(entry.folders)
        raise DictionaryLoadError(f"SAELens release {release!r} has no id {sae_id!r}; its ids are {', '.join(ids[:6])}"
                                  f"{', ...' if len(ids) > 6 else ''} (write saelens:{release}/<id>).")
    return HubLocation(release, sae_id, entry.repo_id, entry.folders[sae_id], entry.model, dict(entry.overrides))


def hub_location_of_cached(folder: Path) -> Optional[HubLocation]:
    """The release and id of a folder in the Hugging Face cache (`.../models--<org>--<name>/snapshots/
    <revision>/<folder>`) that `SAELENS_RELEASES` knows: what SAELens's registry says about a
    release (e.g. that its model was loaded with centered writing weights) is not in the folder's
    own cfg.json, so a copy found in the cache is read as its hub name would be."""
    parts = folder.resolve().parts
    if len(parts) < 4 or parts[-3] != "snapshots" or not parts[-4].startswith("models--"):
        return None
    repo_id = parts[-4][len("models--"):].replace("--", "/")
    for release, entry in SAELENS_RELEASES.items():
        for sae_id, inner in entry.folders.items():
            if entry.repo_id == repo_id and inner == parts[-1]:
                return saelens_hub_location(release, sae_id)
    return None


def download_saelens(release: str, sae_id: str) -> Path:
    """Download (or find in the Hugging Face cache) the folder of `release` / `sae_id`; its path."""
    loc = saelens_hub_location(release, sae_id)
    import huggingface_hub
    from huggingface_hub import hf_hub_download

    paths = []
    for filename in (FOREIGN_CONFIG, SAELENS_WEIGHTS):
        try:
            paths.append(Path(hf_hub_download(loc.repo_id, f"{loc.folder}/{filename}")))
        except Exception as e:  # network, offline mode, missing file, gated repository: all say the same to the user
            offline = huggingface_hub.constants.HF_HUB_OFFLINE
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise DictionaryLoadError(
                f"Could not get {loc.folder}/{filename} of the Hugging Face repository {loc.repo_id} (SAELens release "
                f"{release!r}, id {sae_id!r}) {'with HF_HUB_OFFLINE=1 and nothing in the cache ' if offline else ''}"
                f"({type(e).__name__}: {reason}); connect to the hub{' and unset HF_HUB_OFFLINE' if offline else ''}, "
                f"or download the folder where the hub is reachable (huggingface-cli download {loc.repo_id} --include "
                f"'{loc.folder}/*' --local-dir DIR) and pass DIR/{loc.folder} instead.") from e
    return paths[0].parent


# ----------------------------------------------------------------------------------------------
# Import: a converted copy under the results folder


def _plain_name(text: str) -> str:
    name = re.sub(r"[/\\:\s\x00]+", "_", text).lstrip(".")[:200]
    return name or "dictionary"


def _weights_file(source: dict) -> Path:
    return Path(source["path"]) / (SAELENS_WEIGHTS if source["format"] == "saelens" else SPARSIFY_WEIGHTS)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_dictionary(source: str | Path, results_dir: str | Path = "results", *, name: Optional[str] = None,
                      model_name: Optional[str] = None, hook_name: Optional[str] = None,
                      hook_out: Optional[str] = None) -> Path:
    """Convert a SAELens / sparsify folder or a `saelens:<release>/<sae_id>` name into this library's
    format at `<results_dir>/imported/dictionaries/<name>/` and return that folder.

    Analyses of it are written inside it and the viewer lists it as `imported:<name>`; the source
    is never written to. `name` defaults to `<release>--<sae_id>` for a hub name, the folder's name
    for a SAELens folder and `<run>--<hookpoint>` for a sparsify one. Importing the same weights
    again returns the existing copy (and its analyses); another dictionary under the same name is
    refused. `model_name`, `hook_name`, `hook_out`: as for `load_foreign`.
    """
    if not is_foreign(source):
        load_dictionary(source)  # a clear error for what is no dictionary at all
        raise DictionaryLoadError(f"{source} is already a dictionary of this library; analyze or serve it where it "
                                  f"is instead of importing it.")
    sae = load_foreign(source, model_name=model_name, hook_name=hook_name, hook_out=hook_out)
    info = {**sae.saved_config["source"]}
    info["sha256"] = _sha256(_weights_file(info))
    if name is None:
        if "release" in info:
            name = f"{info['release']}--{info['sae_id']}"
        elif info["format"] == "sparsify":
            folder = Path(info["path"])
            run = folder.parent.parent if re.fullmatch(r"seed\d+", folder.name) else folder.parent
            name = f"{run.name}--{info['hookpoint']}" + (f"-{folder.name}" if folder.name != info["hookpoint"] else "")
        else:
            name = Path(info["path"]).name
    name = _plain_name(name)
    dest = Path(results_dir).expanduser() / IMPORTED_RUN / DICTIONARIES_FOLDER / name
    if (dest / CONFIG_FILENAME).is_file():
        existing = _read_json(dest / CONFIG_FILENAME).get("source") or {}
        same = (existing.get("sha256") == info["sha256"] and existing.get("format") == info["format"]
                and (existing.get("renamed") or None) == (info.get("renamed") or None))
        if same:
            log.info("%s is already imported at %s.", source, dest)
            return dest
        raise FileExistsError(f"{dest} already holds another imported dictionary (from {existing.get('path')}); "
                              f"give this one another name (name=... / --name) or delete that folder.")
    sae.save(dest, extra={"name": name, "exp_name": IMPORTED_RUN, "model": LanguageModelConfig(name=sae.model_name).to_dict(),
                          "source": info})
    log.info("Imported %s (%s) to %s.", source, info["format"], dest)
    return dest


def evaluate_imported(folder: str | Path, model: LanguageModel, dataset: DatasetConfig, *, n_tokens: int = 8192,
                      batch_size: int = 16, cache_dir: str | Path = "~/.cache/gpt2_dictionary") -> EvalResult:
    """Evaluate an imported copy (`import_dictionary`) on about `n_tokens` tokens of `dataset` — L0,
    explained variance, CE loss recovered, KL, ... as a trained dictionary's final evaluation — and
    record them in its config.json ("metrics", with "evaluation" saying on what), written atomically,
    so the viewer shows them. The text is not held out from the dictionary's own training data, which
    this library does not know; a trained dictionary's metrics are its trainer's, never replaced here."""
    from .data import TokenBatches
    from .evals import evaluate
    from .files import atomic_write

    folder = Path(folder).expanduser()
    config = _read_json(folder / CONFIG_FILENAME)
    if not isinstance(config.get("source"), dict):
        raise DictionaryLoadError(f"{folder} is not an imported dictionary (its config.json has no \"source\"); a "
                                  f"trained dictionary's metrics come from its trainer's held-out evaluation.")
    if n_tokens < 1 or batch_size < 1:
        raise ConfigError(f"n_tokens and batch_size must be positive, not {n_tokens} and {batch_size}.")
    sae = load_dictionary(folder, device=model.device)
    batches = TokenBatches(dataset, model.tokenizer, bos_token_id=model.bos_token_id,
                           separator_token_id=model.separator_token_id, batch_size=batch_size, cache_dir=cache_dir)
    n_batches = max(1, -(-n_tokens // (batch_size * dataset.context_size)))
    result = evaluate(model, sae, (b for _, b in zip(range(n_batches), batches)))
    config["metrics"] = result.to_dict()
    config["evaluation"] = {"n_tokens": result.n_tokens, "dataset": dataset.path, "context_size": dataset.context_size,
                            "held_out": False}
    atomic_write(folder / CONFIG_FILENAME, json.dumps(config, indent=2) + "\n")
    log.info("Evaluated %s on %d tokens: L0 %.1f, explained variance %.4f, CE loss recovered %.4f.", folder,
             result.n_tokens, result.l0, result.explained_variance, result.ce_loss_recovered)
    return result


# ----------------------------------------------------------------------------------------------
# Export


def _write_folder(folder: Path, files: dict[str, bytes | dict[str, Tensor]], config_name: str) -> Path:
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


def _as_dictionary(dictionary: SparseAutoencoder | str | Path) -> SparseAutoencoder:
    return dictionary if isinstance(dictionary, SparseAutoencoder) else load_dictionary(dictionary)


def _inference_thresholds(sae: SparseAutoencoder) -> Optional[Tensor]:
    """[d_sae] thresholds t with encode = relu(pre) * (pre > t): jumprelu's own, the batch-level
    top-k dictionaries' one inference threshold repeated (as SAELens saves its batchtopk SAEs)."""
    if sae.architecture == "jumprelu":
        return sae.theta().detach().float().cpu()
    if sae.has_inference_threshold:
        return torch.full((sae.d_sae,), float(sae.threshold))
    return None


def export_saelens(dictionary: SparseAutoencoder | str | Path, folder: str | Path) -> Path:
    """Write `dictionary` (a SparseAutoencoder or a dictionary folder) as a SAELens 6 folder:
    cfg.json + sae_weights.safetensors, readable by SAELens's `SAE.load_from_disk`, with the same
    encode / decode (a skip transcoder's forward included) up to float rounding."""
    sae = _as_dictionary(dictionary)
    tensors = {name: t.float().cpu() for name, t in sae._folded_tensors().items()}
    thresholds = _inference_thresholds(sae)
    arch = sae.architecture
    if sae.is_transcoder:
        if arch == "topk":
            raise DictionaryFormatError(f"SAELens has no top-k transcoder, so this {arch} transcoder cannot be written "
                                        f"as a SAELens folder; export it to sparsify instead (export_sparsify).")
        name = ("jumprelu_" if thresholds is not None else "") + ("skip_transcoder" if sae.W_skip is not None
                                                                  else "transcoder")
    else:
        name = "topk" if arch == "topk" else "jumprelu" if thresholds is not None else "standard"
    out = {"W_enc": tensors["W_enc"], "b_enc": tensors["b_enc"], "W_dec": tensors["W_dec"], "b_dec": tensors["b_dec"]}
    if thresholds is not None:
        out["threshold"] = thresholds
    if sae.W_skip is not None:
        out["W_skip"] = tensors["W_skip"].T
    config = sae.saved_config if hasattr(sae, "saved_config") else {}
    hook_z = not sae.is_transcoder and sae.hook_name.endswith("hook_z")
    metadata = {"model_name": sae.model_name, "hook_name": sae.hook_name,
                **({"hook_name_out": sae.hook_out} if sae.is_transcoder else {}),
                "context_size": config.get("context_size"), "prepend_bos": True,
                "dataset_path": config.get("dataset") if isinstance(config.get("dataset"), str) else None,
                "sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
                "exported_by": "gpt2-dictionary", "exported_from_architecture": arch}
    if sae.residual_centering:  # SAELens then centers the model's writing weights, as the original did
        metadata["model_from_pretrained_kwargs"] = {"center_writing_weights": True}
    cfg = {"architecture": name, "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": not sae.is_transcoder,
           "normalize_activations": "layer_norm" if sae.input_layer_norm else "none",
           "reshape_activations": "hook_z" if hook_z else "none",
           **({"k": sae.cfg.k, "rescale_acts_by_decoder_norm": False} if arch == "topk" else {}),
           **({"d_out": sae.d_out} if sae.is_transcoder else {}), "metadata": metadata}
    return _write_folder(Path(folder), {SAELENS_WEIGHTS: out, FOREIGN_CONFIG: json.dumps(cfg, indent=2).encode()},
                         FOREIGN_CONFIG)


def export_sparsify(dictionary: SparseAutoencoder | str | Path, folder: str | Path) -> Path:
    """Write a top-k `dictionary` as a sparsify folder (cfg.json + sae.safetensors) that sparsify's
    `SparseCoder.load_from_disk` reads with the same encode / decode. sparsify's per-hookpoint folder
    has no place for the model and hook names; name the folder after the hookpoint (e.g. `h.6`)."""
    sae = _as_dictionary(dictionary)
    if sae.residual_centering or sae.input_layer_norm:
        what = "standardizes each token (input_layer_norm)" if sae.input_layer_norm else (
            "reads the residual stream of a model with centered writing weights (residual_centering)")
        raise DictionaryFormatError(f"this dictionary {what}, which a sparsify folder cannot say; export it to "
                                    f"SAELens instead.")
    if sae.architecture != "topk":
        raise DictionaryFormatError(f"sparsify has top-k sparse coders only, so this {sae.architecture} dictionary "
                                    f"cannot be written as a sparsify folder; export it to SAELens instead.")
    if sae.is_transcoder and sae.d_out != sae.d_in:
        raise DictionaryFormatError(f"sparsify's transcoders predict outputs as wide as their inputs, but this one maps "
                                    f"d_in={sae.d_in} to d_out={sae.d_out}; export it to SAELens instead.")
    tensors = {name: t.float().cpu() for name, t in sae._folded_tensors().items()}
    out = {"encoder.weight": tensors["W_enc"].T, "encoder.bias": tensors["b_enc"], "W_dec": tensors["W_dec"],
           "b_dec": tensors["b_dec"]}
    if sae.W_skip is not None:
        out["W_skip"] = tensors["W_skip"].T
    # normalize_decoder false: the folded decoder rows are not unit norm, and sparsify would renormalize
    # them if the coder were trained further.
    cfg = {"activation": "topk", "expansion_factor": max(1, sae.d_sae // sae.d_in), "normalize_decoder": False,
           "num_latents": sae.d_sae, "k": sae.cfg.k, "multi_topk": False, "skip_connection": sae.W_skip is not None,
           "transcode": sae.is_transcoder, "d_in": sae.d_in}
    return _write_folder(Path(folder), {SPARSIFY_WEIGHTS: out, FOREIGN_CONFIG: json.dumps(cfg, indent=2).encode()},
                         FOREIGN_CONFIG)


# ----------------------------------------------------------------------------------------------
# Command line


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.formats", description=(
        "Dictionaries from elsewhere: import SAELens / sparsify folders and SAELens hub names into this "
        "library's format, export this library's dictionaries to SAELens or sparsify."))
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="write a converted copy to <results>/imported/dictionaries/<name>/")
    imp.add_argument("source", help="a SAELens or sparsify folder, or saelens:<release>/<sae_id>")
    imp.add_argument("--results-dir", default="results")
    imp.add_argument("--name", help="the copy's folder name (default: from the source)")
    imp.add_argument("--model-name", help="the model (a Hugging Face name or a local folder) instead of the source's")
    imp.add_argument("--hook-name", help="the TransformerLens hook it reads, instead of the source's")
    imp.add_argument("--hook-out", help="a transcoder's out-hook, instead of the source's")
    exp = sub.add_parser("export", help="write a dictionary of this library as a SAELens or sparsify folder")
    exp.add_argument("dictionary", help="a dictionary folder of this library")
    exp.add_argument("dest", help="the folder to write")
    exp.add_argument("--to", choices=("saelens", "sparsify"), default="saelens")
    loc = sub.add_parser("locate", help="print the Hugging Face repository and folder of a SAELens release's id")
    loc.add_argument("release")
    loc.add_argument("sae_id")
    args = parser.parse_args(argv)
    if args.command == "import":
        folder = import_dictionary(args.source, args.results_dir, name=args.name, model_name=args.model_name,
                                   hook_name=args.hook_name, hook_out=args.hook_out)
        print(f"Imported {args.source} to {folder}")
        print(f"Analyze it:  python run_analyze_example.py --dictionary-path {folder} --model.name "
              f"{json.loads((folder / CONFIG_FILENAME).read_text())['model_name']}")
    elif args.command == "export":
        writer = export_saelens if args.to == "saelens" else export_sparsify
        print(f"Wrote {writer(args.dictionary, args.dest)} ({args.to})")
    else:
        where = saelens_hub_location(args.release, args.sae_id)
        print(f"https://huggingface.co/{where.repo_id}/tree/main/{where.folder}")


if __name__ == "__main__":
    # (`python -m` runs this file as __main__: call the module proper, whose errors the entry point knows)
    from core.cli import run_entry_point
    from core.formats import main as formats_main

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_entry_point(formats_main)
