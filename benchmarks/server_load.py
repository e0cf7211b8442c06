"""Browsing latency while custom-text inference saturates the server, over loopback.

    python benchmarks/server_load.py                    # 20 s, 32 inference + 8 browsing clients
    python benchmarks/server_load.py --model gpt2-small  # GPT-2 small's compute (random weights)
    python benchmarks/server_load.py --duration 60 --demo   # the demo run, results/smollm2-topk-demo
    python benchmarks/server_load.py --results results --dictionary <run>:<name>   # any analyzed dictionary
    GPT2DICT_INFERENCE_CONCURRENCY=2 python benchmarks/server_load.py   # any GPT2DICT_* setting
    python benchmarks/server_load.py --smoke    # seconds: 2 s of load by 2 + 2 clients (tiny GPT-2)

Starts a real uvicorn process (one worker) and runs, for `--duration` seconds:

- `--inference-clients` clients posting custom text (10 to 120 words) to
  /api/dictionaries/<name>/activations as fast as they are answered; a client turned away with 503
  waits as its Retry-After says (1 s) and sends again. The slots stay saturated: a client that is
  served sends its next text at once. `--retry-delay S` makes the clients wait S seconds instead,
  ignoring Retry-After (a flood of rejected requests, as from a misbehaving client);
- `--browse-clients` clients cycling through the dictionary list, the dictionary, a page of the
  feature list (random sort and offset) and a feature page (random index), each waiting
  `--browse-think` seconds between requests, as a person clicking through the viewer does.

Before that, the browsing clients run alone for `--baseline` seconds: the same measurement without
inference, in the same run. It prints browsing p50 / p95 (target under load: p95 < 100 ms),
inference throughput (requests/s and tokens/s) and the counts of 200 / 503 / other answers
(target: no other).

The dictionary: with `--demo`, the demo run `results/smollm2-topk-demo` (SmolLM2-135M, 4,608
features); otherwise one built in a temporary folder as the tests build theirs: a GPT-2 with
random weights and the real GPT-2 tokenizer, `--model tiny` (2 layers, d_model 64; its inference
is mostly Python overhead, about 10 s to build) or `--model gpt2-small` (GPT-2 small's shape,
hook blocks.6: the compute of the real model; about a minute to build), a top-k dictionary
trained on it by `core.train` (d_sae = 2 x d_model, k = 8) and analyzed by `core.analyze`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_latency import free_port, start_server  # noqa: E402
from core.store import StoreError  # noqa: E402
from server.results import NotFound, ResultsFolder, dictionary_id  # noqa: E402

DEMO = ROOT / "results" / "smollm2-topk-demo"
WORDS = ("the quick brown fox jumps over the lazy dog while a function returns None and the list of "
         "attributes is sorted by name before the module imports its own tests from the standard library "
         "when every value in the dictionary maps a key to an object that was created at run time").split()


MODELS = {
    "tiny": (dict(n_layer=2, n_embd=64, n_head=4, n_positions=256), "blocks.0.hook_resid_post"),
    # GPT-2 small's exact shape (random weights): the compute of real GPT-2 small, up to block 6.
    "gpt2-small": (dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024), "blocks.6.hook_resid_post"),
}


def build_results(folder: Path, model: str) -> tuple[Path, str, str]:
    """A GPT-2 of shape `model` (random weights, the real GPT-2 tokenizer), a top-k dictionary trained
    on it (expansion 2, k 8) and its analysis, in `folder`; (results folder, dictionary id, analysis)."""
    from dataclasses import replace

    from core import LanguageModelConfig, analyze, load_language_model, train
    from tests.conftest import tiny_analysis_config, tiny_training_config
    from tests.tiny_gpt2 import build_tiny_gpt2

    shape, hook = MODELS[model]
    model_dir = build_tiny_gpt2(folder / model, **shape)
    lm = load_language_model(LanguageModelConfig(name=str(model_dir)))
    results = folder / "results"
    cfg = tiny_training_config(model_dir, results, exp_name=f"{model}-topk", steps=40)
    trained = train(replace(cfg, activations=replace(cfg.activations, hook_name=hook)), model=lm)
    analyze(tiny_analysis_config(trained.dictionary_path, model_dir), model=lm)
    return results, dictionary_id(trained.dictionary_path), "default"


def analyzed_dictionary(results: Path, analysis: str, run: str | None = None) -> str:
    """The id of the first dictionary (of `run`, else of any run) in `results` with the analysis `analysis`."""
    folder = ResultsFolder(results)
    for name in folder.run_dictionaries(run) if run else folder.dictionary_names():
        if analysis in folder.analysis_names(name):
            return name
    sys.exit(f"No dictionary {'of ' + str(results / run) if run else 'in ' + str(results)} has an analysis "
             f"{analysis!r}; train and analyze one first (run_train_example.py, run_analyze_example.py).")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.tokens = 0

    def line(self, label: str, seconds: float) -> str:
        ms = [x * 1000 for x in self.latencies] or [float("nan")]
        return (f"{label:<22} {len(self.latencies):6d} answers  p50 {statistics.median(ms):7.1f} ms  "
                f"p95 {percentile(ms, 0.95):7.1f} ms  max {max(ms):7.1f} ms  {len(self.latencies) / seconds:7.1f} /s  "
                f"200: {self.statuses[200]}  503: {self.statuses[503]}  other: "
                f"{sum(n for s, n in self.statuses.items() if s not in (200, 503))}")


async def browse(client, base: str, d_sae: int, analysis: str, tally: Tally, stop: float, think: float,
                 rng: random.Random) -> None:
    features = f"{base}/analyses/{analysis}/features"
    while time.monotonic() < stop:
        url, params = rng.choice([
            ("/api/dictionaries", None), (base, None),
            (features, {"sort": rng.choice(["index", "density", "max_act", "mean_act", "act_count"]),
                        "order": rng.choice(["asc", "desc"]), "offset": rng.randrange(0, max(1, d_sae - 50)),
                        "limit": 50}),
            (f"{features}/{rng.randrange(d_sae)}", None)])
        start = time.perf_counter()
        r = await client.get(url, params=params)
        tally.latencies.append(time.perf_counter() - start)
        tally.statuses[r.status_code] += 1
        await asyncio.sleep(think)


async def infer(client, base: str, tally: Tally, stop: float, retry_delay: float | None, rng: random.Random) -> None:
    while time.monotonic() < stop:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 120)))
        start = time.perf_counter()
        r = await client.post(f"{base}/activations", json={"text": text, "feature": 0, "top_k": 5})
        tally.statuses[r.status_code] += 1
        if r.status_code == 200:
            tally.latencies.append(time.perf_counter() - start)
            tally.tokens += len(r.json()["token_ids"])
        elif r.status_code == 503:
            await asyncio.sleep(float(r.headers["retry-after"]) if retry_delay is None else retry_delay)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args, port: int, name: str, analysis: str, server_pid: int) -> None:
    import httpx

    host = f"http://127.0.0.1:{port}"
    base = f"/api/dictionaries/{name}"
    limits = httpx.Limits(max_connections=args.inference_clients + args.browse_clients + 4)
    async with httpx.AsyncClient(base_url=host, limits=limits, timeout=120) as client:
        d_sae = (await client.get(base)).json()["d_sae"]
        t0 = time.perf_counter()
        warm = await client.post(f"{base}/activations", json={"text": "Hello world"})  # loads the model
        warm.raise_for_status()
        print(f"model loaded by the first custom-text request in {time.perf_counter() - t0:.1f} s")

        rng = random.Random(0)
        baseline = Tally()
        stop = time.monotonic() + args.baseline
        await asyncio.gather(*(browse(client, base, d_sae, analysis, baseline, stop, args.browse_think,
                                      random.Random(rng.random())) for _ in range(args.browse_clients)))

        browsing, inference = Tally(), Tally()
        stop = time.monotonic() + args.duration
        started = time.perf_counter()
        server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
        await asyncio.gather(
            *(browse(client, base, d_sae, analysis, browsing, stop, args.browse_think, random.Random(rng.random()))
              for _ in range(args.browse_clients)),
            *(infer(client, base, inference, stop, args.retry_delay, random.Random(rng.random()))
              for _ in range(args.inference_clients)))
        seconds = time.perf_counter() - started
        server_cpu, client_cpu = cpu_seconds(server_pid) - server_cpu, time.process_time() - client_cpu
        health = await client.get("/api/health")

    print(f"\n{args.browse_clients} browsing clients ({args.browse_think * 1000:.0f} ms between requests), "
          f"{args.inference_clients} inference clients (after a 503 waiting "
          f"{'its Retry-After' if args.retry_delay is None else f'{args.retry_delay * 1000:.0f} ms'}):")
    print(baseline.line("browsing alone", args.baseline))
    print(browsing.line("browsing under load", seconds))
    print(inference.line("inference", seconds))
    print(f"inference throughput: {inference.statuses[200] / seconds:.1f} requests/s, "
          f"{inference.tokens / seconds:.0f} tokens/s")
    print(f"CPU use under load: server {server_cpu / seconds:.2f} cores, these clients {client_cpu / seconds:.2f} cores")
    ms = [x * 1000 for x in browsing.latencies]
    other = sum(n for t in (browsing, inference) for s, n in t.statuses.items() if s not in (200, 503))
    print(f"browsing p95 under load {percentile(ms, 0.95):.1f} ms (target < 100 ms): "
          f"{'met' if percentile(ms, 0.95) < 100 else 'MISSED'}; answers other than 200/503: {other} "
          f"(target 0); health afterwards: {health.status_code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of browsing alone, first")
    parser.add_argument("--inference-clients", type=int, default=32)
    parser.add_argument("--browse-clients", type=int, default=8)
    parser.add_argument("--browse-think", type=float, default=0.1, help="seconds between a browsing client's requests")
    parser.add_argument("--retry-delay", type=float, default=None,
                        help="seconds an inference client waits after a 503 (default: its Retry-After)")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny", help="shape of the GPT-2 to build")
    parser.add_argument("--keep", action="store_true", help="keep the built results folder (then pass it as --results)")
    parser.add_argument("--results", type=Path, help="an existing results folder instead of building one")
    parser.add_argument("--dictionary", help="with --results: the dictionary's id, <run>:<name> as the viewer "
                        "names it (default: the first one with the analysis)")
    parser.add_argument("--analysis", default="default", help="with --results: its analysis")
    parser.add_argument("--demo", action="store_true",
                        help=f"the demo run: --results results and its dictionary ({DEMO.relative_to(ROOT)})")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: the tiny model, 2 inference and 2 browsing clients, 1 s alone and 2 s of load")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.duration, args.baseline, args.inference_clients, args.browse_clients = "tiny", 2, 1, 2, 2

    tmp = None
    if args.demo:
        args.results = DEMO.parent
        args.dictionary = analyzed_dictionary(DEMO.parent, args.analysis, run=DEMO.name)
    if args.results is not None:
        results, analysis = args.results, args.analysis
        name = args.dictionary or analyzed_dictionary(results, analysis)
        try:
            folder = ResultsFolder(results)
            folder.dictionary(name)
            store = folder.store(name, analysis)
        except (NotFound, StoreError) as e:
            sys.exit(f"{e} Train and analyze it first (run_train_example.py, run_analyze_example.py).")
        print(f"dictionary: {name}, analysis {store.path}")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="server-load-"))
        t0 = time.perf_counter()
        results, name, analysis = build_results(tmp, args.model)
        print(f"dictionary: {name}, a top-k dictionary on a random-weight GPT-2 ({args.model}: "
              f"{MODELS[args.model][0]}, {MODELS[args.model][1]}), trained and analyzed in "
              f"{time.perf_counter() - t0:.0f} s under {tmp}{' (kept)' if args.keep else ''}")
    settings = {k: v for k, v in os.environ.items() if k.startswith("GPT2DICT_")}
    print(f"server: uvicorn, 1 worker, {os.cpu_count()} CPU cores; settings from the environment: {settings or 'none'}")
    port = free_port()
    proc = start_server(results, port)
    try:
        asyncio.run(run(args, port, name, analysis, proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
