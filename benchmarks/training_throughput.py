"""Training and caching speed against the model's raw truncated forward, all in one run.

    python benchmarks/training_throughput.py [--tokens 40960] [--hook blocks.5.hook_resid_post] [--device cpu]
    python benchmarks/training_throughput.py --smoke    # seconds: the tiny GPT-2, tiny sizes (benchmarks/smoke.py)

On SmolLM2-135M and the built-in corpus, with a topk dictionary (d_sae 4,608, k 32, batch 4,096):

  (a) raw truncated forward: `run_with_cache` of the hook with `stop_at_layer` after its block, on
      pre-tokenized batches (the floor every from-the-model path pays);
  (b) training from the model: our trainer's loop (buffer refills + dictionary steps);
  (c) writing an activation cache of the hook (`cache_activations`, float32, fsynced shards);
  (d) training from that cache: the same dictionary, the loop reading shards instead of the model;
  (e) a whole run, `train(cfg)` end to end on `--end-to-end-tokens` (409,600: 100 steps), with its
      default buffer and final evaluation: its tokens/s against (b)'s, and where the seconds went
      (`TrainingResult.seconds`: model, data, initialization, training, calibration, final evaluation,
      saving).

Printed: tokens/s of each and the ratios (b)/(a) (target >= 0.75), (c)/(a) (target >= 0.9),
(d)/(b) (target >= 3) and (e)/(b) (target >= 0.9). (a)-(d) time the loop alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core import (ActivationStoreConfig, CacheConfig, DatasetConfig, LanguageModelConfig, LoggingConfig,  # noqa
                  SAEConfig, TrainerConfig, build_trainer, TrainingConfig, cache_activations,
                  load_language_model, train)
from core.config import resolve_device  # noqa: E402
from benchmarks.smoke import SMOKE_HOOK, tiny_gpt2  # noqa: E402
from benchmarks.timing import raw_forward, time_training_loop  # noqa: E402

BATCH, MODEL_BATCH, CONTEXT = 4096, 16, 128
SMOKE_BATCH, SMOKE_MODEL_BATCH, SMOKE_CONTEXT = 64, 2, 32


def training(cfg: TrainingConfig, model, tokens: int) -> float:
    """Tokens/s of the trainer's loop in its steady state."""
    batch = cfg.activations.train_batch_size
    return tokens // batch * batch / time_training_loop(build_trainer(cfg, model=model), tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10 * BATCH)
    parser.add_argument("--hook", default="blocks.5.hook_resid_post")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--end-to-end-tokens", type=int, default=100 * BATCH)
    parser.add_argument("--smoke", action="store_true", help=f"seconds: the tiny GPT-2, batch {SMOKE_BATCH}, "
                        f"{2 * SMOKE_BATCH} tokens")
    args = parser.parse_args()
    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="training-bench-"))
    batch, model_batch, context, model_cfg = BATCH, MODEL_BATCH, CONTEXT, LanguageModelConfig()
    if args.smoke:
        batch, model_batch, context, args.hook, args.tokens = (SMOKE_BATCH, SMOKE_MODEL_BATCH, SMOKE_CONTEXT,
                                                               SMOKE_HOOK, 2 * SMOKE_BATCH)
        model_cfg = LanguageModelConfig(name=str(tiny_gpt2(work)))
        args.end_to_end_tokens = 4 * SMOKE_BATCH
    model = load_language_model(model_cfg, device)
    try:
        cfg = TrainingConfig(
            exp_name="from-model", results_dir=str(work), device=device, model=model_cfg,
            dataset=DatasetConfig(context_size=context),
            activations=ActivationStoreConfig(hook_name=args.hook, model_batch_size=model_batch,
                                              buffer_tokens=4 * batch, train_batch_size=batch),
            sae=SAEConfig(architecture="topk", expansion_factor=8, k=32, decoder_bias_init_samples=min(2048, 4 * batch)),
            trainer=TrainerConfig(total_training_tokens=10 ** 9, eval_batches=1, eval_every_steps=10 ** 9),
            logging=LoggingConfig(progress_bar=False))
        print(f"device {device}, {torch.get_num_threads()} CPU threads; {model.name} at {args.hook}; "
              f"{args.tokens:,} tokens each; topk d_sae {8 * model.d_model:,}, k 32, batch {batch}")
        forward = raw_forward(model, args.hook, args.tokens, model_batch=model_batch, context_size=context)
        from_model = training(cfg, model, args.tokens)

        # The cache holds the tokens the cache-trained run reads, plus its buffer's first fill and warm-up.
        cache_tokens = args.tokens + 10 * batch
        cache_cfg = CacheConfig(cache_path=str(work / "cache"), hooks=(args.hook,), total_tokens=cache_tokens,
                                shard_tokens=4 * batch, eval_sequences=2 * model_batch,
                                model_batch_size=model_batch, device=device, dataset=DatasetConfig(context_size=context),
                                model=model_cfg)
        cache_activations(replace(cache_cfg, cache_path=str(work / "warm-up"), total_tokens=batch), model=model,
                          progress=False)
        start = time.perf_counter()
        cache_activations(cache_cfg, model=model, progress=False)
        writing = cache_tokens / (time.perf_counter() - start)
        from_cache = training(replace(cfg, exp_name="from-cache", activations=replace(
            cfg.activations, cache_path=cache_cfg.cache_path)), model, args.tokens)

        # (e) A whole run as a user starts it: the default buffer (65,536 tokens), 4 held-out batches
        # twice over for the final evaluation; the model is loaded already (timed apart: `model`).
        whole = replace(cfg, exp_name="end-to-end", activations=replace(cfg.activations, buffer_tokens=(
            ActivationStoreConfig.buffer_tokens if not args.smoke else 8 * batch)), trainer=replace(
            cfg.trainer, total_training_tokens=args.end_to_end_tokens, eval_batches=4 if not args.smoke else 1))
        started = time.perf_counter()
        result = train(whole, model=model)
        end_to_end = result.tokens / (time.perf_counter() - started)

        print(f"(a) raw truncated forward        {forward:>10,.0f} tok/s")
        print(f"(b) training from the model      {from_model:>10,.0f} tok/s   (b)/(a) = {from_model / forward:.2f} "
              f"(target >= 0.75)")
        print(f"(c) writing the activation cache {writing:>10,.0f} tok/s   (c)/(a) = {writing / forward:.2f} "
              f"(target >= 0.9)")
        print(f"(d) training from the cache      {from_cache:>10,.0f} tok/s   (d)/(b) = {from_cache / from_model:.2f} "
              f"(target >= 3)")
        print(f"(e) a whole run of {result.tokens:,} tokens {end_to_end:>7,.0f} tok/s   (e)/(b) = "
              f"{end_to_end / from_model:.2f} (target >= 0.9)")
        print("    where its seconds went: " + ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in
                                                         result.seconds.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
