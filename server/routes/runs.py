"""Training runs: the list, and one run's curves (from its metrics.jsonl as it is now, also while the
run goes on) with each dictionary's final metrics."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter

from core.runs import RunFolder
from core.store import json_ready

from .. import schemas
from ..results import ID_SEPARATOR, DictionaryError, NotFound
from ..runs import FINAL_KEYS, DictionaryCurves
from ..state import Server
from .common import ERRORS

router = APIRouter(tags=["runs"])


@router.get("/api/runs", response_model=schemas.RunList)
def list_runs(state: Server):
    """Every training run of the results folder, sorted by name."""
    results = state.results
    return {"runs": [{"name": run, "dictionaries": results.run_dictionaries(run),
                      "has_metrics": RunFolder(results.run_folder(run)).metrics.path.is_file()}
                     for run in results.run_names()]}


@router.get("/api/runs/{run}", response_model=schemas.RunDetail, responses=ERRORS)
def get_run(run: str, state: Server):
    """A run's training curves (from metrics.jsonl as it is now, also while the run goes on) and
    each dictionary's final metrics."""
    results = state.results
    folder = results.run_folder(run)
    log = state.run_logs.get(folder)
    saved = {dictionary_id.partition(ID_SEPARATOR)[2]: dictionary_id for dictionary_id in results.run_dictionaries(run)}
    series = []
    for dictionary_name in sorted(set(log.curves) | set(saved)):
        curves = log.curves.get(dictionary_name) or DictionaryCurves()
        final = curves.final
        if dictionary_name in saved:
            try:
                metrics = results.dictionary(saved[dictionary_name]).metrics
            except (NotFound, DictionaryError):
                metrics = {}
            if metrics:
                final = {k: metrics.get(k, metrics.get("dead_features") if k == "unfired_features" else None)
                         for k in FINAL_KEYS}
        series.append({"name": dictionary_name, "id": saved.get(dictionary_name), "train": curves.train.to_dict(),
                       "eval": curves.eval.to_dict(), "final": final})
    return {"name": run, "dictionaries": sorted(saved.values()), "has_metrics": log.identity is not None,
            "config": _read_json(RunFolder(folder).config_path), "series": series, "lines": log.lines,
            "skipped_lines": log.skipped,
            "finished": bool(log.curves) and all(c.final is not None for c in log.curves.values())}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return json_ready(data) if isinstance(data, dict) else None
