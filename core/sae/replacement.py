"""Replacement models: dictionaries that stand in for every covered MLP of a model at once.

Two kinds, one face (`ReplacementModel`), so that evaluation and attribution graphs treat both alike:

- `TranscoderSet` (here): one ordinary transcoder (`SparseAutoencoder` with `hook_out`) per covered
  layer, e.g. `blocks.N.ln2.hook_normalized` -> `blocks.N.hook_mlp_out`; each member trains, saves,
  loads and analyzes on its own as well.
- `CrossLayerTranscoder` (`clt.py`): features that read one layer's input and write to the MLP
  outputs of that layer and every later covered one.

Conventions of the face (`L` covered layers, `layers = (a, ..., b)`):

- A layer argument is the model's block number (`layer=3`), never a position in `layers`.
- Stacked tensors put the covered layers in the order of `layers`: inputs `[..., L, d_in]`, feature
  activations `[..., L, d_sae]` (d_sae features per layer), outputs `[..., L, d_out]`.
- A flat feature index (fire counts, dead masks) is `position * d_sae + feature`, position the
  layer's place in `layers`: `[L * d_sae]`.
- Everything takes and returns *raw* activations (the normalization used in training is applied
  inside, or folded in at save): encoder and decoder vectors included.

Also here: `ReplacementOutput` (what a training step returns), `layer_loss_weights` (how the
per-layer errors are weighed), `replacement_model_memory` (parameters and Adam's state from the sizes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, NamedTuple, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from ..files import publish, temp_sibling
from ..hooks import hook_layer
from ..layout import DICTIONARY_CONFIG_FILENAME, transcoder_set_member
from .normalization import Scaling
from .base import SparseAutoencoder, _json_default
from .sparse import SparseFeatureActs

REPLACEMENT_FORMAT_VERSION = 1
"""Version of the folders of replacement models (a transcoder set's top-level config.json, a CLT's)."""


class ReplacementOutput(NamedTuple):
    """One training step of a replacement model: `SAEOutput`'s fields, over all covered layers, and
    per-layer figures for the logs."""

    x_hat: Tensor
    """[batch, L, d_out] reconstruction of every covered layer's target, in the normalized space the
    targets were given in (skip paths included)."""

    fire_counts: Tensor
    """int64 [L * d_sae]: on how many tokens each feature was active (flat index, see the module doc)."""

    loss: Tensor
    """Scalar total loss to backpropagate: mse_loss + sparsity_loss + aux_loss."""

    mse_loss: Tensor
    """Scalar: the sum over target layers of layer_loss_weights[m] * squared error of layer m (summed
    over d_out, averaged over the batch). A transcoder set: the sum of its members' mse_loss."""

    sparsity_loss: Tensor
    """Scalar, already weighted: jumprelu's tanh penalty (a CLT), relu's L1 / jumprelu's L0 (members
    of a set); 0 for the top-k family."""

    aux_loss: Tensor
    """Scalar, already weighted: what revives dead features. AuxK (top-k family) or a CLT jumprelu's
    pre-activation loss on dead features; 0 without a dead mask."""

    l0: Tensor
    """Scalar, detached: active features per token, summed over the covered layers."""

    layer_mse: Tensor
    """[L] detached: each layer's squared error (summed over d_out, averaged over the batch), unweighted."""

    layer_l0: Tensor
    """[L] detached: active features per token of each source layer."""


