"""The sparse autoencoder ("dictionary"): architectures, losses, and its on-disk format.

One class, `SparseAutoencoder`, covers four architectures that share the same affine encoder
and decoder and differ only in the activation function and the sparsity penalty:

- `relu`: ReLU, with an L1 penalty weighted by decoder row norms.
- `topk`: the k largest latents per token (Gao et al. 2024), plus the AuxK loss on dead latents.
- `batchtopk`: the k * batch_size largest latents over the whole batch in training, and a learned
  global threshold at inference (Bussmann et al. 2024); AuxK as for topk.
- `jumprelu`: a per-latent learned threshold trained with straight-through estimators and an L0
  penalty (Rajamanoharan et al. 2024, "Jumping Ahead").

Two input spaces exist. The trainer feeds `training_forward` *normalized* activations
(`x_raw * normalization_scale`); `encode` / `decode` / `forward` take and return *raw*
activations and apply the scale themselves. `save` folds the scale into the weights, so a loaded
dictionary has `normalization_scale == 1` and works on raw activations directly.

A dictionary on disk is a folder with `config.json` and `sae.safetensors` (never pickles).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import ARCHITECTURES, ConfigError, SAEConfig
from .files import publish, temp_sibling

FORMAT_VERSION = 1
"""Version of the on-disk dictionary format written by `SparseAutoencoder.save`."""
CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "sae.safetensors"

ENCODE_CHUNK_TOKENS = 256
"""Tokens whose pre-activations `encode_sparse` computes at once on CPU: a [256, d_sae] block
stays in cache from the matmul to the top-k, where a whole batch's would go through memory twice."""

BATCHTOPK_THRESHOLD_DECAY = 0.99
"""Decay of the bias-corrected moving average that estimates the batchtopk inference threshold
during training (it weighs about the last 100 steps); the trainer recalibrates it on the final
encoder before saving (`calibrate_threshold`)."""

# Keys `save` writes itself; `extra` may not override them.
_RESERVED_KEYS = ("format_version", "architecture", "d_in", "d_sae", "hook_name", "model_name",
                  "dtype", "sae", "normalization_scale", "normalization_folded", "metrics")


class DictionaryLoadError(ValueError):
    """A dictionary folder cannot be loaded; the message says which path is wrong and what to do."""


class SparseFeatureActs(NamedTuple):
    """Feature activations of n tokens as compressed sparse rows, on CPU.

    Token t's activations are `values[row_ptr[t]:row_ptr[t + 1]]` of the features
    `features[row_ptr[t]:row_ptr[t + 1]]`, in no particular order. A topk dictionary's rows hold
    exactly k entries, some of them 0 when fewer than k pre-activations are positive.
    """

    row_ptr: Tensor
    """int64 [n + 1]"""
    features: Tensor
    """int64 [nnz]"""
    values: Tensor
    """float32 [nnz]"""
    d_sae: int

    @property
    def n_tokens(self) -> int:
        return len(self.row_ptr) - 1

    @staticmethod
    def row_ptr_of(lengths: Tensor) -> Tensor:
        """row_ptr [n + 1] of rows with `lengths` [n] entries each."""
        return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])

    def to_dense(self) -> Tensor:
        """float32 [n, d_sae]."""
        rows = torch.repeat_interleave(torch.arange(self.n_tokens), self.row_ptr.diff())
        dense = torch.zeros(self.n_tokens, self.d_sae)
        dense[rows, self.features] = self.values
        return dense

    @classmethod
    def from_dense(cls, dense: Tensor) -> "SparseFeatureActs":
        """The positive entries of `dense` [n, d_sae] (any device)."""
        from .kernels import positive_entries

        if dense.ndim != 2:
            raise ValueError(f"from_dense expects [n_tokens, d_sae] activations, got shape {tuple(dense.shape)}.")
        n, d_sae = dense.shape
        if dense.device.type != "cpu":  # nonzero on the device, then only the entries travel
            rows, features = (dense > 0).nonzero(as_tuple=True)
            values = dense[rows, features].float().cpu()
            return cls(cls.row_ptr_of(torch.bincount(rows, minlength=n).cpu()), features.cpu(), values, d_sae)
        dense = dense.detach().float().contiguous().numpy()
        nnz = int(np.count_nonzero(dense > 0))
        row_ptr, features, values = np.empty(n + 1, np.int64), np.empty(nnz, np.int64), np.empty(nnz, np.float32)
        positive_entries(dense, row_ptr, features, values)
        return cls(torch.from_numpy(row_ptr), torch.from_numpy(features), torch.from_numpy(values), d_sae)


