"""Many dictionaries from one model pass vs. one run per dictionary, on the offline model.

    python benchmarks/sweep_throughput.py [--tokens 40960] [--device cpu]
    python benchmarks/sweep_throughput.py --smoke    # seconds: a tiny 12-layer GPT-2, tiny sizes (benchmarks/smoke.py)

Two sweeps of 4 topk dictionaries (d_sae 4,608, batch 4,096) on SmolLM2-135M and the built-in corpus:

  (1) one hook, 4 values of k (16, 32, 64, 128) at blocks.5.hook_resid_post;
  (2) 4 hooks, k = 32, at the residual streams of blocks 2, 5, 8 and 11.

Each is timed as one run of our trainer training all 4 dictionaries from one pass, and as 4
sequential single-dictionary runs of the same trainer (each with its own, shorter, truncated
forward). Only the training loop is timed (model forwards to refill the buffer + every dictionary's
optimizer steps), over the same number of training tokens; setup (model load, held-out text,
decoder-bias init) is excluded for both. Printed: seconds, tokens/s, and the ratio
time(4 single runs) / time(one pass). Target: >= 1.8x for both sweeps.

What bounds the ratio: the single runs do the forwards of 4 x their depths (sweep 2: 3 + 6 + 9 + 12
blocks of 30) where the one pass does the deepest once (12 blocks), and both do the same 4
dictionary steps per batch; the faster the dictionary step, the closer the ratio gets to the
forward-cost ratio (4x for sweep 1, 2.5x for sweep 2).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core import (ActivationStoreConfig, DatasetConfig, DictionaryConfig, LanguageModelConfig, LoggingConfig,  # noqa
                  SAEConfig, Trainer, TrainerConfig, build_trainer, TrainingConfig, load_language_model)
from core.config import resolve_device  # noqa: E402
from benchmarks.smoke import tiny_gpt2  # noqa: E402
from benchmarks.timing import time_training_loop  # noqa: E402

BATCH = 4096
SMOKE_BATCH = 64
SHAPES = {BATCH: (16, 128), SMOKE_BATCH: (2, 32)}
"""Model batch size and context size per training batch size."""


def base_config(results: Path, name: str, tokens: int, device: str,
                model_cfg: LanguageModelConfig = LanguageModelConfig(), batch: int = BATCH) -> TrainingConfig:
    return TrainingConfig(
        exp_name=name, results_dir=str(results), device=device,
        model=model_cfg, dataset=DatasetConfig(context_size=SHAPES[batch][1]),
        activations=ActivationStoreConfig(hook_name="blocks.5.hook_resid_post", model_batch_size=SHAPES[batch][0],
                                          buffer_tokens=4 * batch, train_batch_size=batch),
        sae=SAEConfig(architecture="topk", expansion_factor=8, k=32, decoder_bias_init_samples=min(2048, 4 * batch)),
        trainer=TrainerConfig(total_training_tokens=10 ** 9, eval_batches=1, eval_every_steps=10 ** 9,
                              lr_warmup_steps=5),
        logging=LoggingConfig(progress_bar=False))


def compare(name: str, dictionaries: tuple[DictionaryConfig, ...], work: Path, model, tokens: int,
            device: str, **sizes) -> float:
    one_pass = replace(base_config(work, f"{name}-one-pass", tokens, device, **sizes), dictionaries=dictionaries)
    together = time_training_loop(build_trainer(one_pass, model=model), tokens)
    separately = 0.0
    for d in one_pass.dictionary_configs():
        single = replace(base_config(work, f"{name}-{d.name}", tokens, device, **sizes), dictionaries=(d,))
        separately += time_training_loop(build_trainer(single, model=model), tokens)
    ratio = separately / together
    print(f"{name}: one pass {together:.1f} s ({tokens / together:,.0f} tok/s for all 4), 4 single runs "
          f"{separately:.1f} s ({tokens / separately:,.0f} tok/s) -> one pass is {ratio:.2f}x faster "
          f"(target >= 1.8x)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10 * BATCH)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="seconds: a 12-layer GPT-2 of d_model 64, batch "
                        f"{SMOKE_BATCH}, {2 * SMOKE_BATCH} tokens")
    args = parser.parse_args()
    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    model_cfg, batch = LanguageModelConfig(), BATCH
    if args.smoke:
        model_cfg, batch, args.tokens = LanguageModelConfig(name=str(tiny_gpt2(work, n_layer=12))), SMOKE_BATCH, \
            2 * SMOKE_BATCH
    model = load_language_model(model_cfg, device)
    sizes = dict(model_cfg=model_cfg, batch=batch)
    sae = base_config(work, "x", args.tokens, device, **sizes).sae
    print(f"device {device}, {torch.get_num_threads()} CPU threads; {args.tokens:,} training tokens per run, "
          f"batch {batch}, d_sae {sae.expansion_factor * model.d_model:,}")
    try:
        compare("4 values of k at blocks.5.hook_resid_post",
                tuple(DictionaryConfig(name=f"k{k}", sae=replace(sae, k=k)) for k in (16, 32, 64, 128)),
                work, model, args.tokens, device, **sizes)
        compare("4 hooks (blocks 2, 5, 8, 11)",
                tuple(DictionaryConfig(name=f"resid{i}", hook_name=f"blocks.{i}.hook_resid_post") for i in (2, 5, 8, 11)),
                work, model, args.tokens, device, **sizes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
