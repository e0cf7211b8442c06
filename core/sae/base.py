"""What every dictionary shares: the affine encoder and decoder, transcoders, normalization
folding, the decoder constraints, and writing the on-disk format.

`create_dictionary(cfg, d_in, ...)` builds the class of `cfg.architecture` (`ReLUSAE`,
`JumpReLUSAE` in `dense.py`; `TopKSAE`, `BatchTopKSAE`, `MatryoshkaBatchTopKSAE` in `topk.py`; each
registers itself); they differ only in the activation rule, the sparsity penalty and how they train.

    SAE:         pre = (x - b_dec) @ W_enc + b_enc;  f = act(pre);  x_hat = f @ W_dec + b_dec
    transcoder:  pre = x @ W_enc + b_enc;            f = act(pre);  y_hat = f @ W_dec + b_dec [+ x @ W_skip]

A transcoder (`hook_out` set) reads the activations x of `hook_name` [d_in] and predicts those of
`hook_out` [d_out], e.g. an MLP's input `blocks.N.ln2.hook_normalized` -> its output
`blocks.N.hook_mlp_out`. It does not subtract b_dec from its input (b_dec lives in the output
space), and it may have a trained linear skip path W_skip [d_in, d_out] (`sae.skip_connection`).

Two spaces exist. `sae.normalization` (`core.sae.normalization`) maps raw activations into the
encoder's space on the way in and the reconstruction back on the way out: the trainer feeds
`training_forward` *normalized* activations (`normalization.normalize_input(x_raw)`, and for a
transcoder the target `normalization.normalize_target(y_raw)`); `encode` / `decode` / `forward`
take and return *raw* activations and apply it themselves. A trained dictionary's normalization is
a `Scaling` by constants, which `save` folds into the weights (W_enc * s_in, W_dec / s_out,
b_dec / s_out, W_skip * s_in / s_out), so a loaded dictionary has scales 1 and works on raw
activations; other libraries' dictionaries may bring one that cannot be folded (see that module).

On disk (format_version 2; version 1 folders, SAEs only, still load): a folder with `config.json`
(architecture, sizes, hook_name, hook_out, d_out, model name, the folded constants, metrics) and
`sae.safetensors` (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_out], b_dec [d_out], W_skip when
present, the architecture's thresholds). Reading is `core.sae.loading`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from ..config import ConfigError, SAEConfig
from ..files import publish, temp_sibling
from ..layout import DICTIONARY_CONFIG_FILENAME, DICTIONARY_WEIGHTS_FILENAME
from .normalization import IMPORTED_NORMALIZATIONS, Normalization, Scaling
from .sparse import SparseFeatureActs, project_out_rows

FORMAT_VERSION = 2
"""Version of the on-disk dictionary format written by `SparseAutoencoder.save`. 2 added
transcoders (hook_out, d_out, output_normalization_scale, W_skip) and matryoshka_batchtopk;
folders of version 1 are read as well."""
CONFIG_FILENAME = DICTIONARY_CONFIG_FILENAME
WEIGHTS_FILENAME = DICTIONARY_WEIGHTS_FILENAME

ENCODE_CHUNK_TOKENS = 256
"""Tokens whose pre-activations `encode_sparse` computes at once on CPU: a [256, d_sae] block
stays in cache from the matmul to the top-k, where a whole batch's would go through memory twice."""

# Keys `save` writes itself; `extra` may not override them.
_RESERVED_KEYS = ("format_version", "architecture", "d_in", "d_sae", "d_out", "hook_name", "hook_out",
                  "model_name", "dtype", "sae", "normalization_scale", "output_normalization_scale",
                  "normalization_folded", "metrics", *IMPORTED_NORMALIZATIONS)
_LEGACY_STATE_KEYS = {"normalization_scale": "normalization.input_scale",
                      "output_normalization_scale": "normalization.output_scale"}
"""State-dict keys of checkpoints written before the normalization object, and what they are now."""


