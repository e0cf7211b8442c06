"""Synthetic ground truth: activations made of known sparse features, a stream the trainer trains on,
and how well a dictionary recovered the features (as SAELens's synthetic-data benchmark does,
sae_lens/synthetic, with this library's own generator and scores).

**The features** (`SyntheticFeatures.generate(cfg)`): `n_features` random unit directions in
`d_model` dimensions (orthonormal when `orthogonal` and n_features <= d_model); each fires with
its probability (`constant`: all `firing_probability`; `zipf`: proportional to (i + 1)^-zipf_exponent,
scaled to mean `firing_probability`), with a magnitude |N(magnitude_mean, magnitude_std)|.
Firing may be correlated (`correlation` rho > 0): a Gaussian copula, feature i fires when
sqrt(1 - rho) e_i + sqrt(rho) (L g)_i > Phi^-1(1 - p_i), L a random [n_features, correlation_rank]
matrix of unit rows, g ~ N(0, I), which keeps each feature's firing probability exactly p_i and
makes the latent correlation of features i and j rho L_i . L_j. A hierarchy (`n_parents` > 0): the
first n_parents features are parents, each followed by its `children_per_parent` children, which
fire only when their parent fires (their probability is then conditional on it) and, with
`mutually_exclusive_children`, at most one at a time (one of those that fired, at random).
A token's activation is sum_i a_i f_i + `noise_std` N(0, I).

**The stream** (`SyntheticActivations`): batch i of the training (or evaluation) stream is drawn
from a generator seeded by (seed, stream, i) alone, so `position()` ({"batch": i}) resumes exactly
and `skip()` costs nothing: it follows `core.activations.ActivationStream` like the model's source
and the cache. The evaluation stream never repeats a training batch.

**Recovery** (`recovery`): with C the cosine similarities of the dictionary's decoder rows and the
true directions,
- `mean_max_cosine`: the mean over true features of their best cosine with any latent;
- `fraction_recovered`: the fraction of true features whose best cosine exceeds `threshold` (0.9);
- `mcc`: the mean cosine of the best one-to-one matching of features to latents (Hungarian
  algorithm on C; SAELens's `mean_correlation_coefficient` matches |C| — here a latent whose
  decoder points against a feature does not count, since activations are non-negative);
- matched firing: each true feature, matched to a latent by that one-to-one matching, is a
  detector of the feature firing on evaluation tokens: `matched_precision` (of the tokens where the
  latent fires, the share where the feature fires), `matched_recall` (the other way), their F1;
  means over the features that fired (a feature left unmatched, when there are fewer latents than
  features, scores 0). SAELens instead matches each latent to its best feature (many to one).
- what needs no ground truth, from `core.evals` (`EvalSums`): explained variance, MSE, L0, latents
  that never fired; and the true L0 and the shrinkage |x_hat| / |x|.

**Training** (`synthetic_trainer`): the normal `core.training.Trainer`, handed the synthetic stream
(through an `ActivationBuffer`) and `SyntheticEvaluator` instead of a language model, so a synthetic
run has what any run has: metrics.jsonl, periodic evaluations, checkpoints and exact resumption (the
stream's position is saved), its dictionaries saved with their final metrics.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..activations import ActivationBuffer
from ..config import ConfigError, TrainingConfig
from ..evals import EvalResult, EvalSums
from ..runs import RunFolder
from ..sae import load_dictionary
from ..training import DictionaryTrainer, Trainer, checkpoint_to_resume, load_trainer_state, seed_everything
from .saebench import EVAL_TYPE_SYNTHETIC, dictionary_config, eval_output, new_eval_id, write_eval_output

log = logging.getLogger(__name__)

SYNTHETIC_HOOK = "synthetic"
"""The hook name of synthetic activations (a dictionary trained on them reads this 'hook')."""
RECOVERY_THRESHOLD = 0.9
FIRING_DISTRIBUTIONS = ("constant", "zipf")


@dataclass
class SyntheticConfig:
    """Ground-truth features and how they fire (module docstring)."""

    n_features: int = 256
    d_model: int = 64
    firing_probability: float = 0.02
    """Each feature's probability of firing on a token (the mean of them for `zipf`)."""
    firing_distribution: str = "constant"
    zipf_exponent: float = 0.5
    magnitude_mean: float = 1.0
    magnitude_std: float = 0.2
    correlation: float = 0.0
    """rho in [0, 1): the strength of correlated firing."""
    correlation_rank: int = 8
    n_parents: int = 0
    children_per_parent: int = 0
    mutually_exclusive_children: bool = True
    noise_std: float = 0.0
    orthogonal: bool = False
    seed: int = 0

    def validate(self) -> "SyntheticConfig":
        if self.n_features < 1 or self.d_model < 1:
            raise ConfigError(f"synthetic n_features and d_model must be positive, not {self.n_features} and "
                              f"{self.d_model}.")
        if not 0 < self.firing_probability <= 1:
            raise ConfigError(f"synthetic firing_probability is {self.firing_probability}; it must be in (0, 1].")
        if self.firing_distribution not in FIRING_DISTRIBUTIONS:
            raise ConfigError(f"synthetic firing_distribution is {self.firing_distribution!r}; allowed values: "
                              f"{', '.join(FIRING_DISTRIBUTIONS)}.")
        if not 0 <= self.correlation < 1 or self.correlation_rank < 1:
            raise ConfigError(f"synthetic correlation is {self.correlation}; it must be in [0, 1), with "
                              f"correlation_rank >= 1.")
        if self.n_parents * (1 + self.children_per_parent) > self.n_features or min(self.n_parents,
                                                                                     self.children_per_parent) < 0:
            raise ConfigError(f"synthetic hierarchy of {self.n_parents} parents x (1 + {self.children_per_parent} "
                              f"children) needs more than the {self.n_features} features.")
        if self.orthogonal and self.n_features > self.d_model:
            raise ConfigError(f"synthetic orthogonal features need n_features <= d_model ({self.n_features} > "
                              f"{self.d_model}); set orthogonal=False.")
        if self.magnitude_std < 0 or self.noise_std < 0:
            raise ConfigError("synthetic magnitude_std and noise_std must be >= 0.")
        return self


