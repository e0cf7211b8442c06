"""circuit-tracer's folders (circuit-tracer 0.5) in and out: transcoder sets and cross-layer transcoders.

A circuit-tracer folder is what `circuit_tracer.utils.caching.save_transcoders_to_cache` writes and
what its loaders read when given the folder's absolute path (`ReplacementModel.from_pretrained(model,
"/abs/folder")`, `load_transcoder_from_hub("/abs/folder")`):

- `config.yaml`: `model_kind` ("transcoder_set" or "cross_layer_transcoder"), `feature_input_hook`,
  `feature_output_hook` (hooks of a block, without `blocks.N.`), optionally `model_name` and `scan`.
- A transcoder set: `layer_<i>.safetensors` for i = 0..n-1 with `W_enc` [d_transcoder, d_model]
  (the transpose of ours), `W_dec` [d_transcoder, d_model], `b_enc`, `b_dec`, optionally `W_skip`
  [d_model, d_model] (applied as x @ W_skip.T: ours transposed) and `activation_function.threshold`
  [d_transcoder] (JumpReLU, else ReLU).
- A CLT: `W_enc_<i>.safetensors` with `W_enc_<i>` [d_transcoder, d_model], `b_enc_<i>`, `b_dec_<i>` and
  optionally `threshold_<i>` (JumpReLU, else ReLU), and `W_dec_<i>.safetensors` with `W_dec_<i>`
  [d_transcoder, n - i, d_model]. Its loader reads no skip path.

Activations there: ReLU, and JumpReLU f = pre * (pre > t) (no ReLU before it). Conversions, exact:

- In: a ReLU transcoder is our `relu` transcoder; a JumpReLU one our `jumprelu` with its thresholds
  kept as absolute values; a ReLU CLT our `jumprelu` CLT with thresholds 0 (pre * (pre > 0) is
  relu(pre)), a JumpReLU CLT our `jumprelu` CLT with its thresholds. W_enc and W_skip transposed.
- Out: relu and jumprelu as they are; batchtopk / matryoshka_batchtopk as JumpReLU with their one
  inference threshold for every feature (relu(pre * (pre > t)) = pre * (pre > t) for t >= 0).
- Hooks: our `blocks.N.mlp.hook_in` (= `ln2.hook_out`: the MLP's input, after the norm's weight and
  bias) <-> `mlp.hook_in`, which every circuit-tracer backend reads (its nnsight backend maps it for
  Llama, Gemma 3, Qwen 3 and gpt-oss); our `blocks.N.ln2.hook_normalized` (the normalized vector
  before the weight and bias; TransformerBridge folds no norm weights) <-> `ln2.hook_normalized`,
  which only circuit-tracer's TransformerLens backend has, so for its other backends the export
  folds the model's norm weights and biases into the encoders and writes `mlp.hook_in` (given the
  model: `write_circuit_tracer(..., mlp_input_affine=...)`); `blocks.N.hook_resid_mid` <->
  `hook_resid_mid`; `blocks.N.hook_mlp_out` <-> `hook_mlp_out` (and `mlp.hook_out` in).

Refused with one sentence: negative thresholds (features that
can be negative), missing or inconsistent files; out: topk (circuit-tracer has no top-k), a
batchtopk threshold never calibrated, a CLT with skip paths (circuit-tracer's CLT files hold none),
a set with skip paths on some members only, layers that are not 0..n-1 (circuit-tracer replaces
every MLP of the model).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import torch
import yaml
from torch import Tensor

from ..config import SAEConfig
from ..errors import DictionaryFormatError, DictionaryLoadError
from ..files import publish, remove_tree, temp_sibling
from .base import create_dictionary
from .clt import CrossLayerTranscoder
from .foreign import check_tensors, model_name_for, read_weights, write_folder
from .replacement import TranscoderSet

CIRCUIT_TRACER_CONFIG = "config.yaml"
CIRCUIT_TRACER_KINDS = ("transcoder_set", "cross_layer_transcoder")
_THRESHOLD = "activation_function.threshold"

# circuit-tracer's hook (of a block) -> ours (with a {layer} placeholder), for reading.
_HOOKS_IN = {"mlp.hook_in": "blocks.{layer}.mlp.hook_in", "ln2.hook_normalized": "blocks.{layer}.ln2.hook_normalized",
             "hook_resid_mid": "blocks.{layer}.hook_resid_mid"}
_HOOKS_OUT = {"hook_mlp_out": "blocks.{layer}.hook_mlp_out", "mlp.hook_out": "blocks.{layer}.hook_mlp_out"}
# Ours (the part after `blocks.N.`) -> circuit-tracer's, for writing.
_OUR_HOOKS_IN = {"ln2.hook_normalized": "ln2.hook_normalized", "mlp.hook_in": "mlp.hook_in", "ln2.hook_out": "mlp.hook_in",
                 "hook_resid_mid": "hook_resid_mid"}
_OUR_HOOKS_OUT = {"hook_mlp_out": "hook_mlp_out", "mlp.hook_out": "hook_mlp_out"}


def is_circuit_tracer_folder(folder: str | Path) -> bool:
    """True for a folder with circuit-tracer's config.yaml (and none of this library's config.json)."""
    folder = Path(folder).expanduser()
    return (folder / CIRCUIT_TRACER_CONFIG).is_file() and not (folder / "config.json").is_file()


def _refuse(folder: Path, what: str, why: str) -> DictionaryLoadError:
    return DictionaryLoadError(f"Cannot load {folder} exactly: {what}, {why}.")


def _read_config(folder: Path) -> dict:
    path = folder / CIRCUIT_TRACER_CONFIG
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DictionaryLoadError(f"{path} is not valid YAML ({e}); the folder is damaged, copy it again.") from e
    if not isinstance(config, dict):
        raise DictionaryLoadError(f"{path} must hold a YAML mapping, got {type(config).__name__}; the folder is damaged.")
    kind = config.get("model_kind")
    if kind not in CIRCUIT_TRACER_KINDS:
        raise _refuse(folder, f"model_kind is {kind!r} in {path.name}", f"not one of {', '.join(CIRCUIT_TRACER_KINDS)}")
    for key in ("feature_input_hook", "feature_output_hook"):
        if not isinstance(config.get(key), str):
            raise DictionaryLoadError(f"{path} has no {key}; circuit-tracer needs it, so the folder is damaged.")
    return config


def _our_hooks(folder: Path, config: dict) -> tuple[str, str]:
    hook_in, hook_out = config["feature_input_hook"], config["feature_output_hook"]
    if hook_in not in _HOOKS_IN:
        raise _refuse(folder, f"feature_input_hook is {hook_in!r}",
                      f"a hook this library cannot map (it reads {', '.join(_HOOKS_IN)})")
    if hook_out not in _HOOKS_OUT:
        raise _refuse(folder, f"feature_output_hook is {hook_out!r}",
                      f"a hook this library cannot map (it reads {', '.join(_HOOKS_OUT)})")
    return _HOOKS_IN[hook_in], _HOOKS_OUT[hook_out]


def _numbered_files(folder: Path, prefix: str) -> list[Path]:
    """`<prefix><i>.safetensors` for i = 0..n-1, refusing gaps (circuit-tracer needs every layer from 0)."""
    found = {int(m.group(1)): p for p in folder.glob(f"{prefix}*.safetensors")
             if (m := re.fullmatch(re.escape(prefix) + r"(\d+)\.safetensors", p.name))}
    if not found:
        raise DictionaryLoadError(f"{folder} has {CIRCUIT_TRACER_CONFIG} but no {prefix}<i>.safetensors files; a folder "
                                  f"whose config lists hub addresses must be downloaded first (circuit-tracer's "
                                  f"save_transcoders_to_cache writes such a folder).")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise DictionaryLoadError(f"{folder} lacks {', '.join(f'{prefix}{i}.safetensors' for i in missing)}; "
                                  f"circuit-tracer needs one file per layer from 0, so the folder is incomplete.")
    return [found[i] for i in range(len(found))]


def _check_thresholds(folder: Path, name: str, threshold: Tensor) -> None:
    if bool((threshold < 0).any()):
        raise _refuse(folder, f"{name} holds negative thresholds",
                      "with which circuit-tracer's JumpReLU lets negative pre-activations through as negative feature "
                      "activations, and this library's features are never negative")


def _model_name(folder: Path, config: dict, model_name: Optional[str]) -> str:
    if model_name:
        return model_name
    named = config.get("model_name")
    found = model_name_for(named) if isinstance(named, str) and named else None
    if found is None:
        said = f"names model {named!r}, which TransformerLens does not know by that name" if named else "names no model"
        raise DictionaryLoadError(f"{folder / CIRCUIT_TRACER_CONFIG} {said}; say which model it belongs to: "
                                  f"load_dictionary(path, model_name='path/to/model') or --model-name.")
    return found


def read_circuit_tracer(folder: str | Path, *, model_name: Optional[str] = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> CrossLayerTranscoder | TranscoderSet:
    """The transcoder set or CLT of circuit-tracer folder `folder`, converted exactly (module doc), or
    a `DictionaryLoadError` saying what cannot be represented. `model_name` names the model where
    config.yaml does not."""
    folder = Path(folder).expanduser()
    config = _read_config(folder)
    hook_in, hook_out = _our_hooks(folder, config)
    model = _model_name(folder, config, model_name)
    source = {"format": "circuit-tracer", "path": str(folder.resolve()), "model_kind": config["model_kind"],
              "feature_input_hook": config["feature_input_hook"],
              "feature_output_hook": config["feature_output_hook"],
              **{key: config[key] for key in ("model_name", "scan") if config.get(key) is not None}}
    if config["model_kind"] == "transcoder_set":
        result = _read_set(folder, hook_in, hook_out, model, device, dtype, source)
    else:
        result = _read_clt(folder, hook_in, hook_out, model, device, dtype, source)
    result.saved_config = {**result.config_dict(), "source": source}
    return result


def _read_set(folder: Path, hook_in: str, hook_out: str, model: str, device, dtype, source: dict) -> TranscoderSet:
    members, activations = {}, []
    for layer, path in enumerate(_numbered_files(folder, "layer_")):
        tensors = read_weights(path, folder / CIRCUIT_TRACER_CONFIG)
        if "b_enc" not in tensors or "b_dec" not in tensors or tensors["b_enc"].ndim != 1 or tensors["b_dec"].ndim != 1:
            raise DictionaryLoadError(f"{path} lacks b_enc or b_dec of one dimension; it is not a circuit-tracer "
                                      f"transcoder file.")
        d_t, d_model = len(tensors["b_enc"]), len(tensors["b_dec"])
        expected = {"W_enc": (d_t, d_model), "W_dec": (d_t, d_model), "b_enc": (d_t,), "b_dec": (d_model,)}
        if "W_skip" in tensors:
            expected["W_skip"] = (d_model, d_model)
        if _THRESHOLD in tensors:
            expected[_THRESHOLD] = (d_t,)
        check_tensors(tensors, expected, path, folder / CIRCUIT_TRACER_CONFIG, f"d_transcoder={d_t}, d_model={d_model}")
        jumprelu = _THRESHOLD in tensors
        if jumprelu:
            _check_thresholds(folder, f"{path.name}'s {_THRESHOLD}", tensors[_THRESHOLD])
        cfg = SAEConfig(architecture="jumprelu" if jumprelu else "relu", d_sae=d_t, skip_connection="W_skip" in tensors)
        sae = create_dictionary(cfg, d_model, hook_name=hook_in.format(layer=layer), model_name=model, d_out=d_model,
                                hook_out=hook_out.format(layer=layer), device=device, dtype=dtype)
        with torch.no_grad():
            sae.W_enc.copy_(tensors["W_enc"].T)
            sae.W_dec.copy_(tensors["W_dec"])
            sae.b_enc.copy_(tensors["b_enc"])
            sae.b_dec.copy_(tensors["b_dec"])
            if sae.W_skip is not None:
                sae.W_skip.copy_(tensors["W_skip"].T)
        if jumprelu:
            sae.set_threshold(tensors[_THRESHOLD].to(dtype))
        sae.saved_config = sae.config_dict(extra={"source": {**source, "file": path.name}})
        members[layer] = sae
        activations.append("jump_relu" if jumprelu else "relu")
    try:
        result = TranscoderSet(members)
    except ValueError as e:
        raise DictionaryLoadError(f"{folder} holds transcoders that do not form one set ({e}).") from e
    source["conversions"] = ["W_enc transposed to [d_model, d_transcoder]", "W_skip transposed to [d_in, d_out]",
                             "JumpReLU thresholds kept as absolute values"]
    source["activations"] = activations
    return result


def _read_clt(folder: Path, hook_in: str, hook_out: str, model: str, device, dtype, source: dict) -> CrossLayerTranscoder:
    config_path = folder / CIRCUIT_TRACER_CONFIG
    encoders = _numbered_files(folder, "W_enc_")
    n = len(encoders)
    enc = [read_weights(path, config_path) for path in encoders]
    if any(f"b_enc_{i}" not in t or t[f"b_enc_{i}"].ndim != 1 or f"b_dec_{i}" not in t or t[f"b_dec_{i}"].ndim != 1
           for i, t in enumerate(enc)):
        raise DictionaryLoadError(f"{folder}'s W_enc_<i>.safetensors files lack b_enc_<i> or b_dec_<i> of one "
                                  f"dimension; they are not circuit-tracer CLT files.")
    d_t, d_model = len(enc[0]["b_enc_0"]), len(enc[0]["b_dec_0"])
    jumprelu = "threshold_0" in enc[0]
    decoders = []
    for i, (path, tensors) in enumerate(zip(encoders, enc)):
        expected = {f"W_enc_{i}": (d_t, d_model), f"b_enc_{i}": (d_t,), f"b_dec_{i}": (d_model,),
                    **({f"threshold_{i}": (d_t,)} if jumprelu else {})}
        if (f"threshold_{i}" in tensors) != jumprelu:
            raise _refuse(folder, f"threshold_{i} is {'present' if not jumprelu else 'missing'} in {path.name} but "
                          f"{'absent' if not jumprelu else 'present'} in W_enc_0.safetensors",
                          "so its layers disagree on their activation function (circuit-tracer reads layer 0's)")
        sizes = f"d_transcoder={d_t}, d_model={d_model}, {n} layers"
        check_tensors(tensors, expected, path, config_path, sizes)
        dec_path = folder / f"W_dec_{i}.safetensors"
        dec = read_weights(dec_path, config_path)
        check_tensors(dec, {f"W_dec_{i}": (d_t, n - i, d_model)}, dec_path, config_path, sizes)
        decoders.append(dec[f"W_dec_{i}"])
        if jumprelu:
            _check_thresholds(folder, f"{path.name}'s threshold_{i}", tensors[f"threshold_{i}"])
    cfg = SAEConfig(architecture="jumprelu", d_sae=d_t)
    clt = CrossLayerTranscoder(cfg, d_model, layers=range(n), model_name=model, d_out=d_model, input_hook=hook_in,
                               output_hook=hook_out, device=device, dtype=dtype)
    with torch.no_grad():
        clt.W_enc.copy_(torch.stack([t[f"W_enc_{i}"].T for i, t in enumerate(enc)]))
        clt.b_enc.copy_(torch.stack([t[f"b_enc_{i}"] for i, t in enumerate(enc)]))
        clt.b_dec.copy_(torch.stack([t[f"b_dec_{i}"] for i, t in enumerate(enc)]))
        for W, t in zip(clt.W_dec, decoders):
            W.copy_(t)
    clt.set_threshold(torch.stack([t[f"threshold_{i}"] for i, t in enumerate(enc)]) if jumprelu
                      else torch.zeros(n, d_t))
    source["activation"] = "jump_relu" if jumprelu else "relu"
    source["conversions"] = ["W_enc_<i> transposed to [d_model, d_transcoder]"] + (
        ["JumpReLU thresholds kept as absolute values"] if jumprelu else
        ["ReLU as jumprelu with thresholds 0 (pre * (pre > 0) = relu(pre))"])
    return clt


# ----------------------------------------------------------------------------------------------
# Writing


def _their_hook(hook: str, layer: int, table: dict[str, str], what: str) -> str:
    m = re.fullmatch(rf"blocks\.{layer}\.(.+)", hook)
    if m is None or m.group(1) not in table:
        raise DictionaryFormatError(f"{what} {hook} of layer {layer} has no circuit-tracer name (it maps "
                                    f"{', '.join('blocks.N.' + h for h in table)}), so it cannot be exported there.")
    return table[m.group(1)]


def _check_layers(layers: tuple[int, ...], model_name: str) -> None:
    if layers != tuple(range(len(layers))):
        raise DictionaryFormatError(f"this replacement model covers layers {list(layers)}, but circuit-tracer replaces "
                                    f"every MLP of the model from layer 0 on; export one that covers layers 0..n-1.")
    config = Path(model_name).expanduser() / "config.json"
    if config.is_file():  # a local model folder: check that every layer is covered
        data = json.loads(config.read_text())
        n_layers = data.get("num_hidden_layers", data.get("n_layer"))
        if isinstance(n_layers, int) and n_layers != len(layers):
            raise DictionaryFormatError(f"the model {model_name} has {n_layers} layers but this replacement model "
                                        f"covers {len(layers)}; circuit-tracer replaces every MLP, so cover them all.")


def _jumprelu_thresholds(architecture: str, threshold: Tensor, d_sae: int, what: str) -> Optional[Tensor]:
    """circuit-tracer's JumpReLU thresholds [d_sae] for an activation of ours; None for ReLU."""
    if architecture == "relu":
        return None
    if architecture == "topk":
        raise DictionaryFormatError(f"{what} is topk, and circuit-tracer has no top-k activation in its files; export a "
                                    f"relu, jumprelu or batchtopk one.")
    if architecture == "jumprelu":
        return threshold.detach().float().cpu()
    if float(threshold) < 0:
        raise DictionaryFormatError(f"{what} has no calibrated inference threshold yet (it is {float(threshold)}); "
                                    f"calibrate_threshold on training activations first, as the trainer does.")
    return torch.full((d_sae,), float(threshold))


