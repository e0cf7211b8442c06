"""Comparison of dictionaries of one model and hook (server/compare.py): every metric of their final
evaluations, SAEBench-shaped evaluations and explanations, and L0 against each headline metric with the
Pareto frontier; for a run, or for dictionaries chosen anywhere in the results folder."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, HTTPException, Query

from .. import schemas
from ..compare import compare
from ..directions import decoder_space
from ..results import DictionaryError, DictionaryInfo, NotFound
from ..state import Server
from .common import ERRORS

router = APIRouter(tags=["compare"])
MAX_COMPARED = 64


def _space(info: DictionaryInfo) -> dict:
    c = info.config
    if info.layers:
        return {"model_name": c["model_name"], "hook_name": c["hook_names"][0],
                "hook_out": (c.get("hooks_out") or [None])[0], "layers": info.layers}
    return {"model_name": c["model_name"], "hook_name": c["hook_name"], "hook_out": c.get("hook_out"), "layers": None}


@router.get("/api/compare", response_model=schemas.Comparison, responses=ERRORS)
def get_comparison(
    state: Server,
    run: Optional[str] = Query(None, description="compare this run's dictionaries (of one model and hook: `space`)"),
    space: int = Query(0, ge=0, le=10_000, description="which of the run's model-and-hook groups (`spaces`) to "
                                                       "compare; default: the first, the one of most dictionaries"),
    dictionary: Optional[list[str]] = Query(None, description="compare these dictionary ids instead (repeat the "
                                                              "parameter); they must share model and hook"),
):
    """The metrics of dictionaries of one model and hook side by side, and L0 against explained variance,
    CE loss recovered, absorption, sparse-probing accuracy and interpretability with the Pareto frontier;
    results computed with other eval configs than most are listed but not plotted."""
    results = state.results
    if (run is None) == (dictionary is None):
        raise HTTPException(422, "Malformed request: give either the query parameter 'run' or one or more "
                                 "'dictionary' ids.")
    if dictionary is not None:
        if len(dictionary) > MAX_COMPARED:
            raise HTTPException(422, f"Malformed request: {len(dictionary)} dictionaries; compare at most "
                                     f"{MAX_COMPARED} at once.")
        infos = [results.dictionary(name) for name in dict.fromkeys(dictionary)]
        spaces_of_run: list[list[DictionaryInfo]] = [infos]
        different = [i.name for i in infos if decoder_space(i) != decoder_space(infos[0])]
        if different:
            raise HTTPException(422, f"Dictionaries {', '.join(map(repr, different))} are not of the model and hook of "
                                     f"{infos[0].name!r} ({_space(infos[0])['hook_name']} of "
                                     f"{infos[0].config['model_name']!r}); compare dictionaries of one model and hook.")
    else:
        results.run_folder(run)  # 404 for an unknown run
        groups: dict[tuple, list[DictionaryInfo]] = {}
        for name in results.run_dictionaries(run):
            try:
                info = results.dictionary(name)
            except (NotFound, DictionaryError):
                continue
            groups.setdefault(decoder_space(info), []).append(info)
        if not groups:
            raise HTTPException(404, f"Run {run!r} has no saved dictionary to compare yet.")
        spaces_of_run = sorted(groups.values(), key=len, reverse=True)  # stable: ties keep the run's order
        if space >= len(spaces_of_run):
            raise HTTPException(422, f"Malformed request: query parameter 'space' is {space}; run {run!r} has "
                                     f"{len(spaces_of_run)} model-and-hook group(s), 0..{len(spaces_of_run) - 1}.")
        infos = spaces_of_run[space]
    chosen = {i.name for i in infos}
    candidates = []
    for name in results.dictionary_names():
        if name in chosen:
            continue
        try:
            other = results.dictionary(name)
        except (NotFound, DictionaryError):
            continue
        if decoder_space(other) == decoder_space(infos[0]):
            candidates.append(name)
    body = compare(results, infos, state.evals)
    return {"run": run, "space": _space(infos[0]),
            "spaces": [{**_space(group[0]), "dictionaries": [i.name for i in group]} for group in spaces_of_run],
            "candidates": candidates, **body}
