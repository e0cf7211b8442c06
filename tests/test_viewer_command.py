"""`python -m server` on a fresh checkout: no bun, no ui/node_modules, no ui/dist.

A copy of the repository's `core/`, `server/` and `ui/` sources (without any installed or built
UI) is started with this machine's PATH minus bun, as on a fresh machine after the README's main
command (Node.js and npm are there). The server must install bun itself (npm, into ui/.tools/),
build the UI and serve it with the API on one port. This needs the npm registry (or npm's and
bun's caches), as the README's main command does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.server_helpers import DICT, free_port, server_process

SOURCE_IGNORED = shutil.ignore_patterns("node_modules", "dist", ".tools", "screenshots", "test-results", "__pycache__",
                                        "*.pyc")


def fresh_checkout(root: Path) -> Path:
    for part in ("core", "server", "ui"):
        shutil.copytree(ROOT / part, root / part, ignore=SOURCE_IGNORED)
    return root


def path_without(folder: Path, *missing: str) -> str:
    """This machine's PATH with the programs `missing` (and bun, always) taken out: every PATH folder
    holding one of them is replaced by a folder of links to all its other programs."""
    hidden = {"bun", "bunx", *missing}
    parts = []
    for i, entry in enumerate(os.environ["PATH"].split(os.pathsep)):
        here = Path(entry)
        if not here.is_dir() or not any((here / name).exists() for name in hidden):
            parts.append(entry)
            continue
        shadow = folder / f"path{i}"
        shadow.mkdir(parents=True)
        for program in here.iterdir():
            if program.name not in hidden:
                (shadow / program.name).symlink_to(program)
        parts.append(str(shadow))
    path = os.pathsep.join(parts)
    for name in hidden:
        assert shutil.which(name, path=path) is None, name
    return path


def test_python_m_server_installs_bun_builds_and_serves_the_viewer(results_copy, tmp_path):
    checkout = fresh_checkout(tmp_path / "checkout")
    path = path_without(tmp_path / "bin")
    if shutil.which("npm", path=path) is None:
        pytest.fail("npm is not installed; install Node.js with npm (`apt-get install nodejs npm`).")
    port, log = free_port(), tmp_path / "server.log"
    settings = {"GPT2DICT_UI_DIST": str(checkout / "ui" / "dist")}
    with server_process(["-m", "server", "--port", str(port)], f"http://127.0.0.1:{port}", results_copy, settings,
                        log=log, cwd=checkout, path=path, startup_s=600) as base:
        printed = log.read_text()
        assert "bun is not installed: installing bun" in printed and "Building the viewer" in printed, printed[-2000:]
        assert (checkout / "ui" / ".tools" / "node_modules" / ".bin" / "bun").exists()
        page = httpx.get(f"{base}/dictionaries/{DICT}", timeout=10)  # a client-side route: the built index.html
        assert page.status_code == 200 and 'id="root"' in page.text
        script = next(line for line in page.text.split('"') if line.startswith("/assets/") and line.endswith(".js"))
        assert httpx.get(f"{base}{script}", timeout=10).status_code == 200
        assert httpx.get(f"{base}/api/dictionaries", timeout=10).json()["dictionaries"][0]["name"] == DICT
    # Started again, the local bun and the build are found: nothing is installed or built twice.
    with server_process(["-m", "server", "--port", str(port)], f"http://127.0.0.1:{port}", results_copy, settings,
                        log=log, cwd=checkout, path=path) as base:
        assert "installing bun" not in log.read_text() and "Building" not in log.read_text()
        assert 'id="root"' in httpx.get(f"{base}/", timeout=10).text


def test_without_bun_or_npm_the_api_is_served_with_what_to_install(results_copy, tmp_path):
    checkout = fresh_checkout(tmp_path / "checkout")
    path = path_without(tmp_path / "bin", "npm")
    port, log = free_port(), tmp_path / "server.log"
    with server_process(["-m", "server", "--port", str(port)], f"http://127.0.0.1:{port}", results_copy,
                        {"GPT2DICT_UI_DIST": str(checkout / "ui" / "dist")}, log=log, cwd=checkout, path=path) as base:
        assert "install Node.js" in log.read_text() and "Serving the API only" in log.read_text()
        assert httpx.get(f"{base}/api/health", timeout=10).status_code == 200
        assert "bun run build" in httpx.get(f"{base}/", timeout=10).text  # the page that says how to build it
    assert os.path.exists(checkout / "ui" / "package.json") and not (checkout / "ui" / "dist").exists()
