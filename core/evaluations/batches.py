"""Token batches of prompts and texts of different lengths, and the model's activations on them."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..activations import ActivationSource
from ..lm import LanguageModel


def padded(token_lists: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [b, longest], lengths [b]): the lists right-padded with `pad_id`. A causal model's
    activations at a position do not depend on what comes after it, so padding on the right changes
    nothing before it (the padding positions themselves are never read)."""
    lengths = torch.tensor([len(ids) for ids in token_lists], dtype=torch.long)
    tokens = torch.full((len(token_lists), int(lengths.max())), pad_id, dtype=torch.long)
    for row, ids in enumerate(token_lists):
        tokens[row, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return tokens, lengths


def in_batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


@torch.no_grad()
def hook_activations(model: LanguageModel, hooks: Sequence[str], tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """{hook: activations [b, s, d_hook]} of `tokens` [b, s], from one forward stopped after the
    deepest of `hooks` (float32, on the model's device)."""
    acts = ActivationSource(model, list(hooks), iter(())).activations_of(tokens)
    return {hook: a.float() for hook, a in acts.items()}


__all__ = ["hook_activations", "in_batches", "padded"]