@runtime_checkable
class ReplacementModel(Protocol):
    """What a `CrossLayerTranscoder` and a `TranscoderSet` both offer (shapes: see the module doc).

    Inference, on raw activations:

    - `encode_layer(x [..., d_in], layer) -> [..., d_sae]`: one layer's input to its features.
    - `encode_layer_sparse(x [n, d_in], layer) -> SparseFeatureActs`: the same as compressed rows.
    - `encode(x [..., L, d_in]) -> [..., L, d_sae]`: every covered layer at once.
    - `decode(feature_acts [..., L, d_sae], x [..., L, d_in] | None) -> [..., L, d_out]`: every covered
      output (decoder biases and skip paths included; x is needed only with skip paths).
    - `forward(x [..., L, d_in]) -> [..., L, d_out]`: decode(encode(x), x).
    - `decode_layer(feature_acts [..., d_sae], layer) -> [..., len(target_layers(layer)), d_out]`:
      what one layer's features write to each of its target layers (no bias, no skip).
    - `target_layers(layer) -> tuple[int, ...]`: the layers a feature of `layer` writes to (a CLT:
      `layer` and every later covered one; a transcoder set: `(layer,)`).
    - `decoder_vectors(layer, features [n] int64) -> [n, len(target_layers(layer)), d_out]`.
    - `encoder_vectors(layer, features [n] int64) -> [n, d_in]`: pre = x @ v + b for each feature.
    - `encoder_bias(layer) -> [d_sae]`, `decoder_bias() -> [L, d_out]`.
    - `skip(x [..., L, d_in]) -> [..., L, d_out] | None`: the skip paths' part of the outputs.
    """

    kind: str
    layers: tuple[int, ...]
    d_in: int
    d_out: int
    d_sae: int
    model_name: str
    hook_names: tuple[str, ...]
    hooks_out: tuple[str, ...]

    def encode_layer(self, x: Tensor, layer: int) -> Tensor: ...
    def encode_layer_sparse(self, x: Tensor, layer: int) -> SparseFeatureActs: ...
    def encode(self, x: Tensor) -> Tensor: ...
    def decode(self, feature_acts: Tensor, x: Tensor | None = None) -> Tensor: ...
    def decode_layer(self, feature_acts: Tensor, layer: int) -> Tensor: ...
    def target_layers(self, layer: int) -> tuple[int, ...]: ...
    def decoder_vectors(self, layer: int, features: Tensor) -> Tensor: ...
    def encoder_vectors(self, layer: int, features: Tensor) -> Tensor: ...
    def encoder_bias(self, layer: int) -> Tensor: ...
    def decoder_bias(self) -> Tensor: ...
    def skip(self, x: Tensor) -> Tensor | None: ...
    def save(self, folder: str | Path, *, metrics: dict | None = None, extra: dict | None = None) -> Path: ...


@torch.no_grad()
def encode_sparse(model: "ReplacementModel", x: Tensor, rows: Tensor | None = None) -> SparseFeatureActs:
    """Raw inputs of every covered layer [..., L, d_in] -> all features as one sparse row per token,
    feature index `position * d_sae + feature` (`n_features` = L * d_sae columns), on CPU. `rows` (bool,
    x's leading shape) selects the tokens to encode; the others get empty rows (as
    `SparseAutoencoder.encode_sparse`)."""
    L = len(model.layers)
    if x.shape[-2:] != (L, model.d_in):
        raise ValueError(f"encode_sparse expects inputs [..., L, d_in]=[..., {L}, {model.d_in}], got {tuple(x.shape)}.")
    if rows is not None and rows.shape != x.shape[:-2]:
        raise ValueError(f"encode_sparse: rows has shape {tuple(rows.shape)} but the inputs have {tuple(x.shape[:-2])} "
                         f"tokens.")
    x = x.reshape(-1, L, model.d_in)
    n_all = x.shape[0]
    selected = None if rows is None else rows.reshape(-1).to(x.device)
    if selected is not None:
        x = x[selected]
    n = x.shape[0]
    token, feature, value = [], [], []
    for i, layer in enumerate(model.layers):
        acts = model.encode_layer_sparse(x[:, i], layer)
        token.append(torch.repeat_interleave(torch.arange(n), acts.row_ptr.diff()))
        feature.append(acts.features.long() + i * model.d_sae)
        value.append(acts.values)
    token, feature, value = torch.cat(token), torch.cat(feature), torch.cat(value)
    order = torch.argsort(token, stable=True)  # by token, each token's layers in order
    lengths = torch.zeros(n_all, dtype=torch.int64)
    counts = torch.bincount(token, minlength=n)
    if selected is None:
        lengths = counts
    else:
        lengths[selected.cpu()] = counts
    return SparseFeatureActs(SparseFeatureActs.row_ptr_of(lengths), feature[order], value[order], L * model.d_sae)


