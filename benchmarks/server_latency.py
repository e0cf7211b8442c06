"""Latency of the feature endpoint and of every search over loopback, against a real uvicorn process.

    python benchmarks/server_latency.py [--requests 500] [--concurrency 4]
    python benchmarks/server_latency.py --smoke     # seconds: a tiny synthetic store, 10 requests each

Uses the demo run's analysis (`results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post/
analysis/default`, 4,608 features, written by run_analyze_example.py) when it exists; otherwise
builds a run of the same size in a temporary folder: two top-k dictionaries of 4,608 features on
d_in 576 saved with `SparseAutoencoder.save` (random weights, so the decoders are real files to
load), an analysis of the first written with `FeatureStoreWriter` (20 top + 25 interval samples of
33 tokens per feature, per-feature histograms, a token index of 32 features for each of 49,152
vocabulary tokens, 40,000 of which occurred), and labels on 1,000 of its features. The output
says which.

Measures, each `--requests` times (random arguments):
- GET .../features/<index> sequentially and with `--concurrency` clients (target: p50 < 20 ms);
- token search (GET .../search/tokens?q=<one token>) and phrase search (three tokens);
- nearest features by decoder direction within the dictionary and in the second dictionary
  (GET .../features/<index>/similar; the first request loads and normalizes each decoder);
- label search (GET .../annotations?q=<word>);
and prints p50 / p95 for each (target: search p95 < 100 ms). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
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
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import layout  # noqa: E402
from server.results import ResultsFolder, dictionary_path  # noqa: E402

DEMO_ID = "smollm2-topk-demo:blocks.3.hook_resid_post"
DEMO_RUN = ROOT / "results" / "smollm2-topk-demo"
N_TOP, N_INTERVALS, PER_INTERVAL, WINDOW, N_BINS = 20, 5, 5, 33, 48
D_IN, INDEX_SIZE = 576, 32
WORDS = ["bracket", "import", "date", "number", "quote", "python", "list", "error", "name", "space"]


class StoreSize(NamedTuple):
    d_sae: int
    vocab: int
    occurring_tokens: int
    """Vocabulary tokens that occurred in the analyzed text (the token index has a row for each)."""
    labelled: int
    """Features with a label."""


FULL = StoreSize(d_sae=4608, vocab=49152, occurring_tokens=40_000, labelled=1000)
SMOKE = StoreSize(d_sae=64, vocab=2000, occurring_tokens=1500, labelled=20)


def vocabulary(size: int) -> list[str]:
    return [f"tok{i}" if i % 7 else f" word{i}" for i in range(size)]


def build_store(results_dir: Path, run: str = "synthetic-4608", *, size: StoreSize = FULL,
                seed: int = 0) -> tuple[str, str, Path]:
    """A run `<results_dir>/<run>/` of two dictionaries (`a`, `b`) with the analysis `default` of `a`
    and labels on some of its features (see the module docstring); returns (id of a, id of b, store path)."""
    import numpy as np
    import torch

    from core.annotations import Annotations
    from core.config import SAEConfig
    from core.sae import SparseAutoencoder, create_dictionary
    from core.store import FeatureStoreWriter, SampleArrays

    d_sae, vocab = size.d_sae, size.vocab
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    folders = {}
    for name in ("a", "b"):
        sae = create_dictionary(SAEConfig(architecture="topk", d_sae=d_sae, k=32), D_IN,
                                hook_name="blocks.3.hook_resid_post", model_name="SmolLM2-135M-Instruct")
        folders[name] = sae.save(layout.dictionary_folder(layout.run_folder(results_dir, run), name),
                                 metrics={"l0": 32.0})
    path = layout.store_path(layout.analysis_folder(folders["a"], "default"))
    n_tokens = 200_000
    act_count = rng.integers(0, 5000, d_sae)
    act_count[rng.random(d_sae) < 0.05] = 0
    max_act = np.where(act_count > 0, rng.gamma(2.0, 3.0, d_sae), 0.0)
    hist_edges = [np.geomspace(max(m, 1e-3) / 100, max(m, 1e-3), N_BINS + 1) for m in max_act]
    occurrences = np.zeros(vocab, np.int64)
    occurrences[rng.choice(vocab, size.occurring_tokens, replace=False)] = rng.zipf(1.3, size.occurring_tokens).clip(
        1, 10**6)
    index_ids = rng.integers(0, d_sae, (vocab, INDEX_SIZE)).astype(np.int32)
    index_acts = -np.sort(-rng.gamma(2.0, 2.0, (vocab, INDEX_SIZE)), axis=1)
    with FeatureStoreWriter(path, overwrite=True) as w:
        w.write_vocab(vocabulary(vocab))
        w.set_meta("n_tokens", n_tokens)
        w.write_token_index(occurrences, index_ids, index_acts)
        w.write_features(act_count=act_count, max_act=max_act, mean_act=max_act / 3, density=act_count / n_tokens,
                         hist_counts=list(rng.integers(0, 100, (d_sae, N_BINS))), hist_edges=hist_edges,
                         logit_pos_ids=rng.integers(0, vocab, (d_sae, 10)), logit_pos_values=rng.random((d_sae, 10)),
                         logit_neg_ids=rng.integers(0, vocab, (d_sae, 10)), logit_neg_values=-rng.random((d_sae, 10)))

        def samples(n: int, top: float) -> list:
            out = []
            for _ in range(n):
                acts = np.where(rng.random(WINDOW) < 0.2, rng.random(WINDOW) * top, 0.0).astype(np.float32)
                acts[24] = top
                out.append(SampleArrays(rng.integers(0, vocab, WINDOW, dtype=np.int32), acts, 24))
            return out

        for f in range(d_sae):
            if act_count[f] == 0:
                continue
            w.write_samples(f, "top", samples(N_TOP, float(max_act[f])))
            for i in range(N_INTERVALS):
                lo, hi = max_act[f] * i / N_INTERVALS, max_act[f] * (i + 1) / N_INTERVALS
                w.write_samples(f, f"interval_{i}", samples(PER_INTERVAL, float(hi)), lower=lo, upper=hi)
    notes = Annotations.of_dictionary(folders["a"], d_sae=d_sae)
    for f in rng.choice(d_sae, size.labelled, replace=False).tolist():
        notes.save(f, label=f"{rng.choice(WORDS)} {rng.choice(WORDS)} {f}", notes=f"seen near {rng.choice(WORDS)}",
                   bookmarked=bool(f % 3 == 0), version=0)
    return f"{run}:a", f"{run}:b", path


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
    print(f"{label:<28} n={len(ms):4d}  p50 {statistics.median(ms):6.2f} ms  p95 {p95:6.2f} ms  "
          f"max {ms[-1]:6.2f} ms  {len(ms) / wall:7.1f} req/s")


async def run_clients(base: str, paths: list, concurrency: int) -> tuple[list[float], float]:
    """GET base + each of `paths` (strings, or (path, params) pairs) with `concurrency` clients."""
    import httpx

    latencies: list[float] = []
    queue = list(paths)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        async def worker():
            while queue:
                path, params = (queue.pop(), None) if not isinstance(queue[-1], tuple) else queue.pop()
                t0 = time.perf_counter()
                r = await client.get(f"{path}", params=params)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{path} {params}: HTTP {r.status_code} {r.text[:200]}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help=f"seconds: a synthetic store of {SMOKE.d_sae} features "
                        f"and {SMOKE.vocab:,} tokens, 10 requests each")
    args = parser.parse_args()
    import httpx

    tmp = None
    size = SMOKE if args.smoke else FULL
    if args.smoke:
        args.requests, args.warmup = 10, 2
    demo_store = layout.store_path(layout.analysis_folder(dictionary_path(DEMO_RUN.parent, DEMO_ID), "default"))
    if demo_store.is_file() and not args.smoke:
        results_dir, name, other = DEMO_RUN.parent, DEMO_ID, None
        print(f"store: {demo_store} (the demo run's analysis; one dictionary, so no cross-dictionary search)")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="server-latency-"))
        t0 = time.perf_counter()
        name, other, path = build_store(tmp, size=size)
        results_dir = tmp
        print(f"store: synthetic, built in {time.perf_counter() - t0:.1f} s at {path} "
              f"({path.stat().st_size / 2**20:.0f} MiB; {size.d_sae} features, {N_TOP} top + "
              f"{N_INTERVALS * PER_INTERVAL} interval samples of {WINDOW} tokens, vocab {size.vocab} with a token "
              f"index of {INDEX_SIZE} features per token, {size.labelled} labels; a second dictionary of the same "
              "hook)")
    port = free_port()
    proc = start_server(results_dir, port)
    try:
        base = f"http://127.0.0.1:{port}/api/dictionaries/{name}"
        analysis = f"{base}/analyses/default"
        d_sae = httpx.get(f"{analysis}/features/0").json()["d_sae"]
        rng = random.Random(0)
        tokens = frequent_tokens(results_dir, name)
        warm = [f"{analysis}/features/{rng.randrange(d_sae)}" for _ in range(args.warmup)]
        warm += [(f"{base}/features/0/similar", {"dictionary": d}) for d in filter(None, (None, other))]
        asyncio.run(run_clients("", warm, 1))  # also loads and normalizes the decoders once
        print(f"{args.requests} requests each, loopback, uvicorn, 1 worker; p50 / p95 / max")
        n = args.requests
        feature = [f"{analysis}/features/{rng.randrange(d_sae)}" for _ in range(n)]
        for concurrency in (1, args.concurrency):
            latencies, wall = asyncio.run(run_clients("", feature, concurrency))
            report("feature" + ("" if concurrency == 1 else f" x{concurrency} clients"), latencies, wall)
        searches = {
            "token search": [(f"{analysis}/search/tokens", {"q": rng.choice(tokens)}) for _ in range(n)],
            "phrase search (3 tokens)": [(f"{analysis}/search/tokens", {"q": "".join(rng.sample(tokens, 3))})
                                         for _ in range(n)],
            "similar, same dictionary": [(f"{base}/features/{rng.randrange(d_sae)}/similar", None) for _ in range(n)],
            "label search": [(f"{base}/annotations", {"q": rng.choice(WORDS)}) for _ in range(n)],
        }
        if other:
            searches["similar, other dictionary"] = [(f"{base}/features/{rng.randrange(d_sae)}/similar",
                                                      {"dictionary": other}) for _ in range(n)]
        for label, requests in searches.items():
            latencies, wall = asyncio.run(run_clients("", requests, 1))
            report(label, latencies, wall)
        size = len(httpx.get(feature[0]).content)
        print(f"answer size of one feature: {size / 1024:.0f} KiB")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def frequent_tokens(results_dir: Path, name: str, n: int = 500) -> list[str]:
    """Strings of the n most frequent tokens of the analysis (what people search for)."""
    store = ResultsFolder(results_dir).store(name, "default")
    rows = store.query("SELECT token_id FROM token_index ORDER BY occurrences DESC LIMIT ?", (n,))
    return [t for t in store.decode(r[0] for r in rows) if t]


if __name__ == "__main__":
    main()
