"""Explanations of features by a language model (`core.autointerp`, server/explanations.py): a feature's
explanations and scores, search by explanation, and "explain this feature" as a job whose progress
GET /api/jobs/{id} reports."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path as PathParam, Query, Response
from starlette.concurrency import run_in_threadpool

from core.autointerp.explanations import MAX_SEARCH_CHARS

from .. import schemas
from ..explanations import EXPLAIN_STEPS, TABLE_METRIC, feature_explanations
from ..state import Server
from .common import ERRORS, check_feature, store_of

router = APIRouter(tags=["explanations"])


@router.get("/api/dictionaries/{name}/analyses/{analysis}/features/{index}/explanations",
            response_model=schemas.FeatureExplanations, responses=ERRORS)
def get_feature_explanations(name: str, analysis: str, response: Response, state: Server,
                             index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
    """The feature's explanation in every explanation set that has one (the default set's first) with its
    detection and fuzzing scores, and what "explain" would run."""
    check_feature(state.results.dictionary(name), index)
    reader = state.results.explanations(name, analysis)
    response.headers["Cache-Control"] = "no-store"  # an explain job or a run adds to it
    return {"index": index, "explanations": feature_explanations(reader, index),
            "explainer": state.explainer.describe()}


@router.get("/api/dictionaries/{name}/analyses/{analysis}/search/explanations",
            response_model=schemas.ExplanationSearch, responses=ERRORS)
def search_explanations(
    name: str, analysis: str, state: Server,
    q: str = Query(min_length=1, max_length=MAX_SEARCH_CHARS, description="words of the explanation (stemmed; every "
                                                                        "word must occur; `word*` matches a prefix)"),
    limit: int = Query(30, ge=1, le=200),
):
    """Features whose explanation (in the default explanation set) matches `q`, best match (bm25) first."""
    store = store_of(state.results, name, analysis)
    reader = state.results.explanations(name, analysis)
    try:
        found = reader.search(q, limit=limit)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    indices = [m.feature_index for m in found]
    stats = store.feature_stats(indices)
    labels = state.results.annotations(name).many(indices)
    scores = reader.score_values(metric=TABLE_METRIC, features=indices) if indices else {}
    matches = [{"index": m.feature_index, "explanation": m.explanation, "highlighted": m.highlighted, "rank": m.rank,
                "max_act": stats[m.feature_index].max_act, "density": stats[m.feature_index].density,
                "label": labels[m.feature_index].label if m.feature_index in labels else "",
                "detection": scores.get(m.feature_index, {}).get("detection"),
                "fuzzing": scores.get(m.feature_index, {}).get("fuzzing")}
               for m in found if m.feature_index in stats]
    return {"set_id": reader.default_set(), "matches": matches}


@router.post("/api/dictionaries/{name}/analyses/{analysis}/features/{index}/explain",
             response_model=schemas.JobStatus, status_code=202,
             responses={**ERRORS, 503: {"model": schemas.ErrorDetail,
                                        "description": "every inference slot is busy; see Retry-After"}})
async def explain_feature(name: str, analysis: str, state: Server, index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
    """Explain the feature with the server's explainer (GPT2DICT_EXPLAIN_*) and score the explanation: answered
    at once with a job (it holds an inference slot until it ends; none free: 503) whose progress
    GET /api/jobs/{id} reports. A job already explaining this feature is answered instead of a new one."""
    info = state.results.dictionary(name)
    check_feature(info, index)
    store = await run_in_threadpool(store_of, state.results, name, analysis)
    if (await run_in_threadpool(store.feature_stats, [index]))[index].act_count == 0:
        raise HTTPException(422, f"Feature {index} never fired in analysis {analysis!r}, so there are no contexts to "
                                 "explain it from.")
    subject = {"analysis": analysis, "feature": index}
    running = state.jobs.running("explain", name, subject)
    if running is not None:
        return running.to_dict()
    folder = store.path.parent
    job = state.jobs.submit("explain", name, subject, EXPLAIN_STEPS,
                            lambda job: state.explainer.explain(job, info, folder, index, state.models))
    return job.to_dict()


@router.get("/api/jobs/{job_id}", response_model=schemas.JobStatus, responses=ERRORS)
def get_job(job_id: str, response: Response, state: Server):
    """A job's progress: its stage, steps done, `failed` with the reason, `done` with its result."""
    response.headers["Cache-Control"] = "no-store"
    return state.jobs.get(job_id).to_dict()
