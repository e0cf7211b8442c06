"""The local replacement model of one prompt, and the batched transposed pass that gives direct effects.

Conventions (Anthropic, "Circuit Tracing: Revealing Computational Graphs in Language Models", 2025,
transformer-circuits.pub/2025/attribution-graphs/methods.html, § "Local replacement model"; and
circuit-tracer 0.5, `replacement_model/replacement_model_transformerlens.py` and
`attribution/context_transformerlens.py`):

- **Frozen nonlinearities.** Every attention pattern and every normalization denominator (the
  `hook_scale` of `ln1`, `ln2` and `ln_final`) keeps the value it has on this prompt. What remains
  between the residual stream's writers and its readers is linear: normalizations are
  x -> center(x) / s * w + b (RMSNorm: no centering, no bias), attention is
  x -> sum_h pattern_h (x W_V,h + b_V,h) W_O,h + b_O (grouped-query heads share their V).
- **MLPs replaced.** Each covered MLP's output is its replacement's reconstruction (feature
  activations times decoders, plus decoder bias and skip path) plus an **error node**: the MLP's
  true output minus the reconstruction, per layer and position, held fixed. A CLT feature of layer l
  writes to the MLP outputs of l and every later covered layer. A layer the replacement model does
  not cover is all error (its whole MLP output). Feature activations are held fixed too: an edge is
  a *direct* effect, through the frozen linear paths only, never through another feature's
  nonlinearity. The skip path (x -> x W_skip, linear) stays in the gradient's path, as in
  circuit-tracer.
- **Position 0** (the BOS token every prompt starts with) has no feature and no error nodes: its MLP
  outputs are constants of the model (an attention sink), as circuit-tracer zeroes `zero_positions`
  = slice(0, 1). Its token embedding is a node.
- **Nodes** are ordered as circuit-tracer's `Graph`: active features (sorted by layer, position,
  feature), error nodes (layer-major: layer * n_pos + position, every layer of the model), token
  embeddings (one per position), then the logits.
- **Edge weight** A[t, s] = direct effect of source s on target t: for a feature source,
  a_s * sum over its target layers m of (decoder_s[m] . dT/d(mlp_out_m)[pos_s]); for an error node,
  error . dT/d(mlp_out_m)[pos]; for a token, its embedding row . dT/d(resid_pre_0)[pos]. The target
  T is a feature's pre-activation (encoder . x at its input hook; its bias is not an edge) or a
  logit minus the mean logit over the vocabulary (the demeaned unembedding column . ln_final's
  output; b_U is not an edge). So a target's incoming edges plus the biases (encoder bias, b_U,
  normalization and attention biases, decoder biases, position embeddings, position 0's MLP
  outputs) add up to its pre-activation on this prompt exactly: the model is linear in its sources.

How: `LocalReplacementModel.capture` runs the prompt once through the `TransformerBridge`, keeping
the frozen values, each block's residual stream and MLP input / output; `check` recomputes the
residual stream from those frozen pieces and refuses an architecture whose blocks are not
pre-norm attention + MLP (it would be attributed wrongly). `edge_rows` is the vector-Jacobian
product of the frozen linear model written out by hand (the transposes of the ops above), for a
batch of targets at once: one pass from the batch's highest layer down to the embeddings, with
every position after the batch's last one left out (the model is causal), no forward over a batch
of copies and no autograd graph. Each block contracts the gradient with every source writing there
(the active features' activation-scaled decoders, grouped by position for one batched product, the
error vectors) into the targets' rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..errors import AttributionError
from ..lm import LanguageModel, normalization_affine
from ..sae import ReplacementModel

READ_POINTS = {"mlp.hook_in": "mlp_input", "ln2.hook_out": "mlp_input", "ln2.hook_normalized": "normalized",
               "hook_resid_mid": "resid_mid"}
"""Where a replacement model's features may read, per block: the MLP input (the second norm's output,
`mlp.hook_in` = `ln2.hook_out`), the second norm's normalized vector before its weight and bias
(TransformerLens's `ln2.hook_normalized`: center(x) / scale), or the residual stream before it."""
SUPPORTED_OUTPUT_HOOKS = ("hook_mlp_out", "mlp.hook_out")
CHECK_TOLERANCE = 1e-3
"""Largest difference, relative to the activations' scale, between a block's residual stream and
its recomputation from the frozen pieces: above it the architecture is refused."""


class FrozenNorm(NamedTuple):
    """A LayerNorm or RMSNorm with its denominators fixed: x -> center(x) * inv_scale * weight + bias."""

    weight: Optional[Tensor]
    """[d] the affine weight as applied (1 + w for norms that store an offset), or None."""
    bias: Optional[Tensor]
    """[d] or None (RMSNorm)."""
    centered: bool
    """LayerNorm subtracts each vector's mean; RMSNorm does not."""
    inv_scale: Tensor
    """[n_pos] 1 / the denominator at each position on this prompt."""

    def forward(self, x: Tensor) -> Tensor:
        """x [..., P, d] -> the normalized [..., P, d], denominators frozen."""
        if self.centered:
            x = x - x.mean(-1, keepdim=True)
        x = x * self.inv_scale[: x.shape[-2], None]
        if self.weight is not None:
            x = x * self.weight
        return x if self.bias is None else x + self.bias

    def normalized(self, x: Tensor) -> Tensor:
        """center(x) * inv_scale: the vector before the weight and bias (`hook_normalized`)."""
        return self._replace(weight=None, bias=None).forward(x)

    def transpose(self, g: Tensor) -> Tensor:
        """The transpose of the frozen map on gradients g [B, P', d] (centering is symmetric)."""
        g = g * self.inv_scale[: g.shape[1], None]
        if self.weight is not None:
            g = g * self.weight
        return g - g.mean(-1, keepdim=True) if self.centered else g


class FrozenAttention(NamedTuple):
    """An attention layer with its pattern fixed: linear in its input."""

    pattern: Tensor
    """[H, P, P] (query, key) on this prompt."""
    W_V: Tensor
    """[H_kv, d, d_head]; head h reads value head h // (H / H_kv) (grouped-query attention)."""
    W_O: Tensor
    """[H, d_head, d]."""
    b_V: Optional[Tensor]
    """[H_kv, d_head] or None."""
    b_O: Optional[Tensor]
    """[d] or None."""

    def forward(self, x: Tensor) -> Tensor:
        """x [P, d] (the first norm's output) -> the attention output [P, d]."""
        H, H_kv = self.W_O.shape[0], self.W_V.shape[0]
        v = torch.einsum("pd,kde->kpe", x, self.W_V)  # [H_kv, P, d_head]
        if self.b_V is not None:
            v = v + self.b_V[:, None]
        v = v.repeat_interleave(H // H_kv, dim=0)  # [H, P, d_head]
        z = self.pattern @ v  # [H, P, d_head]
        out = torch.einsum("hpe,hed->pd", z, self.W_O)
        return out if self.b_O is None else out + self.b_O

    def transpose(self, g: Tensor) -> Tensor:
        """The transpose on gradients g [B, P', d] of the output -> gradients of the input [B, P', d].

        Per value head k: gv_k = sum over the heads h reading it of pattern_h^T (g W_O,h^T), done as one
        product per value head with those heads' patterns side by side (the sum happens inside it)."""
        B, P, d = g.shape
        H, d_head, _ = self.W_O.shape
        H_kv = self.W_V.shape[0]
        group = H // H_kv
        gz = (g @ self.W_O.reshape(H * d_head, d).T).view(B, P, H_kv, group, d_head)
        gz = gz.permute(2, 3, 1, 0, 4).reshape(H_kv, group * P, B * d_head)  # [k, (head, query), (B, d_head)]
        patterns = self.pattern[:, :P, :P].view(H_kv, group, P, P).permute(0, 3, 1, 2).reshape(H_kv, P, group * P)
        gv = torch.bmm(patterns, gz)  # [k, key, (B, d_head)]
        gv = gv.view(H_kv, P, B, d_head).permute(2, 1, 0, 3).reshape(B, P, H_kv * d_head)
        return gv @ self.W_V.permute(1, 0, 2).reshape(d, H_kv * d_head).T


def _frozen_norm(norm, scale: Tensor) -> FrozenNorm:
    """A bridge's NormalizationBridge with its `hook_scale` values `scale` [P, 1] (as the bridge
    applies weight and bias: `NormalizationBridge._apply_weight_and_bias`)."""
    weight, bias, rms = normalization_affine(norm)
    return FrozenNorm(weight, bias, not rms, 1.0 / scale.reshape(-1).float())


def _frozen_attention(attn, pattern: Tensor) -> FrozenAttention:
    def weight(name: str) -> Optional[Tensor]:
        value = getattr(attn, name, None)
        return None if value is None else value.detach().float()

    W_V, W_O = weight("W_V"), weight("W_O")
    if W_V is None or W_O is None or W_V.ndim != 3 or W_O.ndim != 3 or W_O.shape[0] % W_V.shape[0]:
        raise AttributionError("The model's attention has no per-head value and output weights (W_V, W_O) that "
                               "attribution can use; attribution graphs support GPT-2- and Llama-style models.")
    return FrozenAttention(pattern.float(), W_V, W_O, weight("b_V"), weight("b_O"))


def block_hook(template: str, layer: int) -> str:
    return f"blocks.{layer}.{template}"


def hook_suffix(hook_name: str, layer: int) -> str:
    """`blocks.3.ln2.hook_normalized` -> `ln2.hook_normalized`."""
    prefix = f"blocks.{layer}."
    return hook_name[len(prefix):] if hook_name.startswith(prefix) else hook_name


@dataclass
class LocalReplacementModel:
    """A prompt's frozen model and replacement (see the module doc). Tensors are float32 on the
    model's device; P = n_pos positions, d = d_model."""

    tokens: Tensor
    """[P] the prompt's token ids, BOS first."""
    ln1: list[FrozenNorm]
    attention: list[FrozenAttention]
    ln2: list[FrozenNorm]
    ln_final: FrozenNorm
    W_U: Tensor
    """[d, d_vocab]."""
    b_U: Optional[Tensor]
    token_vectors: Tensor
    """[P, d] the token embedding rows (the token nodes' vectors)."""
    resid_pre: Tensor
    """[n_layers + 1, P, d]: block l's input; the last is the final residual stream."""
    resid_mid: Tensor
    """[n_layers, P, d]."""
    mlp_in: Tensor
    """[n_layers, P, d] the MLP inputs (the second norm's outputs)."""
    feature_inputs: dict[int, Tensor]
    """{covered layer: [P, d_in]} what the replacement model reads there, as the bridge computed it."""
    mlp_out: Tensor
    """[n_layers, P, d] the MLPs' true outputs."""
    logits: Tensor
    """[P, d_vocab] the model's logits."""
    read_point: str
    """Where the features read (a value of READ_POINTS): "mlp_input", "normalized" or "resid_mid"."""
    covered: tuple[int, ...]
    """The layers the replacement model covers."""
    skip: dict[int, Tensor]
    """{layer: [d_in, d_out]} the raw skip-path matrix of each covered layer that has one."""

    @property
    def n_layers(self) -> int:
        return len(self.ln1)

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.token_vectors.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.token_vectors.device

    def feature_input(self, layer: int) -> Tensor:
        """[P, d] what the features of `layer` read."""
        return self.feature_inputs[layer]

    def read(self, layer: int, resid_mid: Tensor) -> Tensor:
        """What the features of `layer` read, as a frozen linear function of block `layer`'s
        residual stream resid_mid [..., P, d]."""
        if self.read_point == "mlp_input":
            return self.ln2[layer].forward(resid_mid)
        return self.ln2[layer].normalized(resid_mid) if self.read_point == "normalized" else resid_mid

    def read_transpose(self, layer: int, g: Tensor) -> Tensor:
        """The transpose of `read` on gradients g [B, P', d_in] -> gradients of resid_mid."""
        if self.read_point == "mlp_input":
            return self.ln2[layer].transpose(g)
        return self.ln2[layer]._replace(weight=None).transpose(g) if self.read_point == "normalized" else g

    # ------------------------------------------------------------------ capture

    @classmethod
    @torch.no_grad()
    def capture(cls, model: LanguageModel, replacement: ReplacementModel, tokens: Tensor) -> "LocalReplacementModel":
        """Run `tokens` [P] once through the model's bridge and keep what the local replacement model
        needs. The replacement model must read and write hooks this module supports."""
        bridge, n_layers = model.bridge, model.n_layers
        read_point = check_replacement_hooks(replacement)
        names = ["hook_embed", "ln_final.hook_scale", *replacement.hook_names]
        for l in range(n_layers):
            names += [block_hook(h, l) for h in ("ln1.hook_scale", "ln2.hook_scale", "attn.hook_pattern",
                                                 "hook_resid_pre", "hook_resid_mid", "mlp.hook_in", "hook_mlp_out")]
        names.append(block_hook("hook_resid_post", n_layers - 1))
        logits, cache = bridge.run_with_cache(tokens[None].to(model.device), names_filter=names,
                                              return_cache_object=False)

        def get(name: str) -> Tensor:
            return cache[name][0].float()

        blocks = bridge.blocks
        ln1 = [_frozen_norm(blocks[l].ln1, get(block_hook("ln1.hook_scale", l))) for l in range(n_layers)]
        ln2 = [_frozen_norm(blocks[l].ln2, get(block_hook("ln2.hook_scale", l))) for l in range(n_layers)]
        attention = [_frozen_attention(blocks[l].attn, get(block_hook("attn.hook_pattern", l))) for l in range(n_layers)]
        W_U = bridge.W_U.detach().float()
        b_U = getattr(bridge, "b_U", None)
        resid_pre = torch.stack([get(block_hook("hook_resid_pre", l)) for l in range(n_layers)]
                                + [get(block_hook("hook_resid_post", n_layers - 1))])
        local = cls(
            tokens=tokens.to(model.device), ln1=ln1, attention=attention, ln2=ln2,
            ln_final=_frozen_norm(bridge.ln_final, get("ln_final.hook_scale")), W_U=W_U,
            b_U=None if b_U is None else b_U.detach().float(),
            token_vectors=bridge.W_E.detach().float()[tokens.to(model.device)],
            resid_pre=resid_pre,
            resid_mid=torch.stack([get(block_hook("hook_resid_mid", l)) for l in range(n_layers)]),
            mlp_in=torch.stack([get(block_hook("mlp.hook_in", l)) for l in range(n_layers)]),
            feature_inputs={l: get(h) for l, h in zip(replacement.layers, replacement.hook_names)},
            mlp_out=torch.stack([get(block_hook("hook_mlp_out", l)) for l in range(n_layers)]),
            logits=logits[0].float(), read_point=read_point, covered=tuple(replacement.layers),
            skip=skip_matrices(replacement))
        local.check(get("hook_embed"), model)
        return local

    def check(self, embed: Tensor, model: LanguageModel) -> None:
        """Refuse (AttributionError) a model whose blocks the frozen pieces do not reproduce: each
        block's attention output, MLP input and the logits are recomputed from them."""
        cfg = model.bridge.cfg
        if getattr(cfg, "parallel_attn_mlp", False) or getattr(cfg, "use_normalization_before_and_after", False):
            raise AttributionError(f"{model.name!r} runs attention and MLP in parallel or normalizes their outputs "
                                   "again; attribution graphs support sequential pre-norm blocks (GPT-2, Llama style).")

        def far(ours: Tensor, theirs: Tensor) -> bool:
            scale = theirs.abs().max().clamp_min(1.0)
            return bool(((ours - theirs).abs().max() / scale) > CHECK_TOLERANCE)

        problems = []
        if far(self.token_vectors, embed):
            problems.append("the token embeddings")
        for l in range(self.n_layers):
            attn = self.attention[l].forward(self.ln1[l].forward(self.resid_pre[l]))
            if far(self.resid_pre[l] + attn, self.resid_mid[l]):
                problems.append(f"block {l}'s attention")
            if far(self.ln2[l].forward(self.resid_mid[l]), self.mlp_in[l]):
                problems.append(f"block {l}'s MLP input")
            if l in self.feature_inputs and far(self.read(l, self.resid_mid[l]), self.feature_inputs[l]):
                problems.append(f"what block {l}'s features read")
            if far(self.resid_mid[l] + self.mlp_out[l], self.resid_pre[l + 1]):
                problems.append(f"block {l}'s residual stream")
        if far(self.unembed(self.ln_final.forward(self.resid_pre[-1])), self.logits):
            problems.append("the logits")
        if problems:
            raise AttributionError(f"{model.name!r}: {', '.join(problems[:3])} cannot be recomputed from frozen "
                                   "attention patterns and normalization denominators; attribution graphs support "
                                   "GPT-2- and Llama-style models only.")

    def unembed(self, x: Tensor) -> Tensor:
        logits = x @ self.W_U
        return logits if self.b_U is None else logits + self.b_U

    # ------------------------------------------------------------------ the transposed pass

    def edge_rows(self, layers: Tensor, positions: Tensor, vectors: Tensor, sources: "SourceVectors",
                  out: Tensor) -> None:
        """Add the direct effects of every source node on a batch of B targets to `out` [B, n_cols]
        (columns: `SourceVectors` order; `out` has one scratch column more, at the end).

        A target b reads `vectors[b]` [d] at block `layers[b]`'s feature input (a feature: its
        encoder vector) or, for `layers[b] == n_layers`, at the final norm's output (a logit: its
        demeaned unembedding column), at position `positions[b]`. layers, positions: int64 [B]."""
        B = len(layers)
        P = int(positions.max()) + 1  # later positions cannot affect these targets
        top = int(layers.max())
        arange = torch.arange(B, device=self.device)
        g = torch.zeros(B, P, self.d_model, device=self.device)
        at_logits = layers == self.n_layers
        if bool(at_logits.any()):
            injected = torch.zeros_like(g)
            injected[arange[at_logits], positions[at_logits]] = vectors[at_logits]
            g += self.ln_final.transpose(injected)
            top = self.n_layers - 1
        live = bool(at_logits.any())  # g is non-zero
        for l in range(min(top, self.n_layers - 1), -1, -1):
            # g: the targets' gradient with respect to block l's output (= its MLP output).
            if live:
                sources.contract(l, g, out)
            reading = layers == l
            g_x = None
            if live and l in self.skip:  # the skip path is linear: the gradient goes through it
                g_x = g @ self.skip[l].T
            if bool(reading.any()):
                if g_x is None:
                    g_x = torch.zeros_like(g)
                g_x[arange[reading], positions[reading]] += vectors[reading]
                live = True
            if not live:
                continue
            if g_x is not None:
                g = g + self.read_transpose(l, g_x)
            g = g + self.ln1[l].transpose(self.attention[l].transpose(g))
        sources.contract_tokens(g, out)


def check_replacement_hooks(replacement: ReplacementModel) -> str:
    """Where the features read (a value of READ_POINTS, the same for every layer); AttributionError
    for hooks attribution does not support."""
    points = set()
    for layer, hook_in, hook_out in zip(replacement.layers, replacement.hook_names, replacement.hooks_out):
        if hook_suffix(hook_in, layer) not in READ_POINTS or hook_suffix(hook_out, layer) not in SUPPORTED_OUTPUT_HOOKS:
            raise AttributionError(f"The replacement model's layer {layer} reads {hook_in} and writes {hook_out}; "
                                   f"attribution needs features that read blocks.N.mlp.hook_in, "
                                   f"blocks.N.ln2.hook_normalized or blocks.N.hook_resid_mid and write "
                                   f"blocks.N.hook_mlp_out.")
        points.add(READ_POINTS[hook_suffix(hook_in, layer)])
    if len(points) > 1:
        raise AttributionError(f"The replacement model's layers read different hooks ({', '.join(replacement.hook_names)}); "
                               "attribution needs one kind of input hook for all of them.")
    return points.pop()


@torch.no_grad()
def skip_matrices(replacement: ReplacementModel) -> dict[int, Tensor]:
    """{layer: [d_in, d_out]} the raw skip paths (x -> x @ W), read through the face's `skip` on
    the identity (it takes stacked inputs [..., L, d_in])."""
    L, d_in = len(replacement.layers), replacement.d_in
    device = next(replacement.parameters()).device
    eye = torch.eye(d_in, device=device)[:, None, :].expand(d_in, L, d_in)
    skip = replacement.skip(eye)
    if skip is None:
        return {}
    return {layer: skip[:, i].float() for i, layer in enumerate(replacement.layers) if bool(skip[:, i].any())}


@dataclass
class ActiveFeatures:
    """The features active on the prompt (position 0 excluded), sorted by (layer, position, feature)."""

    layers: Tensor
    """int64 [n] block numbers."""
    positions: Tensor
    features: Tensor
    activations: Tensor
    """float32 [n]."""

    def __len__(self) -> int:
        return int(self.layers.shape[0])

    @classmethod
    @torch.no_grad()
    def encode(cls, local: LocalReplacementModel, replacement: ReplacementModel) -> "ActiveFeatures":
        parts = []
        for layer in replacement.layers:
            acts = replacement.encode_layer(local.feature_input(layer)[1:], layer).float()  # [P - 1, d_sae]
            positions, features = acts.nonzero(as_tuple=True)
            parts.append((torch.full_like(positions, layer), positions + 1, features, acts[positions, features]))
        layers, positions, features, values = (torch.cat(t) for t in zip(*parts))
        return cls(layers, positions, features, values)

    def encoder_vectors(self, replacement: ReplacementModel) -> Tensor:
        """[n, d_in] the raw encoder vectors (a feature's pre-activation is x . v + b)."""
        return self._per_layer(replacement, replacement.encoder_vectors, (replacement.d_in,))

    def encoder_biases(self, replacement: ReplacementModel) -> Tensor:
        out = torch.empty(len(self), device=self.activations.device)
        for layer in replacement.layers:
            mask = self.layers == layer
            out[mask] = replacement.encoder_bias(layer).float()[self.features[mask]]
        return out

    def _per_layer(self, replacement, read, shape: tuple[int, ...]) -> Tensor:
        out = torch.empty(len(self), *shape, device=self.activations.device)
        with torch.no_grad():
            for layer in replacement.layers:
                mask = self.layers == layer
                if bool(mask.any()):
                    out[mask] = read(layer, self.features[mask]).float()
        return out


class SourceVectors:
    """What every source node writes, arranged for `LocalReplacementModel.edge_rows`.

    Columns: the active features (ActiveFeatures order), then error nodes (layer * P + position),
    then tokens (position); `n_cols` of them, plus one scratch column that padded entries write to."""

    def __init__(self, local: LocalReplacementModel, replacement: ReplacementModel, active: ActiveFeatures,
                 errors: Tensor):
        self.local = local
        self.n_features = len(active)
        P, n_layers = local.n_pos, local.n_layers
        self.error_offset = self.n_features
        self.token_offset = self.n_features + n_layers * P
        self.n_cols = self.token_offset + P
        self.errors = errors  # [n_layers, P, d]
        # Per written layer m: the activation-scaled decoder rows of every feature writing to m,
        # grouped by position and padded to the busiest position: [P, n_max, d] and their columns.
        self.decoders: dict[int, tuple[Tensor, Tensor]] = {}
        written: dict[int, list[tuple[Tensor, Tensor, Tensor]]] = {}
        with torch.no_grad():
            for layer in replacement.layers:
                mask = active.layers == layer
                if not bool(mask.any()):
                    continue
                columns = mask.nonzero().squeeze(1)
                vectors = replacement.decoder_vectors(layer, active.features[mask]).float()  # [n, T, d]
                vectors = vectors * active.activations[mask][:, None, None]
                for t, target in enumerate(replacement.target_layers(layer)):
                    written.setdefault(target, []).append((active.positions[mask], columns, vectors[:, t]))
        for m, parts in written.items():
            positions = torch.cat([p for p, _, _ in parts])
            columns = torch.cat([c for _, c, _ in parts])
            vectors = torch.cat([v for _, _, v in parts])
            order = torch.argsort(positions, stable=True)
            positions, columns, vectors = positions[order], columns[order], vectors[order]
            counts = torch.bincount(positions, minlength=P)
            n_max = int(counts.max())
            slot = torch.arange(len(positions), device=positions.device) - (torch.cumsum(counts, 0) - counts)[positions]
            padded = torch.zeros(P, n_max, local.d_model, device=local.device)
            padded[positions, slot] = vectors
            index = torch.full((P, n_max), self.n_cols, dtype=torch.long, device=local.device)
            index[positions, slot] = columns
            self.decoders[m] = (padded, index)

    def contract(self, layer: int, g: Tensor, out: Tensor) -> None:
        """Add the edges from the sources writing to block `layer`'s MLP output, given the targets'
        gradient g [B, P', d] there."""
        P = g.shape[1]
        if layer in self.decoders:
            padded, index = self.decoders[layer]
            values = torch.bmm(g.transpose(0, 1), padded[:P].transpose(1, 2))  # [P', B, n_max]
            out.index_add_(1, index[:P].flatten(), values.transpose(0, 1).reshape(g.shape[0], -1))
        start = self.error_offset + layer * self.local.n_pos
        out[:, start:start + P] += torch.einsum("bpd,pd->bp", g, self.errors[layer, :P])

    def contract_tokens(self, g: Tensor, out: Tensor) -> None:
        """Add the token edges, given the gradient g [B, P', d] at the embeddings."""
        P = g.shape[1]
        out[:, self.token_offset:self.token_offset + P] += torch.einsum("bpd,pd->bp", g,
                                                                         self.local.token_vectors[:P])


def error_vectors(local: LocalReplacementModel, replacement: ReplacementModel, active: ActiveFeatures) -> Tensor:
    """[n_layers, P, d] each MLP's true output minus the replacement's reconstruction from the active
    features (decoder bias and skip path included); whole MLP outputs at uncovered layers; 0 at
    position 0 (no nodes there)."""
    errors = local.mlp_out.clone()
    with torch.no_grad():
        L = len(replacement.layers)
        x = torch.stack([local.feature_input(l) for l in replacement.layers], dim=1)  # [P, L, d_in]
        features = torch.zeros(local.n_pos, L, replacement.d_sae, device=local.device)
        position_of = {layer: i for i, layer in enumerate(replacement.layers)}
        features[active.positions, torch.tensor([position_of[int(l)] for l in active.layers.tolist()],
                                                dtype=torch.long, device=local.device), active.features] = \
            active.activations
        reconstruction = replacement.decode(features, x).float()  # [P, L, d_out]
        for i, layer in enumerate(replacement.layers):
            errors[layer] -= reconstruction[:, i]
    errors[:, 0] = 0
    return errors


__all__ = ["ActiveFeatures", "FrozenAttention", "FrozenNorm", "LocalReplacementModel", "SourceVectors",
           "READ_POINTS", "check_replacement_hooks", "error_vectors", "skip_matrices"]