def _generator(*key) -> torch.Generator:
    """A CPU generator seeded by `key` alone (a hash, so that nearby keys give unrelated streams)."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


@dataclass
class SyntheticFeatures:
    """The ground truth: directions, firing probabilities, correlations, hierarchy."""

    cfg: SyntheticConfig
    directions: torch.Tensor
    """[n_features, d_model] unit rows."""
    probabilities: torch.Tensor
    """[n_features] each feature's firing probability (a child's: given that its parent fires)."""
    correlation_factor: torch.Tensor
    """[n_features, correlation_rank] unit rows (unused when correlation is 0)."""
    parent: torch.Tensor
    """[n_features] the parent feature of each feature, -1 for none."""

    @classmethod
    def generate(cls, cfg: SyntheticConfig) -> "SyntheticFeatures":
        cfg.validate()
        g = _generator("features", cfg.seed)
        n, d = cfg.n_features, cfg.d_model
        if cfg.orthogonal:
            directions = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=torch.float64))[0].T.float()
        else:
            directions = F.normalize(torch.randn(n, d, generator=g), dim=-1)
        if cfg.firing_distribution == "zipf":
            shape = (torch.arange(n, dtype=torch.float64) + 1).pow(-cfg.zipf_exponent)
            probabilities = (shape * (cfg.firing_probability * n / shape.sum())).clamp(max=1.0).float()
        else:
            probabilities = torch.full((n,), cfg.firing_probability)
        factor = F.normalize(torch.randn(n, cfg.correlation_rank, generator=g), dim=-1)
        parent = torch.full((n,), -1, dtype=torch.long)
        for p in range(cfg.n_parents):
            first = cfg.n_parents + p * cfg.children_per_parent
            parent[first:first + cfg.children_per_parent] = p
        return cls(cfg, directions, probabilities, factor, parent)

    @property
    def n_features(self) -> int:
        return self.cfg.n_features

    @property
    def d_model(self) -> int:
        return self.cfg.d_model

    def sample(self, n_tokens: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(activations [n_tokens, d_model], feature activations [n_tokens, n_features])."""
        cfg = self.cfg
        n = self.n_features
        if cfg.correlation > 0:
            shared = torch.randn(n_tokens, cfg.correlation_rank, generator=generator) @ self.correlation_factor.T
            latent = math.sqrt(1 - cfg.correlation) * torch.randn(n_tokens, n, generator=generator) \
                + math.sqrt(cfg.correlation) * shared
            thresholds = math.sqrt(2) * torch.erfinv(1 - 2 * self.probabilities.clamp(1e-12, 1 - 1e-7))
            fires = latent > thresholds
        else:
            fires = torch.rand(n_tokens, n, generator=generator) < self.probabilities
        if cfg.n_parents:
            has_parent = self.parent >= 0
            fires[:, has_parent] &= fires[:, self.parent[has_parent]]
            if cfg.mutually_exclusive_children and cfg.children_per_parent > 1:
                first = cfg.n_parents
                children = fires[:, first:first + cfg.n_parents * cfg.children_per_parent]
                children = children.view(n_tokens, cfg.n_parents, cfg.children_per_parent)
                keys = torch.rand(children.shape, generator=generator).masked_fill(~children, -1.0)
                keep = F.one_hot(keys.argmax(-1), cfg.children_per_parent).bool() & children
                fires[:, first:first + cfg.n_parents * cfg.children_per_parent] = keep.view(n_tokens, -1)
        feature_acts = torch.zeros(n_tokens, n)
        fired = fires.nonzero(as_tuple=True)  # magnitudes are drawn for the entries that fire only
        feature_acts[fired] = (cfg.magnitude_mean + cfg.magnitude_std * torch.randn(len(fired[0]),
                                                                                    generator=generator)).abs()
        x = feature_acts @ self.directions
        if cfg.noise_std:
            x = x + cfg.noise_std * torch.randn(x.shape, generator=generator)
        return x, feature_acts


