"""What the training benchmarks share: timing the trainer's loop in its steady state."""

from __future__ import annotations

import time

import torch


def sync(device) -> None:
    """Wait for queued device work, so wall-clock time covers it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_training_loop(trainer, tokens: int) -> float:
    """Seconds the trainer's loop takes for `tokens` training tokens (model forwards to refill the
    buffer, and every dictionary's steps), after warm-up steps that use up the buffer's first fill
    (made while the trainer was built), so refills are counted as often as in a long run."""
    batch = trainer.cfg.activations.train_batch_size
    for _ in range(max(1, trainer.cfg.activations.buffer_tokens // batch)):
        trainer.train_step(trainer.buffer.next_batch(), metrics=False)
    sync(trainer.device)
    start = time.perf_counter()
    for _ in range(max(1, tokens // batch)):
        trainer.train_step(trainer.buffer.next_batch(), metrics=False)
    sync(trainer.device)
    return time.perf_counter() - start
