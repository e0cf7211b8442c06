"""Interventions: scale or set feature activations at their positions in the replacement model and
read the new next-token distribution.

The prompt runs through the model's `TransformerBridge` with every covered MLP's output replaced by
its replacement's reconstruction plus the error node (`local_model.error_vectors`, held at its value
on the prompt); an uncovered layer's MLP output is held at its value (all error); position 0 (BOS)
keeps its MLP outputs. With no intervention this reproduces the model's logits. Intervened features
take `scale` times their activation on the prompt (0: ablation) or `value`; at each covered layer:

- `propagate=True` (default): every other feature is recomputed from its layer's input as the
  intervention changed it, so the effect travels through later features (their nonlinearities);
- `propagate=False`: every other feature keeps its activation on the prompt, so only the direct
  effects remain: with frozen attention the change in each logit minus the mean logit is then exactly
  -sum of (1 - scale) x the graph's edge from each intervened feature to that logit.

`freeze_attention=True` (default) keeps every attention pattern and normalization denominator at its
value on the prompt, as in the local replacement model the graph describes (circuit-tracer's
`feature_intervention` freezes attention the same way); False recomputes them.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from ..errors import AttributionError
from ..lm import LanguageModel
from .attribute import MAX_PROMPT_TOKENS, as_replacement_model, check_replacement_matches, prompt_tokens
from .local_model import ActiveFeatures, LocalReplacementModel, block_hook, error_vectors

MAX_INTERVENTIONS = 256


class FeatureIntervention(NamedTuple):
    layer: int
    position: int
    feature: int
    scale: float = 0.0
    """The feature's new activation is scale x its activation on the prompt (0: ablated)."""
    value: Optional[float] = None
    """Or exactly this activation (when set, `scale` is ignored)."""


class TokenProbability(NamedTuple):
    token_id: int
    token: str
    probability: float
    logit: float


class InterventionResult(NamedTuple):
    original: list[TokenProbability]
    """The model's most probable next tokens without intervention."""
    intervened: list[TokenProbability]
    """The most probable next tokens with the interventions."""
    original_logits: Tensor
    """[d_vocab] at the last position."""
    intervened_logits: Tensor
    applied: list[tuple[int, int, int, float, float]]
    """(layer, position, feature, activation on the prompt, activation set) of each intervention."""


def top_tokens(model: LanguageModel, logits: Tensor, k: int) -> list[TokenProbability]:
    probabilities = torch.softmax(logits.float(), dim=-1)
    top = torch.topk(probabilities, min(k, len(probabilities)))
    ids = top.indices.tolist()
    strings = model.tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    return [TokenProbability(i, s, float(p), float(logits[i])) for i, s, p in zip(ids, strings, top.values.tolist())]


