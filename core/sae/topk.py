"""The top-k family: `topk`, `batchtopk` and `matryoshka_batchtopk`, their AuxK loss, and the
sparse training step they share.

- `topk`: the k largest latents per token (Gao et al. 2024).
- `batchtopk`: the k * batch_size largest latents over the whole batch in training, and a global
  threshold at inference (Bussmann et al. 2024): a moving average of the smallest kept activation
  over about the last 100 steps, set from the final encoder by `calibrate_threshold` before saving.
- `matryoshka_batchtopk`: batchtopk trained so that nested prefixes of the latents reconstruct on
  their own (Bussmann et al. 2025; Nabeshima 2024): the reconstruction loss is the mean, over the
  prefixes m in `sae.matryoshka_widths`, of the squared error of b_dec + sum_{j < m} f_j W_dec[j]
  (as dictionary_learning's and SAELens' MatryoshkaBatchTopK define it). Early latents learn
  general features, later ones refine them. Same inference threshold as batchtopk.
- AuxK (all three): the k_aux largest pre-activations among the dead latents reconstruct the
  residual target - x_hat, normalized by the residual's variance (Gao et al. 2024).

The training step computes the dense pre-activations once without autograd (the one dense
product, [batch, d_in] @ [d_in, d_sae]); the selected (token, latent) entries then go through
`sparse.encoder_entries` and `sparse.decode_entries`, whose backwards touch those entries only.
AuxK takes the dead latents' columns of the same pre-activations as a dense [batch, n_dead] block
through the same two functions (small dense products beat scatters while the dead latents are
not many times k_aux; past `AUXK_DENSE_RATIO` its k_aux entries per token join the top-k's
instead). The dense [batch, d_sae] activations are never built; the step reports `fire_counts`.
The selection itself is `core.kernels.top_k_rows` (per token) or `core.kernels.batch_top_k` (per
batch) on CPU, torch.topk elsewhere. `sparse_training = False` switches to the plain dense
autograd computation, the reference the sparse step is tested and benchmarked against (the same
weights up to float rounding). `benchmarks/sae_step.py`: the step costs 1.6-2x the product.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from .base import ENCODE_CHUNK_TOKENS, SAEOutput, SparseAutoencoder
from .sparse import SparseFeatureActs, _in_parallel, decode_entries, encoder_entries, uses_kernels

AUXK_DENSE_RATIO = 8
"""AuxK works on dense [batch, n_dead] products (over the dead latents' columns) while there are at
most this many dead latents per AuxK latent of a token, else on selected entries like the top-k:
a dense product runs 10-20x faster per FLOP than the scatters of the sparse path."""

BATCHTOPK_THRESHOLD_DECAY = 0.99
"""Decay of the bias-corrected moving average that estimates the batch top-k inference threshold
during training (it weighs about the last 100 steps); the trainer recalibrates it on the final
encoder before saving (`calibrate_threshold`)."""


@torch.compiler.disable  # numba kernels: torch.compile runs them as they are
def top_k_per_row(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values, indices) [rows, k] of the k largest entries of every row of `pre` [rows, n], in no
    particular order: the compiled kernel on CPU (split over torch's threads), torch.topk elsewhere."""
    if not uses_kernels(pre):
        return pre.detach().topk(k, dim=-1, sorted=False)
    from ..kernels import top_k_rows

    pre = pre.detach().contiguous()
    values = torch.empty(pre.shape[0], k, dtype=pre.dtype)
    indices = torch.empty(pre.shape[0], k, dtype=torch.int64)
    p, v, i = pre.numpy(), values.numpy(), indices.numpy()
    _in_parallel(lambda lo, hi: top_k_rows(p[lo:hi], k, v[lo:hi], i[lo:hi]), pre.shape[0])
    return values, indices


@torch.compiler.disable  # numba kernels: torch.compile runs them as they are
def batch_top_k(pre: Tensor, n_keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """The n_keep largest positive entries of `pre` [rows, n] as (rows, columns, values) in row-major
    order (fewer when fewer are positive): the compiled kernel on CPU, torch.topk elsewhere."""
    n_rows, n = pre.shape
    n_keep = min(n_keep, n_rows * n)
    pre = pre.detach()
    if uses_kernels(pre):
        from ..kernels import batch_top_k as kernel

        bits = pre.contiguous().numpy().view(np.int32 if pre.dtype == torch.float32 else np.int64)
        rows, columns, kept_bits = np.empty(n_keep, np.int64), np.empty(n_keep, np.int64), np.empty(n_keep, bits.dtype)
        kept = kernel(bits, n_keep, rows, columns, kept_bits)
        return (torch.from_numpy(rows[:kept]), torch.from_numpy(columns[:kept]),
                torch.from_numpy(kept_bits[:kept]).view(pre.dtype))
    values, flat = pre.flatten().topk(n_keep, sorted=False)
    flat = flat[values > 0].sort().values
    return flat // n, flat % n, pre.flatten()[flat]


def _rows_of_k(n: int, k: int, device: torch.device) -> Tensor:
    """The row of every entry of n rows of k entries: [0] * k + [1] * k + ..."""
    return torch.arange(n, device=device).unsqueeze(1).expand(n, k).reshape(-1)


class _TopKFamily(SparseAutoencoder):
    """What topk, batchtopk and matryoshka_batchtopk share: AuxK and the sparse training step.

    Subclasses say which entries a batch keeps (`_select`, and `_dense_select` for the reference
    path) and, for matryoshka, how entries are grouped and the loss is formed.
    """

    sparse_training: bool = True
    """False: train through the plain dense autograd path (the [batch, d_sae] activations, a dense
    backward through the encoder); the reference the sparse step is tested against. Inputs that
    require grad also take that path (the sparse step gives no gradient to x)."""

    def __init__(self, cfg, d_in, **kwargs):
        super().__init__(cfg, d_in, **kwargs)
        if cfg.k > self.d_sae:
            raise ConfigError(f"sae.k is {cfg.k} but the dictionary has only {self.d_sae} latents; "
                              f"lower sae.k or raise sae.expansion_factor / sae.d_sae.")

    # ---------------------------------------------------------------- what subclasses define

    def _select(self, pre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The kept entries of pre-activations [batch, d_sae]: (rows, latents, pre-activations)."""
        raise NotImplementedError

    def _dense_select(self, pre: Tensor) -> tuple[Tensor, Tensor | None]:
        """The reference path's kept activations as a dense [batch, d_sae] matrix, and the kept
        latents [batch, k] where every token keeps k."""
        raise NotImplementedError

    def _dense_decode(self, feature_acts: Tensor, indices: Tensor | None) -> Tensor:
        """The reference path's decoded rows (no bias) of the dense activations."""
        return feature_acts @ self.W_dec

    def _note_kept(self, acts: Tensor) -> None:
        """Called in training mode with the kept activations of the batch (0: not active)."""

    def _bags(self, rows: Tensor, latents: Tensor, n: int) -> tuple[Tensor, int]:
        """Which decoded row each kept entry adds to, and how many rows: one per token."""
        return rows, n

    def _reconstruction_loss(self, decoded: Tensor, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(x_hat, mse_loss) from the decoded rows of `_bags` (decoder bias not yet added)."""
        x_hat = self._with_skip(decoded + self.b_dec, x)
        return x_hat, self._mse(x_hat, target)

    # ---------------------------------------------------------------- training

    def _training_forward(self, x: Tensor, target: Tensor, sparsity_coefficient: float | None,
                          dead_mask: Tensor | None, batch_sum=None) -> SAEOutput:
        if not self.sparse_training or x.requires_grad:
            return self._dense_training_forward(x, target, dead_mask, batch_sum)
        n = x.shape[0]
        with torch.no_grad():  # the one dense product (and bias, as `_pre_acts` adds it: the same bits)
            centered = self._centered(x)
            if torch.is_autocast_enabled(x.device.type):  # the product in the autocast dtype, the rest in ours
                pre = torch.matmul(centered, self.W_enc).to(self.dtype)
            else:
                pre = torch.matmul(centered, self.W_enc, out=self._pre_act_buffer(n))
            pre += self.b_enc
        rows, latents, values = self._select(pre)
        n_kept = len(latents)
        bags, n_bags = self._bags(rows, latents, n)
        dead = self._dead_latents(dead_mask)
        aux_entries = dead is not None and len(dead) > AUXK_DENSE_RATIO * self._k_aux(len(dead))
        if aux_entries:  # AuxK's entries ride along: one encoder and one decoder pass for all
            aux_rows, aux_latents, aux_values = self._aux_entries(pre, dead)
            rows, latents, values = (torch.cat(pair) for pair in ((rows, aux_rows), (latents, aux_latents),
                                                                  (values, aux_values)))
            bags = torch.cat([bags, aux_rows + n_bags])
        block = None if aux_entries else dead  # else AuxK's dense block over the dead latents
        pre_values, pre_block = encoder_entries(pre, values, rows, latents, centered=centered, W_enc=self.W_enc,
                                                b_enc=self.b_enc, b_dec=None if self.is_transcoder else self.b_dec,
                                                columns=block)
        acts = pre_values.relu()
        decoded, W_dec_block = decode_entries(acts, self.W_dec, bags, latents, n_bags + (n if aux_entries else 0), block)
        x_hat, mse_loss = self._reconstruction_loss(decoded[:n_bags] if aux_entries else decoded, x, target)
        aux_loss = x_hat.new_zeros(())
        if aux_entries:
            aux_loss = self._auxk_loss(target - x_hat, decoded[n_bags:], batch_sum)
        elif dead is not None:
            aux_loss = self._auxk_loss(target - x_hat, self._aux_block_acts(pre_block) @ W_dec_block, batch_sum)

        kept = acts.detach()[:n_kept]
        if self.training:
            self._note_kept(kept)
        active = (kept > 0).long()
        fire_counts = torch.zeros(self.d_sae, dtype=torch.int64, device=x.device).index_add_(0, latents[:n_kept], active)
        return SAEOutput(x_hat=x_hat, fire_counts=fire_counts, loss=mse_loss + aux_loss, mse_loss=mse_loss,
                         sparsity_loss=x_hat.new_zeros(()), aux_loss=aux_loss, l0=active.sum().float() / n)

    def _pre_act_buffer(self, n: int) -> Tensor:
        """[n, d_sae], reused from step to step: on CPU a fresh tensor of that size (75 MB at batch
        4,096 and 4,608 latents) comes from mmap and costs about a tenth of the product in page
        faults. Nothing keeps the pre-activations past the step that computed them."""
        buffer = self.__dict__.get("_pre_acts_buffer")
        if buffer is None or buffer.shape != (n, self.d_sae) or buffer.dtype != self.dtype or buffer.device != self.device:
            buffer = torch.empty(n, self.d_sae, dtype=self.dtype, device=self.device)
            self.__dict__["_pre_acts_buffer"] = buffer
        return buffer

    def _dense_training_forward(self, x: Tensor, target: Tensor, dead_mask: Tensor | None,
                                batch_sum=None) -> SAEOutput:
        """The reference: dense activations, plain autograd through the encoder product."""
        pre = self._pre_acts(x)
        feature_acts, indices = self._dense_select(pre)
        if self.training:
            self._note_kept(feature_acts.detach().flatten())
        x_hat, mse_loss = self._reconstruction_loss(self._dense_decode(feature_acts, indices), x, target)
        aux_loss = x_hat.new_zeros(())
        if self._dead_latents(dead_mask) is not None:
            dead_pre = pre.masked_fill(~dead_mask.to(torch.bool), -torch.inf)
            values, indices = dead_pre.topk(self._k_aux(int(dead_mask.sum())), dim=-1, sorted=False)
            aux_acts = torch.zeros_like(pre).scatter(-1, indices, values.relu())
            aux_loss = self._auxk_loss(target - x_hat, aux_acts @ self.W_dec, batch_sum)
        fired = feature_acts.detach() != 0
        return SAEOutput(x_hat=x_hat, fire_counts=fired.sum(0), loss=mse_loss + aux_loss, mse_loss=mse_loss,
                         sparsity_loss=x_hat.new_zeros(()), aux_loss=aux_loss, l0=fired.sum(-1).float().mean())

    # ---------------------------------------------------------------- AuxK

    def _dead_latents(self, dead_mask: Tensor | None) -> Tensor | None:
        """Indices of the dead latents, or None when AuxK has nothing to do. Finding them waits for
        the device, so the list is kept while the same mask tensor comes back (the trainer's
        tracker refreshes its mask every few steps)."""
        if dead_mask is None or dead_mask.numel() == 0:
            return None
        cached = self.__dict__.get("_dead_latents_of")
        if cached is not None and cached[0] is dead_mask and cached[1] == dead_mask._version:
            return cached[2]
        dead = dead_mask.to(torch.bool).nonzero().squeeze(1)
        dead = dead if len(dead) and self._k_aux(len(dead)) else None
        self.__dict__["_dead_latents_of"] = (dead_mask, dead_mask._version, dead)
        return dead

    def _k_aux(self, n_dead: int) -> int:
        return min(self.cfg.aux_k or self.d_out // 2, n_dead)

    def _aux_entries(self, pre: Tensor, dead: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(rows, latents, pre-activations) of the k_aux largest pre-activations of every token among
        the `dead`."""
        values, local = top_k_per_row(pre.index_select(1, dead), self._k_aux(len(dead)))
        return _rows_of_k(pre.shape[0], local.shape[1], pre.device), dead[local.flatten()], values.flatten()

    def _aux_block_acts(self, pre_dead: Tensor) -> Tensor:
        """AuxK's activations [batch, n_dead] from the dead latents' pre-activations: the k_aux
        largest of each token, the others 0."""
        acts = pre_dead.relu()
        k_aux = self._k_aux(pre_dead.shape[1])
        if k_aux < pre_dead.shape[1]:
            _, local = top_k_per_row(pre_dead, k_aux)
            acts = acts * torch.zeros_like(acts).scatter_(1, local.to(acts.device), 1.0)
        return acts

    def _auxk_loss(self, residual: Tensor, residual_hat: Tensor, batch_sum=None) -> Tensor:
        """aux_k_coefficient * |residual_hat - residual|^2 / |residual - its mean|^2, the residual
        detached; residual_hat has no decoder bias (the residual has no offset to model). With
        `batch_sum` (data parallel, `training_forward`), the variance is the global batch's, from the
        ranks' summed statistics, and this slice's error counts N / n times, so that the mean of the
        ranks' gradients is the gradient of the global batch's loss."""
        residual = residual.detach()
        error = F.mse_loss(residual_hat, residual, reduction="sum")
        if batch_sum is None:
            variance = F.mse_loss(residual, residual.mean(0).expand_as(residual), reduction="sum")
        else:
            r = residual.double()
            sums = batch_sum(torch.cat([r.sum(0), r.pow(2).sum().view(1), r.new_tensor([len(r)])]))
            n_total = sums[-1]
            variance = (sums[-2] - sums[:-2].pow(2).sum() / n_total).to(error.dtype)
            error = error * (n_total / len(r)).to(error.dtype)
        # Both branches stay finite so that no nan gradient leaks through torch.where.
        ok = variance > 0
        ratio = torch.where(ok, error / torch.where(ok, variance, torch.ones_like(variance)), error.new_zeros(()))
        return self.cfg.aux_k_coefficient * ratio


class TopKSAE(_TopKFamily, architecture="topk"):
    """The k largest latents of every token."""

    def _activate(self, pre: Tensor) -> Tensor:
        return self._dense_select(pre)[0]

    def _dense_select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu()), indices

    def _select(self, pre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        values, indices = top_k_per_row(pre, self.cfg.k)
        return _rows_of_k(pre.shape[0], self.cfg.k, pre.device), indices.flatten(), values.flatten()

    def _dense_decode(self, feature_acts: Tensor, indices: Tensor | None) -> Tensor:
        # As the dense path always did: decode the k active rows by embedding_bag.
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=feature_acts.gather(-1, indices), mode="sum")

    def _sparse_rows(self, x: Tensor) -> SparseFeatureActs:
        """For topk on CPU the pre-activations are computed `ENCODE_CHUNK_TOKENS` tokens at a time
        (`_cpu_pre_act_blocks`) and their top k is taken by a compiled kernel
        (`core.kernels.top_k_rows`) while they are still in cache; no dense [tokens, d_sae]
        activation matrix is ever built. The values agree with `encode` up to float rounding of
        the matmul, so a feature whose pre-activation ties the k-th largest within rounding may
        swap with it."""
        from ..kernels import top_k_rows

        k, n = self.cfg.k, x.shape[0]
        if x.device.type == "cpu" and self.dtype in (torch.float32, torch.float64):
            values = torch.empty(n, k, dtype=self.dtype)
            indices = torch.empty(n, k, dtype=torch.int64)
            for start, pre in self._cpu_pre_act_blocks(self._centered(x)):
                end = min(start + ENCODE_CHUNK_TOKENS, n)
                top_k_rows(pre.numpy()[:end - start], k, values[start:end].numpy(), indices[start:end].numpy())
        else:
            values, indices = self._pre_acts(x).topk(k, dim=-1, sorted=False)
            values, indices = values.cpu(), indices.cpu()
        return SparseFeatureActs(torch.arange(0, n * k + 1, k), indices.flatten(), values.relu().float().flatten(),
                                 self.d_sae)


class BatchTopKSAE(_TopKFamily, architecture="batchtopk"):
    """The k * batch_size largest latents of the batch in training; a global threshold at inference."""

    _architecture_tensor_names = ("threshold",)

    def __init__(self, cfg, d_in, **kwargs):
        super().__init__(cfg, d_in, **kwargs)
        factory = dict(device=self.device, dtype=self.dtype)
        # -1 means "not estimated yet": until the first training step, encode() acts as a ReLU.
        self.register_buffer("threshold", torch.tensor(-1.0, **factory))
        # The moving average's sum and total weight (the weight starts at 0: no bias towards an initial guess).
        self.register_buffer("threshold_average", torch.zeros(2, **factory))

    @property
    def has_inference_threshold(self) -> bool:
        return True

    def _activate(self, pre: Tensor) -> Tensor:
        return (pre * (pre > self.threshold).to(pre.dtype)).relu()

    def _select(self, pre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return batch_top_k(pre, self.cfg.k * pre.shape[0])

    def _dense_select(self, pre: Tensor) -> tuple[Tensor, None]:
        return self._top_k_per_batch(pre), None

    def _top_k_per_batch(self, pre: Tensor) -> Tensor:
        """Keep the k * batch_size largest of relu(pre) [batch, d_sae] over the whole batch."""
        flat = pre.relu().flatten()
        n_keep = min(self.cfg.k * pre.shape[0], flat.numel())
        values, indices = flat.topk(n_keep, sorted=False)
        return torch.zeros_like(flat).scatter(0, indices, values).reshape(pre.shape)

    @torch.no_grad()
    def _note_kept(self, acts: Tensor) -> None:
        """Fold this batch's smallest kept activation into the threshold's bias-corrected moving
        average (no host sync); a batch where nothing fired leaves it as it was."""
        smallest = torch.where(acts > 0, acts, torch.inf).amin() if acts.numel() else acts.new_tensor(torch.inf)
        fired = torch.isfinite(smallest)
        decay = BATCHTOPK_THRESHOLD_DECAY
        update = torch.stack([torch.where(fired, smallest, 0.0), fired.to(smallest.dtype)]) * (1 - decay)
        average = torch.where(fired, decay * self.threshold_average + update, self.threshold_average)
        self.threshold_average.copy_(average)
        self.threshold.copy_(torch.where(average[1] > 0, average[0] / average[1].clamp_min(1e-30), self.threshold))

    @torch.no_grad()
    def calibrate_threshold(self, batches: Iterable[Tensor]) -> float:
        """Set the inference threshold from the current encoder: the mean, over training batches of
        NORMALIZED activations [batch, d_in], of the smallest activation batch top-k keeps.
        Inference then keeps about k latents per token on the same distribution. Returns it."""
        values = []
        for x in batches:
            _, _, kept = self._select(self._pre_acts(x.to(self.device, self.dtype)))
            if len(kept):
                values.append(kept.min())
        if not values:
            raise ValueError("calibrate_threshold: no latent fired on the given batches.")
        self.threshold.copy_(torch.stack(values).mean())
        return float(self.threshold)


def matryoshka_widths(widths: tuple[int, ...], d_sae: int) -> tuple[int, ...]:
    """The nested prefix sizes of a matryoshka dictionary: `widths` (checked to end at d_sae), or by
    default (d_sae // 16, d_sae // 4, d_sae) without empty or repeated ones."""
    if not widths:
        return tuple(sorted({w for w in (d_sae // 16, d_sae // 4, d_sae) if w > 0}))
    if widths[-1] != d_sae:
        raise ConfigError(f"sae.matryoshka_widths ends at {widths[-1]} but the dictionary has d_sae={d_sae} "
                          f"latents; the last width must be d_sae.")
    return tuple(widths)


class MatryoshkaBatchTopKSAE(BatchTopKSAE, architecture="matryoshka_batchtopk"):
    """batchtopk whose loss is the mean reconstruction error of nested prefixes of its latents."""

    def __init__(self, cfg, d_in, **kwargs):
        super().__init__(cfg, d_in, **kwargs)
        self.matryoshka_widths = matryoshka_widths(tuple(cfg.matryoshka_widths), self.d_sae)  # increasing, last d_sae

    def _bags(self, rows: Tensor, latents: Tensor, n: int) -> tuple[Tensor, int]:
        """Entry (t, j) adds to row g * n + t, g the group of j: the latents between two widths."""
        inner = torch.tensor(self.matryoshka_widths[:-1], dtype=latents.dtype, device=latents.device)
        return torch.bucketize(latents, inner, right=True) * n + rows, len(self.matryoshka_widths) * n

    def _reconstruction_loss(self, decoded: Tensor, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        # Prefix m's reconstruction is the decoder bias (and skip path) plus its groups' sums. (A loop
        # of adds: torch.cumsum over the groups and its backward cost several times as much on CPU.)
        groups = decoded.view(len(self.matryoshka_widths), *target.shape).unbind(0)  # (backward: one stack)
        reconstruction = self._with_skip(groups[0] + self.b_dec, x)
        errors = [self._mse(reconstruction, target)]
        for group in groups[1:]:
            reconstruction = reconstruction + group
            errors.append(self._mse(reconstruction, target))
        return reconstruction, torch.stack(errors).mean()

    def _dense_decode(self, feature_acts: Tensor, indices: Tensor | None) -> Tensor:
        # Each group's dense product, stacked as the rows `_bags` gives: [groups * batch, d_out].
        bounds = (0,) + self.matryoshka_widths
        return torch.cat([feature_acts[:, a:b] @ self.W_dec[a:b] for a, b in zip(bounds, bounds[1:])])
