"""Explanations in the viewer (`core.autointerp`): what the feature table, the feature page, search and
the compare page show of an analysis' `explanations.sqlite`, and "explain this feature" as a job.

What is shown by default is the analysis' default explanation set (the newest with a parsed
explanation) and its default score set (the newest that is not a control); a feature's page lists
its explanations of every set, that one first. Scores are balanced accuracies (0.5 is chance) of the
detection and fuzzing scorers. Human labels (`core.annotations`) are never mixed with explanations:
the API returns both, and the viewer shows the label first.

The file may be written while the server reads it (a run of `run_explain_example.py`, or an explain
job): it is in WAL mode and each step of a run is one transaction, so every read sees whole steps and
never waits for the writer (`core.autointerp.explanations`). Readers are opened per file by
`ResultsFolder.explanations`; a missing file reads as empty.

Explaining a feature runs a language model: the local offline SmolLM2-135M-Instruct by default, or
the OpenAI-compatible server of GPT2DICT_EXPLAIN_* (`Settings.explain_backend_config`). The backend is
opened on first use and kept; jobs use it one at a time. A job explains the feature into the set of
the server's settings (a feature already explained there is not asked again) and, unless
GPT2DICT_EXPLAIN_SCORE is off, scores the explanation: fuzzing, and detection, whose negatives are
checked by running the dictionary's language model (the one custom text uses, under its lock).
Detection needs a single hook, so a replacement model's features are scored by fuzzing alone.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Optional

from core.autointerp import Backend, BackendConfig, Explanations, ScoreConfig, explain_features, open_backend, \
    score_explanations
from core.store import FeatureStats, FeatureStore

from .inference import ModelCache
from .jobs import Job
from .results import DictionaryInfo

SCORERS = ("detection", "fuzzing")
TABLE_METRIC = "balanced_accuracy"
"""The score the feature table, search and the compare page show for each scorer."""


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def explanations_summary(reader: Explanations) -> dict[str, Any] | None:
    """The analysis' default explanation set and score set: who wrote and scored them, how many features
    each covers, and each scorer's mean balanced accuracy over its scored features; None when the
    analysis has no parsed explanation."""
    sets = reader.sets()
    default = reader.default_set()
    if default is None:
        return None
    explanation_set = next(s for s in sets if s.id == default)
    score_set_id = reader.default_score_set(default)
    score_set = next((s for s in reader.score_sets(default) if s.id == score_set_id), None)
    values = reader.score_values(score_set_id, metric=TABLE_METRIC) if score_set_id is not None else {}
    return {"set_id": default, "explainer_model": explanation_set.explainer_model,
            "n_explained": explanation_set.n_explained, "n_unparsable": explanation_set.n_unparsable,
            "n_sets": len(sets), "score_set_id": score_set_id,
            "scorer_model": score_set.scorer_model if score_set else None,
            "n_scored": {s: sum(s in v for v in values.values()) for s in SCORERS},
            "mean_balanced_accuracy": {s: _mean([v[s] for v in values.values() if s in v]) for s in SCORERS},
            "settings": {"explanations": explanation_set.settings,
                         "scores": {k: v for k, v in (score_set.settings if score_set else {}).items()
                                    if k != "explanation_set"}}}


def table_scores(reader: Explanations) -> dict[int, dict[str, float]]:
    """{feature: {scorer: balanced accuracy}} of the default score set."""
    score_set = reader.default_score_set()
    return reader.score_values(score_set, metric=TABLE_METRIC) if score_set is not None else {}


def page_explanations(reader: Explanations, features: list[int]) -> dict[int, str]:
    """The default set's parsed explanations of `features`."""
    return {e.feature_index: e.explanation for e in reader.explanations(features=features, status="ok",
                                                                         limit=len(features) or 1)}


