"""Evaluation of a dictionary: reconstruction, sparsity, feature density, and downstream loss.

Downstream metrics splice the SAE into the model at its hook (`run_with_hooks`) on text-token
positions only (BOS / EOS / pad keep their original activations) and compare next-token cross
entropy over text positions: clean, with the reconstruction, with the activation zero-ablated.

    CE loss recovered = (CE_zero - CE_reconstructed) / (CE_zero - CE_clean)

1.0 means the reconstruction is as good as the real activation, 0.0 as bad as deleting it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F

from .hooks import hook_layer
from .lm import LanguageModel
from .sae import ReplacementModel
from .store import density_histogram


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 - total squared error / total variance of x around its mean; x, x_hat: [n, d]."""
    x64 = x.double()
    return explained_variance_from_sums(float((x64 - x_hat.double()).pow(2).sum()), x64.sum(0),
                                        float(x64.pow(2).sum()), len(x))


def explained_variance_from_sums(squared_error: float, x_sum: torch.Tensor, x_square_sum: float, n: int) -> float:
    """`explained_variance` from running sums over n rows: the squared error, the per-dimension sum
    of x [d] and the sum of x's squares (float64), so an evaluation need not keep every row."""
    variance = x_square_sum - float(x_sum.double().pow(2).sum()) / max(n, 1)  # total, around the mean
    return float(1.0 - squared_error / max(variance, 1e-12))


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


DEAD_MASK_REFRESH_STEPS = 10
"""Training steps between refreshes of the dead-latent mask that AuxK trains on."""