class SAEOutput(NamedTuple):
    """Everything one training step needs, from `SparseAutoencoder.training_forward`."""

    x_hat: Tensor
    """[batch, d_in] reconstruction, in the (normalized) space the input was given in."""

    feature_acts: Tensor
    """[batch, d_sae] latent activations (zero where a latent is off)."""

    loss: Tensor
    """Scalar total loss to backpropagate: mse_loss + sparsity_loss + aux_loss."""

    mse_loss: Tensor
    """Scalar: squared error summed over d_in, averaged over the batch."""

    sparsity_loss: Tensor
    """Scalar, already weighted: relu's L1 term or jumprelu's L0 term; 0 for topk / batchtopk."""

    aux_loss: Tensor
    """Scalar, already weighted: the AuxK term for topk / batchtopk; 0 otherwise."""

    l0: Tensor
    """Scalar, detached: mean number of non-zero latents per token."""


# --------------------------------------------------------------------------------------------
# JumpReLU straight-through estimators (Rajamanoharan et al. 2024, "Jumping Ahead").
# The Heaviside step H(pre - theta) has zero gradient almost everywhere; these functions give
# theta a pseudo-gradient through a rectangle kernel of width `bandwidth` around the threshold.


def _rectangle(z: Tensor) -> Tensor:
    """Kernel K(z) = 1 on (-1/2, 1/2), else 0."""
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLUFunction(torch.autograd.Function):
    """f = pre * H(pre - theta); d f / d theta ~ -(theta / bandwidth) * K((pre - theta) / bandwidth)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, theta = ctx.saved_tensors
        grad_pre = grad_out * (pre > theta).to(pre.dtype)
        kernel = _rectangle((pre - theta) / ctx.bandwidth)
        grad_theta = -(theta / ctx.bandwidth) * kernel * grad_out
        return grad_pre, _sum_to_last_dim(grad_theta), None


class _StepFunction(torch.autograd.Function):
    """H(pre - theta); d H / d theta ~ -(1 / bandwidth) * K((pre - theta) / bandwidth), none to pre."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, theta = ctx.saved_tensors
        kernel = _rectangle((pre - theta) / ctx.bandwidth)
        grad_theta = -(1.0 / ctx.bandwidth) * kernel * grad_out
        return torch.zeros_like(pre), _sum_to_last_dim(grad_theta), None


def _sum_to_last_dim(t: Tensor) -> Tensor:
    """Reduce a [..., d_sae] gradient to the [d_sae] shape of a per-latent parameter."""
    return t.reshape(-1, t.shape[-1]).sum(0)