class SAEOutput(NamedTuple):
    """Everything one training step needs, from `SparseAutoencoder.training_forward`."""

    x_hat: Tensor
    """[batch, d_out] reconstruction of the target (the input for an SAE), in the normalized space
    the target was given in; a transcoder's includes the skip path."""

    fire_counts: Tensor
    """int64 [d_sae]: on how many tokens of the batch each latent was active (non-zero). Top-k
    dictionaries never build the dense [batch, d_sae] activations in training; this is what the
    feature-activity statistics need of them."""

    loss: Tensor
    """Scalar total loss to backpropagate: mse_loss + sparsity_loss + aux_loss."""

    mse_loss: Tensor
    """Scalar: squared error summed over d_out, averaged over the batch. matryoshka_batchtopk: the
    mean of that over its nested prefixes (the last prefix's is the error of x_hat)."""

    sparsity_loss: Tensor
    """Scalar, already weighted: relu's L1 term or jumprelu's L0 term; 0 for the top-k family."""

    aux_loss: Tensor
    """Scalar, already weighted: the AuxK term of the top-k family; 0 otherwise."""

    l0: Tensor
    """Scalar, detached: mean number of non-zero latents per token."""


def geometric_median(points: Tensor, max_iter: int = 100, tol: float = 1e-5) -> Tensor:
    """Geometric median of `points` [n, d] by Weiszfeld's algorithm, computed in float32.

    The point minimizing the sum of Euclidean distances to all points; unlike the mean it is
    barely moved by a few outliers. Stops when an iteration moves the estimate by less than
    `tol` times the mean distance of the points from it.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"geometric_median needs points of shape [n, d] with n >= 1, got {tuple(points.shape)}.")
    pts = points.float()
    median = pts.mean(0)
    for _ in range(max_iter):
        dist = (pts - median).norm(dim=1)
        # A point sitting exactly on the estimate would get infinite weight; clamping is the usual fix.
        weights = 1.0 / dist.clamp_min(1e-8)
        new_median = (weights[:, None] * pts).sum(0) / weights.sum()
        moved = (new_median - median).norm()
        median = new_median
        if moved <= tol * dist.mean().clamp_min(1e-12):
            break
    return median.to(points.dtype)


def _check_width(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


class SparseAutoencoder(nn.Module):
    """A dictionary of `d_sae` latents on activations of width `d_in`: an SAE, or with `hook_out`
    a transcoder predicting the `d_out`-wide activations of another hook.

    `create_dictionary(cfg, d_in, hook_name=..., model_name=...)` constructs the subclass of
    `cfg.architecture`; every subclass has this constructor.
    """

    architecture: ClassVar[str] = ""
    """The `SAEConfig.architecture` a subclass implements."""
    _classes: ClassVar[dict[str, type["SparseAutoencoder"]]] = {}

    def __init_subclass__(cls, architecture: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if architecture is not None:
            cls.architecture = architecture
            SparseAutoencoder._classes[architecture] = cls

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        *,
        hook_name: str,
        model_name: str,
        d_out: int | None = None,
        hook_out: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        cfg.validate()
        if cfg.architecture != self.architecture:
            raise ConfigError(f"sae.architecture is {cfg.architecture!r} but {type(self).__name__} implements "
                              f"{self.architecture!r}; construct it with create_dictionary(cfg, ...) instead.")
        _check_width("d_in", d_in)
        if hook_out is None:
            if d_out is not None and d_out != d_in:
                raise ValueError(f"d_out is {d_out!r} but an SAE reconstructs its input (d_in={d_in}); pass "
                                 f"hook_out for a transcoder, or leave d_out unset.")
            if cfg.skip_connection:
                raise ConfigError("sae.skip_connection is for transcoders (hook_out set); an SAE with a linear skip "
                                  "path would learn the identity. Set it to False or give hook_out.")
            d_out = d_in
        else:
            if not isinstance(hook_out, str) or not hook_out or hook_out == hook_name:
                raise ValueError(f"hook_out is {hook_out!r}; a transcoder's hook_out names the hook it predicts, "
                                 f"other than hook_name ({hook_name!r}). Leave it unset for an SAE.")
            d_out = d_in if d_out is None else d_out
            _check_width("d_out", d_out)
        self.cfg = cfg
        self.d_in = d_in
        self.d_out = d_out
        self.d_sae = cfg.resolve_d_sae(d_in)
        self.hook_name = hook_name
        self.hook_out = hook_out
        self.model_name = model_name
        self.saved_config: dict[str, Any] = {}
        """What config.json held when this dictionary was loaded ({} for a fresh one)."""
        factory = dict(device=device, dtype=dtype)
        # Decoder rows are random unit vectors. The encoder starts as the decoder's transpose where
        # both act on the same space, else as random unit columns (the same scale of pre-activations).
        W_dec = torch.randn(self.d_sae, d_out, device=device, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        if d_in == d_out:
            W_enc = W_dec.T.clone().contiguous()
        else:
            W_enc = torch.randn(d_in, self.d_sae, device=device, dtype=torch.float32)
            W_enc /= W_enc.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(W_dec.to(dtype))  # [d_sae, d_out]
        self.W_enc = nn.Parameter(W_enc.to(dtype))  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae, **factory))
        self.b_dec = nn.Parameter(torch.zeros(d_out, **factory))
        self.register_parameter("W_skip", nn.Parameter(torch.zeros(d_in, d_out, **factory))
                                if cfg.skip_connection else None)  # [d_in, d_out]
        # An SAE's output is its input: one constant serves both ways.
        self.normalization: Normalization = Scaling(tied=not self.is_transcoder, **factory)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, also for checkpoints written before the normalization object (keys
        `normalization_scale`, `output_normalization_scale`)."""
        state_dict = {_LEGACY_STATE_KEYS.get(k, k): v for k, v in state_dict.items()}
        if isinstance(self.normalization, Scaling) and self.normalization.tied:
            state_dict.pop("normalization.output_scale", None)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def is_transcoder(self) -> bool:
        """True when this dictionary predicts another hook's activations (`hook_out`)."""
        return self.hook_out is not None

    @property
    def has_inference_threshold(self) -> bool:
        """True for the batch-level top-k dictionaries, whose inference rule is a threshold that
        `calibrate_threshold` sets from the final encoder (the trainer does so before saving)."""
        return False

    # ---------------------------------------------------------------- encoding and decoding

    def _centered(self, x: Tensor) -> Tensor:
        """The encoder's input: an SAE subtracts its decoder bias, a transcoder (whose b_dec lives in
        the output space) does not."""
        return x if self.is_transcoder else x - self.b_dec

    def _pre_acts(self, x: Tensor) -> Tensor:
        """[..., d_in] normalized activations -> [..., d_sae] pre-activations."""
        return self._centered(x) @ self.W_enc + self.b_enc

    def _activate(self, pre: Tensor) -> Tensor:
        """The inference activation rule: pre-activations -> feature activations."""
        raise NotImplementedError

    def _reconstruct(self, feature_acts: Tensor, x: Tensor) -> Tensor:
        """Normalized feature activations and inputs -> normalized reconstruction [..., d_out]."""
        return self._with_skip(feature_acts @ self.W_dec + self.b_dec, x)

    def _with_skip(self, y: Tensor, x: Tensor) -> Tensor:
        return y if self.W_skip is None else y + x @ self.W_skip

    def _normalized_input(self, x: Tensor) -> Tensor:
        """Raw activations -> what the encoder reads (`normalization.normalize_input`)."""
        return self.normalization.normalize_input(x.to(self.dtype))

    def encode(self, x: Tensor) -> Tensor:
        """Raw activations [..., d_in] -> feature activations [..., d_sae] (inference rule).

        The batch-level top-k dictionaries use their learned global threshold here, not the
        batch top-k of training.
        """
        self._check_input(x)
        return self._activate(self._pre_acts(self._normalized_input(x)))

    @torch.no_grad()
    def encode_sparse(self, x: Tensor, rows: Tensor | None = None) -> SparseFeatureActs:
        """Raw activations [..., d_in] -> the activations `encode` gives, as sparse rows on CPU
        (one row per token, in row-major order of the leading dimensions).

        `rows` (bool, x's leading shape) selects the tokens to encode; the others get empty rows
        and cost nothing (the analyzer skips BOS / EOS / pad positions this way). topk dictionaries
        never build a dense [tokens, d_sae] matrix here (`TopKSAE`); the others encode densely and
        keep the positive entries.
        """
        self._check_input(x)
        if rows is not None and rows.shape != x.shape[:-1]:
            raise ValueError(f"encode_sparse: rows has shape {tuple(rows.shape)} but the activations have "
                             f"{tuple(x.shape[:-1])} tokens.")
        x = x.reshape(-1, self.d_in)
        n_all = x.shape[0]
        selected = None if rows is None else rows.reshape(-1).to(x.device)
        if selected is not None:
            x = x[selected]
        acts = self._sparse_rows(self._normalized_input(x))
        if selected is None:
            return acts
        all_lengths = torch.zeros(n_all, dtype=torch.int64)
        all_lengths[selected.cpu()] = acts.row_ptr.diff()
        return acts._replace(row_ptr=SparseFeatureActs.row_ptr_of(all_lengths))

    def _sparse_rows(self, x: Tensor) -> SparseFeatureActs:
        """Normalized activations [n, d_in] -> their feature activations as sparse rows on CPU."""
        return SparseFeatureActs.from_dense(self._activate(self._pre_acts(x)))

    def _cpu_pre_act_blocks(self, centered: Tensor) -> Iterator[tuple[int, Tensor]]:
        """(start, pre-activations of centered[start:start + ENCODE_CHUNK_TOKENS]) block by block.

        float32 on an MKL build: MKL's packed GEMM, whose weight is reordered once per weight
        version (`torch.ops.mkl._mkl_linear`, the kernel torch's CPU inference compiler uses for
        frozen linear layers; about 20% faster than a plain matmul). The last block is padded
        to full size, so every token's result is the same whichever block it falls in. Otherwise
        the matmul and bias of `_pre_acts` on each block. Both agree with `_pre_acts` up to float
        rounding (the order of the additions differs)."""
        n, rows = centered.shape[0], ENCODE_CHUNK_TOKENS
        packed = self._packed_encoder() if centered.dtype == torch.float32 else None
        if packed is not None:
            weight_t, packed_weight = packed
            for start in range(0, n, rows):
                chunk = centered[start:start + rows]
                if len(chunk) < rows:
                    chunk = torch.cat([chunk, chunk.new_zeros(rows - len(chunk), chunk.shape[1])])
                yield start, torch.ops.mkl._mkl_linear(chunk, packed_weight, weight_t, self.b_enc, rows)
            return
        block = torch.empty(min(n, rows), self.d_sae, dtype=centered.dtype)
        for start in range(0, n, rows):
            chunk = centered[start:start + rows]
            pre = torch.matmul(chunk, self.W_enc, out=block[:len(chunk)])
            pre += self.b_enc
            yield start, pre

    def _packed_encoder(self) -> tuple[Tensor, Tensor] | None:
        """(W_enc^T, W_enc^T reordered for MKL's packed GEMM), cached until W_enc changes; None
        where this torch build has no MKL packed GEMM."""
        key = (self.W_enc.data_ptr(), self.W_enc._version, ENCODE_CHUNK_TOKENS)
        cached = self.__dict__.get("_packed_encoder_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        packed = None
        if torch.backends.mkl.is_available():
            try:
                weight_t = self.W_enc.detach().t().contiguous()
                packed = weight_t, torch.ops.mkl._mkl_reorder_linear_weight(weight_t, ENCODE_CHUNK_TOKENS)
            except (AttributeError, RuntimeError):  # a build without the op
                packed = None
        self.__dict__["_packed_encoder_cache"] = (key, packed)
        return packed

    def decode(self, feature_acts: Tensor, x: Tensor | None = None) -> Tensor:
        """Feature activations [..., d_sae] -> reconstruction [..., d_out] in raw (output) space.

        A transcoder with a skip connection also needs the raw in-hook activations `x` [..., d_in], as
        does a normalization that restores each token's statistics (`TokenStandardization`); a
        `ResidualCentering` dictionary adds the mean over d_model of `x` back when given `x` (`forward`
        does), else it gives the reconstruction of the centered activations.
        """
        y = feature_acts.to(self.dtype) @ self.W_dec + self.b_dec
        if self.W_skip is not None and x is None:
            raise ValueError("this transcoder has a skip connection, so decode needs the in-hook activations "
                             "too: decode(feature_acts, x), or call it on x directly (forward).")
        if x is not None:
            self._check_input(x)
            x = x.to(self.dtype)
            if self.W_skip is not None:
                y = self._with_skip(y, self._normalized_input(x))
        return self.normalization.restore(y, x)

    def forward(self, x: Tensor) -> Tensor:
        """Raw activations [..., d_in] -> raw reconstruction [..., d_out] (a transcoder's prediction of
        its out-hook, skip path included)."""
        return self.decode(self.encode(x), x)

    def _check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected activations with last dimension d_in={self.d_in}, got shape "
                             f"{tuple(x.shape)}; is this the hook point the dictionary was trained on "
                             f"({self.hook_name})?")

    # ---------------------------------------------------------------- training

    def training_forward(
        self,
        x: Tensor,
        *,
        target: Tensor | None = None,
        sparsity_coefficient: float | None = None,
        dead_mask: Tensor | None = None,
        batch_sum: Callable[[Tensor], Tensor] | None = None,
    ) -> SAEOutput:
        """One training forward pass on NORMALIZED activations x [batch, d_in].

        `target` [batch, d_out]: a transcoder's normalized out-hook activations (an SAE's target is
        x itself; leave it None). `sparsity_coefficient` overrides cfg.l1_coefficient (relu) /
        cfg.l0_coefficient (jumprelu), so the trainer can warm it up. `dead_mask` [d_sae] (bool)
        marks latents that count as dead; the AuxK loss (top-k family) trains them to predict the
        residual. `batch_sum`, in a data-parallel job, sums a tensor over the ranks' slices of one
        global batch (x is this rank's slice): what looks at the whole batch (AuxK's normalization) is
        then computed over the global batch, so that the ranks' averaged gradients are one process's.
        """
        if not self.normalization.trainable:
            raise ValueError(f"this dictionary was imported with a normalization of another library "
                             f"({self.normalization.kind}), which this library uses for inference only; train a new "
                             f"one.")
        if x.ndim != 2:
            raise ValueError(f"training_forward expects activations of shape [batch, d_in], got {tuple(x.shape)}.")
        self._check_input(x)
        if self.is_transcoder:
            if target is None or target.shape != (x.shape[0], self.d_out):
                got = None if target is None else tuple(target.shape)
                raise ValueError(f"a transcoder trains on target activations of {self.hook_out} of shape "
                                 f"[batch, d_out]=[{x.shape[0]}, {self.d_out}]; got {got}.")
        elif target is not None:
            raise ValueError("an SAE reconstructs its input: pass target only to transcoders (hook_out set).")
        else:
            target = x
        if dead_mask is not None and dead_mask.numel() and dead_mask.shape != (self.d_sae,):
            raise ValueError(f"dead_mask must have shape [d_sae]=[{self.d_sae}], got {tuple(dead_mask.shape)}.")
        return self._training_forward(x, target, sparsity_coefficient, dead_mask, batch_sum)

    def _training_forward(self, x: Tensor, target: Tensor, sparsity_coefficient: float | None,
                          dead_mask: Tensor | None, batch_sum: Callable[[Tensor], Tensor] | None) -> SAEOutput:
        raise NotImplementedError

    @staticmethod
    def _mse(x_hat: Tensor, target: Tensor) -> Tensor:
        """Squared error summed over the last dimension, averaged over the others (one fused pass)."""
        return F.mse_loss(x_hat, target.expand_as(x_hat), reduction="sum") / (x_hat.numel() // x_hat.shape[-1])

    @torch.no_grad()
    def calibrate_threshold(self, batches: Iterable[Tensor]) -> float:
        """Set the inference threshold from the current encoder (see `has_inference_threshold`)."""
        raise ValueError(f"calibrate_threshold is for the dictionaries with an inference threshold (batchtopk, "
                         f"matryoshka_batchtopk), not {self.architecture}.")

    @torch.no_grad()
    def initialize_decoder_bias(self, sample: Tensor) -> None:
        """Set b_dec from NORMALIZED target activations `sample` [n, d_out] (an SAE's input, a
        transcoder's out-hook) per cfg.decoder_bias_init.

        Uses at most cfg.decoder_bias_init_samples rows: geometric_median, mean, or zeros.
        """
        if sample.ndim != 2 or sample.shape[1] != self.d_out or sample.shape[0] == 0:
            raise ValueError(f"initialize_decoder_bias needs a sample of target activations of shape "
                             f"[n, {self.d_out}], got {tuple(sample.shape)}.")
        sample = sample[: self.cfg.decoder_bias_init_samples].to(self.device)
        how = self.cfg.decoder_bias_init
        if how == "geometric_median":
            bias = geometric_median(sample.float())
        elif how == "mean":
            bias = sample.float().mean(0)
        else:
            bias = torch.zeros(self.d_out)
        self.b_dec.copy_(bias)

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        """Rescale every decoder row (latent direction) to unit L2 norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project out the part of W_dec.grad along each decoder row.

        With unit-norm rows that part would only change the row norms, which
        `set_decoder_norm_to_unit_norm` undoes anyway; removing it keeps Adam's statistics clean.
        """
        if self.W_dec.grad is None:
            return
        project_out_rows(self.W_dec.grad, self.W_dec.detach())  # grad -= <grad, w> / |w|^2 * w for every row w

    # ---------------------------------------------------------------- normalization and disk

    @torch.no_grad()
    def _folded_tensors(self) -> dict[str, Tensor]:
        """The tensors to save, with the normalization constants folded in (self is not modified).

        With (s_in, s_out) = normalization.scales() (the same for an SAE):
        act((s_in x - b_dec) W_enc + b_enc) = act((x - b_dec/s_in)(s_in W_enc) + b_enc) for an SAE,
        act((s_in x) W_enc + b_enc) = act(x (s_in W_enc) + b_enc) for a transcoder, and the raw
        output is f (W_dec / s_out) + b_dec / s_out + x (W_skip s_in / s_out). Pre-activations
        are unchanged, so the jumprelu and batch top-k thresholds need no change.
        """
        s_in, s_out = self.normalization.scales()
        tensors = {name: t.detach().clone() for name, t in self._saved_tensors().items()}
        tensors["W_enc"] = self.W_enc.detach() * s_in
        tensors["W_dec"] = self.W_dec.detach() / s_out
        tensors["b_dec"] = self.b_dec.detach() / s_out
        if self.W_skip is not None:
            tensors["W_skip"] = self.W_skip.detach() * (s_in / s_out)
        return {name: t.contiguous() for name, t in tensors.items()}

    def _saved_tensors(self) -> dict[str, Tensor]:
        """The parameters and buffers a dictionary file holds, by name (normalization excluded)."""
        names = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["W_skip"] if self.W_skip is not None else [])
        return {name: getattr(self, name) for name in names + list(self._architecture_tensor_names)}

    _architecture_tensor_names: ClassVar[tuple[str, ...]] = ()
    """The architecture's own saved tensors (thresholds)."""

    @torch.no_grad()
    def fold_normalization(self) -> None:
        """Fold the normalization constants into the weights in place and set them to 1.0.

        encode / decode on raw activations return the same numbers before and after. Decoder
        rows are no longer unit norm afterwards, so fold only when training is done.
        """
        for name, tensor in self._folded_tensors().items():
            getattr(self, name).copy_(tensor)
        if isinstance(self.normalization, Scaling):
            self.normalization.set_scales(1.0, 1.0)

    def config_dict(self, *, metrics: dict | None = None, extra: dict | None = None) -> dict:
        """The contents of the config.json that `save` writes (the constants as folded at save)."""
        extra = dict(extra or {})
        clash = sorted(set(extra) & set(_RESERVED_KEYS))
        if clash:
            raise ValueError(f"extra may not set {', '.join(clash)}: save() writes these keys itself.")
        return {
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "d_out": self.d_out if self.is_transcoder else None,
            "hook_name": self.hook_name,
            "hook_out": self.hook_out,
            "model_name": self.model_name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "sae": self.cfg.to_dict(),
            "normalization_scale": self.normalization.scales()[0],
            **({"output_normalization_scale": self.normalization.scales()[1]} if self.is_transcoder else {}),
            "normalization_folded": True,
            **({self.normalization.kind: True} if self.normalization.kind in IMPORTED_NORMALIZATIONS else {}),
            "metrics": dict(metrics or {}),
            **extra,
        }

    def save(self, folder: str | Path, *, metrics: dict | None = None, extra: dict | None = None) -> Path:
        """Write folder/config.json and folder/sae.safetensors, normalization folded in.

        The live SAE is not modified. `metrics` is stored under "metrics"; the keys of `extra`
        (e.g. dataset, context_size, training_tokens) are merged into config.json. Files are written
        to temporary names and renamed, config.json last, so an interrupted save never leaves a
        folder that looks like a complete dictionary with mismatched contents.
        """
        folder = Path(folder)
        config_text = json.dumps(self.config_dict(metrics=metrics, extra=extra), indent=2, default=_json_default) + "\n"
        tensors = {name: t.cpu() for name, t in self._folded_tensors().items()}

        folder.mkdir(parents=True, exist_ok=True)
        weights_tmp = temp_sibling(folder / WEIGHTS_FILENAME)
        config_tmp = temp_sibling(folder / CONFIG_FILENAME)
        try:
            save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
            config_tmp.write_text(config_text)
            # Drop the old config first: a crash between the two renames then leaves a folder
            # without config.json ("not a dictionary"), never new weights under an old config.
            (folder / CONFIG_FILENAME).unlink(missing_ok=True)
            publish(weights_tmp, folder / WEIGHTS_FILENAME)
            publish(config_tmp, folder / CONFIG_FILENAME)
        finally:
            weights_tmp.unlink(missing_ok=True)
            config_tmp.unlink(missing_ok=True)
        return folder


def _json_default(value: Any) -> Any:
    """Let metrics / extra hold tensors, numpy scalars and paths."""
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to config.json; pass numbers, strings, lists or dicts.")


def create_dictionary(cfg: SAEConfig, d_in: int, **kwargs: Any) -> SparseAutoencoder:
    """The dictionary of `cfg.architecture` on activations of width `d_in` (keyword arguments as
    `SparseAutoencoder`'s: hook_name, model_name, d_out, hook_out, device, dtype)."""
    cfg.validate()
    return SparseAutoencoder._classes[cfg.architecture](cfg, d_in, **kwargs)