def check_layers(layers: Sequence[int]) -> tuple[int, ...]:
    """`layers` as a tuple, checked: a non-empty, increasing sequence of block numbers >= 0."""
    layers = tuple(layers)
    if (not layers or not all(isinstance(l, int) and not isinstance(l, bool) and l >= 0 for l in layers)
            or any(a >= b for a, b in zip(layers, layers[1:]))):
        raise ValueError(f"layers is {layers!r}; it must be increasing block numbers >= 0, e.g. (0, 1, 2, 3).")
    return layers


def layer_position(layers: tuple[int, ...], layer: int) -> int:
    """Where block `layer` is in `layers` (the index of its part of stacked tensors)."""
    try:
        return layers.index(layer)
    except ValueError:
        raise ValueError(f"layer {layer!r} is not covered; this replacement model covers layers "
                         f"{list(layers)}.") from None


@torch.no_grad()
def layer_loss_weights(target_sample: Tensor) -> Tensor:
    """The weight of each target layer's squared error in the loss, from a sample of (normalized)
    targets [n, L, d_out]: w_m = mean(v) / v_m, v_m the variance of layer m's targets (the mean over
    tokens of ||y_m - mean(y_m)||^2). Each layer's error then counts relative to how much there is to
    explain there, so no layer dominates, and the weights average to the plain sum's scale; for one
    layer the weight is exactly 1 (a transcoder's loss). float64 [L]."""
    sample = target_sample.double()
    variance = (sample - sample.mean(0)).pow(2).sum(-1).mean(0).clamp_min(1e-12)  # [L]
    return variance.mean() / variance


