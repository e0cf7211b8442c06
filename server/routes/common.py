"""What several route modules use: the error answers each endpoint documents, and checks that
turn a wrong name or index into one 404 sentence."""

from __future__ import annotations

from fastapi import HTTPException

from core.store import FeatureStore

from .. import schemas
from ..results import DictionaryInfo, ResultsFolder

ERRORS = {404: {"model": schemas.ErrorDetail, "description": "unknown dictionary, analysis or feature"},
          422: {"model": schemas.ErrorDetail, "description": "malformed or out-of-range parameter"},
          500: {"model": schemas.ErrorDetail, "description": "corrupt store or config; other requests still work"}}
"""The error answers every endpoint that names a dictionary may give (documented in /docs)."""


def store_of(results: ResultsFolder, name: str, analysis: str) -> FeatureStore:
    """The feature store of an analysis; 404 for an unknown dictionary before looking at its analyses."""
    results.dictionary(name)
    return results.store(name, analysis)


def check_feature(info: DictionaryInfo, index: int) -> None:
    if not index < info.n_features:
        raise HTTPException(404, f"feature {index} does not exist; this dictionary has features 0..{info.n_features - 1}.")


def check_single_dictionary(info: DictionaryInfo, what: str) -> None:
    """422 for a replacement model where one SAE or transcoder is needed (steering: one decoder direction at one
    hook). Custom text runs a replacement model's every covered layer."""
    if info.kind != "sparse_autoencoder":
        raise HTTPException(422, f"{what} runs one SAE or transcoder; {info.name!r} is a replacement model (a "
                                 f"{info.kind.replace('_', ' ')}): explore it through its attribution graphs.")