MlpInputAffine = dict[int, tuple[Tensor, Optional[Tensor]]]
"""Layer -> (weight [d], bias [d] or None) of the norm before its MLP, as applied: the MLP's input is
`ln2.hook_normalized * weight + bias` (`LanguageModel.mlp_input_affine`)."""


def _fold_mlp_input(tensors: dict[str, Tensor], weight: Tensor, bias: Optional[Tensor], enc: str, b_enc: str,
                    what: str) -> None:
    """Rewrite an encoder (and skip path) that reads x = ln2.hook_normalized into one that reads the MLP's
    input y = x * weight + bias: x W + b = y (W / weight) + (b - (bias / weight) W)."""
    weight = weight.detach().float().cpu()
    if bool((weight.abs() < 1e-6).any()):
        raise DictionaryFormatError(f"{what} reads the normalized vector before a norm weight with (near) zero entries, "
                                    f"which cannot be folded into its encoder; export it for circuit-tracer's "
                                    f"TransformerLens backend without the model (its ln2.hook_normalized hook).")
    shift = None if bias is None else bias.detach().float().cpu() / weight  # [d]
    W = tensors[enc].float()  # [d, d_sae]
    if shift is not None:
        tensors[b_enc] = tensors[b_enc].float() - shift @ W
    tensors[enc] = W / weight[:, None]
    if "W_skip" in tensors:  # [d, d_out]: the skip path reads the same input
        W_skip = tensors["W_skip"].float()
        if shift is not None:
            tensors["b_dec"] = tensors["b_dec"].float() - shift @ W_skip
        tensors["W_skip"] = W_skip / weight[:, None]


