"""Annotations: a dictionary's labels, notes and bookmarks (`core.annotations`), listed, searched,
exported, read and saved (an edit based on an older version is refused with 409)."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, HTTPException, Path as PathParam, Query, Response

from core.annotations import MAX_LABEL_CHARS, Annotations, export_annotations

from .. import schemas
from ..results import ResultsFolder
from ..state import Server
from .common import ERRORS, check_feature

router = APIRouter(tags=["annotations"])


@router.get("/api/dictionaries/{name}/annotations", response_model=schemas.AnnotationList, responses=ERRORS)
def list_annotations(
    name: str, state: Server,
    q: str = Query("", max_length=MAX_LABEL_CHARS, description="text the label or notes contain (any case)"),
    bookmarked: Optional[bool] = Query(None, description="only (non-)bookmarked features"),
    limit: int = Query(50, ge=1, le=1000),
):
    """Search by label: the annotated features whose label or notes contain `q`, label matches first."""
    found = state.results.annotations(name).search(q, bookmarked=bookmarked, limit=limit)
    return {"annotations": [a.to_dict() for a in found]}


@router.get("/api/dictionaries/{name}/annotations/export", response_model=schemas.AnnotationExport, responses=ERRORS)
def export(name: str, state: Server):
    """Every label, note and bookmark of the dictionary, with what identifies the dictionary
    (`core.annotations.export_annotations`, the same as the library writes)."""
    return export_annotations(state.results.dictionary(name).folder, dictionary_id=name)


@router.get("/api/dictionaries/{name}/features/{index}/annotation", response_model=schemas.Annotation,
            responses=ERRORS)
def get_annotation(name: str, response: Response, state: Server, index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
    """The feature's label, notes and bookmark (version 0 and empty when it has none)."""
    response.headers["Cache-Control"] = "no-store"
    return _annotations(state.results, name, index).get(index).to_dict()


@router.put("/api/dictionaries/{name}/features/{index}/annotation", response_model=schemas.Annotation,
            responses={**ERRORS, 409: {"model": schemas.AnnotationConflict,
                                       "description": "the edit was based on an older version: someone saved "
                                                      "meanwhile; `current` is what they saved (it was kept)"}})
def put_annotation(name: str, body: schemas.AnnotationEdit, state: Server,
                   index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
    """Save the feature's label, notes and bookmark, based on the annotation of `version`."""
    notes = _annotations(state.results, name, index)
    try:
        return notes.save(index, label=body.label, notes=body.notes, bookmarked=body.bookmarked,
                          version=body.version).to_dict()
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


def _annotations(results: ResultsFolder, name: str, index: int) -> Annotations:
    """The annotations of dictionary `name`, once `index` is known to be one of its features."""
    check_feature(results.dictionary(name), index)
    return results.annotations(name)
