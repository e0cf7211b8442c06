"""FastAPI server of the feature viewer: the API of server/API.md, plus the built UI.

    uvicorn server.app:app --port 24577        # from the repository root

Settings come from `GPT2DICT_*` environment variables or `.env` (see server/settings.py and
server/.env.example). Dictionaries and analyses are discovered by scanning the results folder on
every request (server/results.py); custom text is run through the dictionary's model on demand
(server/inference.py). Browsing endpoints are plain `def`s so FastAPI runs them in its threadpool:
SQLite reads never block the event loop. The custom-text endpoint is `async`: it takes one of
GPT2DICT_INFERENCE_CONCURRENCY slots on the event loop (or answers 503 at once) and only then
hands the model work to a thread, so excess requests never occupy threads that browsing needs.
Before any endpoint, middleware (server/guards.py) checks the Host header and caps the body.
"""

from __future__ import annotations

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

from core.store import FeatureStore, StoreError

from . import schemas
from .guards import BodyLimit, HostCheck
from .inference import InferenceBusy, ModelCache, ModelLoadFailed
from .results import ID_SEPARATOR, DictionaryError, DictionaryInfo, NotFound, ResultsFolder
from .settings import Settings

log = logging.getLogger("server")

_ERRORS = {404: {"model": schemas.ErrorDetail, "description": "unknown dictionary, analysis or feature"},
           422: {"model": schemas.ErrorDetail, "description": "malformed or out-of-range parameter"},
           500: {"model": schemas.ErrorDetail, "description": "corrupt store or config; other requests still work"}}
BUSY_RETRY_AFTER_S = 1
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
    app.state.settings, app.state.results, app.state.models = settings, results, models
    origins = settings.cors_origin_list
    # The last added runs first: Host check, then the body cap, then CORS.
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"], allow_headers=["*"])
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
                                       "density_histogram": s.density_histogram.to_dict()})
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
        offset: int = Query(0, ge=0, le=schemas.MAX_INT64),
        limit: int = Query(50, ge=1, le=500),
    ):
        """One page of the features' statistics, sorted (ties by index) and filtered; `total` counts
        every feature matching the filters."""
        store = _store(results, name, analysis)
        total, features = store.list_features(sort=sort, descending=order == "desc", min_density=min_density,
                                              max_density=max_density, min_max_act=min_max_act,
                                              offset=offset, limit=limit)
        return {"total": total, "offset": offset, "limit": limit, "features": [f.to_dict() for f in features]}

    # Declared before /features/{index} so "random" is not read as an index.
    @app.get("/api/dictionaries/{name}/analyses/{analysis}/features/random", response_model=schemas.FeatureDetail,
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

    @app.get("/api/dictionaries/{name}/analyses/{analysis}/features/{index}", response_model=schemas.FeatureDetail,
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
        d_sae = info.d_sae
        if body.feature is not None and not body.feature < d_sae:
            raise HTTPException(404, f"feature {body.feature} does not exist; this dictionary has features "
                                     f"0..{d_sae - 1}.")
        # A cold dictionary loads in a thread, outside the slots: it never blocks inference on loaded ones.
        pair = models.loaded(info) or await run_in_threadpool(models.get, info)
        if not inference_slots.acquire(blocking=False):
            raise InferenceBusy(f"All {settings.inference_concurrency} custom-text slots are busy "
                                "(GPT2DICT_INFERENCE_CONCURRENCY); retry in a moment.", BUSY_RETRY_AFTER_S)
        try:
            out = await run_in_threadpool(models.run, pair, body.text, max_tokens=settings.max_text_tokens)
        finally:
            inference_slots.release()
        acts = out.activations
        feature = None if body.feature is None else {"index": body.feature, "acts": acts.feature(body.feature).tolist()}
        top_features = [[{"index": i, "act": v} for i, v in row] for row in acts.top_features(body.top_k)]
        return {"token_ids": acts.token_ids, "tokens": acts.tokens, "feature": feature,
                "top_features": top_features, "truncated": out.truncated}

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
            "metrics": info.metrics, "analyses": results.analysis_names(info.name)}


def _store(results: ResultsFolder, name: str, analysis: str) -> FeatureStore:
    results.dictionary(name)  # 404 for an unknown dictionary before looking at its analyses
    return results.store(name, analysis)


def _feature(store: FeatureStore, index: int) -> dict:
    try:
        return store.get_feature(index).to_dict()
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

    @app.exception_handler(ModelLoadFailed)
    async def model_load_failed(request: Request, exc: ModelLoadFailed):
        return error(500, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return error(404, str(exc))

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(500, str(exc))

    @app.exception_handler(DictionaryError)
    async def dictionary_error(request: Request, exc: DictionaryError):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(500, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Logged with its traceback here; the client only learns that something went wrong.
        log.exception("Unexpected error in %s %s", request.method, request.url.path)
        return error(500, f"Internal server error ({type(exc).__name__}); the server log has the details.")


app = create_app()