def write_circuit_tracer(model: CrossLayerTranscoder | TranscoderSet, folder: str | Path, *,
                         mlp_input_affine: Optional[MlpInputAffine] = None) -> Path:
    """Write a transcoder set or CLT as a circuit-tracer folder (normalization folded) that
    circuit-tracer 0.5 loads as it is, from its absolute path; or refuse with one sentence. `folder`
    must be new, empty, or an earlier circuit-tracer folder (it is replaced as a whole, so that no
    stale layer file stays behind). A model reading `ln2.hook_normalized` is written for
    circuit-tracer's `ln2.hook_normalized` (its TransformerLens backend only), or, given the model's
    `mlp_input_affine` (every layer's), with the norms folded into its encoders for `mlp.hook_in`,
    which every backend reads."""
    folder = Path(folder).expanduser()
    if folder.exists() and any(folder.iterdir()) and not is_circuit_tracer_folder(folder):
        raise DictionaryFormatError(f"{folder} exists and is not a circuit-tracer folder; export into a new folder.")
    _check_layers(model.layers, model.model_name)
    hook_in = {_their_hook(h, l, _OUR_HOOKS_IN, "the input hook") for h, l in zip(model.hook_names, model.layers)}
    fold = None
    if mlp_input_affine is not None and hook_in == {"ln2.hook_normalized"}:
        missing = sorted(set(model.layers) - set(mlp_input_affine))
        if missing:
            raise DictionaryFormatError(f"mlp_input_affine has no norm weight for layers {missing}; pass every layer's.")
        fold, hook_in = mlp_input_affine, {"mlp.hook_in"}
    if isinstance(model, CrossLayerTranscoder):
        files, hooks = _clt_files(model, fold), (model.hook_names, model.hooks_out)
        kind = "cross_layer_transcoder"
    else:
        files, hooks = _set_files(model, fold), (model.hook_names, model.hooks_out)
        kind = "transcoder_set"
    hook_out = {_their_hook(h, l, _OUR_HOOKS_OUT, "the output hook") for h, l in zip(hooks[1], model.layers)}
    if len(hook_in) != 1 or len(hook_out) != 1:
        raise DictionaryFormatError(f"the layers read or write different hooks ({sorted(hook_in | hook_out)}); "
                                    f"circuit-tracer has one input and one output hook for all layers.")
    config = {"model_kind": kind, "feature_input_hook": hook_in.pop(), "feature_output_hook": hook_out.pop(),
              "model_name": model.model_name, "exported_by": "gpt2-dictionary"}
    files[CIRCUIT_TRACER_CONFIG] = yaml.safe_dump(config, sort_keys=False).encode()
    tmp = temp_sibling(folder, folder=True)
    try:
        write_folder(tmp, files, CIRCUIT_TRACER_CONFIG)
        publish(tmp, folder)
    finally:
        if tmp.exists():
            remove_tree(tmp)
    return folder


