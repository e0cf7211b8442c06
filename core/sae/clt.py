"""Cross-layer transcoders (CLTs; Anthropic's "Circuit Tracing", 2025).

Over the covered layers `layers = (a, ..., b)` of a model (L of them), the features of layer l read
that layer's input x_l (default the MLP input `blocks.{l}.ln2.hook_normalized`; the residual stream
`blocks.{l}.hook_resid_mid` works as well) and write to the MLP outputs (`blocks.{m}.hook_mlp_out`) of
layer l and every later covered layer m:

    pre_l = x_l @ W_enc[l] + b_enc[l]                       W_enc [L, d_in, d_sae], b_enc [L, d_sae]
    f_l   = act(pre_l)                                      d_sae features per layer
    y_m   = sum_{l <= m} f_l @ W_dec[l][:, m - l] + b_dec[m]   W_dec[l] [d_sae, L - l, d_out], b_dec [L, d_out]
            (+ x_m @ W_skip[m] with `sae.skip_connection`, W_skip [L, d_in, d_out])

Activations (`SAEConfig.architecture`):

- `topk`: the k largest pre-activations of every token in every layer (k per token per layer).
- `batchtopk`: in training, the k * L * batch largest pre-activations over all layers and tokens of
  the batch (one budget, so busy layers take more); at inference a global threshold
  (pre * (pre > threshold)), estimated during training like `BatchTopKSAE`'s and set from the final
  encoder by `calibrate_threshold` (the mean over batches of the smallest kept activation).
- `jumprelu`: f = pre * (pre > theta) with per-feature thresholds theta = exp(log_threshold) [L, d_sae]
  trained by straight-through estimators (`dense.py`'s JumpReLU, kernel width cfg.jumprelu_bandwidth),
  and Anthropic's tanh sparsity penalty lambda * sum_i tanh(c * ||W_dec_i|| * f_i), lambda =
  cfg.l0_coefficient (or the trainer's warmed-up `sparsity_coefficient`), c = `jumprelu_tanh_scale`
  (4, as Anthropic's January 2025 update and SAELens use), ||W_dec_i|| the norm of feature i's whole
  decoder (all its target layers). Plus Anthropic's pre-activation loss on dead features only (as
  SAELens restricts it): lambda_P * sum_{dead i} relu(theta_i - pre_i) * ||W_dec_i||, lambda_P =
  `pre_act_loss_coefficient` (3e-6), reported as aux_loss; it pulls dead features up to their thresholds.

Loss: the squared error of every target layer, each weighed by `layer_loss_weights` (mean variance /
that layer's target variance, set from the sample that initializes b_dec; exactly 1 for one layer),
plus the sparsity penalty, plus AuxK for the top-k family: over ALL layers at once, the k_aux
largest pre-activations of each token among the dead features (k_aux = cfg.aux_k or d_out // 2),
decoded through their full decoders, predict the residual target - x_hat (weighed by layer as the
loss), divided by the residual's weighted variance (Gao et al. 2024; for one layer `topk.py`'s AuxK).

Decoder constraint: each feature's decoder over all its target layers has unit norm
(`set_decoder_norm_to_unit_norm`; for one layer the transcoder's rule).

Training step (`sparse_training`, the default): the L dense encoder products [batch, d_in] @
[d_in, d_sae] are computed once without autograd; the selected entries (top-k's, batch top-k's, or
jumprelu's active ones and those within half a kernel width below their threshold, which the
straight-through threshold gradient needs) go through `sparse.encoder_entries` (gradients to W_enc[l]
from those entries only) and `sparse.decode_entries` with W_dec[l] viewed as [d_sae, (L - l) * d_out],
bagged by token, so the decoder products run over the selected features only. AuxK's dead
features take the dense blocks of those functions (or ride along as entries when many are dead),
as in `topk.py`. `sparse_training = False` is the plain dense autograd reference the sparse step
equals up to float rounding.

Normalization: the trainer feeds NORMALIZED activations: x[:, l] * normalization_scale[l] and
target[:, m] * output_normalization_scale[m] (one constant per layer, `set_normalization_scales`);
`save` folds them in (W_enc[l] * s_in[l], W_dec[l][:, m - l] / s_out[m], b_dec[m] / s_out[m],
W_skip[l] * s_in[l] / s_out[l]), so a loaded CLT works on raw activations. Inference
(`encode_layer`, `decode`, ...) takes and returns raw activations (see `ReplacementModel`).

On disk: config.json (kind "cross_layer_transcoder", architecture, layers, hooks, sizes, model,
folded constants, metrics) and sae.safetensors (W_enc, b_enc, W_dec_<i> for each source position i,
b_dec, W_skip, log_threshold or absolute threshold [L, d_sae] (jumprelu), threshold [] (batchtopk),
layer_loss_weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..config import ConfigError, SAEConfig
from ..errors import DictionaryLoadError
from ..layout import DICTIONARY_WEIGHTS_FILENAME
from .base import _json_default, geometric_median
from .dense import _JumpReLUFunction
from .foreign import check_tensors, read_weights
from .replacement import (REPLACEMENT_FORMAT_VERSION, ReplacementOutput, check_layers, encode_sparse, layer_loss_weights,
                          layer_position, weighted_squared_error, write_config_last)
from .sparse import SparseFeatureActs, decode_entries, encoder_entries, project_out_rows
from .topk import AUXK_DENSE_RATIO, BatchTopKSAE, _rows_of_k, batch_top_k, top_k_per_row

CLT_ARCHITECTURES = ("topk", "batchtopk", "jumprelu")
DEFAULT_INPUT_HOOK = "blocks.{layer}.ln2.hook_normalized"
"""The MLP's input (after its LayerNorm); `blocks.{layer}.hook_resid_mid` reads the residual stream."""
DEFAULT_OUTPUT_HOOK = "blocks.{layer}.hook_mlp_out"
JUMPRELU_TANH_SCALE = 4.0
"""c of the tanh sparsity penalty lambda * tanh(c * ||W_dec_i|| * f_i) (Anthropic's, SAELens's default)."""
PRE_ACT_LOSS_COEFFICIENT = 3e-6
"""lambda_P of the pre-activation loss on dead jumprelu features (Anthropic's January 2025 update)."""


