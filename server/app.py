"""FastAPI server of the feature viewer: the API of server/API.md, plus the built UI.

    python -m server                           # builds the UI if needed, serves both on port 24577
    uvicorn server.app:app --port 24577        # the same app, from the repository root

Settings come from `GPT2DICT_*` environment variables or `.env` (see server/settings.py and
server/.env.example). `create_app` assembles the app: the state the endpoints share
(server/state.py), one router per area of the API (server/routes/), the middleware and the error
handlers. Runs, dictionaries and analyses are discovered by scanning the results folder on every
request (server/results.py, server/runs.py); custom text and steering run the dictionary's model on
demand (server/inference.py); nearest features compare cached, normalized decoders
(server/directions.py); labels are written to each dictionary's annotations file
(core/annotations.py). Browsing, search and label endpoints are plain `def`s so FastAPI runs them
in its threadpool: SQLite work never blocks the event loop; custom text and steering are `async`
(server/routes/inference.py). Before any endpoint, middleware (server/guards.py) checks the Host
header and caps the body.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.annotations import AnnotationConflict, AnnotationError
from core.errors import AttributionError, ConfigError, GraphFileError
from core.store import FeatureUnavailable, StoreError

from .guards import BodyLimit, HostCheck
from .inference import InferenceBusy, ModelLoadFailed
from .results import DictionaryError, NotFound
from .routes import annotations, compare, dictionaries, explanations, graphs, inference, replacement, runs, search, ui
from .settings import Settings
from .state import ServerState

log = logging.getLogger("server")

AREA_ROUTERS = (dictionaries.router, search.router, annotations.router, inference.router, graphs.router, runs.router,
                replacement.router, explanations.router, compare.router)
"""One router per area of the API (server/routes/); a new area (explanations, attribution graphs,
evaluations / comparison) adds its module's router here. The catch-alls of `ui.router` come last."""


def inference_threads(setting: int) -> int:
    """torch threads for custom text: the setting, or (0) one less than the usable cores, at least 1."""
    if setting:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for `settings` (default: read from the environment and `.env`)."""
    state = ServerState.of(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # torch's intra-op threads are per process: leave a core to the threads that answer browsing.
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(inference_threads(state.settings.inference_threads))
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)
            state.results.close()
            state.explainer.close()

    app = FastAPI(title="GPT-2 Dictionary feature viewer",
                  description="Browse the dictionaries (sparse autoencoders) and analyses of a results folder. "
                              "See server/API.md.",
                  version="1", lifespan=lifespan)
    app.state.server = state
    # The last added runs first: Host check, then the body cap, then CORS.
    app.add_middleware(CORSMiddleware, allow_origins=state.settings.cors_origin_list,
                       allow_methods=["GET", "POST", "PUT"], allow_headers=["*"])
    app.add_middleware(BodyLimit, max_bytes=state.settings.max_body_bytes)
    app.add_middleware(HostCheck, allowed_hosts=state.settings.allowed_host_list)
    _install_error_handlers(app)
    for router in (*AREA_ROUTERS, ui.router):
        app.include_router(router)
    return app


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
                                 (AttributionError, 422, False), (GraphFileError, 422, False), (ConfigError, 422, False),
                                 (StoreError, 500, True), (DictionaryError, 500, True), (AnnotationError, 500, True)):
        app.add_exception_handler(kind, answer(status, logged))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Logged with its traceback here; the client only learns that something went wrong.
        log.exception("Unexpected error in %s %s", request.method, request.url.path)
        return error(500, f"Internal server error ({type(exc).__name__}); the server log has the details.")


app = create_app()
