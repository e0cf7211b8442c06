"""The compare page: dictionaries of one model and hook side by side, every metric they have, and
sparsity against each headline metric with the Pareto frontier.

Sources of a dictionary's metrics:

- `final`: its own final evaluation (config.json `metrics`, written by the trainer);
- each evaluation in SAEBench's shape (`core.evaluations.read_eval_outputs`: `<dictionary>/evals/`),
  flattened to `<category>.<metric>`;
- `explanations`: the mean balanced accuracy of the detection and fuzzing scores of its first analysis
  that has scored explanations (server/explanations.py), and of the two together (`interpretability`).

Results are compared only when they were computed the same way: per evaluation, the `eval_config`s
of the dictionaries are grouped (the same JSON, key for key), the group of most dictionaries is the
reference (ties: the group of the earliest dictionary in the comparison), and the others' results are
listed but left out of the plots, each with the fields where its config differs. Explanations are
grouped the same way by their explainer's and scorers' settings.

Plots put L0 (the dictionary's final `l0`, else the core eval's) on x. A point is on the Pareto
frontier when no other point has an L0 as low or lower and a metric as good or better, one of them
strictly (lower absorption is better; every other plotted metric is better higher).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from typing import Any, Optional

from core.errors import EvaluationError
from core.evaluations.saebench import EVAL_TYPE_ABSORPTION, EVAL_TYPE_CORE, EVAL_TYPE_SPARSE_PROBING, \
    read_eval_outputs
from core.layout import EVAL_RESULTS_SUFFIX, evals_folder

from .explanations import SCORERS, explanations_summary
from .results import DictionaryInfo, ResultsFolder, file_signature

FINAL = "final"
EXPLANATIONS = "explanations"


@dataclass(frozen=True)
class PlotSpec:
    key: str
    title: str
    y_label: str
    source: str
    """FINAL, an eval type id, or EXPLANATIONS."""
    metric: str
    """The metric's key within its source (`<category>.<metric>` for an eval)."""
    higher_is_better: bool = True


PLOTS = (
    PlotSpec("explained_variance", "Explained variance against L0", "explained variance", FINAL, "explained_variance"),
    PlotSpec("ce_loss_recovered", "CE loss recovered against L0", "CE loss recovered", FINAL, "ce_loss_recovered"),
    PlotSpec("absorption", "Feature absorption against L0 (lower is better)", "mean absorption fraction",
             EVAL_TYPE_ABSORPTION, "mean.mean_absorption_fraction_score", higher_is_better=False),
    PlotSpec("sparse_probing", "Sparse probing accuracy (k = 1) against L0", "top-1 test accuracy",
             EVAL_TYPE_SPARSE_PROBING, "sae.sae_top_1_test_accuracy"),
    PlotSpec("interpretability", "Interpretability against L0", "mean balanced accuracy (detection, fuzzing)",
             EXPLANATIONS, "interpretability"),
)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def pareto_front(points: list[tuple[float, float]], *, higher_is_better: bool) -> list[bool]:
    """For each (x, y) point: whether it is on the frontier of low x and good y."""
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for x, y in points:
        dominated = any(qx <= x and sign * qy >= sign * y and (qx < x or sign * qy > sign * y) for qx, qy in points)
        out.append(not dominated)
    return out


def _canonical(config: Any) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def config_differences(reference: dict, other: dict) -> list[dict[str, Any]]:
    """The top-level fields whose values differ between two configs, with both values."""
    fields = sorted(set(reference) | set(other))
    return [{"field": f, "reference": reference.get(f), "value": other.get(f)} for f in fields
            if _canonical(reference.get(f)) != _canonical(other.get(f))]


