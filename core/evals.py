"""Evaluation of a dictionary: reconstruction, sparsity, feature density, and downstream loss.

Downstream metrics splice the SAE into the model at its hook (`run_with_hooks`) on text-token
positions only (BOS / EOS / pad keep their original activations) and compare next-token cross
entropy over text positions: clean, with the reconstruction, with the activation zero-ablated.

    CE loss recovered = (CE_zero - CE_reconstructed) / (CE_zero - CE_clean)

1.0 means the reconstruction is as good as the real activation, 0.0 as bad as deleting it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import torch
import torch.nn.functional as F

from .lm import LanguageModel
from .store import density_histogram


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 - total squared error / total variance of x around its mean; x, x_hat: [n, d]."""
    residual = (x - x_hat).pow(2).sum()
    total = (x - x.mean(dim=0, keepdim=True)).pow(2).sum()
    return float(1.0 - residual / total.clamp_min(1e-12))


def mean_squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Squared error summed over d_model, averaged over tokens."""
    return float((x - x_hat).pow(2).sum(dim=-1).mean())


def l0_norm(feature_acts: torch.Tensor) -> float:
    """Mean number of non-zero features per token; feature_acts: [n, d_sae]."""
    return float((feature_acts != 0).float().sum(dim=-1).mean())


def feature_density_histogram(density: torch.Tensor) -> dict:
    """Histogram of log10 density over alive features (the feature store's binning), plus the
    number of features that never fired (density 0), which have no place on a log axis."""
    return {**density_histogram(density.double().cpu().numpy()), "unfired": int((density == 0).sum())}


class FeatureActivityTracker:
    """Per-feature firing statistics during training, logged in `metrics.jsonl`.

    - `dead_features`: features that have not fired in the last `dead_tokens_threshold` training
      tokens (`tokens_since_fired`); the AuxK loss trains exactly these.
    - `dense_features` / `window_unfired_features`: features firing on more than `dense_threshold`
      of the tokens / on none of them, over the last completed window of `window_tokens` tokens.
    """

    def __init__(self, d_sae: int, *, window_tokens: int, dead_tokens_threshold: int, dense_threshold: float,
                 device: str | torch.device = "cpu"):
        self.window_tokens = window_tokens
        self.dead_tokens_threshold = dead_tokens_threshold
        self.dense_threshold = dense_threshold
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.window_counts = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.window_seen = 0
        self.last_density: Optional[torch.Tensor] = None

    @torch.no_grad()
    def update(self, fire_counts: torch.Tensor, n_tokens: int) -> None:
        """Add a batch of `n_tokens` tokens on which latent j was active on fire_counts[j] (int64
        [d_sae], `SAEOutput.fire_counts`)."""
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[fire_counts > 0] = 0
        self.window_counts += fire_counts
        self.window_seen += n_tokens
        if self.window_seen >= self.window_tokens:
            self.last_density = (self.window_counts.double() / self.window_seen).cpu()
            self.window_counts.zero_()
            self.window_seen = 0

    @property
    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.dead_tokens_threshold

    def stats(self) -> dict:
        out = {"dead_features": int(self.dead_mask.sum())}
        if self.last_density is not None:
            out["dense_features"] = int((self.last_density > self.dense_threshold).sum())
            out["window_unfired_features"] = int((self.last_density == 0).sum())
        return out

    def state_dict(self) -> dict:
        return {"tokens_since_fired": self.tokens_since_fired.cpu(), "window_counts": self.window_counts.cpu(),
                "window_seen": torch.tensor(self.window_seen),
                "last_density": self.last_density if self.last_density is not None else torch.empty(0)}

    def load_state_dict(self, state: dict) -> None:
        device = self.tokens_since_fired.device
        self.tokens_since_fired = state["tokens_since_fired"].to(device)
        self.window_counts = state["window_counts"].to(device)
        self.window_seen = int(state["window_seen"])
        self.last_density = state["last_density"] if len(state["last_density"]) else None


@dataclass
class EvalResult:
    """Metrics of a dictionary on a fixed set of evaluation token batches."""

    n_tokens: int
    """Text tokens evaluated (BOS / EOS / pad excluded)."""
    mse: float
    """Squared reconstruction error summed over d_model, mean over tokens (raw activation space)."""
    explained_variance: float
    """1 - residual variance / activation variance."""
    l0: float
    """Mean active features per token."""
    unfired_features: int
    """Features that never fired on the `n_tokens` evaluation tokens (not the training logs'
    `dead_features`; on few tokens rare features count here too)."""
    dense_features: int
    """Features firing on more than the dense threshold of evaluation tokens."""
    ce_loss_clean: float
    ce_loss_reconstructed: float
    """CE loss with the SAE reconstruction spliced in at the hook."""
    ce_loss_zero_ablation: float
    ce_loss_recovered: float
    """(CE_zero - CE_reconstructed) / (CE_zero - CE_clean)."""
    kl_divergence: float
    """Mean KL(clean next-token distribution || distribution with the reconstruction)."""
    feature_density_histogram: dict

    def to_dict(self) -> dict:
        return asdict(self)

    def scalars(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if not isinstance(v, dict)}


def _next_token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position CE of predicting tokens[:, 1:]; [batch, seq-1]."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none"
                           ).view(tokens.shape[0], -1)


@torch.no_grad()
def evaluate(model: LanguageModel, sae, token_batches: Iterable[torch.Tensor], *,
             dense_threshold: float = 0.1) -> EvalResult:
    """Evaluate `sae` (which works on raw activations) on `token_batches` [batch, seq]."""
    hook_name = sae.hook_name
    was_training = sae.training
    sae.eval()
    sums = dict(ce_clean=0.0, ce_recon=0.0, ce_zero=0.0, kl=0.0, n_pred=0)
    xs, x_hats, fired = [], [], torch.zeros(sae.d_sae, dtype=torch.long)
    l0_total = 0.0
    for tokens in token_batches:
        tokens = tokens.to(model.device)
        mask = model.token_mask(tokens)  # [b, s]
        # One full forward gives both the clean logits and the hook's activations.
        logits_clean, cache = model.bridge.run_with_cache(tokens, names_filter=[hook_name], return_cache_object=False)
        activation_shape = cache[hook_name].shape[2:]  # per token: [d_in], or [n_heads, d_head] for hook_z
        x = cache[hook_name][mask].flatten(1).to(sae.W_dec.dtype)  # [n, d_in]
        feats = sae.encode(x)
        x_hat = sae.decode(feats)
        xs.append(x.float().cpu())
        x_hats.append(x_hat.float().cpu())
        l0_total += l0_norm(feats) * len(x)
        fired += (feats != 0).sum(dim=0).cpu()

        def splice(replacement: torch.Tensor):
            def hook_fn(activation, hook):
                out = activation.clone()
                out[mask] = replacement.to(out.dtype).view(-1, *activation_shape)
                return out
            return hook_fn

        logits_recon = model.bridge.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook_name, splice(x_hat))])
        logits_zero = model.bridge.run_with_hooks(tokens, return_type="logits",
                                                  fwd_hooks=[(hook_name, splice(torch.zeros_like(x_hat)))])
        # Predictions made at text positions, of text tokens.
        pred_mask = (mask[:, :-1] & mask[:, 1:]).float()
        n_pred = float(pred_mask.sum())
        sums["n_pred"] += n_pred
        for key, logits in (("ce_clean", logits_clean), ("ce_recon", logits_recon), ("ce_zero", logits_zero)):
            sums[key] += float((_next_token_losses(logits, tokens) * pred_mask).sum())
        logp_clean = logits_clean[:, :-1].float().log_softmax(-1)
        logp_recon = logits_recon[:, :-1].float().log_softmax(-1)
        kl = (logp_clean.exp() * (logp_clean - logp_recon)).sum(-1)
        sums["kl"] += float((kl * pred_mask).sum())
    sae.train(was_training)
    x_all, x_hat_all = torch.cat(xs), torch.cat(x_hats)
    n_tok, n_pred = len(x_all), max(sums["n_pred"], 1)
    ce_clean, ce_recon, ce_zero = (sums[k] / n_pred for k in ("ce_clean", "ce_recon", "ce_zero"))
    density = fired.double() / max(n_tok, 1)
    denominator = ce_zero - ce_clean
    return EvalResult(
        n_tokens=n_tok,
        mse=mean_squared_error(x_all, x_hat_all),
        explained_variance=explained_variance(x_all, x_hat_all),
        l0=l0_total / max(n_tok, 1),
        unfired_features=int((fired == 0).sum()),
        dense_features=int((density > dense_threshold).sum()),
        ce_loss_clean=ce_clean,
        ce_loss_reconstructed=ce_recon,
        ce_loss_zero_ablation=ce_zero,
        ce_loss_recovered=(ce_zero - ce_recon) / denominator if abs(denominator) > 1e-9 else float("nan"),
        kl_divergence=sums["kl"] / n_pred,
        feature_density_histogram=feature_density_histogram(density),
    )