def _clt_files(clt: CrossLayerTranscoder, fold: Optional[MlpInputAffine]) -> dict[str, dict[str, Tensor]]:
    if clt.d_in != clt.d_out:
        raise DictionaryFormatError(f"this CLT reads d_in={clt.d_in} and writes d_out={clt.d_out}; circuit-tracer's "
                                    f"CLTs have one width (d_model) for both.")
    if clt.W_skip is not None:
        raise DictionaryFormatError("this CLT has skip paths, which circuit-tracer's CLT files cannot hold (its loader "
                                    "reads no W_skip); export one without skip_connection.")
    t = clt._folded_tensors()
    thresholds = _jumprelu_thresholds(clt.architecture, clt.theta() if clt.architecture == "jumprelu" else
                                      t.get("threshold"), clt.d_sae, "this CLT")
    files: dict[str, dict[str, Tensor]] = {}
    for i in range(clt.n_layers):
        layer_t = {"W_enc": t["W_enc"][i], "b_enc": t["b_enc"][i]}
        if fold is not None:
            _fold_mlp_input(layer_t, *fold[clt.layers[i]], "W_enc", "b_enc", f"layer {clt.layers[i]} of this CLT")
        enc = {f"W_enc_{i}": layer_t["W_enc"].T, f"b_enc_{i}": layer_t["b_enc"], f"b_dec_{i}": t["b_dec"][i]}
        if thresholds is not None:
            enc[f"threshold_{i}"] = thresholds[i] if thresholds.ndim == 2 else thresholds
        files[f"W_enc_{i}.safetensors"] = {k: v.float().contiguous() for k, v in enc.items()}
        files[f"W_dec_{i}.safetensors"] = {f"W_dec_{i}": t[f"W_dec_{i}"].float().contiguous()}
    return files