def scored_page(store: FeatureStore, scores: dict[int, dict[str, float]], *, sort: str, descending: bool,
                min_scores: dict[str, float], indices: Optional[set[int]], offset: int, limit: int,
                **filters: Optional[float]) -> tuple[int, list[FeatureStats]]:
    """A page of features like `store.list_features`, where `sort` may also be a scorer (only the
    features with that score are listed, best first when descending, ties by index) and `min_scores`
    keeps the features with at least that score of each scorer."""
    if sort in SCORERS or min_scores:
        kept = {f for f, v in scores.items() if all(s in v and v[s] >= m for s, m in min_scores.items())
                and (sort not in SCORERS or sort in v)}
        indices = kept if indices is None else kept & indices
    if sort not in SCORERS:
        return store.list_features(sort=sort, descending=descending, indices=indices, offset=offset, limit=limit,
                                   **filters)
    total, rows = store.list_features(sort="index", descending=False, indices=indices, offset=0,
                                      limit=len(indices), **filters)
    sign = -1 if descending else 1
    rows.sort(key=lambda r: (sign * scores[r.index][sort], r.index))
    return total, rows[offset:offset + limit]


def feature_explanations(reader: Explanations, index: int) -> list[dict[str, Any]]:
    """Feature `index`'s explanation in every set that has one, the default set's first, then newest
    first; each with its scores from that set's default score set."""
    default = reader.default_set()
    out = []
    for s in sorted(reader.sets(), key=lambda s: (s.id != default, -s.id)):
        explanation = reader.explanation(index, s.id)
        if explanation is None:
            continue
        score_set_id = reader.default_score_set(s.id)
        score_set = next((ss for ss in reader.score_sets(s.id) if ss.id == score_set_id), None)
        scores = reader.scores(score_set_id, features=[index]) if score_set_id is not None else []
        out.append({
            "set_id": s.id, "default": s.id == default, "explainer_model": s.explainer_model,
            "prompt_version": s.prompt_version, "set_created_at": s.created_at, "status": explanation.status,
            "explanation": explanation.explanation, "raw_response": explanation.raw_response,
            "created_at": explanation.created_at, "n_shown": len(explanation.shown),
            "n_held_out": len(explanation.held_out),
            "scorer_model": score_set.scorer_model if score_set else None,
            "scores": [{k: getattr(score, k) for k in ("scorer", "status", "n_items", "n_failed", "accuracy",
                                                        "balanced_accuracy", "precision", "recall", "f1", "auroc")}
                       for score in scores]})
    return out


class Explainer:
    """The language model that explains and scores features for the viewer (module docstring)."""

    def __init__(self, config: BackendConfig, *, score: bool) -> None:
        self.config, self.score = config, score
        self.lock = threading.Lock()
        """Held by the job using the backend: one job at a time explains."""
        self._backend: Optional[Backend] = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.config.kind, "model": self.config.model_name, "scores": self.score}

    def close(self) -> None:
        with self.lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def explain(self, job: Job, info: DictionaryInfo, analysis: Path, feature: int, models: ModelCache) -> dict:
        """An explain job's work: explain `feature` of the analysis folder `analysis` (and score it)."""
        job.begin(0, "waiting for the explainer")
        with self.lock:
            if self._backend is None:
                job.begin(0, f"loading the explainer ({self.config.model_name})")
                self._backend = open_backend(self.config)
            job.begin(1, f"explaining with {self.config.model_name}")
            explained = explain_features(analysis, [feature], backend=self._backend, progress=False)
            with Explanations(analysis) as reader:
                done = reader.explanation(feature, explained.set_id)
            result = {"explanation_set": explained.set_id, "explained": done is not None and done.status == "ok",
                      "already_done": explained.n_already_done > 0, "scorers": []}
            if not (self.score and result["explained"]):
                return result
            scorers = ("fuzzing",) if info.layers else SCORERS  # detection checks negatives at one hook
            pair = None
            if "detection" in scorers:
                job.begin(2, "loading the dictionary's model")
                pair = models.get(info)
            job.begin(3, f"scoring ({', '.join(scorers)})")
            with pair.lock if pair is not None else contextlib.nullcontext():
                score_explanations(analysis, [feature], explanation_set=explained.set_id,
                                   config=ScoreConfig(scorers=scorers), backend=self._backend,
                                   model=pair.model if pair is not None else None, progress=False)
            return {**result, "scorers": list(scorers)}


EXPLAIN_STEPS = 4
"""An explain job's steps: loading the explainer, explaining, loading the dictionary's model, scoring."""