def _check_template(name: str, template: str) -> str:
    if not isinstance(template, str) or "{layer}" not in template:
        raise ValueError(f"{name} is {template!r}; it must be a hook name with a {{layer}} placeholder, e.g. "
                         f"{DEFAULT_INPUT_HOOK!r}.")
    return template


class CrossLayerTranscoder(nn.Module):
    """A cross-layer transcoder over `layers` of a model (see the module doc).

    `CrossLayerTranscoder(cfg, d_in, layers=(0, ..., 11), model_name="gpt2")`: cfg.architecture is
    topk, batchtopk or jumprelu; cfg.d_sae (or expansion_factor * d_in) features per layer;
    cfg.skip_connection adds a linear skip path per layer. `input_hook` / `output_hook` are hook names
    with a `{layer}` placeholder. Offers the `ReplacementModel` face (`replacement.py`).
    """

    kind: ClassVar[str] = "cross_layer_transcoder"
    sparse_training: bool = True
    """False: train through the plain dense autograd path, the reference the sparse step is tested
    against. Inputs that require grad also take it."""

    def __init__(self, cfg: SAEConfig, d_in: int, *, layers: Sequence[int], model_name: str, d_out: int | None = None,
                 input_hook: str = DEFAULT_INPUT_HOOK, output_hook: str = DEFAULT_OUTPUT_HOOK,
                 jumprelu_tanh_scale: float = JUMPRELU_TANH_SCALE,
                 pre_act_loss_coefficient: float = PRE_ACT_LOSS_COEFFICIENT,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        cfg.validate()
        if cfg.architecture not in CLT_ARCHITECTURES:
            raise ConfigError(f"sae.architecture is {cfg.architecture!r}, which cross-layer transcoders do not have; "
                              f"allowed: {', '.join(CLT_ARCHITECTURES)}.")
        for name, value in (("d_in", d_in), ("d_out", d_in if d_out is None else d_out)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name, value in (("jumprelu_tanh_scale", jumprelu_tanh_scale),
                            ("pre_act_loss_coefficient", pre_act_loss_coefficient)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
        self.cfg = cfg
        self.layers = check_layers(layers)
        self.d_in = d_in
        self.d_out = d_in if d_out is None else d_out
        self.d_sae = cfg.resolve_d_sae(d_in)
        if cfg.architecture != "jumprelu" and cfg.k > self.d_sae:
            raise ConfigError(f"sae.k is {cfg.k} but each layer has only {self.d_sae} features; lower sae.k or raise "
                              f"sae.expansion_factor / sae.d_sae.")
        self.input_hook = _check_template("input_hook", input_hook)
        self.output_hook = _check_template("output_hook", output_hook)
        if input_hook == output_hook:
            raise ValueError(f"input_hook and output_hook are both {input_hook!r}; a transcoder predicts another hook.")
        self.model_name = model_name
        self.jumprelu_tanh_scale = float(jumprelu_tanh_scale)
        self.pre_act_loss_coefficient = float(pre_act_loss_coefficient)
        self.saved_config: dict[str, Any] = {}
        """What config.json held when this CLT was loaded ({} for a fresh one)."""

        L, d_sae, d_out = len(self.layers), self.d_sae, self.d_out
        factory = dict(device=device, dtype=dtype)
        # As `SparseAutoencoder.__init__` draws, layer by layer (so that one layer gets a transcoder's
        # weights from the same seed): unit-norm decoders (over all target layers); the encoder the
        # transpose of the feature's own-layer decoder (rescaled to unit norm when it has later
        # layers too) where input and output widths agree, else random unit columns.
        decoders, encoders = [], []
        for i in range(L):
            W_dec = torch.randn(d_sae, L - i, d_out, device=device, dtype=torch.float32)
            W_dec /= W_dec.flatten(1).norm(dim=1)[:, None, None]
            if d_in == self.d_out:
                own = W_dec[:, 0, :]
                if L - i > 1:
                    own = own / own.norm(dim=1, keepdim=True)
                W_enc = own.T.clone().contiguous()
            else:
                W_enc = torch.randn(d_in, d_sae, device=device, dtype=torch.float32)
                W_enc /= W_enc.norm(dim=0, keepdim=True)
            decoders.append(W_dec.to(dtype))
            encoders.append(W_enc)
        # W_dec_<i> [d_sae, L - i, d_out], registered first, as a SparseAutoencoder's W_dec is (the same
        # parameter order makes gradient clipping sum the same norms in the same order).
        for i, W_dec in enumerate(decoders):
            self.register_parameter(f"W_dec_{i}", nn.Parameter(W_dec))
        self.W_enc = nn.Parameter(torch.stack(encoders).to(dtype))  # [L, d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(L, d_sae, **factory))
        self.b_dec = nn.Parameter(torch.zeros(L, d_out, **factory))
        self.register_parameter("W_skip", nn.Parameter(torch.zeros(L, d_in, d_out, **factory))
                                if cfg.skip_connection else None)  # [L, d_in, d_out]
        if cfg.architecture == "jumprelu":
            init = math.log(cfg.jumprelu_init_threshold)
            self.log_threshold = nn.Parameter(torch.full((L, d_sae), init, **factory))
            self.register_buffer("threshold", None)  # [L, d_sae] absolute thresholds (imported), else None
        elif cfg.architecture == "batchtopk":
            self.register_buffer("threshold", torch.tensor(-1.0, **factory))  # -1: not estimated yet
            self.register_buffer("threshold_average", torch.zeros(2, **factory))
        self.register_buffer("normalization_scale", torch.ones(L, **factory))
        self.register_buffer("output_normalization_scale", torch.ones(L, **factory))
        self.register_buffer("layer_loss_weights", torch.ones(L, **factory))

    # ---------------------------------------------------------------- sizes and names

    @property
    def W_dec(self) -> tuple[Tensor, ...]:
        """The decoders by source position i: W_dec[i] [d_sae, L - i, d_out] (parameters W_dec_<i>)."""
        return tuple(getattr(self, f"W_dec_{i}") for i in range(self.n_layers))

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_features(self) -> int:
        """All features: L * d_sae."""
        return self.n_layers * self.d_sae

    @property
    def hook_names(self) -> tuple[str, ...]:
        """The in-hook of every covered layer."""
        return tuple(self.input_hook.format(layer=l) for l in self.layers)

    @property
    def hooks_out(self) -> tuple[str, ...]:
        """The out-hook of every covered layer."""
        return tuple(self.output_hook.format(layer=l) for l in self.layers)

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def has_inference_threshold(self) -> bool:
        """True for batchtopk, whose inference rule is the threshold `calibrate_threshold` sets."""
        return self.architecture == "batchtopk"

    def theta(self) -> Tensor:
        """jumprelu's thresholds [L, d_sae]: the absolute ones when set (imported), else exp(log_threshold)."""
        return self.log_threshold.exp() if self.threshold is None else self.threshold

    @torch.no_grad()
    def set_threshold(self, theta: Tensor) -> None:
        """jumprelu: use the absolute thresholds `theta` [L, d_sae] (finite, >= 0) from now on, exactly as
        given (an imported CLT; it is then for inference only)."""
        theta = torch.as_tensor(theta)
        if self.architecture != "jumprelu" or theta.shape != (self.n_layers, self.d_sae):
            raise ValueError(f"set_threshold is for jumprelu CLTs, with thresholds of shape [L, d_sae]="
                             f"[{self.n_layers}, {self.d_sae}]; got {self.architecture} and {tuple(theta.shape)}.")
        if not bool(torch.isfinite(theta).all()) or bool((theta < 0).any()):
            raise ValueError("set_threshold needs finite thresholds >= 0 (features are never negative here).")
        self.threshold = theta.detach().to(self.device, self.dtype).clone()

    def _position(self, layer: int) -> int:
        return layer_position(self.layers, layer)

    # ---------------------------------------------------------------- inference (raw activations)

    def _check_width(self, x: Tensor, width: int, what: str, stacked: bool) -> None:
        expected = (self.n_layers, width) if stacked else (width,)
        if x.ndim < len(expected) or tuple(x.shape[-len(expected):]) != expected:
            shape = f"[..., L, {width}] with L={self.n_layers} covered layers {list(self.layers)}" if stacked \
                else f"[..., {width}]"
            raise ValueError(f"expected {what} of shape {shape}, got {tuple(x.shape)}; are these the hooks the CLT "
                             f"was trained on ({self.input_hook} -> {self.output_hook})?")

    def _activate(self, pre: Tensor, i: int) -> Tensor:
        """The inference rule on layer position i's (normalized) pre-activations [..., d_sae]."""
        if self.architecture == "topk":
            values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, indices, values.relu())
        if self.architecture == "batchtopk":
            return (pre * (pre > self.threshold).to(pre.dtype)).relu()
        return pre * (pre > self.theta()[i]).to(pre.dtype)

    def _pre_acts(self, x: Tensor, i: int) -> Tensor:
        """Raw inputs [..., d_in] of layer position i -> pre-activations [..., d_sae]."""
        return (x.to(self.dtype) * self.normalization_scale[i]) @ self.W_enc[i] + self.b_enc[i]

    def encode_layer(self, x: Tensor, layer: int) -> Tensor:
        """Raw inputs of `layer` [..., d_in] -> its feature activations [..., d_sae]."""
        self._check_width(x, self.d_in, "inputs", stacked=False)
        i = self._position(layer)
        return self._activate(self._pre_acts(x, i), i)

    @torch.no_grad()
    def encode_layer_sparse(self, x: Tensor, layer: int) -> SparseFeatureActs:
        """Raw inputs of `layer` [n, d_in] -> its feature activations as compressed rows on CPU (a topk
        CLT's rows hold exactly k entries, some of them 0)."""
        self._check_width(x, self.d_in, "inputs", stacked=False)
        i = self._position(layer)
        pre = self._pre_acts(x.reshape(-1, self.d_in), i)
        if self.architecture == "topk":
            values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
            n, k = values.shape
            return SparseFeatureActs(torch.arange(0, n * k + 1, k), indices.flatten().cpu(),
                                     values.relu().float().flatten().cpu(), self.d_sae)
        return SparseFeatureActs.from_dense(self._activate(pre, i))

    def encode_sparse(self, x: Tensor, rows: Tensor | None = None) -> SparseFeatureActs:
        """Every covered layer's features as one sparse row per token (`replacement.encode_sparse`)."""
        return encode_sparse(self, x, rows)

    def encode(self, x: Tensor) -> Tensor:
        """Raw inputs of every covered layer [..., L, d_in] -> feature activations [..., L, d_sae]."""
        self._check_width(x, self.d_in, "inputs", stacked=True)
        return torch.stack([self._activate(self._pre_acts(x[..., i, :], i), i) for i in range(self.n_layers)], dim=-2)

    def decode(self, feature_acts: Tensor, x: Tensor | None = None) -> Tensor:
        """Feature activations [..., L, d_sae] -> raw outputs of every covered layer [..., L, d_out]:
        decoder biases included, and the skip paths, which need the raw inputs x [..., L, d_in]."""
        self._check_width(feature_acts, self.d_sae, "feature activations", stacked=True)
        acts = feature_acts.to(self.dtype)
        y = self.b_dec.expand(*acts.shape[:-2], self.n_layers, self.d_out).clone()
        for i in range(self.n_layers):
            y[..., i:, :] += torch.einsum("...f,ftd->...td", acts[..., i, :], self.W_dec[i])
        if self.W_skip is not None:
            if x is None:
                raise ValueError("this CLT has skip paths, so decode needs the inputs too: decode(feature_acts, x), "
                                 "or call it on x directly (forward).")
            self._check_width(x, self.d_in, "inputs", stacked=True)
            y = y + self._skip_normalized(x)
        return y / self.output_normalization_scale[:, None]

    def _skip_normalized(self, x: Tensor) -> Tensor:
        """The skip paths' part of the normalized outputs [..., L, d_out] from raw inputs [..., L, d_in]."""
        x = x.to(self.dtype) * self.normalization_scale[:, None]
        return torch.einsum("...li,lio->...lo", x, self.W_skip)

    def forward(self, x: Tensor) -> Tensor:
        """Raw inputs [..., L, d_in] -> raw reconstructions of every covered output [..., L, d_out]."""
        return self.decode(self.encode(x), x)

    def target_layers(self, layer: int) -> tuple[int, ...]:
        """The layers the features of `layer` write to: `layer` and every later covered one."""
        return self.layers[self._position(layer):]

    def decode_layer(self, feature_acts: Tensor, layer: int) -> Tensor:
        """What the features of `layer` [..., d_sae] write to each of its target layers: raw
        [..., len(target_layers(layer)), d_out], without biases or skip paths."""
        self._check_width(feature_acts, self.d_sae, "feature activations", stacked=False)
        i = self._position(layer)
        out = torch.einsum("...f,ftd->...td", feature_acts.to(self.dtype), self.W_dec[i])
        return out / self.output_normalization_scale[i:, None]

    def decoder_vectors(self, layer: int, features: Tensor) -> Tensor:
        """Raw decoder vectors of `features` [n] of `layer`: [n, len(target_layers(layer)), d_out]."""
        i = self._position(layer)
        return self.W_dec[i][features] / self.output_normalization_scale[i:, None]

    def encoder_vectors(self, layer: int, features: Tensor) -> Tensor:
        """Raw encoder vectors of `features` [n] of `layer`: [n, d_in] (pre = x @ v + encoder_bias)."""
        i = self._position(layer)
        return (self.W_enc[i][:, features] * self.normalization_scale[i]).T

    def encoder_bias(self, layer: int) -> Tensor:
        """[d_sae]."""
        return self.b_enc[self._position(layer)]

    def decoder_bias(self) -> Tensor:
        """Raw decoder biases of every covered output [L, d_out]."""
        return self.b_dec / self.output_normalization_scale[:, None]

    def skip(self, x: Tensor) -> Tensor | None:
        """The skip paths' part of the raw outputs [..., L, d_out] (None without skip paths)."""
        if self.W_skip is None:
            return None
        self._check_width(x, self.d_in, "inputs", stacked=True)
        return self._skip_normalized(x) / self.output_normalization_scale[:, None]

    # ---------------------------------------------------------------- training

    def training_forward(self, x: Tensor, *, target: Tensor, sparsity_coefficient: float | None = None,
                         dead_mask: Tensor | None = None) -> ReplacementOutput:
        """One training forward pass on NORMALIZED inputs x [batch, L, d_in] and targets [batch, L, d_out].

        `sparsity_coefficient` overrides cfg.l0_coefficient (jumprelu's tanh penalty), so the trainer can
        warm it up. `dead_mask` [L * d_sae] bool marks dead features: AuxK (top-k family) or the
        pre-activation loss (jumprelu) trains them.
        """
        if x.ndim != 3 or x.shape[1:] != (self.n_layers, self.d_in):
            raise ValueError(f"training_forward expects inputs of shape [batch, L, d_in]=[batch, {self.n_layers}, "
                             f"{self.d_in}], got {tuple(x.shape)}.")
        if target is None or target.shape != (x.shape[0], self.n_layers, self.d_out):
            raise ValueError(f"a CLT trains on targets of shape [batch, L, d_out]=[{x.shape[0]}, {self.n_layers}, "
                             f"{self.d_out}] ({self.output_hook}); got {None if target is None else tuple(target.shape)}.")
        if dead_mask is not None and dead_mask.numel() and dead_mask.shape != (self.n_features,):
            raise ValueError(f"dead_mask must have shape [L * d_sae]=[{self.n_features}], got {tuple(dead_mask.shape)}.")
        if self.architecture == "jumprelu" and self.threshold is not None:
            raise ValueError("this jumprelu CLT keeps absolute thresholds (it was imported) and is for inference only; "
                             "train a new one instead.")
        if not self.sparse_training or x.requires_grad:
            return self._dense_training_forward(x, target, sparsity_coefficient, dead_mask)
        return self._sparse_training_forward(x, target, sparsity_coefficient, dead_mask)

    def _dead_features(self, dead_mask: Tensor | None) -> list[Tensor] | None:
        """The dead features of each layer position (a list of L index tensors), or None when there are
        none. Cached while the same mask tensor comes back (finding them waits for the device)."""
        if dead_mask is None or dead_mask.numel() == 0:
            return None
        cached = self.__dict__.get("_dead_features_of")
        if cached is not None and cached[0] is dead_mask and cached[1] == dead_mask._version:
            return cached[2]
        per_layer = dead_mask.to(torch.bool).view(self.n_layers, self.d_sae)
        dead = [row.nonzero().squeeze(1) for row in per_layer.unbind(0)]
        dead = dead if sum(len(d) for d in dead) else None
        self.__dict__["_dead_features_of"] = (dead_mask, dead_mask._version, dead)
        return dead

    def _k_aux(self, n_dead: int) -> int:
        return min(self.cfg.aux_k or self.d_out // 2, n_dead)

    def _pre_act_buffer(self, n: int) -> Tensor:
        """[L, n, d_sae], reused from step to step (as `topk.py`'s: a fresh one costs page faults)."""
        shape = (self.n_layers, n, self.d_sae)
        buffer = self.__dict__.get("_pre_acts_buffer")
        if buffer is None or buffer.shape != shape or buffer.dtype != self.dtype or buffer.device != self.device:
            buffer = torch.empty(shape, dtype=self.dtype, device=self.device)
            self.__dict__["_pre_acts_buffer"] = buffer
        return buffer

    def _select(self, pre: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """The kept entries of pre-activations [L, batch, d_sae], per layer position: (tokens, features,
        pre-activations). jumprelu keeps the active ones and those that the threshold's
        straight-through gradient reaches (pre > theta - bandwidth / 2)."""
        L, n, d_sae = pre.shape
        if self.architecture == "topk":
            k = self.cfg.k
            picks = [top_k_per_row(pre[i], k) for i in range(L)]
            return [(_rows_of_k(n, k, pre.device), idx.flatten(), values.flatten()) for values, idx in picks]
        if self.architecture == "batchtopk":
            rows, features, values = batch_top_k(pre.view(L * n, d_sae), self.cfg.k * L * n)
            position = torch.div(rows, n, rounding_mode="floor")
            counts = torch.bincount(position, minlength=L).tolist()  # rows come in row-major order
            return list(zip((rows - position * n).split(counts), features.split(counts), values.split(counts)))
        reach = (self.theta().detach() - self.cfg.jumprelu_bandwidth / 2)[:, None, :]
        out = []
        for i in range(L):
            tokens, features = (pre[i] > reach[i]).nonzero(as_tuple=True)
            out.append((tokens, features, pre[i][tokens, features]))
        return out

    def _aux_entries(self, pre: Tensor, dead: list[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
        """AuxK's entries per layer position: the k_aux largest pre-activations of each token among the
        dead features of all layers."""
        L, n, _ = pre.shape
        columns = torch.cat([pre[i].index_select(1, d) for i, d in enumerate(dead)], dim=1)  # [n, n_dead]
        owner = torch.cat([torch.full((len(d),), i, dtype=torch.int64, device=pre.device) for i, d in enumerate(dead)])
        feature = torch.cat(dead)
        values, local = top_k_per_row(columns, self._k_aux(len(feature)))
        local = local.flatten().to(pre.device)
        rows = _rows_of_k(n, values.shape[1], pre.device)
        values, which = values.flatten(), owner[local]
        return [(rows[which == i], feature[local][which == i], values[which == i]) for i in range(L)]

    def _aux_block_acts(self, blocks: list[Tensor]) -> list[Tensor]:
        """AuxK's activations from the dead features' pre-activation blocks [batch, n_dead_l] of every
        layer: the k_aux largest of each token over all layers, the others 0."""
        pre_dead = torch.cat(blocks, dim=1)
        acts = pre_dead.relu()
        k_aux = self._k_aux(pre_dead.shape[1])
        if k_aux < pre_dead.shape[1]:
            _, local = top_k_per_row(pre_dead, k_aux)
            acts = acts * torch.zeros_like(acts).scatter_(1, local.to(acts.device), 1.0)
        return list(acts.split([b.shape[1] for b in blocks], dim=1))

    def _auxk_loss(self, residual: Tensor, residual_hat: Tensor) -> Tensor:
        """aux_k_coefficient * weighted |residual_hat - residual|^2 / weighted |residual - its mean|^2
        over [batch, L, d_out], the residual detached (for one layer `_TopKFamily._auxk_loss`)."""
        residual = residual.detach()
        error, _ = weighted_squared_error(residual_hat, residual, self.layer_loss_weights)
        variance, _ = weighted_squared_error(residual, residual.mean(0).expand_as(residual), self.layer_loss_weights)
        ok = variance > 0
        ratio = torch.where(ok, error / torch.where(ok, variance, torch.ones_like(variance)), error.new_zeros(()))
        return self.cfg.aux_k_coefficient * ratio

    def _decoder_norms(self, i: int) -> Tensor:
        """||W_dec_j|| over all target layers of each feature of layer position i: [d_sae], differentiable."""
        return self.W_dec[i].flatten(1).norm(dim=1)

    def _tanh_penalty(self, acts: Tensor, norms: Tensor) -> Tensor:
        """sum tanh(c * ||W_dec_j|| * f_j) over the given activations and their features' norms."""
        return torch.tanh(self.jumprelu_tanh_scale * norms * acts).sum()

    def _assemble(self, parts: list[Tensor], n: int) -> Tensor:
        """Per source position i, [n, (L - i) * d_out] -> their sum placed at the target layers [n, L, d_out]."""
        if len(parts) == 1:
            return parts[0].view(n, 1, self.d_out)
        return _SumIntoTargetLayers.apply(self.d_out, *parts)

    def _sparse_training_forward(self, x: Tensor, target: Tensor, sparsity_coefficient: float | None,
                                 dead_mask: Tensor | None) -> ReplacementOutput:
        n, L, d_out = x.shape[0], self.n_layers, self.d_out
        inputs = x.transpose(0, 1).contiguous()  # [L, n, d_in]: each layer's rows contiguous
        with torch.no_grad():  # the L dense products, once, without autograd
            pre = self._pre_act_buffer(n)
            for i in range(L):
                if torch.is_autocast_enabled(x.device.type):
                    pre[i] = torch.matmul(inputs[i], self.W_enc[i]).to(self.dtype)
                else:
                    torch.matmul(inputs[i], self.W_enc[i], out=pre[i])
            pre += self.b_enc[:, None, :]
        kept = self._select(pre)
        n_kept = [len(entry[1]) for entry in kept]
        dead = self._dead_features(dead_mask)
        jumprelu = self.architecture == "jumprelu"
        n_dead = 0 if dead is None else sum(len(d) for d in dead)
        aux_entries = not jumprelu and dead is not None and n_dead > AUXK_DENSE_RATIO * self._k_aux(n_dead)
        entries, bags = kept, [rows for rows, _, _ in kept]
        if aux_entries:  # AuxK's entries ride along: bags n..2n of the same decoder pass
            aux = self._aux_entries(pre, dead)
            entries = [tuple(torch.cat(pair) for pair in zip(main, extra)) for main, extra in zip(kept, aux)]
            bags = [torch.cat([rows, extra[0] + n]) for rows, extra in zip(bags, aux)]
        blocks = None if aux_entries or dead is None else dead  # dense blocks over the dead features' columns
        theta = self.theta().unbind(0) if jumprelu else None
        W_enc, b_enc = self.W_enc.unbind(0), self.b_enc.unbind(0)
        decoded, pre_blocks, decoder_blocks, acts_all, sparsity = [], [], [], [], x.new_zeros(())
        for i, (rows, features, values) in enumerate(entries):
            columns = None if blocks is None else blocks[i]
            pre_values, pre_block = encoder_entries(pre[i], values, rows, features, centered=inputs[i], W_enc=W_enc[i],
                                                    b_enc=b_enc[i], b_dec=None, columns=columns)
            if jumprelu:
                acts = _JumpReLUFunction.apply(pre_values, theta[i].index_select(0, features), self.cfg.jumprelu_bandwidth)
                sparsity = sparsity + self._tanh_penalty(acts, self._decoder_norms(i).index_select(0, features))
            else:
                acts = pre_values.relu()
            W_dec = self.W_dec[i].view(self.d_sae, (L - i) * d_out)
            out, W_dec_block = decode_entries(acts, W_dec, bags[i], features, 2 * n if aux_entries else n, columns)
            decoded.append(out)
            pre_blocks.append(pre_block)
            decoder_blocks.append(W_dec_block)
            acts_all.append(acts)
        x_hat = self._assemble([part[:n] for part in decoded], n) + self.b_dec
        if self.W_skip is not None:
            W_skip = self.W_skip.unbind(0)
            x_hat = x_hat + torch.stack([inputs[i] @ W_skip[i] for i in range(L)], dim=1)
        mse_loss, layer_mse = weighted_squared_error(x_hat, target, self.layer_loss_weights)
        mse_loss, layer_mse = mse_loss / n, layer_mse / n

        aux_loss = x_hat.new_zeros(())
        if jumprelu:
            coefficient = self.cfg.l0_coefficient if sparsity_coefficient is None else sparsity_coefficient
            sparsity_loss = coefficient * sparsity / n
            if dead is not None and self.pre_act_loss_coefficient:
                below = sum((((theta[i].index_select(0, d) - block).relu() * self._decoder_norms(i).index_select(0, d))
                             .sum() for i, (d, block) in enumerate(zip(dead, pre_blocks))), x.new_zeros(()))
                aux_loss = self.pre_act_loss_coefficient * below / n
        else:
            sparsity_loss = x_hat.new_zeros(())
            if aux_entries:
                aux_loss = self._auxk_loss(target - x_hat, self._assemble([part[n:] for part in decoded], n))
            elif dead is not None:
                aux_acts = self._aux_block_acts(pre_blocks)
                aux_loss = self._auxk_loss(target - x_hat, self._assemble(
                    [a @ block for a, block in zip(aux_acts, decoder_blocks)], n))

        fire_counts = torch.zeros(self.n_features, dtype=torch.int64, device=x.device)
        active_per_layer = []
        for i, ((_, features, _), acts, count) in enumerate(zip(entries, acts_all, n_kept)):
            active = (acts.detach()[:count] != 0).long()
            fire_counts[i * self.d_sae:(i + 1) * self.d_sae].index_add_(0, features[:count], active)
            active_per_layer.append(active.sum())
        if self.training and self.architecture == "batchtopk":
            BatchTopKSAE._note_kept(self, torch.cat([a.detach()[:c] for a, c in zip(acts_all, n_kept)]))
        layer_l0 = torch.stack(active_per_layer).float() / n
        return ReplacementOutput(x_hat=x_hat, fire_counts=fire_counts, loss=mse_loss + sparsity_loss + aux_loss,
                                 mse_loss=mse_loss, sparsity_loss=sparsity_loss, aux_loss=aux_loss, l0=layer_l0.sum(),
                                 layer_mse=layer_mse, layer_l0=layer_l0)

    def _dense_training_forward(self, x: Tensor, target: Tensor, sparsity_coefficient: float | None,
                                dead_mask: Tensor | None) -> ReplacementOutput:
        """The reference: dense activations, plain autograd through the encoder products."""
        n, L, d_sae = x.shape[0], self.n_layers, self.d_sae
        W_enc, b_enc = self.W_enc.unbind(0), self.b_enc.unbind(0)
        pre = [x[:, i] @ W_enc[i] + b_enc[i] for i in range(L)]  # L x [n, d_sae]
        if self.architecture == "topk":
            acts = [self._activate(p, i) for i, p in enumerate(pre)]
        elif self.architecture == "batchtopk":
            flat = torch.stack(pre).relu().flatten()
            values, indices = flat.topk(min(self.cfg.k * L * n, flat.numel()), sorted=False)
            acts = list(torch.zeros_like(flat).scatter(0, indices, values).view(L, n, d_sae).unbind(0))
        else:
            theta = self.theta().unbind(0)
            acts = [_JumpReLUFunction.apply(p, theta[i], self.cfg.jumprelu_bandwidth) for i, p in enumerate(pre)]
        decode = lambda feature_acts: self._assemble(  # noqa: E731
            [a @ self.W_dec[i].view(d_sae, -1) for i, a in enumerate(feature_acts)], n)
        x_hat = decode(acts) + self.b_dec
        if self.W_skip is not None:
            W_skip = self.W_skip.unbind(0)
            x_hat = x_hat + torch.stack([x[:, i] @ W_skip[i] for i in range(L)], dim=1)
        mse_loss, layer_mse = weighted_squared_error(x_hat, target, self.layer_loss_weights)
        mse_loss, layer_mse = mse_loss / n, layer_mse / n
        dead = self._dead_features(dead_mask)
        aux_loss, sparsity_loss = x_hat.new_zeros(()), x_hat.new_zeros(())
        if self.architecture == "jumprelu":
            coefficient = self.cfg.l0_coefficient if sparsity_coefficient is None else sparsity_coefficient
            norms = [self._decoder_norms(i) for i in range(L)]
            sparsity_loss = coefficient * sum(self._tanh_penalty(a, norms[i]) for i, a in enumerate(acts)) / n
            if dead is not None and self.pre_act_loss_coefficient:
                mask = dead_mask.view(L, d_sae).to(x.dtype)
                below = sum(((theta[i] - p).relu() * norms[i] * mask[i]).sum() for i, p in enumerate(pre))
                aux_loss = self.pre_act_loss_coefficient * below / n
        elif dead is not None:
            all_pre = torch.stack(pre, dim=1).flatten(1)  # [n, L * d_sae], the flat feature index
            dead_pre = all_pre.masked_fill(~dead_mask.to(torch.bool), -torch.inf)
            values, indices = dead_pre.topk(self._k_aux(int(dead_mask.sum())), dim=-1, sorted=False)
            aux_acts = torch.zeros_like(all_pre).scatter(-1, indices, values.relu()).view(n, L, d_sae).unbind(1)
            aux_loss = self._auxk_loss(target - x_hat, decode(aux_acts))
        fired = torch.stack([a.detach() != 0 for a in acts], dim=1)  # [n, L, d_sae]
        if self.training and self.architecture == "batchtopk":
            BatchTopKSAE._note_kept(self, torch.stack(acts).detach().flatten())
        layer_l0 = fired.sum((0, 2)).float() / n
        return ReplacementOutput(x_hat=x_hat, fire_counts=fired.sum(0).flatten(),
                                 loss=mse_loss + sparsity_loss + aux_loss, mse_loss=mse_loss,
                                 sparsity_loss=sparsity_loss, aux_loss=aux_loss, l0=layer_l0.sum(),
                                 layer_mse=layer_mse, layer_l0=layer_l0)

    @torch.no_grad()
    def calibrate_threshold(self, batches: Iterable[Tensor]) -> float:
        """batchtopk: set the inference threshold from the current encoder: the mean, over batches of
        NORMALIZED inputs [batch, L, d_in], of the smallest activation that training's batch top-k
        (over all layers) keeps. Returns it."""
        if not self.has_inference_threshold:
            raise ValueError(f"calibrate_threshold is for batchtopk CLTs, not {self.architecture}.")
        values = []
        for x in batches:
            x = x.to(self.device, self.dtype)
            pre = torch.stack([x[:, i] @ self.W_enc[i] + self.b_enc[i] for i in range(self.n_layers)])
            kept = self._select(pre)
            smallest = [v.min() for _, _, v in kept if len(v)]
            if smallest:
                values.append(torch.stack(smallest).min())
        if not values:
            raise ValueError("calibrate_threshold: no feature fired on the given batches.")
        self.threshold.copy_(torch.stack(values).mean())
        return float(self.threshold)

    @torch.no_grad()
    def initialize_decoder_bias(self, target_sample: Tensor) -> None:
        """From NORMALIZED targets [n, L, d_out] (at most cfg.decoder_bias_init_samples rows): b_dec[m]
        per cfg.decoder_bias_init (geometric median, mean or zeros of layer m's targets), and the
        per-layer loss weights (`replacement.layer_loss_weights`), which stay fixed from then on."""
        if target_sample.ndim != 3 or target_sample.shape[1:] != (self.n_layers, self.d_out) or not len(target_sample):
            raise ValueError(f"initialize_decoder_bias needs a sample of targets of shape [n, L, d_out]=[n, "
                             f"{self.n_layers}, {self.d_out}], got {tuple(target_sample.shape)}.")
        target_sample = target_sample[: self.cfg.decoder_bias_init_samples].to(self.device)
        sample = target_sample.float()  # (as `SparseAutoencoder.initialize_decoder_bias` computes b_dec)
        how = self.cfg.decoder_bias_init
        for m in range(self.n_layers):
            if how == "geometric_median":
                self.b_dec[m].copy_(geometric_median(sample[:, m]))
            elif how == "mean":
                self.b_dec[m].copy_(sample[:, m].mean(0))
            else:
                self.b_dec[m].zero_()
        self.layer_loss_weights.copy_(layer_loss_weights(target_sample))

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        """Rescale each feature's decoder, over all its target layers, to unit L2 norm."""
        for W_dec in self.W_dec:
            W_dec /= W_dec.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project out the part of each feature's decoder gradient along its decoder (over all target
        layers), which the unit-norm constraint would undo anyway."""
        for W_dec in self.W_dec:
            if W_dec.grad is None:
                continue
            project_out_rows(W_dec.grad.view(self.d_sae, -1), W_dec.detach().view(self.d_sae, -1))

    # ---------------------------------------------------------------- normalization and disk

    @torch.no_grad()
    def set_normalization_scales(self, input_scales: Sequence[float] | Tensor,
                                 output_scales: Sequence[float] | Tensor) -> None:
        """The per-layer constants [L] that the trainer multiplies inputs and targets with
        (`expected_average_only_in`: sqrt(d) / mean ||x|| of each layer's sample)."""
        for buffer, scales in ((self.normalization_scale, input_scales), (self.output_normalization_scale, output_scales)):
            scales = torch.as_tensor(scales, dtype=buffer.dtype).to(buffer.device)
            if scales.shape != (self.n_layers,) or not bool(torch.isfinite(scales).all()) or bool((scales <= 0).any()):
                raise ValueError(f"normalization scales must be {self.n_layers} finite positive numbers, one per "
                                 f"covered layer; got {scales.tolist()}.")
            buffer.copy_(scales)

    def normalize_inputs(self, x: Tensor) -> Tensor:
        """Raw inputs [..., L, d_in] -> the normalized ones `training_forward` takes."""
        return x * self.normalization_scale[:, None]

    def normalize_targets(self, y: Tensor) -> Tensor:
        """Raw targets [..., L, d_out] -> the normalized ones `training_forward` takes."""
        return y * self.output_normalization_scale[:, None]

    @torch.no_grad()
    def _folded_tensors(self) -> dict[str, Tensor]:
        """The tensors `save` writes, the normalization folded in (self is not modified). Pre-activations
        are unchanged, so the thresholds need no change."""
        s_in, s_out = self.normalization_scale, self.output_normalization_scale
        tensors = {"W_enc": self.W_enc * s_in[:, None, None], "b_enc": self.b_enc.clone(),
                   **{f"W_dec_{i}": W / s_out[i:][None, :, None] for i, W in enumerate(self.W_dec)},
                   "b_dec": self.b_dec / s_out[:, None], "layer_loss_weights": self.layer_loss_weights.clone()}
        if self.W_skip is not None:
            tensors["W_skip"] = self.W_skip * (s_in / s_out)[:, None, None]
        if self.architecture == "jumprelu":
            name = "log_threshold" if self.threshold is None else "threshold"
            tensors[name] = getattr(self, name).clone()
        elif self.architecture == "batchtopk":
            tensors["threshold"] = self.threshold.clone()
        return {name: t.detach().contiguous() for name, t in tensors.items()}

    @torch.no_grad()
    def fold_normalization(self) -> None:
        """Fold the normalization constants into the weights in place and set them to 1 (encode / decode
        on raw activations are unchanged; decoders are no longer unit norm: fold only when done)."""
        tensors = self._folded_tensors()
        for name, t in tensors.items():
            getattr(self, name).copy_(t)
        self.normalization_scale.fill_(1.0)
        self.output_normalization_scale.fill_(1.0)

    def config_dict(self, *, metrics: dict | None = None, extra: dict | None = None) -> dict:
        """The contents of the config.json that `save` writes (the constants as folded at save)."""
        config = {
            "format_version": REPLACEMENT_FORMAT_VERSION,
            "kind": self.kind,
            "architecture": self.architecture,
            "layers": list(self.layers),
            "d_in": self.d_in,
            "d_out": self.d_out,
            "d_sae": self.d_sae,
            "n_features": self.n_features,
            "input_hook": self.input_hook,
            "output_hook": self.output_hook,
            "hook_names": list(self.hook_names),
            "hooks_out": list(self.hooks_out),
            "model_name": self.model_name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "sae": self.cfg.to_dict(),
            "jumprelu_tanh_scale": self.jumprelu_tanh_scale,
            "pre_act_loss_coefficient": self.pre_act_loss_coefficient,
            "normalization_scale": self.normalization_scale.tolist(),
            "output_normalization_scale": self.output_normalization_scale.tolist(),
            "normalization_folded": True,
            "metrics": dict(metrics or {}),
        }
        clash = sorted(set(extra or {}) & set(config))
        if clash:
            raise ValueError(f"extra may not set {', '.join(clash)}: save() writes these keys itself.")
        return {**config, **(extra or {})}

    def save(self, folder: str | Path, *, metrics: dict | None = None, extra: dict | None = None) -> Path:
        """Write folder/config.json and folder/sae.safetensors, normalization folded in; the live CLT
        is not modified. Written as `SparseAutoencoder.save` writes: temporary files renamed into place,
        the old config.json removed first and the new one written last."""
        folder = Path(folder)
        text = json.dumps(self.config_dict(metrics=metrics, extra=extra), indent=2, default=_json_default) + "\n"
        folder.mkdir(parents=True, exist_ok=True)
        write_config_last(folder, text, {k: v.cpu() for k, v in self._folded_tensors().items()},
                          DICTIONARY_WEIGHTS_FILENAME)
        return folder


class _SumIntoTargetLayers(torch.autograd.Function):
    """parts[i] [n, (L - i) * d_out] (what source position i writes to target positions i..L-1) ->
    their sum [n, L, d_out], in one output buffer; backward hands each part its target layers' slice of
    the gradient, contiguous (what the decoder's backward reads). Slice-adds into one tensor under
    autograd instead would allocate and zero a full-size gradient for every part."""

    @staticmethod
    def forward(ctx, d_out: int, *parts: Tensor) -> Tensor:
        n, L = parts[0].shape[0], len(parts)
        out = parts[0].detach().reshape(n, L, d_out).clone()
        for i, part in enumerate(parts[1:], start=1):
            out[:, i:] += part.detach().view(n, L - i, d_out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        n, L, d_out = grad.shape
        return (None,) + tuple(grad[:, i:].reshape(n, (L - i) * d_out) for i in range(L))


def load_cross_layer_transcoder(folder: Path, data: dict, device: str | torch.device = "cpu",
                                dtype: torch.dtype = torch.float32) -> CrossLayerTranscoder:
    """The CLT saved in `folder`, whose config.json holds `data` (`load_dictionary` reads it and calls
    this); every mismatch between config and weights refused with one sentence."""
    config_path = folder / "config.json"
    missing = [key for key in ("architecture", "layers", "d_in", "d_out", "input_hook", "output_hook", "model_name",
                               "sae") if key not in data]
    if missing:
        raise DictionaryLoadError(f"{config_path} lacks key(s) {', '.join(missing)}; it was not written by "
                                  f"CrossLayerTranscoder.save or is damaged.")
    try:
        cfg = SAEConfig.from_dict(data["sae"])
        if cfg.architecture != data["architecture"]:
            raise ConfigError(f"sae.architecture is {cfg.architecture!r} but architecture is {data['architecture']!r}")
        clt = CrossLayerTranscoder(cfg, data["d_in"], layers=data["layers"], model_name=data["model_name"],
                                   d_out=data["d_out"], input_hook=data["input_hook"], output_hook=data["output_hook"],
                                   jumprelu_tanh_scale=data.get("jumprelu_tanh_scale", JUMPRELU_TANH_SCALE),
                                   pre_act_loss_coefficient=data.get("pre_act_loss_coefficient",
                                                                     PRE_ACT_LOSS_COEFFICIENT),
                                   device=device, dtype=dtype)
    except (ConfigError, ValueError, TypeError) as e:
        raise DictionaryLoadError(f"{config_path} holds an invalid cross-layer transcoder config ({e}); fix the file "
                                  f"or save the CLT again.") from e
    if data.get("d_sae", clt.d_sae) != clt.d_sae:
        raise DictionaryLoadError(f"{config_path} says d_sae={data['d_sae']} but its sae config gives {clt.d_sae}; the "
                                  f"file is inconsistent, save the CLT again.")
    weights = folder / DICTIONARY_WEIGHTS_FILENAME
    tensors = read_weights(weights, config_path)
    if clt.architecture == "jumprelu" and "threshold" in tensors and "log_threshold" not in tensors:
        clt.threshold = torch.zeros(clt.n_layers, clt.d_sae, device=clt.device, dtype=clt.dtype)  # absolute (imported)
    expected = {name: tuple(t.shape) for name, t in clt._folded_tensors().items()}
    sizes = f"layers={list(clt.layers)}, d_in={clt.d_in}, d_sae={clt.d_sae}, d_out={clt.d_out}, {clt.architecture}"
    check_tensors(tensors, expected, weights, config_path, sizes)
    if clt.architecture == "jumprelu" and "threshold" in tensors and bool((tensors["threshold"] < 0).any()):
        raise DictionaryLoadError(f"{weights} holds negative jumprelu thresholds; features are never negative here, "
                                  f"so the file is damaged.")
    with torch.no_grad():
        for name, t in tensors.items():
            getattr(clt, name).copy_(t)
    clt.saved_config = data
    return clt


__all__ = ["CLT_ARCHITECTURES", "DEFAULT_INPUT_HOOK", "DEFAULT_OUTPUT_HOOK", "JUMPRELU_TANH_SCALE",
           "PRE_ACT_LOSS_COEFFICIENT", "CrossLayerTranscoder", "load_cross_layer_transcoder"]
