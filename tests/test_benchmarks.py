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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
NUMBER = r"[-+]?[\d,]*\.?\d+"

EVALUATIONS = ("core", "absorption", "sparse_probing")
FIGURES: dict[str, list[str | tuple[str, int]]] = {
    "activation_throughput.py": [rf"\(a\) raw truncated forward\s+{NUMBER} tokens/s",
                                 rf"\(b\) activation generation\s+{NUMBER} tokens/s", rf"ratio \(b\)/\(a\)\s+{NUMBER}"],
    "analysis_throughput.py": [rf"\(c\) analyzer \(streaming loop\)\s+{NUMBER} tokens/s",
                               rf"analyzer overhead over the forward: {NUMBER}%",
                               rf"writing the store {NUMBER} s"],
    "attribution.py": [rf"attribution\s+{NUMBER} s\s+\d+ backward passes\s+\d+ active features",
                       r"agreement: the same \d+ feature nodes, largest edge difference"],
    "autointerp.py": [r"local, batched \(4\) .* features/min",
                      rf"batching gain: {NUMBER}x; with the shared-prefix cache: {NUMBER}x"],
    "autointerp_quality.py": [rf"detection\s+balanced_accuracy\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}",
                              rf"fuzzing\s+auroc\s+{NUMBER}", r"pooled control\s+fuzzing\s+balanced accuracy"],
    "evaluations.py": [*(rf"(?m)^1\. {name}: " for name in EVALUATIONS),
                       *(rf"(?m)^2\. {name}: .* x one dictionary \(target <= 2\.2" for name in EVALUATIONS),
                       (r"(?m)^3\. width ", 2), r"(?m)^4\. synthetic: "],
    "gpu_check.py": [r"1\. correctness on cpu: .* \(OK\)", rf"ratio {NUMBER} \(target >= 0\.8\)",
                     rf"one pass is {NUMBER}x faster"],
    "resume_time.py": [rf"resume time 2x / 1x tokens: {NUMBER}", rf"replay baseline 2x / 1x tokens: {NUMBER}"],
    "sae_step.py": [rf"dense product x @ W_enc\s+{NUMBER} ms", rf"sparse step\s+{NUMBER} ms .* = \s*{NUMBER}x the product",
                    rf"dense step\s+{NUMBER} ms", r"matryoshka_batchtopk", rf"numba scatter kernel {NUMBER} ms"],
    "server_latency.py": [rf"feature\s+n=\s*10\s+p50\s+{NUMBER} ms", r"token search\s+n=\s*10\s+p50",
                          r"similar, other dictionary\s+n=\s*10", r"label search\s+n=\s*10",
                          rf"answer size of one feature: {NUMBER} KiB"],
    "server_load.py": [rf"browsing alone\s+\d+ answers\s+p50\s+{NUMBER} ms", rf"inference throughput: {NUMBER} requests/s",
                       rf"browsing p95 under load {NUMBER} ms", r"answers other than 200/503: 0 ",
                       r"health afterwards: 200"],
    "steering_latency.py": [re.escape(line) for line in ("steer (KV cache)", "HF generate, 1 row", "HF generate, 2 rows",
                                                         "full recompute", "API request")],
    "sweep_throughput.py": [rf"4 values of k .* one pass is {NUMBER}x faster",
                            rf"4 hooks .* one pass is {NUMBER}x faster"],
    "training_throughput.py": [rf"\(b\)/\(a\) = {NUMBER}", rf"\(c\)/\(a\) = {NUMBER}", rf"\(d\)/\(b\) = {NUMBER}"],
}
"""Per script, what its smoke run must print: a regular expression found at least once, or
(expression, n) found exactly n times."""
HELPERS = {"__init__.py", "memory.py", "smoke.py", "timing.py"}
SLOWEST = ("gpu_check.py", "sweep_throughput.py", "evaluations.py", "autointerp.py")
"""Started first, so that the two workers finish together."""


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - HELPERS
    assert scripts == set(FIGURES)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every script's smoke run, two at a time, each in its own process and working folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    # Made here, not in the threads: pytest's first mktemp of a session creates the session's folder
    # (and prunes old ones), which two threads at once would do twice.
    folders = {script: tmp_path_factory.mktemp(script.removesuffix(".py")) for script in FIGURES}

    def run(script: str) -> subprocess.CompletedProcess:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], env=env, capture_output=True,
                              text=True, timeout=600, cwd=folders[script])
        print(f"{script} --smoke: {time.perf_counter() - started:.0f} s")  # shown by pytest -s
        return done

    slowest_first = sorted(FIGURES, key=lambda script: script not in SLOWEST)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(slowest_first, pool.map(run, slowest_first)))


@pytest.mark.parametrize("script", sorted(FIGURES))
def test_benchmark_smoke_run_prints_its_figures(script, smoke_runs):
    done = smoke_runs[script]
    assert done.returncode == 0, f"{script} --smoke failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    for figure in FIGURES[script]:
        pattern, times = figure if isinstance(figure, tuple) else (figure, None)
        found = len(re.findall(pattern, done.stdout))
        assert found == times if times is not None else found > 0, \
            f"{script} --smoke printed /{pattern}/ {found} times:\n{done.stdout[-4000:]}"
