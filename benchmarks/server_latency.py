"""Latency of the feature endpoint over loopback, against a real uvicorn process.

    python benchmarks/server_latency.py [--requests 500] [--concurrency 4] [--store PATH]

Uses the analysis `results/smollm2-topk-demo/analysis/default` when it exists (the demo run's
4,608 features); otherwise builds a store of the same size with `FeatureStoreWriter` in a temporary
folder: 20 top + 25 interval samples (5 intervals x 5) of 33 tokens per feature, a 49,152-token
vocabulary, float32 sample activations as the analyzer writes them. The output says which.

Measures GET /api/dictionaries/<name>/analyses/<analysis>/features/<random index> sequentially and
with a few concurrent clients; prints p50 / p95 latency and requests/s (target: p50 < 20 ms).
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "results" / "smollm2-topk-demo"
D_SAE, VOCAB, N_TOP, N_INTERVALS, PER_INTERVAL, WINDOW, N_BINS = 4608, 49152, 20, 5, 5, 33, 48


def build_store(results_dir: Path, name: str = "synthetic-4608", *, d_sae: int = D_SAE, seed: int = 0) -> Path:
    """A results folder entry `<results_dir>/<name>` with a dictionary config and a realistic
    analysis `default` of `d_sae` features; returns the store path."""
    import numpy as np

    from core.store import FeatureStoreWriter, SampleArrays

    rng = np.random.default_rng(seed)
    run = results_dir / name
    (run / "dictionary").mkdir(parents=True, exist_ok=True)
    (run / "dictionary" / "config.json").write_text(json.dumps({
        "format_version": 1, "architecture": "topk", "d_in": 576, "d_sae": d_sae,
        "hook_name": "blocks.3.hook_resid_post", "model_name": "SmolLM2-135M-Instruct",
        "sae": {"architecture": "topk", "d_sae": d_sae, "k": 32}, "metrics": {"l0": 32.0}}))
    path = run / "analysis" / "default" / "features.sqlite"
    n_tokens = 200_000
    act_count = rng.integers(0, 5000, d_sae)
    act_count[rng.random(d_sae) < 0.05] = 0
    max_act = np.where(act_count > 0, rng.gamma(2.0, 3.0, d_sae), 0.0)
    with FeatureStoreWriter(path, overwrite=True) as w:
        w.write_vocab([f"tok{i}" if i % 7 else f" word{i}" for i in range(VOCAB)])
        w.set_meta("n_tokens", n_tokens)
        w.set_meta("histogram_edges", np.linspace(0, 30, N_BINS + 1).tolist())
        w.write_features(act_count=act_count, max_act=max_act, mean_act=max_act / 3, density=act_count / n_tokens,
                         hist_counts=rng.integers(0, 100, (d_sae, N_BINS)),
                         logit_pos_ids=rng.integers(0, VOCAB, (d_sae, 10)), logit_pos_values=rng.random((d_sae, 10)),
                         logit_neg_ids=rng.integers(0, VOCAB, (d_sae, 10)), logit_neg_values=-rng.random((d_sae, 10)))

        def samples(n: int, top: float) -> list:
            out = []
            for _ in range(n):
                acts = np.where(rng.random(WINDOW) < 0.2, rng.random(WINDOW) * top, 0.0).astype(np.float32)
                acts[24] = top
                out.append(SampleArrays(rng.integers(0, VOCAB, WINDOW, dtype=np.int32), acts, 24))
            return out

        for f in range(d_sae):
            if act_count[f] == 0:
                continue
            w.write_samples(f, "top", samples(N_TOP, float(max_act[f])))
            for i in range(N_INTERVALS):
                lo, hi = max_act[f] * i / N_INTERVALS, max_act[f] * (i + 1) / N_INTERVALS
                w.write_samples(f, f"interval_{i}", samples(PER_INTERVAL, float(hi)), lower=lo, upper=hi)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(results_dir: Path, port: int, settings: dict[str, str] | None = None) -> subprocess.Popen:
    """uvicorn serving `results_dir` on 127.0.0.1:`port`, once it answers /api/health; `settings`
    are extra GPT2DICT_* variables."""
    import httpx

    env = {**os.environ, "GPT2DICT_RESULTS_DIR": str(results_dir), "GPT2DICT_UI_DIST": str(results_dir / "no-ui"),
           **(settings or {})}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "server.app:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("uvicorn did not answer /api/health within 60 s")


def report(label: str, latencies: list[float], wall: float) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    print(f"{label:<24} n={len(ms):4d}  p50 {statistics.median(ms):6.2f} ms  p95 {p95:6.2f} ms  "
          f"max {ms[-1]:6.2f} ms  {len(ms) / wall:7.1f} req/s")


async def run_clients(base: str, indices: list[int], concurrency: int) -> tuple[list[float], float]:
    import httpx

    latencies: list[float] = []
    queue = list(indices)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        async def worker():
            while queue:
                index = queue.pop()
                t0 = time.perf_counter()
                r = await client.get(f"{index}")
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"feature {index}: HTTP {r.status_code} {r.text[:200]}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    import httpx

    tmp = None
    if (DEMO / "analysis" / "default" / "features.sqlite").is_file() and (DEMO / "dictionary" / "config.json").is_file():
        results_dir, name = DEMO.parent, DEMO.name
        print(f"store: {DEMO / 'analysis' / 'default' / 'features.sqlite'} (the demo run's analysis)")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="server-latency-"))
        t0 = time.perf_counter()
        path = build_store(tmp)
        results_dir, name = tmp, "synthetic-4608"
        print(f"store: synthetic, built with FeatureStoreWriter in {time.perf_counter() - t0:.1f} s at {path} "
              f"({path.stat().st_size / 2**20:.0f} MiB; {D_SAE} features, {N_TOP} top + "
              f"{N_INTERVALS * PER_INTERVAL} interval samples of {WINDOW} tokens, vocab {VOCAB}, float32 acts)")
    port = free_port()
    proc = start_server(results_dir, port)
    try:
        base = f"http://127.0.0.1:{port}/api/dictionaries/{name}/analyses/default/features/"
        d_sae = httpx.get(f"{base}0").json()["d_sae"]
        rng = random.Random(0)
        asyncio.run(run_clients(base, [rng.randrange(d_sae) for _ in range(args.warmup)], 1))
        print(f"GET {base}<random index>  ({args.requests} requests each, loopback, uvicorn, 1 worker)")
        for concurrency in (1, args.concurrency):
            indices = [rng.randrange(d_sae) for _ in range(args.requests)]
            latencies, wall = asyncio.run(run_clients(base, indices, concurrency))
            report("sequential" if concurrency == 1 else f"concurrency {concurrency}", latencies, wall)
        size = len(httpx.get(f"{base}{indices[0]}").content)
        print(f"answer size of one feature: {size / 1024:.0f} KiB")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
