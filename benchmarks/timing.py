"""What the training benchmarks share: timing the trainer's loop in its steady state."""

from __future__ import annotations

import time

import torch

from core import DatasetConfig, TokenBatches
from core.lm import stop_layer_for


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
    sync(trainer.buffer.device)
    start = time.perf_counter()
    for _ in range(max(1, tokens // batch)):
        trainer.train_step(trainer.buffer.next_batch(), metrics=False)
    sync(trainer.buffer.device)
    return time.perf_counter() - start


def raw_forward(model, hook: str, tokens: int, *, model_batch: int, context_size: int = 128) -> float:
    """Tokens/s of the model's forward truncated after `hook`, alone, on pre-tokenized batches of the
    built-in corpus (text tokens counted): the baseline every training figure is measured against."""
    stream = TokenBatches(DatasetConfig(context_size=context_size), model.tokenizer, bos_token_id=model.bos_token_id,
                          separator_token_id=model.separator_token_id, batch_size=model_batch)
    batches, n = [], 0
    while n < tokens:
        batches.append(next(stream).to(model.device))
        n += int(model.token_mask(batches[-1]).sum())
    stop = stop_layer_for(hook)
    with torch.no_grad():
        model.bridge.run_with_cache(batches[0], names_filter=[hook], stop_at_layer=stop)  # warm-up
        sync(model.device)
        start = time.perf_counter()
        for batch in batches:
            model.bridge.run_with_cache(batch, names_filter=[hook], stop_at_layer=stop, return_cache_object=False)
        sync(model.device)
    return n / (time.perf_counter() - start)
