"""Open the viewer in one command: build the UI if needed, then serve API + UI on one port.

    python -m server                 # http://127.0.0.1:24577
    python -m server --port 8000 --host 0.0.0.0 --no-build

Equivalent to `(cd ui && bun install && bun run build) && uvicorn server.app:app --port 24577`;
the build step runs only when `ui/dist` is missing (or with --rebuild) and bun is installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

UI = Path(__file__).resolve().parents[1] / "ui"


def build_ui(force: bool = False) -> bool:
    """Build ui/dist with bun when it is missing; returns whether a built UI exists."""
    if (UI / "dist" / "index.html").is_file() and not force:
        return True
    bun = shutil.which("bun")
    if bun is None:
        print("ui/dist is missing and bun is not installed (`npm install -g bun`); serving the API only.",
              file=sys.stderr)
        return False
    print("Building the viewer (bun install && bun run build, once)...", file=sys.stderr)
    subprocess.run([bun, "install", "--frozen-lockfile"], cwd=UI, check=True)
    subprocess.run([bun, "run", "build"], cwd=UI, check=True)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=24577)
    parser.add_argument("--no-build", action="store_true", help="never build the UI")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the UI even if ui/dist exists")
    args = parser.parse_args()
    if not args.no_build:
        build_ui(force=args.rebuild)
    import uvicorn

    print(f"Viewer: http://{args.host}:{args.port}   (API docs: http://{args.host}:{args.port}/docs)", file=sys.stderr)
    uvicorn.run("server.app:app", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
