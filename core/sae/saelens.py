"""SAELens folders in and out.

In: SAELens 6.x folders (`cfg.json` with `metadata`, `sae_weights.safetensors`) and folders of
before 6.0 (the config in its older keys: `hook_point`, `activation_fn_str`,
`activation_fn_kwargs.k`, a boolean `normalize_activations`, ...), converted exactly (see
`core.formats` for every conversion) or refused with one sentence. Out: `write_saelens` writes any
dictionary of this library as a SAELens 6 folder that `SAE.load_from_disk` reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import DictionaryFormatError, DictionaryLoadError
from ..hooks import is_residual_hook
from .base import SparseAutoencoder
from .normalization import ResidualCentering, TokenStandardization
from .foreign import (FOREIGN_CONFIG, SAELENS_WEIGHTS, ForeignDictionary, check_tensors, positive_int, read_json,
                      read_weights, refuse, write_folder)

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
            raise refuse(config, "activation_fn_str is 'topk' without activation_fn_kwargs.k",
                          "so it does not say how many latents a token keeps")
        flat["architecture"], flat["k"] = "topk", kwargs["k"]
    elif flat["activation_fn"] != "relu":
        raise refuse(config, f"activation_fn_str is {flat['activation_fn']!r}",
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
        raise refuse(config, f"model_from_pretrained_kwargs is {kwargs!r}", "not a JSON object")
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
            raise refuse(config, f"metadata.model_from_pretrained_kwargs has {key}={value!r}",
                          f"a transcoder trained on a model with centered writing weights, where {' and '.join(centered)} "
                          f"had its mean over d_model removed; a prediction cannot add back the mean of an output "
                          f"it does not see, so it differs from one on the model's own weights, which this library runs")
        why = ("the dictionary was trained on a TransformerLens model with processed weights, whose activations "
               f"at {hook} differ from those of the model's own weights, which this library runs")
        raise refuse(config, f"metadata.model_from_pretrained_kwargs has {key}={value!r}", why)
    return centering


def _fold_residual_centering(t: dict[str, Tensor]) -> None:
    """SAELens's pre-activations on centered activations, (P x - b_dec) W_enc + b_enc with
    P = I - 11^T/d, as this library's on raw ones, (x - b_dec) W' + b' (float64, in place):
    W' = P W_enc (each column less its mean) and b' = b_enc - b_dec (I - P) W_enc
    = b_enc - mean(b_dec) * (column sums of W_enc). `ResidualCentering` then adds the input's
    mean back to the reconstruction."""
    w = t["W_enc"]
    t["b_enc"] = t["b_enc"] - t["b_dec"].mean() * w.sum(0)
    t["W_enc"] = w - w.mean(0, keepdim=True)


def read_saelens(folder: Path, overrides: Optional[dict] = None) -> ForeignDictionary:
    config = folder / FOREIGN_CONFIG
    raw = read_json(config)
    if overrides:  # what the SAELens registry adds to a release's configs (`saelens:` names), as SAELens adds it
        raw = {**raw, **overrides}
    flat, version = _saelens_fields(raw, config)
    architecture = flat.get("architecture")
    if architecture not in _SAELENS_ARCHITECTURES:
        why = (f"an architecture this library cannot represent (it reads {', '.join(_SAELENS_ARCHITECTURES)})")
        if architecture in ("batchtopk", "matryoshka_batchtopk"):
            why += ("; this is SAELens's training checkpoint, whose encoder takes the top k of a whole batch: SAELens "
                    "saves finished ones with save_inference_model as jumprelu folders, which load here")
        raise refuse(config, f"architecture is {architecture!r}", why)
    ours, transcoder, skip = _SAELENS_ARCHITECTURES[architecture]
    d_in = positive_int(config, "d_in", flat.get("d_in"))
    d_sae = positive_int(config, "d_sae", flat.get("d_sae"))
    d_out = positive_int(config, "d_out", flat.get("d_out")) if transcoder else None
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
        raise refuse(config, f"normalize_activations is {normalize!r}", why)
    reshape = flat.get("reshape_activations") or "none"
    if reshape not in ("none", "hook_z") or (reshape == "hook_z" and not str(hook or "").endswith("hook_z")):
        raise refuse(config, f"reshape_activations is {reshape!r} (hook {hook!r})",
                      "a reshaping this library does not do (it flattens the heads of attn.hook_z only)")
    if flat.get("hook_head_index") is not None:
        raise refuse(config, f"hook_head_index is {flat['hook_head_index']!r}",
                      "so the dictionary reads one attention head's part of the hook, which this library's "
                      "activations do not select")
    if flat.get("finetuning_scaling_factor"):
        raise refuse(config, "finetuning_scaling_factor is true", "a learned rescaling of the latents that "
                      "this library does not have")
    apply_b_dec = flat.get("apply_b_dec_to_input", True)
    if transcoder and apply_b_dec:
        raise refuse(config, "apply_b_dec_to_input is true", "but a transcoder's b_dec lives in its output space "
                      "(SAELens refuses this too)")
    centering = _check_model_kwargs(config, flat.get("model_from_pretrained_kwargs"), str(hook or ""),
                                    flat.get("hook_name_out") if transcoder else None)
    dtype_name = str(flat.get("dtype") or "float32").removeprefix("torch.")
    if dtype_name not in _TORCH_DTYPES:
        raise refuse(config, f"dtype is {flat.get('dtype')!r}", f"not one of {', '.join(_TORCH_DTYPES)}")
    k = None
    if ours == "topk":
        k = positive_int(config, "k", flat.get("k"))
        if k > d_sae:
            raise refuse(config, f"k is {k}", f"more than its d_sae={d_sae} latents")

    weights = folder / SAELENS_WEIGHTS
    tensors = read_weights(weights, config)
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
    check_tensors(tensors, expected, weights, config, sizes)
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
            raise refuse(config, "rescale_acts_by_decoder_norm is true",
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
    return ForeignDictionary(architecture=ours, d_in=d_in, d_sae=d_sae, d_out=d_out, k=k, skip=skip, hook_name=hook,
                    hook_out=flat.get("hook_name_out"), model_name=flat.get("model_name"), tensors=t, source=source,
                    normalization=ResidualCentering() if centering else TokenStandardization() if layer_norm else None)




def _inference_thresholds(sae: SparseAutoencoder) -> Optional[Tensor]:
    """[d_sae] thresholds t with encode = relu(pre) * (pre > t): jumprelu's own, the batch-level
    top-k dictionaries' one inference threshold repeated (as SAELens saves its batchtopk SAEs)."""
    if sae.architecture == "jumprelu":
        return sae.theta().detach().float().cpu()
    if sae.has_inference_threshold:
        return torch.full((sae.d_sae,), float(sae.threshold))
    return None



def write_saelens(sae: SparseAutoencoder, folder: str | Path) -> Path:
    """Write `dictionary` (a SparseAutoencoder or a dictionary folder) as a SAELens 6 folder:
    cfg.json + sae_weights.safetensors, readable by SAELens's `SAE.load_from_disk`, with the same
    encode / decode (a skip transcoder's forward included) up to float rounding."""
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
    if isinstance(sae.normalization, ResidualCentering):  # SAELens then centers the model's writing weights, as the original did
        metadata["model_from_pretrained_kwargs"] = {"center_writing_weights": True}
    cfg = {"architecture": name, "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": not sae.is_transcoder,
           "normalize_activations": "layer_norm" if isinstance(sae.normalization, TokenStandardization) else "none",
           "reshape_activations": "hook_z" if hook_z else "none",
           **({"k": sae.cfg.k, "rescale_acts_by_decoder_norm": False} if arch == "topk" else {}),
           **({"d_out": sae.d_out} if sae.is_transcoder else {}), "metadata": metadata}
    return write_folder(Path(folder), {SAELENS_WEIGHTS: out, FOREIGN_CONFIG: json.dumps(cfg, indent=2).encode()},
                         FOREIGN_CONFIG)

