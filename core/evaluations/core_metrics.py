"""SAEBench's core evaluation: reconstruction, sparsity, downstream loss and per-latent statistics.

The metrics are `core.evals`'s (`evaluate_dictionaries_in_detail`: one clean forward per batch
shared by every dictionary, one forward per dictionary with its reconstruction spliced in, one
zero-ablated forward per output hook), arranged in SAEBench's categories and names
(sae_bench/evals/core/eval_output.py, `CoreMetricCategories`, `CoreFeatureMetric`); the per-latent
weight statistics follow sae_bench/evals/core/main.py (`get_featurewise_weight_based_metrics`,
`calculate_max_cosine_sim`, `calculate_misc_metrics`). Differences from SAEBench, all recorded in
`eval_config`: every metric comes from the same `n_eval_reconstruction_batches` batches (SAEBench
takes sparsity and variance from `n_eval_sparsity_variance_batches` = 1 other batch), special tokens
(BOS, separators, padding) are excluded from every metric
(`exclude_special_tokens_from_reconstruction` = True), and the text is the dictionary's own
held-out evaluation text (the first documents of its dataset, which training never reads) unless
`dataset` names another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..evals import EvalDetails, EvalResult, evaluate_dictionaries_in_detail
from ..lm import LanguageModel

FLOAT_DIGITS = 10
"""Per-latent values are rounded to this many digits, as SAEBench's `DEFAULT_FLOAT_PRECISION`."""


@dataclass
class CoreEvalConfig:
    """SAEBench's `CoreEvalConfig` (sae_bench/evals/core/eval_config.py): its fields, with this
    library's values where it evaluates differently (module docstring). No fields are added."""

    model_name: str = ""
    llm_dtype: str = "float32"
    batch_size_prompts: int = 16
    """Sequences per model batch (SAEBench's default)."""
    n_eval_reconstruction_batches: int = 10
    """Batches every metric is computed on (SAEBench's default)."""
    n_eval_sparsity_variance_batches: int = 10
    """Always n_eval_reconstruction_batches: the same batches (SAEBench: 1 other batch)."""
    dataset: str = ""
    """The text; "" (the default): the dictionary's own dataset, whose first documents its training held out."""
    context_size: int = 128
    compute_kl: bool = True
    compute_ce_loss: bool = True
    compute_l2_norms: bool = True
    compute_sparsity_metrics: bool = True
    compute_variance_metrics: bool = True
    compute_featurewise_density_statistics: bool = True
    compute_featurewise_weight_based_metrics: bool = True
    exclude_special_tokens_from_reconstruction: bool = True
    verbose: bool = False

    def validate(self) -> "CoreEvalConfig":
        off = [name for name, value in vars(self).items() if name.startswith("compute_") and not value]
        if off or not self.exclude_special_tokens_from_reconstruction:
            raise ConfigError(f"core {', '.join(off) or 'exclude_special_tokens_from_reconstruction'} cannot be "
                              f"turned off: this library computes every core metric, on text tokens only.")
        if self.n_eval_reconstruction_batches < 1 or self.batch_size_prompts < 1 or self.context_size < 2:
            raise ConfigError("core n_eval_reconstruction_batches and batch_size_prompts must be positive, "
                              "context_size at least 2.")
        return self


@dataclass
class CoreEvalResult:
    """One dictionary's core evaluation."""

    metrics: dict[str, dict]
    """SAEBench's metric categories (`eval_result_metrics`)."""
    feature_details: list[dict]
    """One `CoreFeatureMetric` record per latent (`eval_result_details`)."""
    evaluation: EvalResult
    """The same evaluation as the trainer's (`core.evals.EvalResult`)."""


