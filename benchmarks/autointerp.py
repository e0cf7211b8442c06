"""Features explained and scored per minute, and what batching and concurrency buy.

(1) Local backend (the offline SmolLM2-135M-Instruct in process): the same features explained and then
    scored (detection + fuzzing) with batched prompts (`--batch-size`, shared prefix cached) and with
    one prompt at a time (batch size 1); the ratio is the gain from batching (target >= 3x).
(2) HTTP backend against a real `transformers serve --continuous-batching` serving the same model:
    concurrency 1 against `--concurrency` requests in flight; the ratio is what the server's
    continuous batching gives.

Every variant works on its own fresh copy of the analysis (nothing resumed), on the same features, with
the model loaded beforehand (the load is not timed). The variants run one after the other in one
process, so the ratios compare like with like on a shared machine.

    python benchmarks/autointerp.py                  # the demo analysis (run_train_example + run_analyze_example)
    python benchmarks/autointerp.py --features 16 --no-http
    python benchmarks/autointerp.py --smoke          # seconds: a tiny analysis, 1 feature, local backend only
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import BackendConfig, ExplainConfig, ScoreConfig, explain_features, score_explanations  # noqa: E402
from core.autointerp import open_backend  # noqa: E402
from core.config import OFFLINE_MODEL_NAME, LanguageModelConfig  # noqa: E402
from core.layout import analyzed_dictionary  # noqa: E402
from core.lm import load_language_model, resolve_model_source  # noqa: E402
from core.store import FeatureStore  # noqa: E402

DEMO_ANALYSIS = Path("results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post/analysis/default")


@dataclass
class Args:
    analysis: str = str(DEMO_ANALYSIS)
    features: int = 16
    """Alive features explained and scored by every variant (seeded choice)."""
    batch_size: int = 16
    concurrency: int = 8
    max_new_tokens: int = 32
    http: bool = True
    """Also measure the HTTP backend against a local `transformers serve`."""
    smoke: bool = False
    """Seconds: a tiny analysis built here, 1 feature, short answers, local backend only."""


def copy_analysis(analysis: Path, into: Path) -> Path:
    """The analysis and its dictionary's files, copied without any explanations."""
    dictionary = analyzed_dictionary(analysis)
    target = into / "dictionaries" / dictionary.name
    target.mkdir(parents=True)
    for item in dictionary.iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    (target / "analysis" / analysis.name).mkdir(parents=True)
    for name in ("config.json", "features.sqlite"):
        if (analysis / name).exists():
            shutil.copy2(analysis / name, target / "analysis" / analysis.name / name)
    return target / "analysis" / analysis.name


def timed_run(analysis: Path, scratch: Path, backend, features, explain: ExplainConfig, score: ScoreConfig,
              model) -> tuple[float, float, int]:
    """(explain seconds, score seconds, tokens) on a fresh copy of the analysis."""
    folder = copy_analysis(analysis, Path(tempfile.mkdtemp(dir=scratch)))
    start = time.perf_counter()
    explained = explain_features(folder, features, config=explain, backend=backend, progress=False)
    middle = time.perf_counter()
    scored = score_explanations(folder, features, config=score, backend=backend, model=model, progress=False)
    end = time.perf_counter()
    tokens = explained.prompt_tokens + explained.completion_tokens + scored.prompt_tokens + scored.completion_tokens
    return middle - start, end - middle, tokens


def report(name: str, n: int, seconds: tuple[float, float, int]) -> float:
    explain_s, score_s, tokens = seconds
    rate = n / ((explain_s + score_s) / 60)
    print(f"  {name:<34} explain {explain_s:7.1f} s  score {score_s:7.1f} s  {rate:7.2f} features/min  "
          f"{tokens / (explain_s + score_s):8.0f} tokens/s")
    return rate


def start_server(folder: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", "import sys; from transformers.cli.transformers import main; "
                                "sys.exit(main())", "serve", folder, "--device", "cpu", "--host", "127.0.0.1", "--port",
                                str(port), "--continuous-batching", "--log-level", "error"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if process.poll() is not None:
                raise SystemExit("transformers serve exited; install it with: pip install 'transformers[serving]'")
            time.sleep(0.5)
    process.terminate()
    raise SystemExit("transformers serve did not start within 5 minutes.")


def smoke_analysis(scratch: Path) -> Path:
    """The tests' rule dictionary over a tiny GPT-2, analyzed (a few seconds)."""
    from core import analyze
    from tests.autointerp_helpers import build_rule_dictionary
    from tests.conftest import tiny_analysis_config
    from tests.tiny_gpt2 import build_tiny_gpt2

    model = build_tiny_gpt2(scratch / "tiny-gpt2")
    dictionary = build_rule_dictionary(model, scratch / "run" / "dictionaries" / "rules")
    return analyze(tiny_analysis_config(dictionary, model, total_analyzing_tokens=1500, top_k=4, n_intervals=2,
                                        samples_per_interval=2))


def main(args: Args) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="autointerp-bench-"))
    try:
        if args.smoke:
            args = replace(args, features=1, max_new_tokens=4, batch_size=4, http=False)
            analysis = smoke_analysis(scratch)
        else:
            analysis = Path(args.analysis)
        with FeatureStore(analysis) as store:
            alive = [s.index for s in store.list_features(sort="index", descending=False, limit=store.d_sae)[1]
                     if s.act_count > 0]
            model_config = LanguageModelConfig.from_dict(store.meta["analysis_config"]["model"])
        features = sorted(alive[i] for i in range(0, len(alive), max(1, len(alive) // args.features)))[:args.features]
        explain = ExplainConfig(max_new_tokens=args.max_new_tokens, features_per_step=args.features)
        score = ScoreConfig(features_per_step=args.features)
        if args.smoke:
            score = replace(score, n_activating=1, n_random_negatives=1, n_hard_negatives=0)
        model = load_language_model(model_config)  # checks the negatives; loaded once, not timed
        print(f"{len(features)} features of {analysis}; explain + score (detection, fuzzing) with {OFFLINE_MODEL_NAME}")
        rates = {}
        for name, batch_size, prefix_cache in (("batched", args.batch_size, True), ("one at a time", 1, True),
                                               ("one at a time, no prefix cache", 1, False)):
            with open_backend(BackendConfig(batch_size=batch_size, prefix_cache=prefix_cache)) as llm:
                rates[name] = report(f"local, {name} ({batch_size})", len(features),
                                     timed_run(analysis, scratch, llm, features, explain, score, model))
        print(f"  batching gain: {rates['batched'] / rates['one at a time']:.2f}x; with the shared-prefix cache: "
              f"{rates['batched'] / rates['one at a time, no prefix cache']:.2f}x over one prompt at a time "
              "without it (target >= 3x)")
        if args.http:
            folder = str(resolve_model_source(LanguageModelConfig(name=OFFLINE_MODEL_NAME)))
            process, base_url = start_server(folder)
            try:
                http_rates = {}
                for concurrency in (1, args.concurrency):
                    config = BackendConfig(kind="openai", base_url=base_url, model=folder, concurrency=concurrency)
                    with open_backend(config) as llm:
                        http_rates[concurrency] = report(
                            f"transformers serve, concurrency {concurrency}", len(features),
                            timed_run(analysis, scratch, llm, features, explain, score, model))
                print(f"  concurrency gain: {http_rates[args.concurrency] / http_rates[1]:.2f}x "
                      f"({args.concurrency} vs 1 requests in flight, --continuous-batching)")
            finally:
                process.terminate()
                process.wait(timeout=60)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.split("\n\n")[0]))
