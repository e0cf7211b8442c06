"""Every benchmark still runs: each script's `--smoke` mode (tiny sizes, the tiny GPT-2, seconds)
runs as its own process, exits 0 and prints its figures. No timing is asserted; the figures of a
smoke run mean nothing, only that the benchmark can still produce them (benchmarks/smoke.py).

The scripts run two at a time, each on one thread (much of a run is importing and loading, on one
core), so the module takes about as long as half of them one after the other.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
NUMBER = r"[-+]?[\d,]*\.?\d+"

FIGURES = {
    "activation_throughput.py": [rf"\(a\) raw truncated forward\s+{NUMBER} tokens/s",
                                 rf"\(b\) activation generation\s+{NUMBER} tokens/s", rf"ratio \(b\)/\(a\)\s+{NUMBER}"],
    "analysis_throughput.py": [rf"\(c\) analyzer \(streaming loop\)\s+{NUMBER} tokens/s",
                               rf"analyzer overhead over the forward: {NUMBER}%",
                               rf"writing the store {NUMBER} s"],
    "gpu_check.py": [r"1\. correctness on cpu: .* \(OK\)", rf"ratio {NUMBER} \(target >= 0\.8\)",
                     rf"one pass is {NUMBER}x faster"],
    "resume_time.py": [rf"resume time 2x / 1x tokens: {NUMBER}", rf"replay baseline 2x / 1x tokens: {NUMBER}"],
    "sae_step.py": [rf"dense product x @ W_enc\s+{NUMBER} ms", rf"sparse step\s+{NUMBER} ms .* = \s*{NUMBER}x the product",
                    rf"dense step\s+{NUMBER} ms", r"matryoshka_batchtopk", rf"numba scatter kernel {NUMBER} ms"],
    "server_latency.py": [rf"feature\s+n=\s*10\s+p50\s+{NUMBER} ms", rf"token search\s+n=\s*10\s+p50",
                          rf"similar, other dictionary\s+n=\s*10", rf"label search\s+n=\s*10",
                          rf"answer size of one feature: {NUMBER} KiB"],
    "server_load.py": [rf"browsing alone\s+\d+ answers\s+p50\s+{NUMBER} ms", rf"inference throughput: {NUMBER} requests/s",
                       rf"browsing p95 under load {NUMBER} ms", r"answers other than 200/503: 0 ",
                       r"health afterwards: 200"],
    "sweep_throughput.py": [rf"4 values of k .* one pass is {NUMBER}x faster",
                            rf"4 hooks .* one pass is {NUMBER}x faster"],
    "training_throughput.py": [rf"\(b\)/\(a\) = {NUMBER}", rf"\(c\)/\(a\) = {NUMBER}", rf"\(d\)/\(b\) = {NUMBER}"],
}
"""Per script, the lines its smoke run must print (regular expressions)."""
NOT_COVERED = {"steering_latency.py": "its smoke mode comes with the steering KV cache (another branch)"}
HELPERS = {"__init__.py", "smoke.py", "timing.py"}


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - HELPERS
    assert scripts == set(FIGURES) | set(NOT_COVERED)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every script's smoke run, two at a time, each in its own process and working folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}

    def run(script: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], env=env, capture_output=True,
                              text=True, timeout=600, cwd=tmp_path_factory.mktemp(script.removesuffix(".py")))

    slowest_first = sorted(FIGURES, key=lambda script: script not in ("gpu_check.py", "sweep_throughput.py"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(slowest_first, pool.map(run, slowest_first)))


@pytest.mark.parametrize("script", sorted(FIGURES))
def test_benchmark_smoke_run_prints_its_figures(script, smoke_runs):
    done = smoke_runs[script]
    assert done.returncode == 0, f"{script} --smoke failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    for figure in FIGURES[script]:
        assert re.search(figure, done.stdout), f"{script} --smoke did not print /{figure}/:\n{done.stdout[-4000:]}"