def weighted_squared_error(x_hat: Tensor, target: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """(sum_m weights[m] * sse_m, sse_m [L] detached) for x_hat, target [batch, L, d], sse_m the squared
    error of layer m summed over the batch and d. Divided by the batch size, with one layer and weight 1,
    it is `SparseAutoencoder._mse` bit for bit (the same reduction, then a multiplication by 1)."""
    # (unbind: one gradient buffer for all layers; x_hat[:, m] would allocate a full one per layer)
    per_layer = torch.stack([F.mse_loss(a, b, reduction="sum") for a, b in zip(x_hat.unbind(1), target.unbind(1))])
    return (per_layer * weights.to(per_layer.dtype)).sum(), per_layer.detach()


# ----------------------------------------------------------------------------------------------
# Transcoder sets


def _check_same(values: dict[int, Any], what: str) -> Any:
    distinct = set(values.values())
    if len(distinct) != 1:
        raise ValueError(f"the members of a transcoder set must share {what}; got {values}.")
    return distinct.pop()


class TranscoderSet(nn.Module):
    """One transcoder per covered layer (each a `SparseAutoencoder` with `hook_out`, any
    architecture, optional skip path), as one replacement model.

    `TranscoderSet({layer: transcoder, ...})` or `TranscoderSet([transcoders])`: every member reads
    one block's hook and predicts a hook of the same block (`hook_layer` of both is its layer); all
    share d_in, d_out and d_sae. Members stay ordinary dictionaries: `set.member(layer)`, `set[layer]`.

    Training: the members are independent transcoders (one loss each, no shared parameters); the
    set's `training_forward` runs them all on one batch and adds their losses, so one optimizer over
    `set.parameters()` trains each as its own run would (Adam is per parameter), except that gradient
    clipping over all of them at once couples their step sizes: clip per member for the same run.
    """

    kind: ClassVar[str] = "transcoder_set"

    def __init__(self, members: dict[int, SparseAutoencoder] | Sequence[SparseAutoencoder]):
        super().__init__()
        if not isinstance(members, dict):
            members = {hook_layer(m.hook_name): m for m in members}
        if not members:
            raise ValueError("a transcoder set needs at least one transcoder.")
        for layer, member in members.items():
            if not isinstance(member, SparseAutoencoder) or not member.is_transcoder:
                raise ValueError(f"the member of layer {layer} is not a transcoder (a SparseAutoencoder with hook_out); "
                                 f"a transcoder set holds one transcoder per MLP.")
            if hook_layer(member.hook_name) != layer or hook_layer(member.hook_out) != layer:
                raise ValueError(f"the member given for layer {layer} reads {member.hook_name} and predicts "
                                 f"{member.hook_out}; both hooks must belong to block {layer}.")
            if not isinstance(member.normalization, Scaling):
                raise ValueError(f"the member of layer {layer} normalizes its input as an imported SAE does; a "
                                 f"transcoder set holds transcoders only.")
        self.layers = check_layers(sorted(members))
        self.d_in = _check_same({l: members[l].d_in for l in self.layers}, "d_in")
        self.d_out = _check_same({l: members[l].d_out for l in self.layers}, "d_out")
        self.d_sae = _check_same({l: members[l].d_sae for l in self.layers}, "d_sae")
        self.model_name = _check_same({l: members[l].model_name for l in self.layers}, "model_name")
        self.members = nn.ModuleDict({transcoder_set_member(l): members[l] for l in self.layers})
        self.saved_config: dict[str, Any] = {}
        """What config.json held when this set was loaded ({} for a fresh one)."""

    # ---------------------------------------------------------------- the members

    def member(self, layer: int) -> SparseAutoencoder:
        """The transcoder of block `layer`."""
        layer_position(self.layers, layer)
        return self.members[transcoder_set_member(layer)]

    __getitem__ = member

    def __iter__(self):
        return (self.member(l) for l in self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def hook_names(self) -> tuple[str, ...]:
        return tuple(m.hook_name for m in self)

    @property
    def hooks_out(self) -> tuple[str, ...]:
        return tuple(m.hook_out for m in self)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        return next(iter(self)).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self)).dtype

    @property
    def has_inference_threshold(self) -> bool:
        return any(m.has_inference_threshold for m in self)

    # ---------------------------------------------------------------- inference (see ReplacementModel)

    def _check_stacked(self, x: Tensor, width: int, what: str) -> None:
        if x.ndim < 2 or x.shape[-2:] != (self.n_layers, width):
            raise ValueError(f"expected {what} of shape [..., L, {width}] with L={self.n_layers} covered layers "
                             f"{list(self.layers)}, got {tuple(x.shape)}.")

    def encode_layer(self, x: Tensor, layer: int) -> Tensor:
        return self.member(layer).encode(x)

    def encode_layer_sparse(self, x: Tensor, layer: int) -> SparseFeatureActs:
        return self.member(layer).encode_sparse(x)

    @property
    def n_features(self) -> int:
        """Features over all covered layers (L * d_sae; flat index `position * d_sae + feature`)."""
        return self.n_layers * self.d_sae

    def encode_sparse(self, x: Tensor, rows: Tensor | None = None) -> SparseFeatureActs:
        """Every covered layer's features as one sparse row per token (`replacement.encode_sparse`)."""
        return encode_sparse(self, x, rows)

    def encode(self, x: Tensor) -> Tensor:
        self._check_stacked(x, self.d_in, "inputs")
        return torch.stack([m.encode(x[..., i, :]) for i, m in enumerate(self)], dim=-2)

    def decode(self, feature_acts: Tensor, x: Tensor | None = None) -> Tensor:
        self._check_stacked(feature_acts, self.d_sae, "feature activations")
        if x is not None:
            self._check_stacked(x, self.d_in, "inputs")
        return torch.stack([m.decode(feature_acts[..., i, :], None if x is None else x[..., i, :])
                            for i, m in enumerate(self)], dim=-2)

    def forward(self, x: Tensor) -> Tensor:
        self._check_stacked(x, self.d_in, "inputs")
        return torch.stack([m(x[..., i, :]) for i, m in enumerate(self)], dim=-2)

    def target_layers(self, layer: int) -> tuple[int, ...]:
        layer_position(self.layers, layer)
        return (layer,)

    def decode_layer(self, feature_acts: Tensor, layer: int) -> Tensor:
        m = self.member(layer)
        return m.normalization.restore(feature_acts.to(m.dtype) @ m.W_dec, None).unsqueeze(-2)

    def decoder_vectors(self, layer: int, features: Tensor) -> Tensor:
        m = self.member(layer)
        return m.normalization.restore(m.W_dec[features], None).unsqueeze(1)

    def encoder_vectors(self, layer: int, features: Tensor) -> Tensor:
        m = self.member(layer)
        return (m.W_enc[:, features] * m.normalization.scales()[0]).T

    def encoder_bias(self, layer: int) -> Tensor:
        return self.member(layer).b_enc

    def decoder_bias(self) -> Tensor:
        return torch.stack([m.normalization.restore(m.b_dec, None) for m in self])

    def skip(self, x: Tensor) -> Tensor | None:
        self._check_stacked(x, self.d_in, "inputs")
        if all(m.W_skip is None for m in self):
            return None
        parts = [torch.zeros(*x.shape[:-2], self.d_out, dtype=m.dtype, device=x.device) if m.W_skip is None else
                 m.normalization.restore(m.normalization.normalize_input(x[..., i, :].to(m.dtype)) @ m.W_skip, None)
                 for i, m in enumerate(self)]
        return torch.stack(parts, dim=-2)

    # ---------------------------------------------------------------- training

    def training_forward(self, x: Tensor, *, target: Tensor, sparsity_coefficient: float | None = None,
                         dead_mask: Tensor | None = None,
                         batch_sum: Callable[[Tensor], Tensor] | None = None) -> ReplacementOutput:
        """Every member's `training_forward` on NORMALIZED x [batch, L, d_in] and target [batch, L, d_out];
        `dead_mask` [L * d_sae] bool; `batch_sum` as `SparseAutoencoder.training_forward`'s. The losses are
        the sums of the members'."""
        if x.ndim != 3:
            raise ValueError(f"training_forward expects inputs of shape [batch, L, d_in], got {tuple(x.shape)}.")
        self._check_stacked(x, self.d_in, "inputs")
        if target is None or target.shape != (x.shape[0], self.n_layers, self.d_out):
            raise ValueError(f"a transcoder set trains on targets of shape [batch, L, d_out]=[{x.shape[0]}, "
                             f"{self.n_layers}, {self.d_out}]; got {None if target is None else tuple(target.shape)}.")
        if dead_mask is not None and dead_mask.numel() and dead_mask.shape != (self.n_layers * self.d_sae,):
            raise ValueError(f"dead_mask must have shape [L * d_sae]=[{self.n_layers * self.d_sae}], got "
                             f"{tuple(dead_mask.shape)}.")
        masks = [None] * self.n_layers if dead_mask is None or not dead_mask.numel() else \
            dead_mask.view(self.n_layers, self.d_sae).unbind(0)
        outs = [m.training_forward(x[:, i], target=target[:, i], sparsity_coefficient=sparsity_coefficient,
                                   dead_mask=masks[i], batch_sum=batch_sum) for i, m in enumerate(self)]
        total = lambda name: torch.stack([getattr(o, name) for o in outs]).sum()  # noqa: E731
        layer_mse = torch.stack([SparseAutoencoder._mse(o.x_hat.detach(), target[:, i]) for i, o in enumerate(outs)])
        layer_l0 = torch.stack([o.l0 for o in outs])
        return ReplacementOutput(x_hat=torch.stack([o.x_hat for o in outs], dim=1),
                                 fire_counts=torch.cat([o.fire_counts for o in outs]), loss=total("loss"),
                                 mse_loss=total("mse_loss"), sparsity_loss=total("sparsity_loss"),
                                 aux_loss=total("aux_loss"), l0=layer_l0.sum(), layer_mse=layer_mse, layer_l0=layer_l0)

    @torch.no_grad()
    def initialize_decoder_bias(self, target_sample: Tensor) -> None:
        """Each member's b_dec from NORMALIZED targets [n, L, d_out]."""
        self._check_stacked(target_sample, self.d_out, "targets")
        for i, m in enumerate(self):
            m.initialize_decoder_bias(target_sample[:, i])

    def set_decoder_norm_to_unit_norm(self) -> None:
        for m in self:
            m.set_decoder_norm_to_unit_norm()

    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        for m in self:
            m.remove_gradient_parallel_to_decoder_directions()

    @torch.no_grad()
    def calibrate_threshold(self, batches: Iterable[Tensor]) -> list[float | None]:
        """The members' inference thresholds from NORMALIZED inputs [batch, L, d_in] (None for a member
        without one)."""
        batches = list(batches)
        return [m.calibrate_threshold([x[:, i] for x in batches]) if m.has_inference_threshold else None
                for i, m in enumerate(self)]

    @torch.no_grad()
    def set_normalization_scales(self, input_scales: Sequence[float] | Tensor,
                                 output_scales: Sequence[float] | Tensor) -> None:
        """The members' normalization constants, [L] each (the trainer's `expected_average_only_in`)."""
        for m, s_in, s_out in zip(self, torch.as_tensor(input_scales).tolist(), torch.as_tensor(output_scales).tolist()):
            m.normalization.set_scales(s_in, s_out)

    def fold_normalization(self) -> None:
        for m in self:
            m.fold_normalization()

    def normalize_inputs(self, x: Tensor) -> Tensor:
        """Raw inputs [..., L, d_in] -> the normalized ones `training_forward` takes."""
        return torch.stack([m.normalization.normalize_input(x[..., i, :]) for i, m in enumerate(self)], dim=-2)

    def normalize_targets(self, y: Tensor) -> Tensor:
        """Raw targets [..., L, d_out] -> the normalized ones `training_forward` takes."""
        return torch.stack([m.normalization.normalize_target(y[..., i, :]) for i, m in enumerate(self)], dim=-2)

    # ---------------------------------------------------------------- disk

    def config_dict(self, *, metrics: dict | None = None, extra: dict | None = None) -> dict:
        """The top-level config.json of the set's folder."""
        extra = dict(extra or {})
        reserved = {"format_version", "kind", "layers", "members", "model_name", "d_in", "d_out", "d_sae", "hook_names",
                    "hooks_out", "metrics"}
        clash = sorted(set(extra) & reserved)
        if clash:
            raise ValueError(f"extra may not set {', '.join(clash)}: save() writes these keys itself.")
        return {"format_version": REPLACEMENT_FORMAT_VERSION, "kind": self.kind, "layers": list(self.layers),
                "members": [transcoder_set_member(l) for l in self.layers], "model_name": self.model_name,
                "d_in": self.d_in, "d_out": self.d_out, "d_sae": self.d_sae, "hook_names": list(self.hook_names),
                "hooks_out": list(self.hooks_out), "metrics": dict(metrics or {}), **extra}

    def save(self, folder: str | Path, *, metrics: dict | None = None, extra: dict | None = None,
             member_metrics: dict[int, dict] | None = None) -> Path:
        """Write the set: folder/config.json (kind "transcoder_set", layers, member folders) and one
        ordinary dictionary folder per member, `folder/layer_<N>/` (`SparseAutoencoder.save`, normalization
        folded), which `load_dictionary` also opens alone. config.json is removed first and written last,
        so an interrupted save leaves no folder that loads as a set with members of different saves.
        `member_metrics` {layer: metrics} go into the members' own config.json."""
        folder = Path(folder)
        text = json.dumps(self.config_dict(metrics=metrics, extra=extra), indent=2, default=_json_default) + "\n"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DICTIONARY_CONFIG_FILENAME).unlink(missing_ok=True)
        for layer in self.layers:
            self.member(layer).save(folder / transcoder_set_member(layer), metrics=(member_metrics or {}).get(layer),
                                    extra={"transcoder_set": {"layer": layer, "layers": list(self.layers)}})
        write_config_last(folder, text)
        return folder


