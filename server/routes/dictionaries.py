"""Dictionaries and features: health, the dictionary list and detail, a page of features, one feature."""

from __future__ import annotations

import logging
from typing import Literal, Optional

from fastapi import APIRouter, HTTPException, Path as PathParam, Query, Response

from core.store import FeatureRecord, FeatureStore, StoreError

from .. import schemas
from ..explanations import SCORERS, TABLE_METRIC, explanations_summary, page_explanations, scored_page, table_scores
from ..graphs import saved_graph_count
from ..replacement import feature_layer, layer_features, layer_metrics
from ..results import ID_SEPARATOR, DictionaryError, DictionaryInfo, NotFound, ResultsFolder
from ..state import Server
from .common import ERRORS, store_of

log = logging.getLogger("server")
router = APIRouter(tags=["viewer"])


@router.get("/api/health", response_model=schemas.Health)
def health(state: Server):
    return {"status": "ok", "results_dir": str(state.results.root),
            "n_dictionaries": len(state.results.dictionary_names())}


@router.get("/api/dictionaries", response_model=schemas.DictionaryList, response_model_exclude_unset=True)
def list_dictionaries(state: Server):
    """Every dictionary of the results folder, sorted by name."""
    summaries = []
    for name in state.results.dictionary_names():
        try:
            summaries.append(_summary(state.results, state.results.dictionary(name)))
        except (NotFound, DictionaryError) as e:  # vanished or damaged: listed nowhere, logged
            log.warning("Skipping dictionary %r: %s", name, e)
    return {"dictionaries": summaries}


@router.get("/api/dictionaries/{name}", response_model=schemas.DictionaryDetail, response_model_exclude_unset=True,
            responses=ERRORS)
def get_dictionary(name: str, state: Server):
    """One dictionary: its summary, full config.json and a summary of each analysis."""
    results = state.results
    info = results.dictionary(name)
    summary = _summary(results, info)
    analysis_summaries = []
    for analysis in summary["analyses"]:
        try:
            s = results.store(name, analysis).summary()
        except (NotFound, StoreError) as e:  # replaced or damaged since it was listed
            log.warning("Skipping analysis %r of %r: %s", analysis, name, e)
            continue
        analysis_summaries.append({"name": analysis, "n_tokens": s.n_tokens, "n_features": s.n_features,
                                   "n_alive": s.n_alive, "n_dead": s.n_dead, "density_histogram": s.density_histogram,
                                   "explanations": explanations_summary(results.explanations(name, analysis))})
    return {**summary, "config": info.config, "analysis_summaries": analysis_summaries,
            "layer_metrics": layer_metrics(info)}


@router.get("/api/dictionaries/{name}/analyses/{analysis}/features", response_model=schemas.FeaturePage,
            responses=ERRORS)
