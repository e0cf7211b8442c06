"""The catch-alls, included after every area's router: 404 for an unknown /api path, and the built
UI (a file of ui/dist, or index.html for the UI's own routes, or a hint when it is not built)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

from ..state import Server

router = APIRouter()


@router.api_route("/api/{rest:path}", methods=["GET", "HEAD"], include_in_schema=False)
def unknown_api(rest: str):
    raise HTTPException(404, f"There is no API endpoint /api/{rest}; see /docs for the endpoints.")


@router.api_route("/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
def ui(path: str, state: Server):
    return _ui_response(Path(state.settings.ui_dist), path)


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