class EvalCache:
    """Each dictionary's evaluations as the compare page uses them ({eval type: (eval_config, flat
    metrics)}), read once per set of result files (their paths and signatures) and kept; the core eval's
    per-latent details are not kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: dict[str, tuple[tuple, dict[str, tuple[dict, dict[str, Optional[float]]]] | str]] = {}

    def of(self, info: DictionaryInfo) -> dict[str, tuple[dict, dict[str, Optional[float]]]] | str:
        """The evaluations, or why they cannot be read."""
        folder = evals_folder(info.folder)
        try:
            files = tuple(sorted((str(p), file_signature(p)) for p in folder.glob(f"*/*{EVAL_RESULTS_SUFFIX}")))
        except OSError:
            files = ()
        key = str(info.folder)
        with self._lock:
            cached = self._read.get(key)
        if cached is not None and cached[0] == files:
            return cached[1]
        try:
            outputs = read_eval_outputs(info.folder) if files else {}
            value: dict[str, tuple[dict, dict[str, Optional[float]]]] | str = {
                eval_type: (out.get("eval_config") or {},
                            {f"{category}.{metric}": _number(v)
                             for category, metrics in (out.get("eval_result_metrics") or {}).items()
                             if isinstance(metrics, dict) for metric, v in metrics.items()})
                for eval_type, out in outputs.items()}
        except EvaluationError as e:
            value = str(e)
        with self._lock:
            self._read[key] = (files, value)
        return value


def _explanation_metrics(results: ResultsFolder, info: DictionaryInfo) -> tuple[dict, dict[str, Optional[float]]] | None:
    """(settings, metrics) of the first analysis with scored explanations."""
    for analysis in results.analysis_names(info.name):
        summary = explanations_summary(results.explanations(info.name, analysis))
        if summary is None or summary["score_set_id"] is None:
            continue
        means = summary["mean_balanced_accuracy"]
        scored = [means[s] for s in SCORERS if means.get(s) is not None]
        metrics = {s: means.get(s) for s in SCORERS}
        metrics["interpretability"] = sum(scored) / len(scored) if scored else None
        settings = {**summary["settings"], "explainer_model": summary["explainer_model"],
                    "scorer_model": summary["scorer_model"]}
        return settings, metrics
    return None


def compare(results: ResultsFolder, infos: list[DictionaryInfo], evals: EvalCache) -> dict[str, Any]:
    """The comparison of `infos` (dictionaries of one model and hook, in the order shown): `dictionaries`,
    `configs`, `metrics` and `plots` of the API's `Comparison`."""
    ids = [i.name for i in infos]
    errors: dict[str, list[str]] = {i.name: [] for i in infos}
    # source -> {dictionary: (config, {metric: value})}
    sources: dict[str, dict[str, tuple[dict | None, dict[str, Optional[float]]]]] = {FINAL: {}}
    for info in infos:
        sources[FINAL][info.name] = (None, {k: _number(v) for k, v in info.metrics.items()})
        read = evals.of(info)
        if isinstance(read, str):
            errors[info.name].append(read)
        else:
            for eval_type, found in read.items():
                sources.setdefault(eval_type, {})[info.name] = found
        explained = _explanation_metrics(results, info)
        if explained is not None:
            sources.setdefault(EXPLANATIONS, {})[info.name] = explained

    configs, excluded = [], {}
    for source, by_dictionary in sources.items():
        if source == FINAL:
            continue
        groups: dict[str, list[str]] = {}
        for name in ids:
            if name in by_dictionary:
                groups.setdefault(_canonical(by_dictionary[name][0]), []).append(name)
        reference = max(groups.values(), key=len)  # the first of the largest: max keeps the first on ties
        reference_config = by_dictionary[reference[0]][0]
        excluded[source] = {n for members in groups.values() if members is not reference for n in members}
        for members in groups.values():
            configs.append({"source": source, "dictionaries": members, "reference": members is reference,
                            "config": by_dictionary[members[0]][0],
                            "differences": [] if members is reference else
                            config_differences(reference_config, by_dictionary[members[0]][0])})

    metrics = []
    order = [FINAL, EVAL_TYPE_CORE] + sorted(s for s in sources if s not in (FINAL, EVAL_TYPE_CORE, EXPLANATIONS)) \
        + ([EXPLANATIONS] if EXPLANATIONS in sources else [])
    for source in (s for s in order if s in sources):
        by_dictionary = sources[source]
        keys = list(dict.fromkeys(k for name in ids if name in by_dictionary for k in by_dictionary[name][1]))
        for key in keys:
            metrics.append({"source": source, "metric": key,
                            "values": [by_dictionary[n][1].get(key) if n in by_dictionary else None for n in ids],
                            "excluded": [n in excluded.get(source, ()) for n in ids]})

    def l0(name: str) -> Optional[float]:
        final = sources[FINAL][name][1].get("l0")
        core = sources.get(EVAL_TYPE_CORE, {}).get(name)
        return final if final is not None else (core[1].get("sparsity.l0") if core else None)

    plots = []
    for spec in PLOTS:
        by_dictionary = sources.get(spec.source, {})
        points, left_out, missing = [], [], []
        for name in ids:
            value = by_dictionary[name][1].get(spec.metric) if name in by_dictionary else None
            x = l0(name)
            if value is None or x is None:
                missing.append(name)
            elif name in excluded.get(spec.source, ()):
                left_out.append(name)
            else:
                points.append({"dictionary": name, "x": x, "y": value})
        front = pareto_front([(p["x"], p["y"]) for p in points], higher_is_better=spec.higher_is_better)
        plots.append({"key": spec.key, "title": spec.title, "y_label": spec.y_label, "source": spec.source,
                      "metric": spec.metric, "higher_is_better": spec.higher_is_better,
                      "points": [{**p, "pareto": on} for p, on in zip(points, front)],
                      "excluded": left_out, "missing": missing})
    dictionaries = [{"id": i.name, "architecture": i.architecture, "kind": i.kind, "d_sae": i.d_sae, "l0": l0(i.name),
                     "errors": errors[i.name]} for i in infos]
    return {"dictionaries": dictionaries, "configs": configs, "metrics": metrics, "plots": plots}