def write_config_last(folder: Path, config_text: str, weights: dict[str, Tensor] | None = None,
                      weights_name: str | None = None) -> None:
    """Write `weights` (safetensors, if any) and then config.json into `folder`, each through a
    temporary file renamed into place; the old config.json is removed before the weights are
    replaced, so a crash never leaves new weights under an old config."""
    config_tmp = temp_sibling(folder / DICTIONARY_CONFIG_FILENAME)
    weights_tmp = temp_sibling(folder / weights_name) if weights is not None else None
    try:
        if weights is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(weights_tmp),
                      metadata={"format": "pt"})
        config_tmp.write_text(config_text)
        (folder / DICTIONARY_CONFIG_FILENAME).unlink(missing_ok=True)
        if weights is not None:
            publish(weights_tmp, folder / weights_name)
        publish(config_tmp, folder / DICTIONARY_CONFIG_FILENAME)
    finally:
        config_tmp.unlink(missing_ok=True)
        if weights_tmp is not None:
            weights_tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Memory


@dataclass(frozen=True)
class ReplacementModelMemory:
    """Parameters of a replacement model and the bytes its training holds (float32 weights)."""

    parameters: int
    """Number of trained parameters (encoders, decoders, biases, skip paths, thresholds)."""
    weight_bytes: int
    gradient_bytes: int
    adam_bytes: int
    """Adam's two moments: twice the weights."""

    @property
    def training_bytes(self) -> int:
        """Weights + gradients + Adam's moments (activations and batches not included)."""
        return self.weight_bytes + self.gradient_bytes + self.adam_bytes