def _set_files(transcoders: TranscoderSet, fold: Optional[MlpInputAffine]) -> dict[str, dict[str, Tensor]]:
    if transcoders.d_in != transcoders.d_out:
        raise DictionaryFormatError(f"this set's transcoders read d_in={transcoders.d_in} and write "
                                    f"d_out={transcoders.d_out}; circuit-tracer's have one width (d_model) for both.")
    skips = {m.W_skip is not None for m in transcoders}
    if len(skips) > 1:
        raise DictionaryFormatError("only some members of this set have skip paths; circuit-tracer takes the first "
                                    "member's for all, so export a set whose members all have one or none.")
    files = {}
    for layer, m in zip(transcoders.layers, transcoders):
        t = dict(m._folded_tensors())
        if fold is not None:
            _fold_mlp_input(t, *fold[layer], "W_enc", "b_enc", f"the member of layer {layer}")
        out = {"W_enc": t["W_enc"].T, "W_dec": t["W_dec"], "b_enc": t["b_enc"], "b_dec": t["b_dec"]}
        if m.W_skip is not None:
            out["W_skip"] = t["W_skip"].T
        threshold = _jumprelu_thresholds(m.architecture, m.theta() if m.architecture == "jumprelu" else
                                         getattr(m, "threshold", None), m.d_sae, f"the member of layer {layer}")
        if threshold is not None:
            out[_THRESHOLD] = threshold
        files[f"layer_{layer}.safetensors"] = {k: v.float().contiguous() for k, v in out.items()}
    return files


__all__ = ["CIRCUIT_TRACER_CONFIG", "MlpInputAffine", "is_circuit_tracer_folder", "read_circuit_tracer",
           "write_circuit_tracer"]