class FeatureActivityTracker:
    """Per-feature firing statistics during training, logged in `metrics.jsonl`.

    - `dead_features`: features that have not fired in the last `dead_tokens_threshold` training
      tokens (`tokens_since_fired`); the AuxK loss trains exactly these.
    - `dense_features` / `window_unfired_features`: features firing on more than `dense_threshold`
      of the tokens / on none of them, over the last completed window of `window_tokens` tokens.

    Nothing here waits for the device: counts stay where the dictionary is, and `dead_mask`, which
    the AuxK loss turns into a list of latents (a wait on a GPU), is a snapshot refreshed every
    `DEAD_MASK_REFRESH_STEPS` updates (the same tensor between refreshes, so the SAE reuses its list).
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
        self.updates = 0
        self.dead_mask = torch.zeros(d_sae, dtype=torch.bool, device=device)
        """Latents dead as of the last refresh (bool [d_sae])."""

    @torch.no_grad()
    def update(self, fire_counts: torch.Tensor, n_tokens: int) -> None:
        """Add a batch of `n_tokens` tokens on which latent j was active on fire_counts[j] (int64
        [d_sae], `SAEOutput.fire_counts`)."""
        self.tokens_since_fired.add_(n_tokens).masked_fill_(fire_counts > 0, 0)
        self.updates += 1
        if self.updates % DEAD_MASK_REFRESH_STEPS == 0:
            self.dead_mask = self.tokens_since_fired >= self.dead_tokens_threshold
        self.window_counts += fire_counts
        self.window_seen += n_tokens
        if self.window_seen >= self.window_tokens:
            self.last_density = (self.window_counts.double() / self.window_seen).cpu()
            self.window_counts.zero_()
            self.window_seen = 0

    def stats(self) -> dict:
        out = {"dead_features": int((self.tokens_since_fired >= self.dead_tokens_threshold).sum())}
        if self.last_density is not None:
            out["dense_features"] = int((self.last_density > self.dense_threshold).sum())
            out["window_unfired_features"] = int((self.last_density == 0).sum())
        return out

    def state_dict(self) -> dict:
        return {"tokens_since_fired": self.tokens_since_fired.cpu(), "window_counts": self.window_counts.cpu(),
                "window_seen": torch.tensor(self.window_seen), "updates": torch.tensor(self.updates),
                "dead_mask": self.dead_mask.cpu(),
                "last_density": self.last_density if self.last_density is not None else torch.empty(0)}

    def load_state_dict(self, state: dict) -> None:
        device = self.tokens_since_fired.device
        self.tokens_since_fired = state["tokens_since_fired"].to(device)
        self.window_counts = state["window_counts"].to(device)
        self.window_seen = int(state["window_seen"])
        self.updates = int(state["updates"])
        self.dead_mask = state["dead_mask"].to(device)
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


EVAL_CHUNK_TOKENS = 1024
"""Positions whose full-vocabulary log-softmax the evaluation computes at once: its memory is
chunk x vocabulary floats, whatever the batch and sequence sizes."""


def _masked_next_token_stats(logits: torch.Tensor, tokens: torch.Tensor, pred_mask: torch.Tensor,
                             reference_log_probs: Optional[torch.Tensor] = None,
                             chunk_tokens: int = EVAL_CHUNK_TOKENS) -> tuple[float, float]:
    """(sum of next-token cross entropy, sum of KL(reference || logits)) over the positions of
    `pred_mask` [batch, seq-1]; logits [batch, seq, vocab], computed `chunk_tokens` positions at a time.
    `reference_log_probs`: the reference run's log-probabilities at those positions
    (`next_token_log_probs`, [n_kept, vocab]), computed once for every run compared with it."""
    vocab = logits.shape[-1]
    flat_logits = logits[:, :-1].reshape(-1, vocab)
    targets = tokens[:, 1:].reshape(-1)
    keep = pred_mask.reshape(-1).nonzero().squeeze(1)
    ce = kl = 0.0
    for start in range(0, len(keep), chunk_tokens):
        rows = keep[start:start + chunk_tokens]
        logp = flat_logits[rows].float().log_softmax(-1)
        ce -= float(logp.gather(1, targets[rows, None]).sum())
        if reference_log_probs is not None:
            logp_ref = reference_log_probs[start:start + chunk_tokens]
            kl += float((logp_ref.exp() * (logp_ref - logp)).sum())
    return ce, kl


def _cross_entropy_of(log_probs: torch.Tensor, tokens: torch.Tensor, pred_mask: torch.Tensor,
                      chunk_tokens: int = EVAL_CHUNK_TOKENS) -> float:
    """The sum of next-token cross entropy over the positions of `pred_mask` from their
    log-probabilities `log_probs` [n_kept, vocab] (`next_token_log_probs`)."""
    targets = tokens[:, 1:].reshape(-1)[pred_mask.reshape(-1)]
    return -sum(float(log_probs[start:start + chunk_tokens].gather(1, targets[start:start + chunk_tokens, None]).sum())
                for start in range(0, len(targets), chunk_tokens))


def next_token_log_probs(logits: torch.Tensor, pred_mask: torch.Tensor,
                         chunk_tokens: int = EVAL_CHUNK_TOKENS) -> torch.Tensor:
    """float32 [n_kept, vocab]: the next-token log-probabilities at the positions of `pred_mask`
    [batch, seq-1] (the clean run's, computed once and reused by every dictionary's KL)."""
    vocab = logits.shape[-1]
    flat = logits[:, :-1].reshape(-1, vocab)
    keep = pred_mask.reshape(-1).nonzero().squeeze(1)
    out = torch.empty(len(keep), vocab, dtype=torch.float32, device=logits.device)
    for start in range(0, len(keep), chunk_tokens):
        out[start:start + chunk_tokens] = flat[keep[start:start + chunk_tokens]].float().log_softmax(-1)
    return out


def resid_pre_of_block(hook: str) -> Optional[str]:
    """The residual stream entering the block that holds `hook` (`blocks.5.hook_resid_pre` for any
    hook of block 5), from which a forward that changes `hook` can start (`run_from_block`); None for
    hooks outside the blocks, whose forwards start at the embedding."""
    layer = hook_layer(hook)
    return None if layer is None or layer < 0 else f"blocks.{layer}.hook_resid_pre"


def run_from_block(model: LanguageModel, tokens: torch.Tensor, resid: dict[str, torch.Tensor], hook: str,
                   fwd_hooks: list) -> torch.Tensor:
    """The logits of `tokens` with `fwd_hooks` (which change `hook` and later hooks only), computed
    from the block holding `hook`: the clean run's residual entering that block (`resid`, by
    `resid_pre_of_block` name) stands for the blocks before it, which the hooks do not change. The
    same logits as a forward from the embedding (TransformerBridge's `start_at_layer`), without
    recomputing the blocks before."""
    name = resid_pre_of_block(hook)
    with model.autocast():
        if name is None or name not in resid:
            return model.bridge.run_with_hooks(tokens, return_type="logits", fwd_hooks=fwd_hooks)
        return model.bridge.run_with_hooks(resid[name], start_at_layer=hook_layer(hook), return_type="logits",
                                           fwd_hooks=fwd_hooks)


@dataclass
class EvalDetails:
    """What SAEBench's core evaluation reports beyond `EvalResult`, from the same pass over the same
    tokens (`evaluate_dictionaries_in_detail`); the definitions are SAEBench's
    (sae_bench/evals/core/main.py: `get_sparsity_and_variance_metrics`, `get_recons_loss`)."""

    kl_divergence_zero_ablation: float
    """Mean KL(clean next-token distribution || distribution with the output hook zero-ablated)."""
    l1: float
    """Mean sum of the feature activations per token."""
    cosine_similarity: float
    """Mean cosine similarity of a token's activation (target) and its reconstruction."""
    l2_norm_in: float
    """Mean L2 norm of the activations (targets)."""
    l2_norm_out: float
    """Mean L2 norm of the reconstructions."""
    l2_ratio: float
    """Mean over tokens of |reconstruction| / |activation| (an activation of norm < 1e-4 divides by 1)."""
    relative_reconstruction_bias: float
    """mean |x_hat|^2 / mean <x, x_hat> over all the tokens (Wright & Sharkey 2024, eq. 10; 1 = no
    shrinkage; SAEBench takes the ratio per batch and averages the batches)."""
    explained_variance_legacy: float
    """Mean over tokens of 1 - |x - x_hat|^2 / |x - mean of x over its model batch|^2 (SAEBench's
    earlier formula, kept for comparison with older results)."""
    feature_density: list[float]
    """Per latent: the fraction of tokens it fired on [d_sae]."""
    consistent_activation_heuristic: list[float]
    """Per latent: tokens it fired on / sequences it fired in (NaN for a latent that never fired) [d_sae]."""
    n_sequences: int
    """Sequences the tokens came from."""


class EvalSums:
    """What an evaluation adds up for one dictionary, batch by batch: reconstruction and sparsity
    from `add_reconstruction`, the spliced-in and zero-ablated losses from the caller (`ce_recon`,
    `ce_zero`, `kl`, `kl_zero`, summed over predictions). With `details`, also what `EvalDetails` holds.
    An evaluation without a language model (synthetic activations) leaves the losses at 0 and gets
    NaN for them."""

    def __init__(self, d_sae: int, d_out: int, *, details: bool = False):
        self.ce_recon = self.ce_zero = self.kl = self.kl_zero = self.l0 = 0.0
        self.n_tokens = 0
        self.fired = torch.zeros(d_sae, dtype=torch.long)
        self.squared_error = 0.0
        self.target_sum = torch.zeros(d_out, dtype=torch.float64)
        self.target_squares = 0.0
        self.details = details
        self.l1 = self.cosine = self.norm_in = self.norm_out = self.ratio = 0.0
        self.hat_squares = self.dot = self.ev_legacy = 0.0
        self.fired_sequences = torch.zeros(d_sae, dtype=torch.long)
        self.n_sequences = 0

    def add_reconstruction(self, target: torch.Tensor, target_hat: torch.Tensor, feats: torch.Tensor,
                           sequence_index: Optional[torch.Tensor] = None) -> None:
        """Add the tokens of a batch: targets and reconstructions [n, d_out], feature activations
        [n, d_sae], and (for the details) the sequence of each token, 0..n_sequences-1 [n]."""
        target, target_hat = target.double().cpu(), target_hat.double().cpu()
        active = (feats != 0).cpu()
        self.n_tokens += len(target)
        error = (target - target_hat).pow(2).sum(-1)  # [n]
        self.squared_error += float(error.sum())
        self.target_sum += target.sum(0)
        self.target_squares += float(target.pow(2).sum())
        self.l0 += float(active.sum())
        self.fired += active.sum(0)
        if not self.details:
            return
        norm_in, norm_out = target.norm(dim=-1), target_hat.norm(dim=-1)
        self.l1 += float(feats.double().sum())
        self.cosine += float(F.cosine_similarity(target, target_hat, dim=-1, eps=1e-12).sum())
        self.norm_in += float(norm_in.sum())
        self.norm_out += float(norm_out.sum())
        self.ratio += float((norm_out / torch.where(norm_in.abs() < 1e-4, 1.0, norm_in)).sum())
        self.hat_squares += float(norm_out.pow(2).sum())
        self.dot += float((target * target_hat).sum())
        spread = (target - target.mean(0)).pow(2).sum(-1)
        self.ev_legacy += float((1 - error / spread).sum())
        if sequence_index is None:
            sequence_index = torch.arange(len(target))
        n_sequences = int(sequence_index.max()) + 1 if len(sequence_index) else 0
        per_sequence = torch.zeros(n_sequences, active.shape[1], dtype=torch.long)
        per_sequence.index_add_(0, sequence_index.cpu(), active.long())
        self.fired_sequences += (per_sequence > 0).sum(0)
        self.n_sequences += n_sequences

    def result(self, ce_clean: float = float("nan"), n_pred: float = 0.0, dense_threshold: float = 0.1) -> EvalResult:
        n = max(self.n_tokens, 1)
        ce_recon, ce_zero = (self.ce_recon / n_pred, self.ce_zero / n_pred) if n_pred else (float("nan"),) * 2
        denominator = ce_zero - ce_clean
        density = self.fired.double() / n
        return EvalResult(
            n_tokens=self.n_tokens,
            mse=self.squared_error / n,
            explained_variance=explained_variance_from_sums(self.squared_error, self.target_sum,
                                                            self.target_squares, self.n_tokens),
            l0=self.l0 / n,
            unfired_features=int((self.fired == 0).sum()),
            dense_features=int((density > dense_threshold).sum()),
            ce_loss_clean=ce_clean,
            ce_loss_reconstructed=ce_recon,
            ce_loss_zero_ablation=ce_zero,
            ce_loss_recovered=(ce_zero - ce_recon) / denominator if abs(denominator) > 1e-9 else float("nan"),
            kl_divergence=self.kl / n_pred if n_pred else float("nan"),
            feature_density_histogram=feature_density_histogram(density),
        )

    def result_details(self, n_pred: float = 0.0) -> EvalDetails:
        n = max(self.n_tokens, 1)
        density = self.fired.double() / n
        consistency = self.fired.double() / self.fired_sequences.double()  # 0 / 0: NaN for a latent never fired
        return EvalDetails(
            kl_divergence_zero_ablation=self.kl_zero / n_pred if n_pred else float("nan"),
            l1=self.l1 / n, cosine_similarity=self.cosine / n, l2_norm_in=self.norm_in / n,
            l2_norm_out=self.norm_out / n, l2_ratio=self.ratio / n,
            relative_reconstruction_bias=self.hat_squares / self.dot if self.dot else float("nan"),
            explained_variance_legacy=self.ev_legacy / n, feature_density=density.tolist(),
            consistent_activation_heuristic=consistency.tolist(), n_sequences=self.n_sequences)


def _splice(mask: torch.Tensor, replacement: torch.Tensor):
    """A forward hook putting `replacement` [n_masked, d] at the `mask` [batch, seq] positions."""
    def hook_fn(activation, hook):
        out = activation.clone()
        out[mask] = replacement.to(out.dtype).view(-1, *activation.shape[2:])
        return out
    return hook_fn


@torch.no_grad()
def evaluate_dictionaries(model: LanguageModel, saes: Sequence, token_batches: Iterable[torch.Tensor], *,
                          dense_threshold: float = 0.1, chunk_tokens: int = EVAL_CHUNK_TOKENS) -> list[EvalResult]:
    """Evaluate each dictionary of `saes` (working on raw activations) on `token_batches` [batch, seq].

    One clean forward per batch gives the clean loss and every hook's activations; then, per
    dictionary, a forward with its reconstruction spliced in at its output hook (`hook_out` of a
    transcoder, else its hook), and one zero-ablated forward per output hook, shared by the
    dictionaries writing there. A transcoder is scored against its output hook's activations."""
    sums, ce_clean, n_pred = _evaluation_sums(model, saes, token_batches, details=False, chunk_tokens=chunk_tokens)
    return [acc.result(ce_clean, n_pred, dense_threshold) for acc in sums]


@torch.no_grad()
def evaluate_dictionaries_in_detail(model: LanguageModel, saes: Sequence, token_batches: Iterable[torch.Tensor], *,
                                    dense_threshold: float = 0.1, chunk_tokens: int = EVAL_CHUNK_TOKENS
                                    ) -> list[tuple[EvalResult, EvalDetails]]:
    """`evaluate_dictionaries` and, from the same forwards, each dictionary's `EvalDetails` (what
    SAEBench's core evaluation adds: KL of the zero ablation, shrinkage, L1, per-latent density)."""
    sums, ce_clean, n_pred = _evaluation_sums(model, saes, token_batches, details=True, chunk_tokens=chunk_tokens)
    return [(acc.result(ce_clean, n_pred, dense_threshold), acc.result_details(n_pred)) for acc in sums]


def _evaluation_sums(model: LanguageModel, saes: Sequence, token_batches: Iterable[torch.Tensor], *, details: bool,
                     chunk_tokens: int) -> tuple[list[EvalSums], float, float]:
    """(each dictionary's sums, the mean clean CE loss, the number of predictions) over the batches."""
    saes = list(saes)
    outputs = [getattr(sae, "hook_out", None) or sae.hook_name for sae in saes]
    starts = [name for name in dict.fromkeys(resid_pre_of_block(h) for h in outputs) if name is not None]
    hooks = list(dict.fromkeys([sae.hook_name for sae in saes] + outputs + starts))
    was_training = [sae.training for sae in saes]
    for sae in saes:
        sae.eval()
    sums = [EvalSums(sae.d_sae, getattr(sae, "d_out", sae.d_in), details=details) for sae in saes]
    ce_clean = n_pred = 0.0
    for tokens in token_batches:
        tokens = tokens.to(model.device)
        mask = model.token_mask(tokens)  # [b, s]
        pred_mask = mask[:, :-1] & mask[:, 1:]  # predictions made at text positions, of text tokens
        n_pred += float(pred_mask.sum())
        sequence_index = mask.nonzero()[:, 0]  # [n] the sequence of each text token
        with model.autocast():
            logits_clean, cache = model.bridge.run_with_cache(tokens, names_filter=hooks, return_cache_object=False)
        clean_log_probs = next_token_log_probs(logits_clean, pred_mask, chunk_tokens)  # (once, for every KL)
        ce_clean += _cross_entropy_of(clean_log_probs, tokens, pred_mask, chunk_tokens)
        del logits_clean
        zero_ablated: dict[str, tuple[float, float]] = {}
        for sae, hook_out, acc in zip(saes, outputs, sums):
            x = cache[sae.hook_name][mask].flatten(1).to(sae.dtype)  # [n, d_in]
            target = cache[hook_out][mask].flatten(1)
            feats = sae.encode(x)
            target_hat = sae(x)  # raw reconstruction (a transcoder's skip connection included)
            acc.add_reconstruction(target, target_hat, feats, sequence_index)
            logits = run_from_block(model, tokens, cache, hook_out, [(hook_out, _splice(mask, target_hat))])
            ce, kl = _masked_next_token_stats(logits, tokens, pred_mask, clean_log_probs, chunk_tokens)
            acc.ce_recon += ce
            acc.kl += kl
            del logits
            if hook_out not in zero_ablated:
                logits = run_from_block(model, tokens, cache, hook_out,
                                        [(hook_out, _splice(mask, torch.zeros_like(target)))])
                zero_ablated[hook_out] = _masked_next_token_stats(logits, tokens, pred_mask,
                                                                  clean_log_probs if details else None, chunk_tokens)
                del logits
            acc.ce_zero += zero_ablated[hook_out][0]
            acc.kl_zero += zero_ablated[hook_out][1]
    for sae, mode in zip(saes, was_training):
        sae.train(mode)
    n_pred = max(n_pred, 1.0)
    return sums, ce_clean / n_pred, n_pred


def evaluate(model: LanguageModel, sae, token_batches: Iterable[torch.Tensor], *,
             dense_threshold: float = 0.1) -> EvalResult:
    """Evaluate one dictionary (see `evaluate_dictionaries`)."""
    return evaluate_dictionaries(model, [sae], token_batches, dense_threshold=dense_threshold)[0]


# ----------------------------------------------------------------------------------------------
# Replacement models: every covered MLP replaced at once


@dataclass
class ReplacementEvalResult(EvalResult):
    """`EvalResult`'s metrics of a replacement model (a transcoder set or a CLT) with every covered
    MLP replaced at once, and per covered layer (`layers`).

    The CE losses and KL are those of the whole replacement: each covered MLP's output is the
    replacement's reconstruction computed from that layer's input *in the replaced run* (so errors
    compound through the layers, as they do when the replacement stands in for the model); zero
    ablation zeroes every covered MLP's output. The reconstruction metrics (mse, explained variance,
    L0, fired features) are measured on the clean run's activations, layer by layer, and summed or
    pooled over layers here: mse is summed over the covered layers' d_out, explained variance pools
    every layer's error and variance, l0 counts the features active per token over all layers."""

    layers: dict = field(default_factory=dict)
    """Per covered layer, lists in the order of `layer`: `layer` (block numbers), `normalized_mse`
    (squared error / squared norm of the MLP output), `explained_variance`, `l0` (features of that
    layer active per token), `unfired_features` (of that layer's features, on the evaluation tokens)."""


def is_replacement_model(dictionary) -> bool:
    """Whether `dictionary` stands in for several MLPs at once (a transcoder set or a CLT)."""
    return isinstance(dictionary, ReplacementModel)


class _ReplacementSums:
    """What an evaluation of one replacement model adds up, batch by batch."""

    def __init__(self, replacement) -> None:
        L = len(replacement.layers)
        self.replacement = replacement
        self.layers = [EvalSums(replacement.d_sae, replacement.d_out) for _ in range(L)]
        self.ce_replaced = self.ce_zero = self.kl = 0.0
        self.squared_norm = [0.0] * L

    def add_clean(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Reconstruction metrics on clean activations x [n, L, d_in], y [n, L, d_out]."""
        r = self.replacement
        feats = r.encode(x.to(r.device, r.dtype))
        y_hat = r.decode(feats, x.to(r.device, r.dtype))
        for i, sums in enumerate(self.layers):
            sums.add_reconstruction(y[:, i], y_hat[:, i], feats[:, i])
            self.squared_norm[i] += float(y[:, i].double().pow(2).sum())

    def result(self, ce_clean: float, n_pred: float, dense_threshold: float) -> ReplacementEvalResult:
        per_layer = [s.result(ce_clean, n_pred, dense_threshold) for s in self.layers]
        n = max(self.layers[0].n_tokens, 1)
        error = sum(s.squared_error for s in self.layers)
        variance = sum(s.target_squares - float(s.target_sum.pow(2).sum()) / n for s in self.layers)
        ce_replaced, ce_zero = self.ce_replaced / n_pred, self.ce_zero / n_pred
        denominator = ce_zero - ce_clean
        fired = torch.cat([s.fired for s in self.layers])
        density = fired.double() / n
        return ReplacementEvalResult(
            n_tokens=self.layers[0].n_tokens, mse=error / n,
            explained_variance=float(1.0 - error / max(variance, 1e-12)),
            l0=sum(r.l0 for r in per_layer), unfired_features=int((fired == 0).sum()),
            dense_features=int((density > dense_threshold).sum()), ce_loss_clean=ce_clean,
            ce_loss_reconstructed=ce_replaced, ce_loss_zero_ablation=ce_zero,
            ce_loss_recovered=(ce_zero - ce_replaced) / denominator if abs(denominator) > 1e-9 else float("nan"),
            kl_divergence=self.kl / n_pred, feature_density_histogram=feature_density_histogram(density),
            layers={"layer": list(self.replacement.layers),
                    "normalized_mse": [s.squared_error / max(sq, 1e-12) for s, sq in zip(self.layers, self.squared_norm)],
                    "explained_variance": [r.explained_variance for r in per_layer],
                    "l0": [r.l0 for r in per_layer],
                    "unfired_features": [r.unfired_features for r in per_layer]})


def _replacing_hooks(replacement, mask: torch.Tensor) -> list:
    """Forward hooks that replace every covered MLP output (at the `mask` [batch, seq] positions) by
    the replacement's reconstruction from the inputs seen in this very run: at layer l's input hook
    the features of layer l are computed and what they write to layers l.. is added up; at layer m's
    output hook the sum, the decoder bias and the skip path replace the MLP's output."""
    r = replacement
    L = len(r.layers)
    written: dict[int, torch.Tensor] = {}  # position m -> what features of layers <= m write there [n, d_out]
    inputs: dict[int, torch.Tensor] = {}
    bias = r.decoder_bias()

    def read(i: int, layer: int):
        def hook_fn(activation, hook):
            x = activation[mask].flatten(1).to(r.device, r.dtype)  # [n, d_in]
            inputs[i] = x
            contributions = r.decode_layer(r.encode_layer(x, layer), layer)  # [n, n_targets, d_out]
            for j, target in enumerate(r.target_layers(layer)):
                m = r.layers.index(target)
                written[m] = written[m] + contributions[:, j] if m in written else contributions[:, j]
            return activation
        return hook_fn

    def write(m: int):
        def hook_fn(activation, hook):
            y = bias[m].expand(int(mask.sum()), -1)
            if m in written:
                y = y + written[m]
            stacked = torch.zeros(len(y), L, r.d_in, device=y.device, dtype=y.dtype)
            stacked[:, m] = inputs[m]
            skip = r.skip(stacked)
            if skip is not None:
                y = y + skip[:, m]
            out = activation.clone()
            out[mask] = y.to(out.dtype).view(-1, *activation.shape[2:])
            return out
        return hook_fn

    hooks = []
    for i, (layer, hook_in, hook_out) in enumerate(zip(r.layers, r.hook_names, r.hooks_out)):
        hooks += [(hook_in, read(i, layer)), (hook_out, write(i))]
    return hooks


@torch.no_grad()
def evaluate_replacement(model: LanguageModel, replacement, token_batches: Iterable[torch.Tensor], *,
                         dense_threshold: float = 0.1, chunk_tokens: int = EVAL_CHUNK_TOKENS) -> ReplacementEvalResult:
    """Evaluate a replacement model (`core.sae.ReplacementModel`) on `token_batches` [batch, seq]:
    per batch one clean forward (the clean loss, every covered layer's input and output), one with
    every covered MLP replaced at once (`_replacing_hooks`), one with every covered MLP zero-ablated."""
    r = replacement
    was_training = r.training
    r.eval()
    sums = _ReplacementSums(r)
    ce_clean = n_pred = 0.0
    start = resid_pre_of_block(r.hook_names[0])  # the replaced and zeroed runs start at the first covered block
    hooks = list(r.hook_names) + list(r.hooks_out) + ([start] if start else [])
    for tokens in token_batches:
        tokens = tokens.to(model.device)
        mask = model.token_mask(tokens)
        pred_mask = mask[:, :-1] & mask[:, 1:]
        n_pred += float(pred_mask.sum())
        with model.autocast():
            logits_clean, cache = model.bridge.run_with_cache(tokens, names_filter=hooks, return_cache_object=False)
        clean_log_probs = next_token_log_probs(logits_clean, pred_mask, chunk_tokens)
        ce_clean += _cross_entropy_of(clean_log_probs, tokens, pred_mask, chunk_tokens)
        del logits_clean
        x = torch.stack([cache[h][mask].flatten(1) for h in r.hook_names], dim=1)  # [n, L, d_in]
        y = torch.stack([cache[h][mask].flatten(1) for h in r.hooks_out], dim=1)  # [n, L, d_out]
        sums.add_clean(x, y)
        logits = run_from_block(model, tokens, cache, r.hook_names[0], _replacing_hooks(r, mask))
        ce, kl = _masked_next_token_stats(logits, tokens, pred_mask, clean_log_probs, chunk_tokens)
        sums.ce_replaced += ce
        sums.kl += kl
        del logits
        zero = [(h, _splice(mask, torch.zeros(int(mask.sum()), r.d_out, device=model.device))) for h in r.hooks_out]
        logits = run_from_block(model, tokens, cache, r.hook_names[0], zero)
        del cache
        sums.ce_zero += _masked_next_token_stats(logits, tokens, pred_mask, chunk_tokens=chunk_tokens)[0]
        del logits
    r.train(was_training)
    n_pred = max(n_pred, 1.0)
    return sums.result(ce_clean / n_pred, n_pred, dense_threshold)


class Evaluator(Protocol):
    """What the trainer evaluates its dictionaries with (it does not know where the data comes from)."""

    def __call__(self, saes: Sequence, *, final: bool) -> list[EvalResult]:
        """One `EvalResult` per dictionary of `saes`; the final evaluation may use more data."""
        ...


class HeldOutEvaluation:
    """Evaluation on the language model with fixed held-out token batches (the dataset's first
    documents, which training never reads): a periodic evaluation on the first `periodic_batches`,
    the final one on all of them."""

    def __init__(self, model: LanguageModel, batches: Sequence[torch.Tensor], *, periodic_batches: int,
                 dense_threshold: float = 0.1):
        self.model = model
        self.batches = list(batches)
        self.periodic_batches = periodic_batches
        self.dense_threshold = dense_threshold

    def __call__(self, saes: Sequence, *, final: bool) -> list[EvalResult]:
        """Dictionaries through `evaluate_dictionaries` (one clean forward shared by all of them),
        replacement models through `evaluate_replacement` (every covered MLP replaced at once)."""
        batches = self.batches if final else self.batches[:self.periodic_batches]
        saes = list(saes)
        plain = [sae for sae in saes if not is_replacement_model(sae)]
        results = iter(evaluate_dictionaries(self.model, plain, batches, dense_threshold=self.dense_threshold)
                       if plain else [])
        return [evaluate_replacement(self.model, sae, batches, dense_threshold=self.dense_threshold)
                if is_replacement_model(sae) else next(results) for sae in saes]
