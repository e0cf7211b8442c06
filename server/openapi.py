"""The UI's API types, generated from the server's OpenAPI schema: one contract for both sides.

    python -m server.openapi              # rewrites ui/src/api-schema.ts; commit it with the change
    python -m server.openapi --check      # exits 1 when ui/src/api-schema.ts is out of date
    python -m server.openapi --schema openapi.json   # writes the OpenAPI schema itself (JSON)

The schema is FastAPI's (from the feature store's records in core/store.py, the models in
server/schemas.py and the endpoints in server/routes/); `openapi-typescript` (the npm package,
pinned in ui/api-types/, a bun project of its own because it needs TypeScript 5's compiler API
while the app is on TypeScript 7) turns it into TypeScript types, which ui/src/api.ts imports.
tests/test_server_research.py regenerates the file and fails when the committed one differs, so a
server change cannot silently drift from the UI.
"""

from __future__ import annotations

import argparse
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


def is_current(committed: Path = TYPES) -> bool:
    """Whether `committed` is what `generate_types` writes for the server as it is now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate_types(Path(tmp) / committed.name)
        return committed.is_file() and committed.read_text() == fresh.read_text()


STALE = f"{TYPES.relative_to(UI.parent)} is out of date: run `python -m server.openapi` and commit the result."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.openapi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=TYPES, help="where to write the TypeScript types "
                        f"(default: {TYPES.relative_to(UI.parent)})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the types at --output "
                        "differ from what the server's schema gives")
    parser.add_argument("--schema", type=Path, metavar="JSON", help="write the OpenAPI schema to this file instead")
    args = parser.parse_args(argv)
    if args.schema:
        args.schema.write_text(json.dumps(openapi_schema(), indent=1, sort_keys=True) + "\n")
        print(f"Wrote {args.schema}", file=sys.stderr)
    elif args.check:
        if not is_current(args.output):
            print(STALE if args.output == TYPES else f"{args.output} is out of date.", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date.", file=sys.stderr)
    else:
        print(f"Wrote {generate_types(args.output)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
