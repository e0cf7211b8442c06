"""How good are the explanations? Detection and fuzzing scores of the real explanations against a
control: the same explanations shuffled across features (each feature scored with another one's).

The control must land near chance (balanced accuracy 0.5, AUROC 0.5); the margin of the real
explanations over it is the figure, with a 95% bootstrap interval over features (paired: the same
features, contexts and scorer in both). It explains `--features` alive features of an analysis
(seeded), scores them, scores the shuffled control, and prints the table.

    python benchmarks/autointerp_quality.py                     # the demo analysis, 100 features, offline SmolLM2
    python benchmarks/autointerp_quality.py --features 300 --backend.kind openai \\
        --backend.base-url http://127.0.0.1:8000/v1 --backend.model meta-llama/Llama-3.1-8B-Instruct
    python benchmarks/autointerp_quality.py --smoke   # seconds: autointerp.py's tiny analysis, 2 features

Results stay in the analysis' explanations.sqlite (a rerun resumes and reprints).
"""

from __future__ import annotations

import random
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import BackendConfig, ExplainConfig, Explanations, ScoreConfig, explain_features, score_explanations  # noqa: E402
from core.autointerp import open_backend  # noqa: E402
from core.cli import run_entry_point  # noqa: E402
from benchmarks.autointerp import smoke_analysis  # noqa: E402

DEMO_ANALYSIS = "results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post/analysis/default"


@dataclass
class Args:
    analysis: str = DEMO_ANALYSIS
    features: int = 100
    """Alive features explained and scored (chosen at random, seeded)."""
    backend: BackendConfig = field(default_factory=BackendConfig)
    """The explainer and scorer (default: the offline SmolLM2-135M-Instruct, in process)."""
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    bootstrap: int = 2000
    seed: int = 0
    smoke: bool = False
    """Seconds: the tiny analysis of benchmarks/autointerp.py built here, 2 features, short answers (the
    scores mean nothing)."""


def bootstrap_interval(differences: list[float], n: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean of `differences` over `n` resamples."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(differences, k=len(differences))) / len(differences) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def main(args: Args) -> None:
    if not args.smoke:
        measure(args)
        return
    with tempfile.TemporaryDirectory(prefix="autointerp-quality-") as scratch:
        measure(replace(args, analysis=str(smoke_analysis(Path(scratch))), features=2, bootstrap=100,
                        explain=replace(args.explain, max_new_tokens=4),
                        score=replace(args.score, n_activating=1, n_random_negatives=1, n_hard_negatives=0)))


def measure(args: Args) -> None:
    with open_backend(args.backend) as llm:
        explained = explain_features(args.analysis, args.features, config=args.explain, backend=llm)
        print(f"explained: {explained.n_explained} parsed, {explained.n_unparsable} unparsable, "
              f"{explained.n_already_done} from an earlier run; {explained.prompt_tokens + explained.completion_tokens:,} tokens")
        real = score_explanations(args.analysis, args.features, explanation_set=explained.set_id, config=args.score,
                                  backend=llm)
        control = score_explanations(args.analysis, args.features, explanation_set=explained.set_id,
                                     config=replace(args.score, control="shuffled"), backend=llm)
    with Explanations(args.analysis) as reader:
        rows = {name: {(s.feature_index, s.scorer): s for s in reader.scores(result.score_set_id) if s.status == "ok"}
                for name, result in (("real", real), ("control", control))}
    print(f"\n{args.backend.model_name} explains and scores {explained.n_features} features of {args.analysis}")
    print(f"{'scorer':<10} {'metric':<18} {'real':>7} {'control':>8} {'margin':>7}   95% interval   features")
    for scorer in args.score.scorers:
        for metric in ("balanced_accuracy", "auroc"):
            pairs = [(getattr(rows["real"][k], metric), getattr(rows["control"][k], metric))
                     for k in rows["real"] if k[1] == scorer and k in rows["control"]]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if not pairs:
                print(f"{scorer:<10} {metric:<18} {'n/a':>7}")
                continue
            mean_real = sum(a for a, _ in pairs) / len(pairs)
            mean_control = sum(b for _, b in pairs) / len(pairs)
            low, high = bootstrap_interval([a - b for a, b in pairs], args.bootstrap, args.seed)
            print(f"{scorer:<10} {metric:<18} {mean_real:7.3f} {mean_control:8.3f} {mean_real - mean_control:+7.3f}   "
                  f"[{low:+.3f}, {high:+.3f}]   {len(pairs)}")
    for name, result in (("real", real), ("control", control)):
        for summary in result.summary:
            pooled = summary.pooled
            print(f"pooled {name:<8} {summary.scorer:<10} balanced accuracy {pooled.balanced_accuracy:.3f}, "
                  f"AUROC {pooled.auroc if pooled.auroc is None else round(pooled.auroc, 3)}, "
                  f"{pooled.n_items} questions, {pooled.n_failed} unanswered, yes-rate "
                  f"{_yes_rate(rows[name], summary.scorer):.2f}")


def _yes_rate(rows: dict, scorer: str) -> float:
    answers = [i.prediction for (f, s), row in rows.items() if s == scorer for i in row.items if i.prediction is not None]
    return sum(answers) / max(1, len(answers))


if __name__ == "__main__":
    run_entry_point(main, tyro.cli(Args, description=__doc__.split("\n\n")[0]))
