"""How long a stopped run takes to resume, after 1x and after 10x the tokens.

    python benchmarks/resume_time.py [--tokens 50000] [--factor 10]
    python benchmarks/resume_time.py --smoke     # seconds: tiny sizes (benchmarks/smoke.py)

Trains the same dictionary (the tiny random GPT-2 with the real GPT-2 tokenizer from
tests/tiny_gpt2.py, built-in corpus, 128-token sequences) for `tokens` and for `factor * tokens`
training tokens, with a checkpoint at the end of each, and times building a `Trainer` that resumes
from each checkpoint (the model is passed in, so model loading is not counted): reading the
checkpoint, restoring the SAE, Adam and the buffer, and putting the data stream back where it was.
The built-in corpus is about 500k tokens, so the longer run wraps it several times.

Baseline, in the same run: what a resume by replay costs (the previous implementation re-read and
re-tokenized every sequence consumed so far), timed by packing that many sequences from the start.
Target: resume time does not grow with the tokens trained (ratio ~1), where the replay grows ~10x.
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

from core import (ActivationStoreConfig, DatasetConfig, LanguageModelConfig, LoggingConfig, PackedSequences,  # noqa
                  SAEConfig, Trainer, TrainerConfig, build_trainer, TrainingConfig, load_language_model)
from benchmarks.smoke import SMOKE_HOOK as HOOK, tiny_gpt2  # noqa: E402

BATCH = 4096


def config(model_dir: Path, results: Path, name: str, tokens: int, batch: int = BATCH,
           context: int = 128) -> TrainingConfig:
    return TrainingConfig(
        exp_name=name, results_dir=str(results), seed=0, model=LanguageModelConfig(name=str(model_dir)),
        dataset=DatasetConfig(context_size=context),
        activations=ActivationStoreConfig(hook_name=HOOK, model_batch_size=max(1, batch // context),
                                          buffer_tokens=4 * batch, train_batch_size=batch),
        sae=SAEConfig(architecture="topk", expansion_factor=8, k=16),
        trainer=TrainerConfig(total_training_tokens=tokens, lr=1e-3, lr_warmup_steps=10, eval_every_steps=10 ** 9,
                              eval_batches=1, checkpoint_every_steps=None),
        logging=LoggingConfig(progress_bar=False, log_every_steps=50))


def train_to(cfg: TrainingConfig, model) -> Trainer:
    """Train every step, then checkpoint: the state a stop at the end of the run leaves."""
    trainer = build_trainer(cfg, model=model)
    while trainer.step < trainer.total_steps:
        trainer.train_step(trainer.buffer.next_batch())
    trainer.save_checkpoint()
    return trainer


def time_resume(cfg: TrainingConfig, model, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        build_trainer(cfg, model=model)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_replay(cfg: TrainingConfig, model, n_sequences: int) -> float:
    """Packing `n_sequences` from the dataset's start: the cost of a resume by replay."""
    start = time.perf_counter()
    stream = PackedSequences(cfg.dataset, model.tokenizer, bos_token_id=model.bos_token_id,
                             separator_token_id=model.separator_token_id)
    for _ in range(n_sequences):
        next(stream)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="seconds: 256 tokens, factor 2, batch 64, one resume")
    args = parser.parse_args()
    batch, context = BATCH, 128
    if args.smoke:
        args.tokens, args.factor, args.repeats, batch, context = 256, 2, 1, 64, 32
    work = Path(tempfile.mkdtemp(prefix="resume-bench-"))
    try:
        model_dir = tiny_gpt2(work)
        model = load_language_model(LanguageModelConfig(name=str(model_dir)))
        rows = []
        for factor in (1, args.factor):
            cfg = config(model_dir, work / "results", f"x{factor}", factor * args.tokens, batch, context)
            start = time.perf_counter()
            trainer = train_to(cfg, model)
            train_s = time.perf_counter() - start
            position = trainer.data_position()  # the token stream's (epoch, sequences served, ...)
            sequences = position["sequences_served"]
            rows.append((factor, trainer.tokens_seen, position["epoch"], sequences, train_s,
                         time_resume(cfg, model, args.repeats), time_replay(cfg, model, sequences)))
        print(f"\nResume after training (tiny GPT-2, built-in corpus, {HOOK}); median of {args.repeats} resumes")
        print(f"{'tokens':>12} {'epochs':>7} {'sequences':>10} {'train s':>8} {'resume s':>9} {'replay s':>9}")
        for factor, tokens, epoch, sequences, train_s, resume_s, replay_s in rows:
            print(f"{tokens:>12,} {epoch + 1:>7} {sequences:>10,} {train_s:>8.1f} {resume_s:>9.2f} {replay_s:>9.2f}")
        (_, _, _, _, _, resume_1, replay_1), (_, _, _, _, _, resume_n, replay_n) = rows
        print(f"\nresume time {args.factor}x / 1x tokens: {resume_n / resume_1:.2f} (target ~1: it does not grow)")
        print(f"replay baseline {args.factor}x / 1x tokens: {replay_n / replay_1:.2f}; at {args.factor}x the resume "
              f"is {replay_n / resume_n:.1f}x faster than a replay")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
