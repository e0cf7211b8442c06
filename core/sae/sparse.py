"""Sparse feature activations: the compressed rows the analyzer reads (`SparseFeatureActs`), and
the two autograd functions with which a top-k dictionary trains on its selected entries only.

A training step of a top-k dictionary has one dense product, the pre-activations
x @ W_enc [batch, d_sae], computed once without autograd. Everything after it touches only the
entries (token, latent) that the top-k keeps (about k per token) and those of the AuxK loss:

- `encoder_entries`: the pre-activations at the entries (and optionally a dense block of columns).
  Backward: dW_enc[:, j] += g_e x[t_e] over the entries (a scatter of input rows: entries * d_in
  work instead of the batch * d_sae * d_in of a dense backward), db_enc[j] the sum of g over j's
  entries, and for an SAE's pre-encoder bias db_dec = -W_enc @ db_enc (the input is data, so no
  per-token input gradient is needed).
- `decode_entries`: sum_e v_e W_dec[j_e] into output rows ("bags": a token, or a token and a
  matryoshka prefix). Backward: dv_e = <grad[bag_e], W_dec[j_e]> and dW_dec[j_e] += v_e grad[bag_e].

On CPU in float32 / float64 the scatters and dots are numba kernels (`core.kernels`), split over
torch's threads by output rows; elsewhere (CUDA, bf16) chunked torch `index_add_` and gathers,
the same sums. The torch sparse CSR x dense product (MKL) was measured for the encoder's scatter:
2-5x slower than the kernel on CPU, building the CSR included (`benchmarks/sae_step.py` prints both).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

ENTRY_CHUNK = 1 << 16
"""Entries per torch gather on devices without the kernels (bounds the [chunk, d] temporaries)."""


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
        rows = rows_of(self.row_ptr)
        dense = torch.zeros(self.n_tokens, self.d_sae)
        dense[rows, self.features] = self.values
        return dense

    @classmethod
    def from_dense(cls, dense: Tensor) -> "SparseFeatureActs":
        """The positive entries of `dense` [n, d_sae] (any device)."""
        from ..kernels import positive_entries

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


def rows_of(row_ptr: Tensor) -> Tensor:
    """The row of every entry of compressed sparse rows: int64 [row_ptr[-1]]."""
    return torch.repeat_interleave(torch.arange(len(row_ptr) - 1, device=row_ptr.device), row_ptr.diff())


# --------------------------------------------------------------------------------------------
# Sparse products


USE_KERNELS = True
"""False: always the torch ops that serve CUDA and bf16 (to test them on a CPU, or to debug)."""


def uses_kernels(t: Tensor) -> bool:
    """Whether the numba kernels serve tensors like `t` (CPU, float32 / float64)."""
    return USE_KERNELS and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


_pools: dict[int, ThreadPoolExecutor] = {}


def _in_parallel(kernel: Callable, n: int, *args) -> None:
    """kernel(*args, lo, hi) over torch.get_num_threads() disjoint ranges covering [0, n) at once
    (the kernels release the GIL)."""
    threads = max(1, min(torch.get_num_threads(), n // 1024))
    if threads == 1:
        kernel(*args, 0, n)
        return
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="sae-kernels")
    bounds = [n * i // threads for i in range(threads + 1)]
    for future in [_pools[threads].submit(kernel, *args, lo, hi) for lo, hi in zip(bounds, bounds[1:])]:
        future.result()


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


@torch.compiler.disable  # numba kernels: torch.compile runs them as they are
def scatter_add_rows(out: Tensor, out_rows: Tensor, coef: Tensor, src: Tensor, src_rows: Tensor) -> Tensor:
    """out[out_rows[e]] += coef[e] * src[src_rows[e]] for every entry e, in place; returns out."""
    coef = coef.to(out.dtype)
    if uses_kernels(out) and out.is_contiguous():
        from ..kernels import scatter_add_rows as kernel

        _in_parallel(kernel, out.shape[0], out.numpy(), _np(out_rows), _np(coef), _np(src.to(out.dtype)),
                     _np(src_rows))
        return out
    for start in range(0, len(out_rows), ENTRY_CHUNK):
        chunk = slice(start, start + ENTRY_CHUNK)
        out.index_add_(0, out_rows[chunk], src[src_rows[chunk]] * coef[chunk, None])
    return out


@torch.compiler.disable  # numba kernels: torch.compile runs them as they are
def row_dots(a: Tensor, a_rows: Tensor, b: Tensor, b_rows: Tensor) -> Tensor:
    """<a[a_rows[e]], b[b_rows[e]]> for every entry e: [n_entries]."""
    if uses_kernels(a) and a.dtype == b.dtype:
        from ..kernels import row_dots as kernel

        out = torch.empty(len(a_rows), dtype=a.dtype)
        _in_parallel(kernel, len(a_rows), out.numpy(), _np(a), _np(a_rows), _np(b), _np(b_rows))
        return out
    return torch.cat([(a[a_rows[s:s + ENTRY_CHUNK]] * b[b_rows[s:s + ENTRY_CHUNK]]).sum(-1)
                      for s in range(0, len(a_rows), ENTRY_CHUNK)] or [a.new_zeros(0)])


@torch.compiler.disable  # numba kernels: torch.compile runs them as they are
def project_out_rows(g: Tensor, w: Tensor) -> Tensor:
    """g[i] -= <g[i], w[i]> / |w[i]|^2 * w[i] for every row i of the 2-d `g` and `w`, in place (the part
    of a decoder gradient along its decoder rows); returns g. On CPU one pass over both (the kernel);
    elsewhere three (two row dots and the update)."""
    if uses_kernels(g) and g.dtype == w.dtype and g.is_contiguous():
        from ..kernels import project_out_rows as kernel

        _in_parallel(kernel, g.shape[0], g.numpy(), _np(w))
        return g
    parallel = torch.linalg.vecdot(g, w) / torch.linalg.vecdot(w, w).clamp_min(1e-24)
    return g.addcmul_(w, parallel[:, None], value=-1.0)


class _EncoderEntries(torch.autograd.Function):
    """The selected pre-activations and the dense block pre[:, columns], differentiable in W_enc,
    b_enc and (an SAE's) b_dec with one backward for both."""

    @staticmethod
    def forward(ctx, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, centered: Tensor, pre: Tensor,
                values: Tensor, rows: Tensor, latents: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(W_enc, centered, rows, latents, columns)
        return values.clone(), pre.index_select(1, columns)

    @staticmethod
    def backward(ctx, grad: Tensor, grad_block: Tensor | None):
        W_enc, centered, rows, latents, columns = ctx.saved_tensors
        grad = grad.contiguous().to(W_enc.dtype)
        d_in, d_sae = W_enc.shape
        grad_W_enc = grad_b_enc = grad_b_dec = None
        if ctx.needs_input_grad[0]:
            grad_W_enc_t = scatter_add_rows(W_enc.new_zeros(d_sae, d_in), latents, grad, centered, rows)
            grad_W_enc = grad_W_enc_t.t().contiguous()
            if grad_block is not None:
                grad_W_enc.index_add_(1, columns, centered.t() @ grad_block.to(W_enc.dtype))
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            per_latent = W_enc.new_zeros(d_sae).index_add_(0, latents, grad)  # d loss / d pre, summed over tokens
            if grad_block is not None:
                per_latent.index_add_(0, columns, grad_block.sum(0).to(W_enc.dtype))
            grad_b_enc = per_latent
            if ctx.needs_input_grad[2]:  # centered = x - b_dec, and pre = centered @ W_enc + b_enc
                grad_b_dec = -(W_enc @ per_latent)
        return grad_W_enc, grad_b_enc, grad_b_dec, None, None, None, None, None, None


def encoder_entries(pre: Tensor, values: Tensor, rows: Tensor, latents: Tensor, *, centered: Tensor,
                    W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, columns: Tensor | None = None
                    ) -> tuple[Tensor, Tensor]:
    """The pre-activations `values` [n_entries] = pre[rows, latents] of pre = centered @ W_enc + b_enc
    (computed without autograd by the caller), with gradients to W_enc, b_enc and, when the
    encoder's input is centered = x - b_dec (an SAE), to b_dec, from these entries only.

    Also the dense block pre[:, columns] [batch, len(columns)] (AuxK's, over the dead latents),
    whose gradients (centered^T @ grad for those columns of W_enc) join the same backward."""
    if columns is None:
        columns = latents.new_zeros(0)
    return _EncoderEntries.apply(W_enc, b_enc, b_dec, centered.detach(), pre.detach(), values.detach(), rows,
                                 latents, columns)


class _DecodeEntries(torch.autograd.Function):
    """out[bags[e]] += values[e] * W_dec[latents[e]], and the rows W_dec[rows_out], differentiable in
    values and W_dec."""

    @staticmethod
    def forward(ctx, values: Tensor, W_dec: Tensor, bags: Tensor, latents: Tensor, n_bags: int,
                decoder_rows: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(values, W_dec, bags, latents, decoder_rows)
        ctx.n_bags = n_bags
        out = scatter_add_rows(W_dec.new_zeros(n_bags, W_dec.shape[1]), bags, values.detach(), W_dec.detach(), latents)
        return out, W_dec.index_select(0, decoder_rows)

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_rows: Tensor | None):
        values, W_dec, bags, latents, decoder_rows = ctx.saved_tensors
        grad = W_dec.new_zeros(ctx.n_bags, W_dec.shape[1]) if grad is None else grad.contiguous().to(W_dec.dtype)
        grad_values = grad_W_dec = None
        if ctx.needs_input_grad[0]:
            grad_values = row_dots(grad, bags, W_dec, latents).to(values.dtype)
        if ctx.needs_input_grad[1]:
            grad_W_dec = scatter_add_rows(torch.zeros_like(W_dec), latents, values, grad, bags)
            if grad_rows is not None:
                grad_W_dec.index_add_(0, decoder_rows, grad_rows)
        return grad_values, grad_W_dec, None, None, None, None


def decode_entries(values: Tensor, W_dec: Tensor, bags: Tensor, latents: Tensor, n_bags: int,
                   decoder_rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """[n_bags, d_out]: row b is the sum of values[e] * W_dec[latents[e]] over the entries e with
    bags[e] == b (no decoder bias); differentiable in values and W_dec. Also W_dec[decoder_rows]
    (AuxK's dense block), whose gradient joins the same backward."""
    if decoder_rows is None:
        decoder_rows = latents.new_zeros(0)
    return _DecodeEntries.apply(values, W_dec, bags, latents, n_bags, decoder_rows)
