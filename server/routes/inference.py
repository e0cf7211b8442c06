"""Inference: custom text through a dictionary's model and dictionary, and steering with a
feature's decoder direction. Both are `async`: a request takes one of GPT2DICT_INFERENCE_CONCURRENCY
slots on the event loop (or is answered 503 at once) and only then hands the model work to a thread,
so excess requests never occupy threads that browsing needs."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path as PathParam
from starlette.concurrency import run_in_threadpool

from .. import schemas
from ..inference import InferenceBusy
from ..results import DictionaryInfo
from ..state import Server, ServerState
from .common import ERRORS, check_feature, check_single_dictionary

router = APIRouter(tags=["viewer"])

BUSY_RETRY_AFTER_S = 1
"""Retry-After of the 503 answered when every inference slot is taken (one computation takes well under a second)."""
DEFAULT_STEER_TOKENS = 32


def _errors(too_long: str) -> dict:
    return {**ERRORS, 413: {"model": schemas.ErrorDetail, "description": f"{too_long} or body too long"},
            503: {"model": schemas.ErrorDetail, "description": "busy: every inference slot is taken or the model is "
                                                               "loading; see Retry-After"}}


@router.post("/api/dictionaries/{name}/activations", response_model=schemas.ActivationsResponse,
             responses=_errors("text"))
async def activations(name: str, body: schemas.ActivationsRequest, state: Server):
    """Run `text` through the dictionary's model and dictionary (loaded on first use, then cached):
    the requested feature's activation on every token and each token's strongest features."""
    settings = state.settings
    if len(body.text) > settings.max_text_chars:
        raise HTTPException(413, f"The text has {len(body.text)} characters; the limit is "
                                 f"{settings.max_text_chars} (GPT2DICT_MAX_TEXT_CHARS).")
    # Up to the slot, nothing leaves the event loop (a stat, cached lookups): a request turned away
    # costs no thread hand-over, which under load would wait for the GIL.
    info = state.results.dictionary(name)
    if body.feature is not None:
        check_feature(info, body.feature)
    out = await in_slot(state, info, state.models.run, body.text, max_tokens=settings.max_text_tokens)
    acts = out.activations
    feature = None if body.feature is None else {"index": body.feature, "acts": acts.feature(body.feature).tolist()}
    top_features = [[{"index": i, "act": v} for i, v in row] for row in acts.top_features(body.top_k)]
    return {"token_ids": acts.token_ids, "tokens": acts.tokens, "feature": feature,
            "top_features": top_features, "truncated": out.truncated}


@router.post("/api/dictionaries/{name}/features/{index}/steer", response_model=schemas.SteerResponse,
             responses=_errors("prompt"))
async def steer(name: str, body: schemas.SteerRequest, state: Server,
                index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
    """The model's continuation of `prompt` with the feature's decoder direction times `strength`
    added at its hook at every position, beside the continuation without it."""
    settings = state.settings
    if len(body.prompt) > settings.max_text_chars:
        raise HTTPException(413, f"The prompt has {len(body.prompt)} characters; the limit is "
                                 f"{settings.max_text_chars} (GPT2DICT_MAX_TEXT_CHARS).")
    max_new_tokens = body.max_new_tokens or min(DEFAULT_STEER_TOKENS, settings.steer_max_new_tokens)
    if max_new_tokens > settings.steer_max_new_tokens:
        raise HTTPException(422, f"Malformed request: body field 'max_new_tokens' is {max_new_tokens}; the "
                                 f"limit is {settings.steer_max_new_tokens} (GPT2DICT_STEER_MAX_NEW_TOKENS).")
    info = state.results.dictionary(name)
    check_single_dictionary(info, "Steering")
    check_feature(info, index)
    out = await in_slot(state, info, state.models.steer, index, body.prompt, strength=body.strength,
                         max_new_tokens=max_new_tokens, temperature=body.temperature, seed=body.seed,
                         max_prompt_tokens=settings.steer_max_prompt_tokens)
    return {"prompt_tokens": out.prompt_tokens, "prompt_cut": out.prompt_cut, "steered": out.steered._asdict(),
            "unsteered": out.unsteered._asdict(), "hook_name": out.hook_name, "direction_norm": out.direction_norm}


async def in_slot(state: ServerState, info: DictionaryInfo, compute, *args, **kwargs):
    """`compute(pair, ...)` in a thread once the dictionary is loaded and an inference slot is free;
    InferenceBusy (503) at once when none is."""
    # A cold dictionary loads in a thread, outside the slots: it never blocks inference on loaded ones.
    pair = state.models.loaded(info) or await run_in_threadpool(state.models.get, info)
    if not state.inference_slots.acquire(blocking=False):
        raise InferenceBusy(f"All {state.settings.inference_concurrency} inference slots are busy "
                            "(GPT2DICT_INFERENCE_CONCURRENCY); retry in a moment.", BUSY_RETRY_AFTER_S)
    try:
        return await run_in_threadpool(compute, pair, *args, **kwargs)
    finally:
        state.inference_slots.release()