class SyntheticActivations:
    """A `core.activations.ActivationStream` of synthetic activations: {hook_name: [batch_tokens, d_model]}."""

    def __init__(self, features: SyntheticFeatures, *, batch_tokens: int = 4096, hook_name: str = SYNTHETIC_HOOK,
                 stream: str = "train", position: Optional[dict] = None):
        if batch_tokens < 1:
            raise ConfigError(f"synthetic batch_tokens is {batch_tokens}; it must be positive.")
        self.features = features
        self.batch_tokens = batch_tokens
        self.hooks = (hook_name,)
        self.stream = stream
        self.batch = int((position or {}).get("batch", 0))

    def batch_with_truth(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of this stream: (activations [batch_tokens, d], feature activations [batch_tokens, n])."""
        return self.features.sample(self.batch_tokens, _generator("batch", self.features.cfg.seed, self.stream, index))

    def __iter__(self) -> "SyntheticActivations":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        x, _ = self.batch_with_truth(self.batch)
        self.batch += 1
        return {self.hooks[0]: x}

    def skip(self) -> None:
        self.batch += 1

    def position(self) -> dict:
        return {"batch": self.batch}


@dataclass
class RecoveryResult:
    """How well a dictionary recovered the true features (module docstring)."""

    mean_max_cosine: float
    fraction_recovered: float
    mcc: float
    matched_precision: float
    matched_recall: float
    matched_f1: float
    true_l0: float
    """Mean number of true features firing per evaluation token."""
    shrinkage: float
    """Mean |x_hat| / |x| over evaluation tokens (those with |x| > 1e-6, as SAELens's `ShrinkageCalculator`)."""
    evaluation: EvalResult
    """Reconstruction and sparsity on the evaluation tokens (language-model fields NaN)."""
    max_cosine: list[float]
    """Per true feature: its best cosine with any latent."""
    matched_latent: list[int]
    """Per true feature: its latent in the one-to-one matching (-1: unmatched)."""
    feature_precision: list[float]
    feature_recall: list[float]
    threshold: float = RECOVERY_THRESHOLD

    def metrics(self) -> dict[str, dict]:
        e = self.evaluation
        return {"recovery": {"mean_max_cosine": self.mean_max_cosine, "fraction_recovered": self.fraction_recovered,
                             "mcc": self.mcc},
                "matched_firing": {"precision": self.matched_precision, "recall": self.matched_recall,
                                   "f1": self.matched_f1},
                "reconstruction": {"explained_variance": e.explained_variance, "mse": e.mse,
                                   "shrinkage": self.shrinkage},
                "sparsity": {"l0": e.l0, "true_l0": self.true_l0, "unfired_latents": e.unfired_features}}

    def details(self) -> list[dict]:
        return [{"feature": i, "max_cosine": c, "matched_latent": m, "precision": p, "recall": r}
                for i, (c, m, p, r) in enumerate(zip(self.max_cosine, self.matched_latent, self.feature_precision,
                                                     self.feature_recall))]


def decoder_cosines(sae, features: SyntheticFeatures) -> torch.Tensor:
    """[n_features, d_sae] cosine of each true direction with each decoder row."""
    return F.normalize(features.directions.float(), dim=-1) @ F.normalize(sae.W_dec.detach().float().cpu(), dim=-1).T


def one_to_one_matching(cosines: torch.Tensor) -> torch.Tensor:
    """[n_features] the latent matched to each feature by the matching of largest total cosine (-1 where
    there are fewer latents than features)."""
    rows, cols = linear_sum_assignment(cosines.double().numpy(), maximize=True)
    matched = torch.full((cosines.shape[0],), -1, dtype=torch.long)
    matched[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    return matched


@torch.no_grad()
def recovery(sae, features: SyntheticFeatures, *, n_tokens: int = 16_384, batch_tokens: int = 4096,
             threshold: float = RECOVERY_THRESHOLD, dense_threshold: float = 0.1) -> RecoveryResult:
    """Score `sae` against the ground truth on `n_tokens` tokens of the evaluation stream."""
    was_training = sae.training
    sae.eval()
    cosines = decoder_cosines(sae, features)
    best = cosines.max(-1).values if cosines.shape[1] else torch.zeros(len(cosines))
    matched = one_to_one_matching(cosines)
    has_match = matched >= 0
    sums = EvalSums(sae.d_sae, sae.d_in)
    true_positive = torch.zeros(features.n_features)
    latent_fired = torch.zeros(features.n_features)
    feature_fired = torch.zeros(features.n_features)
    true_l0 = shrinkage = 0.0
    n_shrinkage = 0
    stream = SyntheticActivations(features, batch_tokens=batch_tokens, stream="eval")
    for index in range(max(1, -(-n_tokens // batch_tokens))):
        x, truth = stream.batch_with_truth(index)
        x = x.to(sae.device, sae.dtype)
        latents = sae.encode(x)
        x_hat = sae.decode(latents)
        sums.add_reconstruction(x, x_hat, latents)
        true_l0 += float((truth > 0).sum())
        norms = x.norm(dim=-1)
        valid = norms > 1e-6  # a token where no feature fired (and no noise) has no shrinkage
        shrinkage += float((x_hat.norm(dim=-1)[valid] / norms[valid]).sum())
        n_shrinkage += int(valid.sum())
        fires = truth > 0  # [n, n_features]
        detects = torch.zeros_like(fires)
        detects[:, has_match] = (latents[:, matched[has_match]] != 0).cpu()
        true_positive += (fires & detects).sum(0)
        latent_fired += detects.sum(0)
        feature_fired += fires.sum(0)
    sae.train(was_training)
    precision = torch.where(latent_fired > 0, true_positive / latent_fired.clamp_min(1), 0.0)
    recall = torch.where(feature_fired > 0, true_positive / feature_fired.clamp_min(1), 0.0)
    counted = feature_fired > 0
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    mcc = torch.where(has_match, cosines.gather(1, matched.clamp_min(0)[:, None]).squeeze(1), 0.0)
    n = sums.n_tokens
    return RecoveryResult(
        mean_max_cosine=float(best.mean()), fraction_recovered=float((best > threshold).float().mean()),
        mcc=float(mcc.mean()), matched_precision=float(precision[counted].mean()),
        matched_recall=float(recall[counted].mean()), matched_f1=float(f1[counted].mean()), true_l0=true_l0 / n,
        shrinkage=shrinkage / max(n_shrinkage, 1), evaluation=sums.result(dense_threshold=dense_threshold),
        max_cosine=best.tolist(),
        matched_latent=matched.tolist(), feature_precision=precision.tolist(), feature_recall=recall.tolist(),
        threshold=threshold)


class SyntheticEvaluator:
    """The trainer's evaluation on synthetic data: the `EvalResult` fields that need no language model
    (reconstruction, L0, feature density) on `n_tokens` tokens of the evaluation stream; the
    cross-entropy and KL fields are NaN."""

    def __init__(self, features: SyntheticFeatures, *, n_tokens: int = 16_384, batch_tokens: int = 4096,
                 dense_threshold: float = 0.1):
        self.features, self.n_tokens, self.batch_tokens = features, n_tokens, batch_tokens
        self.dense_threshold = dense_threshold

    @torch.no_grad()
    def __call__(self, saes: Sequence, *, final: bool = True) -> list[EvalResult]:
        """`core.evals.Evaluator`: the same evaluation tokens for periodic and final evaluations."""
        stream = SyntheticActivations(self.features, batch_tokens=self.batch_tokens, stream="eval")
        sums = [EvalSums(sae.d_sae, sae.d_in) for sae in saes]
        modes = [sae.training for sae in saes]
        for sae in saes:
            sae.eval()
        for index in range(max(1, -(-self.n_tokens // self.batch_tokens))):
            x, _ = stream.batch_with_truth(index)
            for sae, acc in zip(saes, sums):
                xs = x.to(sae.device, sae.dtype)
                latents = sae.encode(xs)
                acc.add_reconstruction(xs, sae.decode(latents), latents)
        for sae, mode in zip(saes, modes):
            sae.train(mode)
        return [acc.result(dense_threshold=self.dense_threshold) for acc in sums]


SYNTHETIC_MODEL = "synthetic"
"""The `model.name` of a synthetic run (there is no language model)."""


def synthetic_trainer(features: SyntheticFeatures, cfg: TrainingConfig, *, eval_tokens: int = 16_384) -> Trainer:
    """The trainer of every dictionary of `cfg` (each an SAE on hook `SYNTHETIC_HOOK`) on the
    synthetic stream of `features`: the run folder `cfg.run_dir` (resumed from its newest checkpoint
    when it has one, refused when it holds finished dictionaries or another configuration's
    checkpoints), `cfg.activations`' buffer and batch size, `cfg.trainer`'s schedule, evaluations on
    `eval_tokens` tokens of the evaluation stream."""
    cfg = cfg.validate()
    specs = cfg.dictionary_configs()
    for spec in specs:
        if spec.is_replacement or spec.hook_name != SYNTHETIC_HOOK or spec.hook_out is not None:
            raise ConfigError(f"dictionary {spec.name!r} reads {spec.hook_name!r}; on synthetic activations every "
                              f"dictionary is an SAE on hook {SYNTHETIC_HOOK!r}.")
    act = cfg.activations
    total_steps = cfg.trainer.total_training_tokens // act.train_batch_size
    if total_steps < 1:
        raise ConfigError("trainer.total_training_tokens is smaller than one activations.train_batch_size.")
    run = RunFolder(cfg.run_dir)
    checkpoint = checkpoint_to_resume(run, cfg)
    position = load_trainer_state(run, checkpoint)["data"] if checkpoint else None
    widths = {SYNTHETIC_HOOK: features.d_model}
    stream = SyntheticActivations(features, batch_tokens=min(act.buffer_tokens // 2, 4096), position=position)
    buffer = ActivationBuffer(stream, widths=widths, buffer_tokens=act.buffer_tokens, batch_size=act.train_batch_size,
                              seed=cfg.seed)
    seed_everything(cfg.seed)

    def make_dictionary(spec):
        return DictionaryTrainer(spec, widths=widths, model_name=cfg.model.name, total_steps=total_steps,
                                 total_training_tokens=cfg.trainer.total_training_tokens, trainer_cfg=cfg.trainer,
                                 device="cpu", dtype=torch.float32, seed=cfg.seed)

    trainer = Trainer(cfg, dictionaries=[make_dictionary(spec) for spec in specs], batches=buffer,
                      evaluator=SyntheticEvaluator(features, n_tokens=eval_tokens,
                                                   dense_threshold=cfg.trainer.dense_feature_threshold),
                      run=run, specs=specs, make_dictionary=make_dictionary, data_position=stream.position,
                      saved_extra={"synthetic": asdict(features.cfg)})
    if checkpoint:
        trainer.restore(checkpoint)
    else:
        trainer.initialize()
    return trainer


@dataclass
class SyntheticRunResult:
    """One dictionary trained and scored by `synthetic_run`."""

    folder: Path
    """Where it was saved (`<results>/<exp_name>/dictionaries/<name>/`)."""
    recovery: RecoveryResult
    result_file: Path
    """Its `synthetic_recovery` result (SAEBench's shape)."""


def synthetic_run(features_cfg: SyntheticConfig, cfg: TrainingConfig, *, eval_tokens: int = 16_384,
                  threshold: float = RECOVERY_THRESHOLD) -> dict[str, SyntheticRunResult]:
    """Train every dictionary of `cfg` on synthetic activations of `features_cfg` (`synthetic_trainer`),
    score each against the truth (`recovery`), save it with its metrics in `<results>/<exp_name>/
    dictionaries/<name>/` and write its `synthetic_recovery` result there. Refuses a run folder that
    already holds dictionaries."""
    features = SyntheticFeatures.generate(features_cfg)
    cfg = replace(cfg, model=replace(cfg.model, name=SYNTHETIC_MODEL))
    started = time.perf_counter()
    trained = synthetic_trainer(features, cfg, eval_tokens=eval_tokens).run()
    trained_s = time.perf_counter() - started
    eval_id = new_eval_id()
    out = {}
    for name, folder in trained.dictionary_paths.items():
        sae = load_dictionary(folder)
        scored = recovery(sae, features, n_tokens=eval_tokens, threshold=threshold,
                          dense_threshold=cfg.trainer.dense_feature_threshold)
        output = eval_output(EVAL_TYPE_SYNTHETIC, eval_config={**asdict(features_cfg), "eval_tokens": eval_tokens,
                                                               "recovery_threshold": threshold},
                             metrics=scored.metrics(), details=scored.details(),
                             unstructured={"training_seconds": trained_s}, dictionary_config=dictionary_config(folder),
                             dictionary=folder, eval_id=eval_id)
        out[name] = SyntheticRunResult(folder, scored, write_eval_output(folder, output))
    return out


__all__ = ["RECOVERY_THRESHOLD", "RecoveryResult", "SYNTHETIC_HOOK", "SyntheticActivations", "SyntheticConfig",
           "SyntheticEvaluator", "SyntheticFeatures", "SyntheticRunResult", "decoder_cosines", "one_to_one_matching",
           "recovery", "synthetic_run", "synthetic_trainer"]
