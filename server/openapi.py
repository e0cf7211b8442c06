"""The UI's API types, generated from the server's OpenAPI schema: one contract for both sides.

    python -m server.openapi              # rewrites ui/src/api-schema.ts; commit it with the change

The schema is FastAPI's (from the Pydantic models in server/schemas.py and the endpoints in
server/app.py); `openapi-typescript` (the npm package, pinned in ui/api-types/, a bun project of
its own because it needs TypeScript 5's compiler API while the app is on TypeScript 7) turns it
into TypeScript types, which ui/src/api.ts imports. tests/test_server_research.py regenerates the file
and fails when the committed one differs, so a server change cannot silently drift from the UI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .bun import UI, find_bun

TYPES = UI / "src" / "api-schema.ts"
GENERATOR = UI / "api-types"


def openapi_schema() -> dict:
    """The OpenAPI schema of the app (independent of settings and of what the results folder holds)."""
    from .app import create_app
    from .settings import Settings

    with tempfile.TemporaryDirectory() as empty:
        return create_app(Settings(_env_file=None, results_dir=Path(empty), ui_dist=Path(empty))).openapi()


def generate_types(out: Path = TYPES) -> Path:
    """Write the TypeScript types of the API schema to `out` with openapi-typescript."""
    bun = find_bun(install=True)
    if not (GENERATOR / "node_modules" / ".bin" / "openapi-typescript").exists():
        subprocess.run([bun, "install", "--frozen-lockfile"], cwd=GENERATOR, check=True, stdout=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        schema = Path(tmp) / "openapi.json"
        schema.write_text(json.dumps(openapi_schema(), indent=1, sort_keys=True))
        # --default-non-nullable false: a field with a default stays optional (a request may leave it out).
        done = subprocess.run([bun, "x", "openapi-typescript", str(schema), "--default-non-nullable", "false",
                               "--output", str(Path(out).absolute())],
                              cwd=GENERATOR, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openapi-typescript failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return Path(out)


if __name__ == "__main__":
    print(f"Wrote {generate_types()}", file=sys.stderr)