@torch.no_grad()
def intervene(prompt: str | Sequence[int], replacement, model: LanguageModel,
              interventions: Sequence[FeatureIntervention], *, top_k: int = 10, propagate: bool = True,
              freeze_attention: bool = True, max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> InterventionResult:
    """The next-token distribution of `prompt` with `interventions` applied in the replacement model
    (module doc). AttributionError for an intervention at a layer, position or feature that does not exist."""
    replacement = as_replacement_model(replacement)
    check_replacement_matches(model, replacement)
    replacement = replacement.to(model.device).eval()
    tokens = prompt_tokens(model, prompt, max_prompt_tokens)
    if len(interventions) > MAX_INTERVENTIONS:
        raise AttributionError(f"{len(interventions)} interventions were asked for; at most {MAX_INTERVENTIONS} at once.")
    local = LocalReplacementModel.capture(model, replacement, tokens)
    active = ActiveFeatures.encode(local, replacement)
    errors = error_vectors(local, replacement, active)
    P, layers = local.n_pos, replacement.layers
    original = {(l, p, f): a for l, p, f, a in zip(active.layers.tolist(), active.positions.tolist(),
                                                   active.features.tolist(), active.activations.tolist())}
    overrides: dict[int, list[tuple[int, int, float]]] = {}
    applied = []
    for i in interventions:
        layer, position, feature = int(i.layer), int(i.position), int(i.feature)
        if layer not in layers or not 1 <= position < P or not 0 <= feature < replacement.d_sae:
            raise AttributionError(f"Intervention on feature {feature} of layer {layer} at position {position}: the "
                                   f"replacement model covers layers {list(layers)} with features 0.."
                                   f"{replacement.d_sae - 1}, and positions run 1..{P - 1} (0 is the BOS).")
        before = original.get((layer, position, feature), 0.0)
        after = float(i.value) if i.value is not None else float(i.scale) * before
        if not math.isfinite(after):
            raise AttributionError(f"The intervention on feature {feature} of layer {layer} sets a non-finite activation.")
        overrides.setdefault(layer, []).append((position, feature, after))
        applied.append((layer, position, feature, before, after))

    prompt_features = {}
    for l in layers:
        dense = torch.zeros(P, replacement.d_sae, device=local.device)
        mask = active.layers == l
        dense[active.positions[mask], active.features[mask]] = active.activations[mask]
        prompt_features[l] = dense
    decoder_bias = replacement.decoder_bias().float()
    inputs: dict[int, Tensor] = {}
    features: dict[int, Tensor] = {}

    def read_input(x: Tensor, hook, layer: int) -> None:
        inputs[layer] = x[0].float()

    def mlp_output(out: Tensor, hook, layer: int) -> Tensor:
        if layer not in layers:
            return local.mlp_out[layer][None].to(out.dtype)
        x = inputs[layer]
        f = replacement.encode_layer(x, layer).float() if propagate else prompt_features[layer].clone()
        for position, feature, value in overrides.get(layer, []):
            f[position, feature] = value
        features[layer] = f
        y = decoder_bias[layers.index(layer)] + errors[layer]
        if layer in local.skip:
            y = y + x @ local.skip[layer]
        for source in layers[:layers.index(layer) + 1]:
            targets = replacement.target_layers(source)
            if layer in targets:
                y = y + replacement.decode_layer(features[source], source)[:, targets.index(layer)].float()
        y[0] = local.mlp_out[layer, 0]  # position 0 has no nodes: its output stays
        return y[None].to(out.dtype)

    hooks = []
    for l, hook_in in zip(layers, replacement.hook_names):
        hooks.append((hook_in, lambda x, hook, l=l: read_input(x, hook, l)))
    for l in range(local.n_layers):
        hooks.append((block_hook("hook_mlp_out", l), lambda out, hook, l=l: mlp_output(out, hook, l)))
        if freeze_attention:
            hooks.append((block_hook("attn.hook_pattern", l), _frozen(local.attention[l].pattern[None])))
            for name, norm in (("ln1", local.ln1[l]), ("ln2", local.ln2[l])):
                hooks.append((block_hook(f"{name}.hook_scale", l), _frozen((1 / norm.inv_scale)[None, :, None])))
    if freeze_attention:
        hooks.append(("ln_final.hook_scale", _frozen((1 / local.ln_final.inv_scale)[None, :, None])))
    with warnings.catch_warnings():  # (the bridge says frozen norms leave its native path: that is the point)
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")
        logits = model.bridge.run_with_hooks(local.tokens[None], fwd_hooks=hooks)[0, -1].float()
    return InterventionResult(top_tokens(model, local.logits[-1], top_k), top_tokens(model, logits, top_k),
                              local.logits[-1].cpu(), logits.cpu(), applied)


def _frozen(value: Tensor):
    """A hook that replaces an activation by `value` (its value on the prompt)."""
    def hook(activation: Tensor, hook) -> Tensor:
        return value.to(activation.dtype)
    return hook


__all__ = ["FeatureIntervention", "InterventionResult", "TokenProbability", "intervene", "top_tokens"]
