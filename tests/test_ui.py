"""The viewer's own test suites, run from pytest so one command tests everything.

- `bun run test`: Vitest component tests (token highlighting, page states).
- `bun run test:e2e`: headless Debian Chromium (playwright-core) driving the built UI served by a
  real uvicorn process over a real feature store built by the analyzer from the tiny GPT-2 with real
  explanations and scores, a real sweep run of three dictionaries trained on it and evaluated
  (search, steering, labels, run and compare pages), a cross-layer transcoder and a transcoder set
  trained and analyzed on it, a replacement model with a saved attribution graph (the graph page),
  and a dictionary imported from a folder written by SAELens (its provenance). The server's explainer is a real OpenAI-compatible HTTP server that answers as a
  reader of tokens (`tests.autointerp_helpers.token_reader`), so "explain this feature" takes seconds.

They need bun and /usr/bin/chromium (`.ci/run` installs both); without them the tests fail with
the install command rather than skipping, since a skipped viewer test proves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core import import_dictionary

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "ui"
FOREIGN = ROOT / "tests" / "data" / "foreign"
IMPORTED = "imported:topk_e2e"  # the viewer's id of the SAELens fixture once imported


def _bun() -> str:
    bun = shutil.which("bun")
    if bun is None:
        pytest.fail("bun is not installed; run `npm install -g bun` (or `bash .ci/run`).")
    return bun


def _run(args: list[str], *, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=UI, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def ui_dependencies():
    bun = _bun()
    if not (UI / "node_modules" / ".bin" / "vite").exists():
        _run([bun, "install", "--frozen-lockfile"])
    return bun


@pytest.fixture(scope="module")
def built_ui(ui_dependencies):
    _run([ui_dependencies, "run", "build"])
    assert (UI / "dist" / "index.html").is_file()
    return UI / "dist"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def viewer_results(tiny_analysis, tiny_results_dir, tiny_explanations, evaluated_sweep, replacement_run, graph_run,
                   tmp_path_factory) -> Path:
    """The tiny run with its analysis and explanations, the evaluated sweep run, the replacement models and a
    replacement model with a saved attribution graph, copied: the browser writes labels, explanations and
    subgraphs there."""
    from tests.server_helpers import GRAPH_RUN, REPLACEMENT_RUN, RUN, SWEEP_RUN, analyses_folder

    results = tmp_path_factory.mktemp("viewer-results")
    shutil.copytree(tiny_results_dir / RUN, results / RUN, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copy(tiny_explanations, analyses_folder(results) / tiny_analysis.name / "explanations.sqlite")
    shutil.copytree(evaluated_sweep, results / SWEEP_RUN, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(replacement_run, results / REPLACEMENT_RUN, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(graph_run, results / GRAPH_RUN)
    # and a dictionary imported from a folder SAELens wrote, which the viewer shows with its provenance
    import_dictionary(FOREIGN / "saelens" / "topk_e2e", results)
    return results


@pytest.fixture(scope="module")
def explainer_url():
    """A real OpenAI-compatible server answering as a reader of tokens: the viewer's explainer."""
    from tests.autointerp_helpers import MisbehavingServer, token_reader

    server = MisbehavingServer(token_reader)
    yield server.base_url
    server.close()


@pytest.fixture(scope="module")
def viewer_url(built_ui, viewer_results, explainer_url, tmp_path_factory):
    port = _free_port()
    log = (tmp_path_factory.mktemp("viewer") / "uvicorn.log").open("w")
    env = {**os.environ, "GPT2DICT_RESULTS_DIR": str(viewer_results), "GPT2DICT_UI_DIST": str(built_ui),
           "GPT2DICT_STEER_MAX_NEW_TOKENS": "16", "GPT2DICT_EXPLAIN_BACKEND": "openai",
           "GPT2DICT_EXPLAIN_BASE_URL": explainer_url, "GPT2DICT_EXPLAIN_MODEL": "token-reader",
           "GPT2DICT_EXPLAIN_PROBABILITIES": "none"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "server.app:app", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail(f"uvicorn did not start on {url}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _vitest(bun: str, script: str, report: Path, *, env: dict | None = None) -> dict:
    """Run the Vitest suite of `bun run <script>` and return its JSON report (the reporter's own count of
    what passed, failed and was skipped, per file and per test)."""
    _run([bun, "run", script, "--reporter=default", "--reporter=json", f"--outputFile.json={report}"], env=env)
    return json.loads(report.read_text())


def _assert_all_passed(report: dict, files: set[str]) -> None:
    """Every test of every file in `files` ran and passed: none failed, none was skipped or left to do."""
    outcomes = {(Path(f["name"]).name, t["fullName"]): t["status"] for f in report["testResults"]
                for t in f["assertionResults"]}
    not_passed = {test: status for test, status in outcomes.items() if status != "passed"}
    assert not not_passed, f"Vitest tests that did not pass: {not_passed}"
    assert report["numFailedTests"] == report["numPendingTests"] == report["numTodoTests"] == 0, report
    assert report["numTotalTests"] == report["numPassedTests"] == len(outcomes) > 0
    assert {name for name, _ in outcomes} == files


def test_ui_component_tests(ui_dependencies, tmp_path):
    report = _vitest(ui_dependencies, "test", tmp_path / "vitest.json")
    files = {p.name for p in (UI / "src").rglob("*.test.ts*")}
    _assert_all_passed(report, files)


def test_ui_end_to_end_in_headless_chromium(ui_dependencies, viewer_url, tiny_analysis, tmp_path):
    if not Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")).exists():
        pytest.fail("Chromium is missing; install it with `apt-get install -y chromium` (or `bash .ci/run`).")
    from tests.server_helpers import CLT_DICT, DICT, GRAPH_DICT, GRAPH_SLUG, SWEEP_RUN

    dictionary = DICT  # the server's id of the tiny dictionary: <run>:<dictionary name>
    started = time.time()
    report = _vitest(ui_dependencies, "test:e2e", tmp_path / "e2e.json", env={
        "VIEWER_URL": viewer_url, "E2E_DICTIONARY": dictionary, "E2E_ANALYSIS": tiny_analysis.name,
        "E2E_SWEEP_RUN": SWEEP_RUN, "E2E_IMPORTED": IMPORTED, "E2E_REPLACEMENT": CLT_DICT,
        "E2E_GRAPH_DICTIONARY": GRAPH_DICT, "E2E_GRAPH": GRAPH_SLUG})
    _assert_all_passed(report, {"insights.e2e.test.ts", "research.e2e.test.ts", "viewer.e2e.test.ts",
                                "graphs.e2e.test.ts"})
    saved = {p.name for p in (UI / "screenshots").glob("*.png") if p.stat().st_mtime >= started}
    assert {"feature-desktop.png", "run-desktop.png", "steering-desktop.png", "compare-desktop.png",
            "feature-explanation-desktop.png", "replacement-feature-desktop.png", "graph-desktop.png",
            "graph-intervention-desktop.png"} <= saved, \
        f"the e2e run did not save its screenshots (this run saved: {sorted(saved)})"
