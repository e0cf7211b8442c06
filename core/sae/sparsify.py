"""sparsify folders in and out.

In: one hookpoint's folder of a sparsify run (`cfg.json` + `sae.safetensors`; the run's
`config.json` one folder up names the model), top-k sparse coders and transcoders. Out:
`write_sparsify` writes a top-k dictionary as a folder `SparseCoder.load_from_disk` reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from ..errors import DictionaryFormatError
from .base import SparseAutoencoder
from .normalization import Scaling, TokenStandardization
from .foreign import (FOREIGN_CONFIG, SPARSIFY_RUN_CONFIG, SPARSIFY_WEIGHTS, ForeignDictionary, check_tensors,
                      positive_int, read_json, read_weights, refuse, write_folder)

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


def read_sparsify(folder: Path) -> ForeignDictionary:
    config = folder / FOREIGN_CONFIG
    raw = read_json(config)
    activation = raw.get("activation", "topk")
    if activation != "topk":
        raise refuse(config, f"activation is {activation!r}", "an activation this library does not have (it has "
                      "sparsify's topk)")
    if raw.get("signed"):
        raise refuse(config, "signed is true", "signed latents, which this library does not have")
    d_in = positive_int(config, "d_in", raw.get("d_in"))
    num_latents = raw.get("num_latents") or 0
    d_sae = positive_int(config, "num_latents", num_latents) if num_latents else \
        d_in * positive_int(config, "expansion_factor", raw.get("expansion_factor", 32))
    k = positive_int(config, "k", raw.get("k", 32))
    if k > d_sae:
        raise refuse(config, f"k is {k}", f"more than its {d_sae} latents")
    transcoder, skip = bool(raw.get("transcode")), bool(raw.get("skip_connection"))
    if skip and not transcoder:
        raise refuse(config, "skip_connection is true on an autoencoder (transcode is false)",
                      "a linear path from the input to its own reconstruction, which this library's SAEs do not have")
    # The hookpoint is the folder's name (`<hookpoint>/seed<N>` when a run trained several seeds).
    hook_folder = folder.parent if re.fullmatch(r"seed\d+", folder.name) else folder
    hookpoint = hook_folder.name
    hooks = sparsify_hooks(hookpoint, transcoder)
    run_config = hook_folder.parent / SPARSIFY_RUN_CONFIG
    model = read_json(run_config).get("model") if run_config.is_file() else None

    weights = folder / SPARSIFY_WEIGHTS
    tensors = read_weights(weights, config)
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if skip:
        expected["W_skip"] = (d_in, d_in)
    check_tensors(tensors, expected, weights, config, f"d_in={d_in}, {d_sae} latents")
    t = {"W_enc": tensors["encoder.weight"].double().T, "b_enc": tensors["encoder.bias"].double(),
         "W_dec": tensors["W_dec"].double(), "b_dec": tensors["b_dec"].double()}
    conversions = ["encoder.weight transposed to W_enc"]
    if skip:
        t["W_skip"] = tensors["W_skip"].double().T
        conversions.append("W_skip transposed to [d_in, d_out]")
    source = {"format": "sparsify", "version": "sparse_coder", "path": str(folder.resolve()), "hookpoint": hookpoint,
              "transcode": transcoder, "model_name": model, "dtype": str(tensors["W_dec"].dtype).removeprefix("torch."),
              "conversions": conversions}
    return ForeignDictionary(architecture="topk", d_in=d_in, d_sae=d_sae, d_out=d_in if transcoder else None, k=k,
                    skip=skip, hook_name=hooks[0] if hooks else None, hook_out=hooks[1] if hooks else None,
                    model_name=model, tensors=t, source=source)



def write_sparsify(sae: SparseAutoencoder, folder: str | Path) -> Path:
    """Write a top-k `dictionary` as a sparsify folder (cfg.json + sae.safetensors) that sparsify's
    `SparseCoder.load_from_disk` reads with the same encode / decode. sparsify's per-hookpoint folder
    has no place for the model and hook names; name the folder after the hookpoint (e.g. `h.6`)."""
    if not isinstance(sae.normalization, Scaling):
        what = "standardizes each token (input_layer_norm)" if isinstance(sae.normalization, TokenStandardization) \
            else "reads the residual stream of a model with centered writing weights (residual_centering)"
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
    return write_folder(Path(folder), {SPARSIFY_WEIGHTS: out, FOREIGN_CONFIG: json.dumps(cfg, indent=2).encode()},
                         FOREIGN_CONFIG)