def replacement_model_memory(kind: str, n_layers: int, d_in: int, d_sae: int, d_out: int | None = None, *,
                             skip: bool = False, thresholds: bool = False, bytes_per_value: int = 4
                             ) -> ReplacementModelMemory:
    """Memory of a "cross_layer_transcoder" or a "transcoder_set" over `n_layers` layers with `d_sae`
    features per layer. A CLT's decoders grow with the square of the layers: layer l's features
    write to the n_layers - l layers from l on, n_layers (n_layers + 1) / 2 decoder blocks in all;
    a set has one block per layer. `thresholds`: jumprelu's per-feature thresholds."""
    d_out = d_in if d_out is None else d_out
    if kind == "cross_layer_transcoder":
        decoder_blocks = n_layers * (n_layers + 1) // 2
    elif kind == "transcoder_set":
        decoder_blocks = n_layers
    else:
        raise ValueError(f"kind is {kind!r}; it must be 'cross_layer_transcoder' or 'transcoder_set'.")
    per_layer = d_in * d_sae + d_sae + d_out + (d_in * d_out if skip else 0) + (d_sae if thresholds else 0)
    n = n_layers * per_layer + decoder_blocks * d_sae * d_out
    weights = n * bytes_per_value
    return ReplacementModelMemory(parameters=n, weight_bytes=weights, gradient_bytes=weights, adam_bytes=2 * weights)


__all__ = ["REPLACEMENT_FORMAT_VERSION", "ReplacementModel", "ReplacementModelMemory", "ReplacementOutput",
           "TranscoderSet", "check_layers", "layer_loss_weights", "layer_position", "replacement_model_memory",
           "weighted_squared_error"]