@torch.no_grad()
def max_cosine_to_others(vectors: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """[n] the largest cosine similarity of each row of `vectors` [n, d] with any other row."""
    unit = F.normalize(vectors.float(), dim=-1)
    best = torch.empty(len(unit))
    for start in range(0, len(unit), chunk):
        sims = unit[start:start + chunk] @ unit.T  # [chunk, n]
        sims[torch.arange(len(sims)), torch.arange(start, start + len(sims))] = float("-inf")
        best[start:start + chunk] = sims.max(-1).values.cpu()
    return best


@torch.no_grad()
def weight_statistics(sae) -> dict[str, torch.Tensor]:
    """Per latent [d_sae]: encoder norm and bias, cosine of encoder and decoder directions, and the
    largest cosine with any other latent's encoder / decoder direction."""
    encoder, decoder = sae.W_enc.T.float(), sae.W_dec.float()  # [d_sae, d_in], [d_sae, d_out]
    same_space = encoder.shape[1] == decoder.shape[1]
    return {
        "encoder_bias": sae.b_enc.float().cpu(),
        "encoder_norm": encoder.norm(dim=-1).cpu(),
        "encoder_decoder_cosine_sim": (F.cosine_similarity(encoder, decoder, dim=-1).cpu() if same_space
                                       else torch.full((len(encoder),), float("nan"))),
        "max_encoder_cosine_sim": max_cosine_to_others(encoder),
        "max_decoder_cosine_sim": max_cosine_to_others(decoder),
    }


def core_metric_categories(result: EvalResult, details: EvalDetails, weights: dict[str, torch.Tensor]) -> dict:
    """SAEBench's `CoreMetricCategories` from one evaluation and the dictionary's weight statistics."""
    density = torch.tensor(details.feature_density, dtype=torch.float64)
    total = float(density.sum())
    kl_zero = details.kl_divergence_zero_ablation
    return {
        "model_behavior_preservation": {
            "kl_div_score": (kl_zero - result.kl_divergence) / kl_zero if kl_zero else float("nan"),
            "kl_div_with_ablation": kl_zero,
            "kl_div_with_sae": result.kl_divergence,
        },
        "model_performance_preservation": {
            "ce_loss_score": result.ce_loss_recovered,
            "ce_loss_with_ablation": result.ce_loss_zero_ablation,
            "ce_loss_with_sae": result.ce_loss_reconstructed,
            "ce_loss_without_sae": result.ce_loss_clean,
        },
        "reconstruction_quality": {
            "explained_variance": result.explained_variance,
            "explained_variance_legacy": details.explained_variance_legacy,
            "mse": result.mse,
            "cossim": details.cosine_similarity,
        },
        "shrinkage": {
            "l2_norm_in": details.l2_norm_in,
            "l2_norm_out": details.l2_norm_out,
            "l2_ratio": details.l2_ratio,
            "relative_reconstruction_bias": details.relative_reconstruction_bias,
        },
        "sparsity": {"l0": result.l0, "l1": details.l1},
        "token_stats": {"total_tokens_eval_reconstruction": result.n_tokens,
                        "total_tokens_eval_sparsity_variance": result.n_tokens},
        "misc_metrics": {
            "freq_over_1_percent": float((density > 0.01).double().mean()),
            "freq_over_10_percent": float((density > 0.1).double().mean()),
            "normalized_freq_over_1_percent": float(density[density > 0.01].sum()) / total if total else 0.0,
            "normalized_freq_over_10_percent": float(density[density > 0.1].sum()) / total if total else 0.0,
            "average_max_encoder_cosine_sim": float(weights["max_encoder_cosine_sim"].mean()),
            "average_max_decoder_cosine_sim": float(weights["max_decoder_cosine_sim"].mean()),
            "frac_alive": float((density > 0).double().mean()),
        },
    }


def feature_records(details: EvalDetails, weights: dict[str, torch.Tensor]) -> list[dict]:
    """SAEBench's `CoreFeatureMetric` records, one per latent."""
    columns = {"feature_density": details.feature_density,
               "consistent_activation_heuristic": details.consistent_activation_heuristic,
               **{name: values.tolist() for name, values in weights.items()}}
    names = list(columns)
    return [{"index": i, **{name: round(float(columns[name][i]), FLOAT_DIGITS) for name in names}}
            for i in range(len(details.feature_density))]


def core_evaluation(model: LanguageModel, saes: Sequence, token_batches: Iterable[torch.Tensor], *,
                    dense_threshold: float = 0.1) -> list[CoreEvalResult]:
    """SAEBench's core evaluation of every dictionary of `saes` on the same `token_batches`
    [batch, seq], from one shared clean forward per batch (module docstring)."""
    evaluated = evaluate_dictionaries_in_detail(model, saes, token_batches, dense_threshold=dense_threshold)
    results = []
    for sae, (result, details) in zip(saes, evaluated):
        weights = weight_statistics(sae)
        results.append(CoreEvalResult(core_metric_categories(result, details, weights),
                                      feature_records(details, weights), result))
    return results


__all__ = ["CoreEvalConfig", "CoreEvalResult", "core_evaluation", "core_metric_categories", "feature_records",
           "max_cosine_to_others", "weight_statistics"]
