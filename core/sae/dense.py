"""The dense activation rules: `relu` and `jumprelu`, trained by plain autograd.

- `relu`: ReLU, with an L1 penalty weighted by decoder row norms.
- `jumprelu`: a per-latent learned threshold trained with straight-through estimators and an L0
  penalty (Rajamanoharan et al. 2024, "Jumping Ahead").

Any latent may fire on any token, so a training step computes the dense [batch, d_sae]
activations and decodes them with a dense product.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import SAEOutput, SparseAutoencoder


class _DenseSAE(SparseAutoencoder):
    """A training step through the dense activations; subclasses give the rule and the penalty."""

    def _training_forward(self, x: Tensor, target: Tensor, sparsity_coefficient: float | None,
                          dead_mask: Tensor | None, batch_sum=None) -> SAEOutput:
        # (every loss here is a mean over tokens: data-parallel ranks need no global statistic)
        pre = self._pre_acts(x)
        feature_acts = self._activate(pre)
        x_hat = self._reconstruct(feature_acts, x)
        mse_loss = self._mse(x_hat, target)
        sparsity_loss = self._sparsity_loss(pre, feature_acts, sparsity_coefficient)
        fired = feature_acts.detach() != 0
        return SAEOutput(
            x_hat=x_hat,
            fire_counts=fired.sum(0),
            loss=mse_loss + sparsity_loss,
            mse_loss=mse_loss,
            sparsity_loss=sparsity_loss,
            aux_loss=pre.new_zeros(()),  # AuxK is for the top-k family
            l0=fired.sum(-1).float().mean(),
        )

    def _sparsity_loss(self, pre: Tensor, feature_acts: Tensor, coefficient: float | None) -> Tensor:
        raise NotImplementedError


class ReLUSAE(_DenseSAE, architecture="relu"):
    """ReLU latents with an L1 penalty on activations times decoder row norms."""

    def _activate(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def _sparsity_loss(self, pre: Tensor, feature_acts: Tensor, coefficient: float | None) -> Tensor:
        coefficient = self.cfg.l1_coefficient if coefficient is None else coefficient
        return coefficient * (feature_acts * self.W_dec.norm(dim=1)).sum(-1).mean()


class JumpReLUSAE(_DenseSAE, architecture="jumprelu"):
    """f = pre * H(pre - theta) with a learned theta per latent (stored as log_threshold) and an L0
    penalty; theta gets straight-through gradients through a rectangle kernel of width
    cfg.jumprelu_bandwidth.

    A dictionary imported from another library (`core.formats`) keeps its thresholds as they were
    given, in the buffer `threshold` (`set_threshold`), and saves that instead of log_threshold:
    exp(log(theta)) is not theta again in float arithmetic, and 0 has no logarithm, so a
    pre-activation at the threshold could fire here and not there. Such a dictionary is for
    inference; training it is refused."""

    def __init__(self, cfg, d_in, **kwargs):
        super().__init__(cfg, d_in, **kwargs)
        init = math.log(cfg.jumprelu_init_threshold)
        self.log_threshold = nn.Parameter(torch.full((self.d_sae,), init, device=self.device, dtype=self.dtype))
        self.register_buffer("threshold", None)  # [d_sae] absolute thresholds, when set_threshold gave them

    @property
    def _architecture_tensor_names(self) -> tuple[str, ...]:
        return ("log_threshold",) if self.threshold is None else ("threshold",)

    def theta(self) -> Tensor:
        """The thresholds [d_sae] in use: the absolute ones when set, else exp(log_threshold)."""
        return self.log_threshold.exp() if self.threshold is None else self.threshold

    @torch.no_grad()
    def set_threshold(self, theta: Tensor) -> None:
        """Use the absolute thresholds `theta` [d_sae] (finite, >= 0) from now on, exactly as given."""
        theta = torch.as_tensor(theta)
        if theta.shape != (self.d_sae,):
            raise ValueError(f"set_threshold needs thresholds of shape [d_sae]=[{self.d_sae}], got {tuple(theta.shape)}.")
        if not bool(torch.isfinite(theta).all()) or bool((theta < 0).any()):
            raise ValueError("set_threshold needs finite thresholds >= 0 (a negative one acts as 0 after the ReLU "
                             "that other libraries apply; clamp it first).")
        self.threshold = theta.detach().to(self.device, self.dtype).clone()

    def _training_forward(self, x, target, sparsity_coefficient, dead_mask, batch_sum=None):
        if self.threshold is not None:
            raise ValueError("this jumprelu dictionary keeps absolute thresholds (it was imported from another "
                             "library) and is for inference only; train a new dictionary instead.")
        return super()._training_forward(x, target, sparsity_coefficient, dead_mask, batch_sum)

    def _activate(self, pre: Tensor) -> Tensor:
        return _JumpReLUFunction.apply(pre, self.theta(), self.cfg.jumprelu_bandwidth)

    def _sparsity_loss(self, pre: Tensor, feature_acts: Tensor, coefficient: float | None) -> Tensor:
        coefficient = self.cfg.l0_coefficient if coefficient is None else coefficient
        step = _StepFunction.apply(pre, self.theta(), self.cfg.jumprelu_bandwidth)
        return coefficient * step.sum(-1).mean()


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
