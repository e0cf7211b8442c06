"""FastAPI server of the feature viewer: the API of server/API.md, plus the built UI.

    uvicorn server.app:app --port 24577        # from the repository root

Settings come from `GPT2DICT_*` environment variables or `.env` (see server/settings.py and
server/.env.example). Runs, dictionaries and analyses are discovered by scanning the results
folder on every request (server/results.py, server/runs.py); custom text and steering run the
dictionary's model on demand (server/inference.py); nearest features compare cached, normalized
decoders (server/directions.py); labels are written to each dictionary's annotations file
(core/annotations.py). Browsing, search and label endpoints are plain `def`s so FastAPI runs them
in its threadpool: SQLite work never blocks the event loop. Custom text and steering are `async`:
they take one of GPT2DICT_INFERENCE_CONCURRENCY slots on the event loop (or answer 503 at once)
and only then hand the model work to a thread, so excess requests never occupy threads that
browsing needs. Before any endpoint, middleware (server/guards.py) checks the Host header and caps
the body.
"""

from __future__ import annotations

import json
import logging
import re
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, Optional

import torch
from fastapi import FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import layout
from core.annotations import AnnotationConflict, AnnotationError, export_annotations
from core.sae import DictionaryLoadError
from core.annotations import MAX_LABEL_CHARS
from core.runs import MetricsLog
from core.store import MAX_QUERY_CHARS, FeatureRecord, FeatureStore, FeatureUnavailable, StoreError, json_ready

from . import schemas
from .guards import BodyLimit, HostCheck
from .directions import DecoderCache, comparable
from .inference import InferenceBusy, ModelCache, ModelLoadFailed
from .results import ID_SEPARATOR, DictionaryError, DictionaryInfo, NotFound, ResultsFolder
from .runs import FINAL_KEYS, DictionaryCurves, RunLogs
from .settings import Settings

log = logging.getLogger("server")

_ERRORS = {404: {"model": schemas.ErrorDetail, "description": "unknown dictionary, analysis or feature"},
           422: {"model": schemas.ErrorDetail, "description": "malformed or out-of-range parameter"},
           500: {"model": schemas.ErrorDetail, "description": "corrupt store or config; other requests still work"}}
BUSY_RETRY_AFTER_S = 1
DEFAULT_STEER_TOKENS = 32
"""Retry-After of the 503 answered when every inference slot is taken (one computation takes well under a second)."""


