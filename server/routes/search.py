"""Search: features by the tokens they fire on (an analysis' token index), and features by the
direction of their decoder (nearest features, in the same or a comparable dictionary)."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, HTTPException, Path as PathParam, Query

from core.sae import DictionaryLoadError
from core.store import MAX_QUERY_CHARS

from .. import schemas
from ..directions import comparable
from ..results import DictionaryError, DictionaryInfo, NotFound
from ..state import Server
from .common import ERRORS, check_feature, store_of

router = APIRouter(tags=["search"])


@router.get("/api/dictionaries/{name}/analyses/{analysis}/search/tokens", response_model=schemas.LabeledTokenSearch,
            responses=ERRORS)
def search_tokens(
    name: str, analysis: str, state: Server,
    q: Optional[str] = Query(None, min_length=1, max_length=MAX_QUERY_CHARS,
                             description="a token or phrase, e.g. ' import' (leading space included)"),
    token_id: Optional[int] = Query(None, ge=0, le=schemas.MAX_INT64, description="a token id, instead of q"),
    limit: int = Query(20, ge=1, le=200),
):
    """Features that fire most on a token or on the tokens of a phrase, from the analysis' token
    index (no model is run). See server/API.md for how a phrase is ranked."""
    if (q is None) == (token_id is None):
        raise HTTPException(422, "Malformed request: give exactly one of the query parameters 'q' (a token or "
                                 "phrase) and 'token_id'.")
    store = store_of(state.results, name, analysis)
    try:
        found = store.search_tokens(q, limit=limit) if q is not None else \
            store.search_tokens(token_ids=[token_id], limit=limit)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    except LookupError as e:  # an unknown token id, text no token matches, a store without the index
        raise HTTPException(404, str(e)) from None
    stats = store.feature_stats(m.index for m in found.matches)
    labels = state.results.annotations(name).many(m.index for m in found.matches)
    matches = [schemas.LabeledTokenMatch(**vars(m), max_act=stats[m.index].max_act, density=stats[m.index].density,
                                         label=labels[m.index].label if m.index in labels else "")
               for m in found.matches]
    return schemas.LabeledTokenSearch(tokens=found.tokens, matches=matches, index_size=found.index_size)


@router.get("/api/dictionaries/{name}/features/{index}/similar", response_model=schemas.SimilarResponse,
            responses=ERRORS)
def similar_features(
    name: str, state: Server, index: int = PathParam(ge=0, le=schemas.MAX_INT64),
    dictionary: Optional[str] = Query(None, description="search this comparable dictionary instead of the "
                                                          "feature's own"),
    limit: int = Query(20, ge=1, le=200),
):
    """The features whose decoder directions are closest (cosine) to this feature's, in its own
    dictionary or in another one of the same model and hook(s)."""
    results = state.results
    source = results.dictionary(name)
    if source.layers:
        raise HTTPException(422, f"Dictionary {name!r} is a replacement model; nearest features by decoder direction "
                                 "compare the features of SAEs and single transcoders (a replacement model's "
                                 "features write to several layers).")
    check_feature(source, index)
    others = []
    for other in results.dictionary_names():
        if other == name:
            continue
        try:
            info = results.dictionary(other)
        except (NotFound, DictionaryError):
            continue
        if comparable(source, info):
            others.append(other)
    target = source if dictionary is None or dictionary == name else results.dictionary(dictionary)
    if target is not source and target.name not in others:
        raise HTTPException(422, f"Dictionary {target.name!r} ({_hooks(target)} of {target.config['model_name']!r}) "
                                 f"is not comparable with {name!r} ({_hooks(source)} of "
                                 f"{source.config['model_name']!r}): decoder directions compare only between "
                                 "dictionaries of the same model and hook(s).")
    try:
        found = state.decoders.nearest(source, index, target, limit)
    except DictionaryLoadError as e:  # its weights are missing or unreadable: say which and why
        raise DictionaryError(f"Cannot read the decoder of a dictionary to compare: {e}") from None
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    labels = results.annotations(target.name).many(n.index for n in found)
    return {"dictionary": target.name, "analyses": results.analysis_names(target.name), "comparable": others,
            "neighbours": [{"index": n.index, "cosine": n.cosine,
                            "label": labels[n.index].label if n.index in labels else ""} for n in found]}


def _hooks(info: DictionaryInfo) -> str:
    if info.layers:
        return f"the MLPs of layers {info.layers}"
    hook_out = info.config.get("hook_out")
    return info.config["hook_name"] + (f" -> {hook_out}" if hook_out else "")
