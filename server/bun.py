"""Finding bun, the UI's package manager and runner, and installing it when it is missing.

`find_bun(install=True)` answers the bun on PATH, else the project-local one in `ui/.tools/`, else
installs bun from the npm registry into `ui/.tools/` (`npm install --prefix ui/.tools bun@VERSION`:
the npm package brings the platform's bun binary) and answers that. So `python -m server` builds
the viewer on a machine that has Node.js and npm but has never seen bun, without a global install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

UI = Path(__file__).resolve().parents[1] / "ui"
TOOLS = UI / ".tools"
"""Where bun is installed when it is missing (git-ignored)."""
BUN_VERSION = "1.4.5"
"""The bun installed into TOOLS (the version the UI's bun.lock was written with)."""


class BunMissing(RuntimeError):
    """bun is not installed and cannot be installed here; the message says what to install."""


def local_bun(tools: Path = TOOLS) -> Path:
    return tools / "node_modules" / ".bin" / "bun"


def _works(bun: str | Path) -> bool:
    try:
        return subprocess.run([str(bun), "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def find_bun(*, install: bool = False, tools: Path = TOOLS) -> str | None:
    """The bun to use: on PATH, else in `tools`; with `install`, installed into `tools` with npm when
    neither exists (BunMissing when npm is missing too or the install fails)."""
    on_path = shutil.which("bun")
    if on_path:
        return on_path
    local = local_bun(tools)
    if local.exists() and _works(local):
        return str(local)
    if not install:
        return None
    npm = shutil.which("npm")
    if npm is None:
        raise BunMissing("The viewer is built with bun, which is not installed, and npm (to install it) is not either: "
                         "install Node.js (which brings npm) or bun (https://bun.sh), then run this again.")
    print(f"bun is not installed: installing bun {BUN_VERSION} into {tools} with npm (once)...", file=sys.stderr)
    tools.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "install", "--prefix", str(tools), "--no-audit", "--no-fund", "--loglevel=error",
                           f"bun@{BUN_VERSION}"], stdout=sys.stderr)
    if done.returncode != 0 or not _works(local):
        raise BunMissing(f"Installing bun with `npm install --prefix {tools} bun@{BUN_VERSION}` failed (see above); "
                         "install bun yourself (`npm install -g bun` or https://bun.sh) and run this again.")
    return str(local)