def inference_threads(setting: int) -> int:
    """torch threads for custom text: the setting, or (0) one less than the usable cores, at least 1."""
    if setting:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for `settings` (default: read from the environment and `.env`)."""
    settings = settings or Settings()
    results = ResultsFolder(settings.results_dir)
    models = ModelCache(size=settings.model_cache_size, device=settings.device, results_root=results.root,
                        failure_ttl_s=settings.model_load_failure_ttl_s)
    inference_slots = threading.BoundedSemaphore(settings.inference_concurrency)
    decoders = DecoderCache()
    run_logs = RunLogs()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # torch's intra-op threads are per process: leave a core to the threads that answer browsing.
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(inference_threads(settings.inference_threads))
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)
            results.close()

    app = FastAPI(title="GPT-2 Dictionary feature viewer",
                  description="Browse the dictionaries (sparse autoencoders) and analyses of a results folder. "
                              "See server/API.md.",
                  version="1", lifespan=lifespan)
    app.state.settings, app.state.results, app.state.models, app.state.decoders = settings, results, models, decoders
    origins = settings.cors_origin_list
    # The last added runs first: Host check, then the body cap, then CORS.
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "PUT"], allow_headers=["*"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HostCheck, allowed_hosts=settings.allowed_host_list)
    _install_error_handlers(app)

    # -- endpoints -------------------------------------------------------------------------

    @app.get("/api/health", response_model=schemas.Health, tags=["viewer"])
    def health():
        return {"status": "ok", "results_dir": str(results.root), "n_dictionaries": len(results.dictionary_names())}

    @app.get("/api/dictionaries", response_model=schemas.DictionaryList, response_model_exclude_unset=True,
             tags=["viewer"])
    def list_dictionaries():
        """Every dictionary of the results folder, sorted by name."""
        summaries = []
        for name in results.dictionary_names():
            try:
                summaries.append(_summary(results, results.dictionary(name)))
            except (NotFound, DictionaryError) as e:  # vanished or damaged: listed nowhere, logged
                log.warning("Skipping dictionary %r: %s", name, e)
        return {"dictionaries": summaries}

    @app.get("/api/dictionaries/{name}", response_model=schemas.DictionaryDetail, response_model_exclude_unset=True,
             responses=_ERRORS, tags=["viewer"])
    def get_dictionary(name: str):
        """One dictionary: its summary, full config.json and a summary of each analysis."""
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
                                       "n_alive": s.n_alive, "n_dead": s.n_dead,
                                       "density_histogram": s.density_histogram})
        return {**summary, "config": info.config, "analysis_summaries": analysis_summaries}

    @app.get("/api/dictionaries/{name}/analyses/{analysis}/features", response_model=schemas.FeaturePage,
             responses=_ERRORS, tags=["viewer"])
    def list_features(
        name: str, analysis: str,
        sort: Literal["index", "density", "max_act", "mean_act", "act_count"] = "max_act",
        order: Literal["asc", "desc"] = "desc",
        min_density: Optional[float] = Query(None, allow_inf_nan=False, description="inclusive lower bound on density"),
        max_density: Optional[float] = Query(None, allow_inf_nan=False, description="inclusive upper bound on density"),
        min_max_act: Optional[float] = Query(None, allow_inf_nan=False, description="inclusive lower bound on max_act"),
        bookmarked: bool = Query(False, description="only the bookmarked features"),
        offset: int = Query(0, ge=0, le=schemas.MAX_INT64),
        limit: int = Query(50, ge=1, le=500),
    ):
        """One page of the features' statistics with their labels, sorted (ties by index) and filtered;
        `total` counts every feature matching the filters."""
        store = _store(results, name, analysis)
        notes = results.annotations(name)
        total, features = store.list_features(sort=sort, descending=order == "desc", min_density=min_density,
                                              max_density=max_density, min_max_act=min_max_act,
                                              indices=notes.bookmarked() if bookmarked else None,
                                              offset=offset, limit=limit)
        saved = notes.many(f.index for f in features)
        rows = [schemas.FeatureRow(**vars(f), label=saved[f.index].label if f.index in saved else "",
                                   bookmarked=saved[f.index].bookmarked if f.index in saved else False)
                for f in features]
        return {"total": total, "offset": offset, "limit": limit, "features": rows}

    # Declared before /features/{index} so "random" is not read as an index.
    @app.get("/api/dictionaries/{name}/analyses/{analysis}/features/random", response_model=FeatureRecord,
             responses=_ERRORS, tags=["viewer"])
    def random_feature(name: str, analysis: str, response: Response):
        """A uniformly chosen alive feature (act_count > 0), as /features/{index} answers it."""
        store = _store(results, name, analysis)
        try:
            index = store.random_alive_feature()
        except LookupError as e:
            raise HTTPException(404, str(e)) from None
        response.headers["Cache-Control"] = "no-store"
        return _feature(store, index)

    @app.get("/api/dictionaries/{name}/analyses/{analysis}/features/{index}", response_model=FeatureRecord,
             responses=_ERRORS, tags=["viewer"])
    def get_feature(name: str, analysis: str, index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
        """Statistics, activation histogram, logit lens, top contexts and interval samples of one feature."""
        return _feature(_store(results, name, analysis), index)

    @app.post("/api/dictionaries/{name}/activations", response_model=schemas.ActivationsResponse,
              responses={**_ERRORS, 413: {"model": schemas.ErrorDetail, "description": "text or body too long"},
                         503: {"model": schemas.ErrorDetail, "description": "busy: every inference slot is taken or "
                                                                             "the model is loading; see Retry-After"}},
              tags=["viewer"])
    async def activations(name: str, body: schemas.ActivationsRequest):
        """Run `text` through the dictionary's model and dictionary (loaded on first use, then cached):
        the requested feature's activation on every token and each token's strongest features."""
        if len(body.text) > settings.max_text_chars:
            raise HTTPException(413, f"The text has {len(body.text)} characters; the limit is "
                                     f"{settings.max_text_chars} (GPT2DICT_MAX_TEXT_CHARS).")
        # Up to the slot, nothing leaves the event loop (a stat, cached lookups): a request turned away
        # costs no thread hand-over, which under load would wait for the GIL.
        info = results.dictionary(name)
        if body.feature is not None:
            _check_feature(info, body.feature)
        out = await _in_slot(info, models.run, body.text, max_tokens=settings.max_text_tokens)
        acts = out.activations
        feature = None if body.feature is None else {"index": body.feature, "acts": acts.feature(body.feature).tolist()}
        top_features = [[{"index": i, "act": v} for i, v in row] for row in acts.top_features(body.top_k)]
        return {"token_ids": acts.token_ids, "tokens": acts.tokens, "feature": feature,
                "top_features": top_features, "truncated": out.truncated}

    # -- search ----------------------------------------------------------------------------

    @app.get("/api/dictionaries/{name}/analyses/{analysis}/search/tokens", response_model=schemas.LabeledTokenSearch,
             responses=_ERRORS, tags=["search"])
    def search_tokens(
        name: str, analysis: str,
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
        store = _store(results, name, analysis)
        try:
            found = store.search_tokens(q, limit=limit) if q is not None else \
                store.search_tokens(token_ids=[token_id], limit=limit)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        except LookupError as e:  # an unknown token id, text no token matches, a store without the index
            raise HTTPException(404, str(e)) from None
        stats = store.feature_stats(m.index for m in found.matches)
        labels = results.annotations(name).many(m.index for m in found.matches)
        matches = [schemas.LabeledTokenMatch(**vars(m), max_act=stats[m.index].max_act, density=stats[m.index].density,
                                             label=labels[m.index].label if m.index in labels else "")
                   for m in found.matches]
        return schemas.LabeledTokenSearch(tokens=found.tokens, matches=matches, index_size=found.index_size)

    @app.get("/api/dictionaries/{name}/features/{index}/similar", response_model=schemas.SimilarResponse,
             responses=_ERRORS, tags=["search"])
    def similar_features(
        name: str, index: int = PathParam(ge=0, le=schemas.MAX_INT64),
        dictionary: Optional[str] = Query(None, description="search this comparable dictionary instead of the "
                                                              "feature's own"),
        limit: int = Query(20, ge=1, le=200),
    ):
        """The features whose decoder directions are closest (cosine) to this feature's, in its own
        dictionary or in another one of the same model and hook(s)."""
        source = results.dictionary(name)
        _check_feature(source, index)
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
            found = decoders.nearest(source, index, target, limit)
        except DictionaryLoadError as e:  # its weights are missing or unreadable: say which and why
            raise DictionaryError(f"Cannot read the decoder of a dictionary to compare: {e}") from None
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        labels = results.annotations(target.name).many(n.index for n in found)
        return {"dictionary": target.name, "analyses": results.analysis_names(target.name), "comparable": others,
                "neighbours": [{"index": n.index, "cosine": n.cosine,
                                "label": labels[n.index].label if n.index in labels else ""} for n in found]}

    # -- annotations -----------------------------------------------------------------------

    @app.get("/api/dictionaries/{name}/annotations", response_model=schemas.AnnotationList, responses=_ERRORS,
             tags=["annotations"])
    def list_annotations(
        name: str,
        q: str = Query("", max_length=MAX_LABEL_CHARS, description="text the label or notes contain (any case)"),
        bookmarked: Optional[bool] = Query(None, description="only (non-)bookmarked features"),
        limit: int = Query(50, ge=1, le=1000),
    ):
        """Search by label: the annotated features whose label or notes contain `q`, label matches first."""
        found = results.annotations(name).search(q, bookmarked=bookmarked, limit=limit)
        return {"annotations": [a.to_dict() for a in found]}

    @app.get("/api/dictionaries/{name}/annotations/export", response_model=schemas.AnnotationExport,
             responses=_ERRORS, tags=["annotations"])
    def export(name: str):
        """Every label, note and bookmark of the dictionary, with what identifies the dictionary
        (`core.annotations.export_annotations`, the same as the library writes)."""
        return export_annotations(results.dictionary(name).folder, dictionary_id=name)

    @app.get("/api/dictionaries/{name}/features/{index}/annotation", response_model=schemas.Annotation,
             responses=_ERRORS, tags=["annotations"])
    def get_annotation(name: str, response: Response, index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
        """The feature's label, notes and bookmark (version 0 and empty when it has none)."""
        response.headers["Cache-Control"] = "no-store"
        return _annotation(results, name, index).get(index).to_dict()

    @app.put("/api/dictionaries/{name}/features/{index}/annotation", response_model=schemas.Annotation,
             responses={**_ERRORS, 409: {"model": schemas.AnnotationConflict,
                                         "description": "the edit was based on an older version: someone saved "
                                                        "meanwhile; `current` is what they saved (it was kept)"}},
             tags=["annotations"])
    def put_annotation(name: str, body: schemas.AnnotationEdit, index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
        """Save the feature's label, notes and bookmark, based on the annotation of `version`."""
        notes = _annotation(results, name, index)
        try:
            return notes.save(index, label=body.label, notes=body.notes, bookmarked=body.bookmarked,
                              version=body.version).to_dict()
        except ValueError as e:
            raise HTTPException(422, str(e)) from None

    # -- steering --------------------------------------------------------------------------

    @app.post("/api/dictionaries/{name}/features/{index}/steer", response_model=schemas.SteerResponse,
              responses={**_ERRORS, 413: {"model": schemas.ErrorDetail, "description": "prompt or body too long"},
                         503: {"model": schemas.ErrorDetail, "description": "busy: every inference slot is taken or "
                                                                             "the model is loading; see Retry-After"}},
              tags=["viewer"])
    async def steer(name: str, body: schemas.SteerRequest, index: int = PathParam(ge=0, le=schemas.MAX_INT64)):
        """The model's continuation of `prompt` with the feature's decoder direction times `strength`
        added at its hook at every position, beside the continuation without it."""
        if len(body.prompt) > settings.max_text_chars:
            raise HTTPException(413, f"The prompt has {len(body.prompt)} characters; the limit is "
                                     f"{settings.max_text_chars} (GPT2DICT_MAX_TEXT_CHARS).")
        max_new_tokens = body.max_new_tokens or min(DEFAULT_STEER_TOKENS, settings.steer_max_new_tokens)
        if max_new_tokens > settings.steer_max_new_tokens:
            raise HTTPException(422, f"Malformed request: body field 'max_new_tokens' is {max_new_tokens}; the "
                                     f"limit is {settings.steer_max_new_tokens} (GPT2DICT_STEER_MAX_NEW_TOKENS).")
        info = results.dictionary(name)
        _check_feature(info, index)
        out = await _in_slot(info, models.steer, index, body.prompt, strength=body.strength,
                             max_new_tokens=max_new_tokens, temperature=body.temperature, seed=body.seed,
                             max_prompt_tokens=settings.steer_max_prompt_tokens)
        return {"prompt_tokens": out.prompt_tokens, "prompt_cut": out.prompt_cut, "steered": out.steered._asdict(),
                "unsteered": out.unsteered._asdict(), "hook_name": out.hook_name,
                "direction_norm": out.direction_norm}

    async def _in_slot(info: DictionaryInfo, compute, *args, **kwargs):
        """`compute(pair, ...)` in a thread once the dictionary is loaded and an inference slot is free;
        InferenceBusy (503) at once when none is."""
        # A cold dictionary loads in a thread, outside the slots: it never blocks inference on loaded ones.
        pair = models.loaded(info) or await run_in_threadpool(models.get, info)
        if not inference_slots.acquire(blocking=False):
            raise InferenceBusy(f"All {settings.inference_concurrency} inference slots are busy "
                                "(GPT2DICT_INFERENCE_CONCURRENCY); retry in a moment.", BUSY_RETRY_AFTER_S)
        try:
            return await run_in_threadpool(compute, pair, *args, **kwargs)
        finally:
            inference_slots.release()

    # -- runs ------------------------------------------------------------------------------

    @app.get("/api/runs", response_model=schemas.RunList, tags=["runs"])
    def list_runs():
        """Every training run of the results folder, sorted by name."""
        return {"runs": [{"name": run, "dictionaries": results.run_dictionaries(run),
                          "has_metrics": MetricsLog.of_run(results.run_folder(run)).path.is_file()}
                         for run in results.run_names()]}

    @app.get("/api/runs/{run}", response_model=schemas.RunDetail, responses=_ERRORS, tags=["runs"])
    def get_run(run: str):
        """A run's training curves (from metrics.jsonl as it is now, also while the run goes on) and
        each dictionary's final metrics."""
        folder = results.run_folder(run)
        log = run_logs.get(folder)
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
                "config": _read_json(folder / layout.RUN_CONFIG_FILENAME), "series": series, "lines": log.lines,
                "skipped_lines": log.skipped,
                "finished": bool(log.curves) and all(c.final is not None for c in log.curves.values())}

    @app.api_route("/api/{rest:path}", methods=["GET", "HEAD"], include_in_schema=False)
    def unknown_api(rest: str):
        raise HTTPException(404, f"There is no API endpoint /api/{rest}; see /docs for the endpoints.")

    # -- the built UI ----------------------------------------------------------------------

    @app.api_route("/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    def ui(path: str):
        return _ui_response(Path(settings.ui_dist), path)

    return app


# ----------------------------------------------------------------------------------------------


def _summary(results: ResultsFolder, info: DictionaryInfo) -> dict:
    c = info.config
    return {"name": info.name, "run": info.name.partition(ID_SEPARATOR)[0], "model_name": c["model_name"],
            "hook_name": c["hook_name"], "hook_out": c.get("hook_out"), "architecture": c["architecture"],
            "d_in": c["d_in"], "d_sae": info.d_sae,
            "metrics": info.metrics, "analyses": results.analysis_names(info.name), "source": _provenance(info)}


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


def _store(results: ResultsFolder, name: str, analysis: str) -> FeatureStore:
    results.dictionary(name)  # 404 for an unknown dictionary before looking at its analyses
    return results.store(name, analysis)


def _check_feature(info: DictionaryInfo, index: int) -> None:
    if not index < info.d_sae:
        raise HTTPException(404, f"feature {index} does not exist; this dictionary has features 0..{info.d_sae - 1}.")


def _hooks(info: DictionaryInfo) -> str:
    hook_out = info.config.get("hook_out")
    return info.config["hook_name"] + (f" -> {hook_out}" if hook_out else "")


def _annotation(results: ResultsFolder, name: str, index: int):
    info = results.dictionary(name)
    _check_feature(info, index)
    return results.annotations(name)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return json_ready(data) if isinstance(data, dict) else None


def _feature(store: FeatureStore, index: int) -> FeatureRecord:
    try:
        return store.get_feature(index)
    except IndexError as e:
        raise HTTPException(404, str(e)) from None


_HINT = ("<!doctype html><meta charset=utf-8><title>GPT-2 Dictionary</title>"
         "<h1>GPT-2 Dictionary API</h1><p>The viewer is not built ({dist} does not exist). Build it with "
         "<code>cd ui &amp;&amp; bun install &amp;&amp; bun run build</code> and reload, or run the dev server "
         "with <code>cd ui &amp;&amp; bun dev --port 24576</code>.</p>"
         "<p>The API is under <a href=/api/health>/api</a>; its documentation is at <a href=/docs>/docs</a>.</p>")


_STATIC_FILE = re.compile(r"\.(html|js|mjs|css|map|json|txt|ico|png|svg|jpe?g|gif|webp|woff2?|ttf|webmanifest)$")
"""Names of files a built UI holds; other paths (dictionary ids hold dots too) are client-side routes."""


def _ui_response(dist: Path, path: str) -> Response:
    """A file of the built UI, or index.html for client-side routes; a hint when the UI is not built."""
    if not (dist / "index.html").is_file():
        if path in ("", "index.html"):
            return HTMLResponse(_HINT.format(dist=dist))
        raise HTTPException(404, f"Not found; the UI is not built ({dist} does not exist).")
    if path:
        root = dist.resolve()
        candidate = (dist / path).resolve()
        if candidate.is_relative_to(root) and candidate.is_file():
            immutable = candidate.parent.name == "assets"  # Vite puts a content hash in these names
            return FileResponse(candidate, headers={
                "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache"})
        if path.startswith("assets/") or _STATIC_FILE.search(path):  # a missing file, not a client-side route
            raise HTTPException(404, f"No file {path} in the built UI.")
    return FileResponse(dist / "index.html", headers={"Cache-Control": "no-cache"})


_JSON_BODY = 'the body must be a JSON object such as {"text": "..."}, sent as Content-Type: application/json'
_VALIDATION_WORDING = {
    "finite_number": "must be a finite number, not NaN or infinity",
    "model_attributes_type": _JSON_BODY,
}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if err.get("type") == "json_invalid":  # loc is ("body", <character position>)
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            parts.append(f"the body is not valid JSON{where}; {_JSON_BODY}")
            continue
        where = ".".join(loc[1:]) if loc and loc[0] in ("query", "path", "body") else ".".join(loc)
        kind = {"query": "query parameter", "path": "path parameter", "body": "body field"}.get(loc[0] if loc else "", "")
        msg = _VALIDATION_WORDING.get(err.get("type", ""), err.get("msg", "invalid value"))
        parts.append(f"{kind} {where!r}: {msg}".strip() if where else msg)
    return "Malformed request: " + "; ".join(parts) + "."


def _undecodable_body_message(cause: Exception) -> str:
    """FastAPI answers a body json.loads cannot decode (bad UTF-8, a 5,000-digit number, 30,000 nested
    brackets) with a bare 400 "There was an error parsing the body"; this says what is wrong instead."""
    if isinstance(cause, UnicodeDecodeError):
        reason = f"it is not UTF-8 (byte {cause.start})"
    elif isinstance(cause, RecursionError):
        reason = "it is nested too deeply"
    else:
        reason = str(cause).split(";")[0]  # drop Python's advice to call sys.set_int_max_str_digits
    return f"Malformed request: the body cannot be decoded as JSON ({reason}); {_JSON_BODY}."


def _install_error_handlers(app: FastAPI) -> None:
    def error(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and isinstance(exc.__cause__, (ValueError, RecursionError)):  # `from` the decode error
            return error(422, _undecodable_body_message(exc.__cause__))
        return await http_exception_handler(request, exc)

    @app.exception_handler(InferenceBusy)
    async def busy(request: Request, exc: InferenceBusy):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(AnnotationConflict)
    async def annotation_conflict(request: Request, exc: AnnotationConflict):
        return JSONResponse({"detail": str(exc), "current": exc.current.to_dict()}, status_code=409)

    def answer(status: int, logged: bool):
        async def handler(request: Request, exc: Exception):
            if logged:  # the server's files are damaged: worth a line in the log
                log.error("%s %s: %s", request.method, request.url.path, exc)
            return error(status, str(exc))
        return handler

    # Errors whose message already says what is wrong and what to do.
    for kind, status, logged in ((ModelLoadFailed, 500, False), (NotFound, 404, False), (FeatureUnavailable, 404, False),
                                 (StoreError, 500, True), (DictionaryError, 500, True), (AnnotationError, 500, True)):
        app.add_exception_handler(kind, answer(status, logged))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Logged with its traceback here; the client only learns that something went wrong.
        log.exception("Unexpected error in %s %s", request.method, request.url.path)
        return error(500, f"Internal server error ({type(exc).__name__}); the server log has the details.")


app = create_app()