def list_features(
    name: str, analysis: str, state: Server,
    sort: Literal["index", "density", "max_act", "mean_act", "act_count", "detection", "fuzzing"] = Query(
        "max_act", description="a statistic, or a scorer (its balanced accuracy; only the features with that score "
                               "are listed)"),
    order: Literal["asc", "desc"] = "desc",
    min_density: Optional[float] = Query(None, allow_inf_nan=False, description="inclusive lower bound on density"),
    max_density: Optional[float] = Query(None, allow_inf_nan=False, description="inclusive upper bound on density"),
    min_max_act: Optional[float] = Query(None, allow_inf_nan=False, description="inclusive lower bound on max_act"),
    min_detection: Optional[float] = Query(None, ge=0, le=1, description="inclusive lower bound on the detection "
                                                                         "score's balanced accuracy"),
    min_fuzzing: Optional[float] = Query(None, ge=0, le=1, description="inclusive lower bound on the fuzzing "
                                                                       "score's balanced accuracy"),
    bookmarked: bool = Query(False, description="only the bookmarked features"),
    layer: Optional[int] = Query(None, ge=0, le=10_000, description="a replacement model's: only this layer's features"),
    offset: int = Query(0, ge=0, le=schemas.MAX_INT64),
    limit: int = Query(50, ge=1, le=500),
):
    """One page of the features' statistics with their labels, explanations and scores, sorted (ties by
    index) and filtered; `total` counts every feature matching the filters."""
    store = store_of(state.results, name, analysis)
    info = state.results.dictionary(name)
    notes = state.results.annotations(name)
    reader = state.results.explanations(name, analysis)
    indices = set(notes.bookmarked()) if bookmarked else None
    if layer is not None:
        if not info.layers:
            raise HTTPException(422, f"Dictionary {name!r} is not a replacement model; its features have no layers.")
        try:
            in_layer = set(layer_features(info, layer))
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        indices = in_layer if indices is None else indices & in_layer
    min_scores = {s: m for s, m in (("detection", min_detection), ("fuzzing", min_fuzzing)) if m is not None}
    scores = table_scores(reader) if sort in SCORERS or min_scores else None
    total, features = scored_page(store, scores or {}, sort=sort, descending=order == "desc", min_scores=min_scores,
                                  indices=indices, offset=offset,
                                  limit=limit, min_density=min_density, max_density=max_density,
                                  min_max_act=min_max_act)
    page = [f.index for f in features]
    saved = notes.many(page)
    explained = page_explanations(reader, page)
    if scores is None:
        scores = reader.score_values(metric=TABLE_METRIC, features=page) if explained else {}
    rows = [schemas.FeatureRow(**vars(f), label=saved[f.index].label if f.index in saved else "",
                               bookmarked=saved[f.index].bookmarked if f.index in saved else False,
                               explanation=explained.get(f.index), detection=scores.get(f.index, {}).get("detection"),
                               fuzzing=scores.get(f.index, {}).get("fuzzing"),
                               layer=feature_layer(info, f.index)[0] if info.layers else None)
            for f in features]
    return {"total": total, "offset": offset, "limit": limit, "features": rows,
            "explanations": explanations_summary(reader)}


# Declared before /features/{index} so "random" is not read as an index.
@router.get("/api/dictionaries/{name}/analyses/{analysis}/features/random", response_model=FeatureRecord,
            responses=ERRORS)
def random_feature(name: str, analysis: str, response: Response, state: Server):
    """A uniformly chosen alive feature (act_count > 0), as /features/{index} answers it."""
    store = store_of(state.results, name, analysis)
    try:
        index = store.random_alive_feature()
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    response.headers["Cache-Control"] = "no-store"
    return _feature(store, index)


@router.get("/api/dictionaries/{name}/analyses/{analysis}/features/{index}", response_model=FeatureRecord,
            responses=ERRORS)
def get_feature(name: str, analysis: str, state: Server, index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
    """Statistics, activation histogram, logit lens, top contexts and interval samples of one feature."""
    return _feature(store_of(state.results, name, analysis), index)


def _summary(results: ResultsFolder, info: DictionaryInfo) -> dict:
    c = info.config
    if info.layers:  # a replacement model: its first layer's hooks
        hooks = {"hook_name": c["hook_names"][0], "hook_out": (c.get("hooks_out") or [None])[0]}
    else:
        hooks = {"hook_name": c["hook_name"], "hook_out": c.get("hook_out")}
    return {"name": info.name, "run": info.name.partition(ID_SEPARATOR)[0], "model_name": c["model_name"], **hooks,
            "kind": info.kind, "layers": info.layers, "architecture": info.architecture, "d_in": c["d_in"],
            "d_sae": info.d_sae, "n_features": info.n_features, "metrics": info.metrics,
            "analyses": results.analysis_names(info.name), "source": _provenance(info),
            "graphs": saved_graph_count(info.folder)}


def _provenance(info: DictionaryInfo) -> dict | None:
    """`info.source` as the API describes it; a hand-edited one that does not fit is left out (logged) rather
    than failing every listing that includes the dictionary."""
    source = info.source
    if source is None:
        return None
    try:
        return schemas.Provenance.model_validate(source).model_dump()
    except ValueError as e:
        log.warning("%s: its config's \"source\" does not describe a provenance (%s); not shown.", info.name, e)
        return None


def _feature(store: FeatureStore, index: int) -> FeatureRecord:
    try:
        return store.get_feature(index)
    except IndexError as e:
        raise HTTPException(404, str(e)) from None