# --------------------------------------------------------------------------------------------


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


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder on activations of dimension `d_in` with `d_sae` latents.

    pre = (x - b_dec) @ W_enc + b_enc;  f = activation(pre);  x_hat = f @ W_dec + b_dec.
    """

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        *,
        hook_name: str,
        model_name: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        cfg.validate()
        if not isinstance(d_in, int) or d_in <= 0:
            raise ValueError(f"d_in must be a positive integer, got {d_in!r}.")
        self.cfg = cfg
        self.d_in = d_in
        self.d_sae = cfg.resolve_d_sae(d_in)
        if cfg.architecture in ("topk", "batchtopk") and cfg.k > self.d_sae:
            raise ConfigError(f"sae.k is {cfg.k} but the dictionary has only {self.d_sae} latents; "
                              f"lower sae.k or raise sae.expansion_factor / sae.d_sae.")
        self.hook_name = hook_name
        self.model_name = model_name
        self.saved_config: dict[str, Any] = {}
        """What config.json held when this dictionary was loaded ({} for a fresh one)."""

        factory = dict(device=device, dtype=dtype)
        # Decoder rows are random unit vectors; the encoder starts as the decoder's transpose.
        W_dec = torch.randn(self.d_sae, d_in, device=device, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec.to(dtype))  # [d_sae, d_in]
        self.W_enc = nn.Parameter(W_dec.T.clone().contiguous().to(dtype))  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae, **factory))
        self.b_dec = nn.Parameter(torch.zeros(d_in, **factory))

        if cfg.architecture == "jumprelu":
            init = math.log(cfg.jumprelu_init_threshold)
            self.log_threshold = nn.Parameter(torch.full((self.d_sae,), init, **factory))
        if cfg.architecture == "batchtopk":
            # -1 means "not estimated yet": until the first training step, encode() acts as a ReLU.
            self.register_buffer("threshold", torch.tensor(-1.0, **factory))
            # The moving average's sum and total weight (the weight starts at 0: no bias towards an initial guess).
            self.register_buffer("threshold_average", torch.zeros(2, **factory))
        self.register_buffer("normalization_scale", torch.tensor(1.0, **factory))

    def __setattr__(self, name: str, value: Any) -> None:
        # Let the trainer write `sae.normalization_scale = 3.2`; the buffer keeps its device/dtype.
        if name == "normalization_scale" and not isinstance(value, Tensor) and "normalization_scale" in self._buffers:
            with torch.no_grad():
                self._buffers["normalization_scale"].fill_(float(value))
            return
        super().__setattr__(name, value)

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    # ---------------------------------------------------------------- encoding and decoding

    def _pre_acts(self, x: Tensor) -> Tensor:
        """[..., d_in] normalized activations -> [..., d_sae] pre-activations."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def _top_k_per_token(self, pre: Tensor) -> Tensor:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def _top_k_per_batch(self, pre: Tensor) -> Tensor:
        """Keep the k * batch_size largest of relu(pre) [batch, d_sae] over the whole batch."""
        flat = pre.relu().flatten()
        n_keep = min(self.cfg.k * pre.shape[0], flat.numel())
        values, indices = flat.topk(n_keep, sorted=False)
        return torch.zeros_like(flat).scatter(0, indices, values).reshape(pre.shape)

    def _jumprelu(self, pre: Tensor) -> Tensor:
        return _JumpReLUFunction.apply(pre, self.log_threshold.exp(), self.cfg.jumprelu_bandwidth)

    def _activate(self, pre: Tensor) -> Tensor:
        """The inference activation rule: pre-activations -> feature activations."""
        arch = self.cfg.architecture
        if arch == "relu":
            return pre.relu()
        if arch == "topk":
            return self._top_k_per_token(pre)
        if arch == "batchtopk":
            return (pre * (pre > self.threshold).to(pre.dtype)).relu()
        return self._jumprelu(pre)

    def encode(self, x: Tensor) -> Tensor:
        """Raw activations [..., d_in] -> feature activations [..., d_sae] (inference rule).

        batchtopk uses its learned global threshold here, not the batch-level top-k of training.
        """
        self._check_input(x)
        x = x.to(self.dtype) * self.normalization_scale
        return self._activate(self._pre_acts(x))

    @torch.no_grad()
    def encode_sparse(self, x: Tensor, rows: Tensor | None = None) -> SparseFeatureActs:
        """Raw activations [..., d_in] -> the activations `encode` gives, as sparse rows on CPU
        (one row per token, in row-major order of the leading dimensions).

        `rows` (bool, x's leading shape) selects the tokens to encode; the others get empty rows
        and cost nothing (the analyzer skips BOS / EOS / pad positions this way).

        For topk dictionaries on CPU the pre-activations are computed `ENCODE_CHUNK_TOKENS` tokens
        at a time (`_cpu_pre_act_blocks`) and their top k is taken by a compiled kernel
        (`core.kernels.top_k_rows`) while they are still in cache; no dense [tokens, d_sae]
        activation matrix is ever built. The values agree with `encode` up to float rounding of the
        matmul, so a feature whose pre-activation ties the k-th largest within rounding may swap
        with it. Other architectures and devices encode densely and keep the positive entries.
        """
        from .kernels import top_k_rows

        self._check_input(x)
        if rows is not None and rows.shape != x.shape[:-1]:
            raise ValueError(f"encode_sparse: rows has shape {tuple(rows.shape)} but the activations have "
                             f"{tuple(x.shape[:-1])} tokens.")
        x = x.reshape(-1, self.d_in)
        n_all = x.shape[0]
        selected = None if rows is None else rows.reshape(-1).to(x.device)
        if selected is not None:
            x = x[selected]
        n = x.shape[0]
        if self.cfg.architecture != "topk":
            acts = SparseFeatureActs.from_dense(self.encode(x))
            lengths = acts.row_ptr.diff()
        else:
            k = self.cfg.k
            x = x.to(self.dtype) * self.normalization_scale
            if x.device.type == "cpu" and self.dtype in (torch.float32, torch.float64):
                values = torch.empty(n, k, dtype=self.dtype)
                indices = torch.empty(n, k, dtype=torch.int64)
                centered = x - self.b_dec
                for start, pre in self._cpu_pre_act_blocks(centered):
                    end = min(start + ENCODE_CHUNK_TOKENS, n)
                    top_k_rows(pre.numpy()[:end - start], k, values[start:end].numpy(), indices[start:end].numpy())
            else:
                values, indices = self._pre_acts(x).topk(k, dim=-1, sorted=False)
                values, indices = values.cpu(), indices.cpu()
            acts = SparseFeatureActs(torch.arange(0, n * k + 1, k), indices.flatten(), values.relu().float().flatten(),
                                     self.d_sae)
            lengths = torch.full((n,), k, dtype=torch.int64)
        if selected is None:
            return acts
        all_lengths = torch.zeros(n_all, dtype=torch.int64)
        all_lengths[selected.cpu()] = lengths
        return acts._replace(row_ptr=SparseFeatureActs.row_ptr_of(all_lengths))

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

    def decode(self, feature_acts: Tensor) -> Tensor:
        """Feature activations [..., d_sae] -> reconstruction [..., d_in] in raw activation space."""
        return (feature_acts.to(self.dtype) @ self.W_dec + self.b_dec) / self.normalization_scale

    def forward(self, x: Tensor) -> Tensor:
        """Raw activations [..., d_in] -> raw reconstruction [..., d_in]."""
        return self.decode(self.encode(x))

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
        sparsity_coefficient: float | None = None,
        dead_mask: Tensor | None = None,
    ) -> SAEOutput:
        """One training forward pass on NORMALIZED activations x [batch, d_in].

        `sparsity_coefficient` overrides cfg.l1_coefficient (relu) / cfg.l0_coefficient (jumprelu),
        so the trainer can warm it up. `dead_mask` [d_sae] (bool) marks latents that count as dead;
        the AuxK loss (topk / batchtopk) trains them to predict the residual.
        """
        if x.ndim != 2:
            raise ValueError(f"training_forward expects activations of shape [batch, d_in], got {tuple(x.shape)}.")
        self._check_input(x)
        arch = self.cfg.architecture
        pre = self._pre_acts(x)
        zero = pre.new_zeros(())

        if arch == "topk":
            # Decode from the k active rows only (embedding_bag): far cheaper than a dense
            # [batch, d_sae] @ [d_sae, d_in] product, forward and backward.
            values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
            values = values.relu()
            feature_acts = torch.zeros_like(pre).scatter(-1, indices, values)
            x_hat = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum") + self.b_dec
        else:
            if arch == "batchtopk":
                feature_acts = self._top_k_per_batch(pre)
                if self.training:
                    self._update_threshold(feature_acts)
            else:
                feature_acts = self._activate(pre)
            x_hat = feature_acts @ self.W_dec + self.b_dec
        mse_loss = (x_hat - x).pow(2).sum(-1).mean()

        sparsity_loss = zero
        if arch == "relu":
            coeff = self.cfg.l1_coefficient if sparsity_coefficient is None else sparsity_coefficient
            sparsity_loss = coeff * (feature_acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        elif arch == "jumprelu":
            coeff = self.cfg.l0_coefficient if sparsity_coefficient is None else sparsity_coefficient
            step = _StepFunction.apply(pre, self.log_threshold.exp(), self.cfg.jumprelu_bandwidth)
            sparsity_loss = coeff * step.sum(-1).mean()

        aux_loss = zero
        if arch in ("topk", "batchtopk"):
            aux_loss = self._auxk_loss(x, x_hat, pre, dead_mask)

        l0 = (feature_acts != 0).sum(-1).float().mean().detach()
        return SAEOutput(
            x_hat=x_hat,
            feature_acts=feature_acts,
            loss=mse_loss + sparsity_loss + aux_loss,
            mse_loss=mse_loss,
            sparsity_loss=sparsity_loss,
            aux_loss=aux_loss,
            l0=l0,
        )

    @torch.no_grad()
    def _update_threshold(self, feature_acts: Tensor) -> None:
        """Fold this batch's smallest kept activation into the threshold's bias-corrected moving
        average (no host sync); a batch where nothing fired leaves it as it was."""
        smallest = torch.where(feature_acts > 0, feature_acts, torch.inf).min()
        fired = torch.isfinite(smallest)
        decay = BATCHTOPK_THRESHOLD_DECAY
        update = torch.stack([torch.where(fired, smallest, 0.0), fired.to(smallest.dtype)]) * (1 - decay)
        average = torch.where(fired, decay * self.threshold_average + update, self.threshold_average)
        self.threshold_average.copy_(average)
        self.threshold.copy_(torch.where(average[1] > 0, average[0] / average[1].clamp_min(1e-30), self.threshold))

    @torch.no_grad()
    def calibrate_threshold(self, batches: Iterable[Tensor]) -> float:
        """Set the batchtopk inference threshold from the current encoder: the mean, over training
        batches of NORMALIZED activations [batch, d_in], of the smallest activation batch top-k keeps.
        Inference then keeps about k latents per token on the same distribution. Returns it."""
        if self.cfg.architecture != "batchtopk":
            raise ValueError(f"calibrate_threshold is for batchtopk dictionaries, not {self.cfg.architecture}.")
        values = []
        for x in batches:
            kept = self._top_k_per_batch(self._pre_acts(x.to(self.device, self.dtype)))
            smallest = torch.where(kept > 0, kept, torch.inf).min()
            if torch.isfinite(smallest):
                values.append(smallest)
        if not values:
            raise ValueError("calibrate_threshold: no latent fired on the given batches.")
        self.threshold.copy_(torch.stack(values).mean())
        return float(self.threshold)

    def _auxk_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead_mask: Tensor | None) -> Tensor:
        """AuxK (Gao et al. 2024): the top dead latents reconstruct the residual x - x_hat."""
        zero = pre.new_zeros(())
        if dead_mask is None or dead_mask.numel() == 0:
            return zero
        if dead_mask.shape != (self.d_sae,):
            raise ValueError(f"dead_mask must have shape [d_sae]=[{self.d_sae}], got {tuple(dead_mask.shape)}.")
        n_dead = int(dead_mask.sum())
        if n_dead == 0:
            return zero
        k_aux = min(self.cfg.aux_k or self.d_in // 2, n_dead)
        if k_aux == 0:
            return zero

        residual = (x - x_hat).detach()  # [batch, d_in]
        dead_pre = pre.masked_fill(~dead_mask.to(torch.bool), -torch.inf)
        values, indices = dead_pre.topk(k_aux, dim=-1, sorted=False)
        aux_acts = torch.zeros_like(pre).scatter(-1, indices, values.relu())
        residual_hat = aux_acts @ self.W_dec  # no decoder bias: the residual has no offset to model

        error = (residual_hat - residual).pow(2).sum()
        variance = (residual - residual.mean(0)).pow(2).sum()
        # Both branches stay finite so that no nan gradient leaks through torch.where.
        ok = variance > 0
        ratio = torch.where(ok, error / torch.where(ok, variance, torch.ones_like(variance)), zero)
        return self.cfg.aux_k_coefficient * ratio

    @torch.no_grad()
    def initialize_decoder_bias(self, sample: Tensor) -> None:
        """Set b_dec from NORMALIZED activations `sample` [n, d_in] per cfg.decoder_bias_init.

        Uses at most cfg.decoder_bias_init_samples rows: geometric_median, mean, or zeros.
        """
        if sample.ndim != 2 or sample.shape[1] != self.d_in or sample.shape[0] == 0:
            raise ValueError(f"initialize_decoder_bias needs a sample of shape [n, {self.d_in}], "
                             f"got {tuple(sample.shape)}.")
        sample = sample[: self.cfg.decoder_bias_init_samples].to(self.device)
        how = self.cfg.decoder_bias_init
        if how == "geometric_median":
            bias = geometric_median(sample.float())
        elif how == "mean":
            bias = sample.float().mean(0)
        else:
            bias = torch.zeros(self.d_in)
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
        directions = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        parallel = (self.W_dec.grad * directions).sum(-1, keepdim=True)
        self.W_dec.grad -= parallel * directions

    # ---------------------------------------------------------------- normalization and disk

    @torch.no_grad()
    def _folded_tensors(self) -> dict[str, Tensor]:
        """The tensors to save, with normalization_scale s folded in (self is not modified).

        act((s x - b_dec) W_enc + b_enc) = act((x - b_dec/s)(s W_enc) + b_enc), and the raw
        reconstruction is f (W_dec / s) + b_dec / s. Pre-activations are unchanged, so the
        jumprelu and batchtopk thresholds need no change.
        """
        s = self.normalization_scale
        tensors = {name: t.detach().clone() for name, t in self._saved_tensors().items()}
        tensors["W_enc"] = self.W_enc.detach() * s
        tensors["W_dec"] = self.W_dec.detach() / s
        tensors["b_dec"] = self.b_dec.detach() / s
        return {name: t.contiguous() for name, t in tensors.items()}

    def _saved_tensors(self) -> dict[str, Tensor]:
        """The parameters and buffers a dictionary file holds, by name (normalization excluded)."""
        names = ["W_enc", "b_enc", "W_dec", "b_dec"]
        if self.cfg.architecture == "jumprelu":
            names.append("log_threshold")
        if self.cfg.architecture == "batchtopk":
            names.append("threshold")
        return {name: getattr(self, name) for name in names}

    @torch.no_grad()
    def fold_normalization(self) -> None:
        """Fold normalization_scale into the weights in place and set it to 1.0.

        encode / decode on raw activations return the same numbers before and after. Decoder
        rows are no longer unit norm afterwards, so fold only when training is done.
        """
        for name, tensor in self._folded_tensors().items():
            getattr(self, name).copy_(tensor)
        self.normalization_scale = 1.0

    def save(self, folder: str | Path, *, metrics: dict | None = None, extra: dict | None = None) -> Path:
        """Write folder/config.json and folder/sae.safetensors, normalization folded in.

        The live SAE is not modified. `metrics` is stored under "metrics"; the keys of `extra`
        (e.g. dataset, context_size, training_tokens) are merged into config.json. Files are written
        to temporary names and renamed, config.json last, so an interrupted save never leaves a
        folder that looks like a complete dictionary with mismatched contents.
        """
        folder = Path(folder)
        extra = dict(extra or {})
        clash = sorted(set(extra) & set(_RESERVED_KEYS))
        if clash:
            raise ValueError(f"extra may not set {', '.join(clash)}: save() writes these keys itself.")
        config = {
            "format_version": FORMAT_VERSION,
            "architecture": self.cfg.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "hook_name": self.hook_name,
            "model_name": self.model_name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "sae": self.cfg.to_dict(),
            "normalization_scale": float(self.normalization_scale),
            "normalization_folded": True,
            "metrics": dict(metrics or {}),
            **extra,
        }
        config_text = json.dumps(config, indent=2, default=_json_default) + "\n"
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

    @classmethod
    def load(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "SparseAutoencoder":
        """Load a dictionary folder written by `save` (safetensors only, nothing is unpickled)."""
        folder = Path(folder)
        if not folder.exists():
            raise DictionaryLoadError(f"No dictionary at {folder}: the folder does not exist; pass the folder "
                                      f"that holds {CONFIG_FILENAME} and {WEIGHTS_FILENAME} "
                                      f"(e.g. results/<exp_name>/dictionary).")
        if not folder.is_dir():
            raise DictionaryLoadError(f"{folder} is a file, not a dictionary folder; pass the folder that "
                                      f"contains it ({folder.parent}).")
        config_path = folder / CONFIG_FILENAME
        if not config_path.is_file():
            raise DictionaryLoadError(f"{folder} is not a dictionary: it has no {CONFIG_FILENAME}; pass a folder "
                                      f"written by SparseAutoencoder.save (e.g. results/<exp_name>/dictionary).")
        try:
            data = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DictionaryLoadError(f"{config_path} is not valid JSON ({e}); the dictionary is damaged, "
                                      f"save or copy it again.") from e
        if not isinstance(data, dict):
            raise DictionaryLoadError(f"{config_path} must hold a JSON object, got {type(data).__name__}; "
                                      f"the dictionary is damaged, save or copy it again.")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise DictionaryLoadError(f"{config_path} has format_version {version!r}, newer than this library "
                                      f"reads ({FORMAT_VERSION}); upgrade the library.")
        missing = [key for key in ("architecture", "d_in", "hook_name", "model_name", "sae") if key not in data]
        if missing:
            raise DictionaryLoadError(f"{config_path} lacks key(s) {', '.join(missing)}; it was not written by "
                                      f"SparseAutoencoder.save or is damaged.")
        architecture = data["architecture"]
        if architecture not in ARCHITECTURES:
            raise DictionaryLoadError(f"{config_path} names unknown architecture {architecture!r}; allowed: "
                                      f"{', '.join(ARCHITECTURES)}. Fix the file or upgrade the library.")
        try:
            cfg = SAEConfig.from_dict(data["sae"])
            if cfg.architecture != architecture:
                raise ConfigError(f"sae.architecture is {cfg.architecture!r} but architecture is {architecture!r}")
            sae = cls(cfg, data["d_in"], hook_name=data["hook_name"], model_name=data["model_name"],
                      device=device, dtype=dtype)
        except (ConfigError, ValueError, TypeError) as e:
            raise DictionaryLoadError(f"{config_path} holds an invalid dictionary config ({e}); fix the file "
                                      f"or save the dictionary again.") from e
        if "d_sae" in data and data["d_sae"] != sae.d_sae:
            raise DictionaryLoadError(f"{config_path} says d_sae={data['d_sae']} but its sae config gives "
                                      f"{sae.d_sae}; the file is inconsistent, save the dictionary again.")

        weights_path = folder / WEIGHTS_FILENAME
        if not weights_path.is_file():
            raise DictionaryLoadError(f"{folder} has {CONFIG_FILENAME} but no {WEIGHTS_FILENAME}; the save was "
                                      f"interrupted or the file was not copied, save or copy it again.")
        try:
            tensors = load_file(str(weights_path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise DictionaryLoadError(f"{weights_path} is not a readable safetensors file ({e}); the file is "
                                      f"corrupt or truncated, save or copy the dictionary again.") from e

        expected = {name: tuple(t.shape) for name, t in sae._saved_tensors().items()}
        problems = [f"{name} missing" for name in expected if name not in tensors]
        problems += [f"unexpected {name}" for name in tensors if name not in expected]
        problems += [f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}"
                     for name, shape in expected.items()
                     if name in tensors and tuple(tensors[name].shape) != shape]
        if problems:
            raise DictionaryLoadError(f"{weights_path} does not match {config_path} "
                                      f"(architecture {architecture}, d_in={sae.d_in}, d_sae={sae.d_sae}): "
                                      f"{'; '.join(problems)}. The files come from different dictionaries; "
                                      f"save the dictionary again.")
        with torch.no_grad():
            for name, target in sae._saved_tensors().items():
                target.copy_(tensors[name])
        sae.saved_config = data
        return sae


def load_dictionary(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SparseAutoencoder:
    """Load a dictionary folder; same as `SparseAutoencoder.load`."""
    return SparseAutoencoder.load(path, device=device, dtype=dtype)


def _json_default(value: Any) -> Any:
    """Let metrics / extra hold tensors, numpy scalars and paths."""
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to config.json; pass numbers, strings, lists or dicts.")
