"""Replacement models (transcoder sets, cross-layer transcoders): where a feature sits (its layer and
index within the layer) and which layers it writes to, by its decoder norms (server/replacement.py).
Their per-layer evaluation is part of the dictionary's detail (`layer_metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path as PathParam
from starlette.concurrency import run_in_threadpool

from core.sae import DictionaryLoadError

from .. import schemas
from ..results import DictionaryError
from ..state import Server
from .common import ERRORS, check_feature

router = APIRouter(tags=["replacement models"])


@router.get("/api/dictionaries/{name}/features/{index}/replacement", response_model=schemas.ReplacementFeature,
            responses=ERRORS)
async def replacement_feature(name: str, state: Server, index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
    """A replacement model's feature: its layer, its index within the layer, and the norm of its decoder
    vector into each layer it writes to (computed from the weights once per dictionary, then cached)."""
    info = state.results.dictionary(name)
    if not info.layers:
        raise HTTPException(422, f"Dictionary {name!r} is not a replacement model (a transcoder set or a "
                                 "cross-layer transcoder); its features have no layers.")
    check_feature(info, index)
    try:
        place = await run_in_threadpool(state.decoder_norms.place, info, index)
    except DictionaryLoadError as e:  # its weights are missing or unreadable: say which and why
        raise DictionaryError(f"Cannot read the decoder of dictionary {name!r}: {e}") from None
    return {"index": index, **place._asdict()}
