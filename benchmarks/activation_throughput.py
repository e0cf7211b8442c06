"""Benchmark: activation generation vs. the raw model forward truncated at the hook's layer.

Both run on the same token batches of the offline default (SmolLM2-135M, built-in corpus):
  (a) raw:  bridge(tokens, stop_at_layer=L+1)   — the model's own forward, nothing cached
  (b) ours: ActivationSource (run_with_cache at the hook, stopped after its block, BOS dropped)
and optionally (c) the trainer's full step (buffer + SAE forward/backward/Adam) for context.

    python benchmarks/activation_throughput.py [--hook blocks.3.hook_resid_post] [--batches 12]
    python benchmarks/activation_throughput.py --smoke     # seconds: tiny GPT-2, tiny sizes (benchmarks/smoke.py)

Prints tokens/s of each and the ratio ours/raw (target: at least 0.9).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import ActivationSource, DatasetConfig, LanguageModelConfig, TokenBatches, load_language_model  # noqa
from core.lm import stop_layer_for  # noqa: E402
from benchmarks.smoke import SMOKE_HOOK, tiny_gpt2  # noqa: E402


def tokens_per_second(fn, batches, repeats: int) -> float:
    """Best of `repeats` passes over all batches (the best pass is the least disturbed one)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for tokens in batches:
            fn(tokens)
        best = min(best, time.perf_counter() - start)
    return sum(t.numel() for t in batches) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--hook", default="blocks.3.hook_resid_post")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny GPT-2, 2 batches of 2 x 32 tokens, one pass")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="activation-bench-"))
    try:
        if args.smoke:
            args.model, args.hook, args.batches, args.batch_size, args.context_size, args.repeats = \
                str(tiny_gpt2(work)), SMOKE_HOOK, 2, 2, 32, 1
        measure(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace) -> None:
    torch.set_grad_enabled(False)
    model = load_language_model(LanguageModelConfig(name=args.model), args.device)
    stream = TokenBatches(DatasetConfig(context_size=args.context_size), model.tokenizer,
                          bos_token_id=model.bos_token_id, separator_token_id=model.separator_token_id,
                          batch_size=args.batch_size)
    batches = [next(stream).to(args.device) for _ in range(args.batches)]
    stop = stop_layer_for(args.hook)
    source = ActivationSource(model, args.hook, iter(()))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def raw(tokens):
        model.bridge(tokens, stop_at_layer=stop, return_type=None)
        sync()

    def ours(tokens):
        acts = source.activations_of(tokens)[args.hook][model.token_mask(tokens)]
        sync()
        return acts

    raw(batches[0]), ours(batches[0])  # warm up
    # Interleave the two measurements so that machine noise hits both alike.
    raw_tps, ours_tps = [], []
    for _ in range(args.repeats):
        raw_tps.append(tokens_per_second(raw, batches, 1))
        ours_tps.append(tokens_per_second(ours, batches, 1))
    raw_best, ours_best = max(raw_tps), max(ours_tps)
    n_tokens = sum(t.numel() for t in batches)
    print(f"model {args.model}, hook {args.hook} (stop_at_layer={stop}), device {args.device}, "
          f"{n_tokens:,} tokens per pass, best of {args.repeats}")
    print(f"(a) raw truncated forward      {raw_best:12,.0f} tokens/s")
    print(f"(b) activation generation      {ours_best:12,.0f} tokens/s")
    print(f"ratio (b)/(a)                  {ours_best / raw_best:12.3f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
