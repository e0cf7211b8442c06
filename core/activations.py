"""Activations of a hook point: model forward stopped after the hook's block, and a shuffle buffer.

`ActivationSource` turns token batches into flat activations `[n_tokens, d_in]` of one hook,
dropping BOS / EOS / pad positions. `ActivationBuffer` mixes them: it holds at most
`buffer_tokens` activations, refills itself when half empty, and serves shuffled training
batches, so memory is bounded by the buffer size whatever the number of training tokens.
"""

from __future__ import annotations

from typing import Iterator

import torch

from .lm import LanguageModel, stop_layer_for


class ActivationSource:
    """Runs the model on token batches and yields the hook's activations of real text tokens."""

    def __init__(self, model: LanguageModel, hook_name: str, token_batches: Iterator[torch.Tensor]):
        model.check_hook_name(hook_name)
        self.model = model
        self.hook_name = hook_name
        self.token_batches = token_batches
        self.stop_at_layer = stop_layer_for(hook_name)

    @torch.no_grad()
    def activations_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hook activations [batch, seq, d_in] of `tokens` [batch, seq]; later blocks never run.
        Per-head activations ([batch, seq, n_heads, d_head], `attn.hook_z`) come flattened."""
        tokens = tokens.to(self.model.device)
        _, cache = self.model.bridge.run_with_cache(
            tokens, names_filter=[self.hook_name], stop_at_layer=self.stop_at_layer, return_cache_object=False
        )
        acts = cache[self.hook_name]
        return acts.reshape(*acts.shape[:2], -1)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        tokens = next(self.token_batches)
        acts = self.activations_of(tokens)
        mask = self.model.token_mask(tokens.to(acts.device))
        return acts[mask]  # [n_text_tokens, d]


class ActivationBuffer:
    """A bounded shuffle buffer of activations that refills when half empty.

    State for exact resumption (`state_dict` / `load_state_dict`): the activations currently held
    and the generator that shuffles them.
    """

    def __init__(self, source: Iterator[torch.Tensor], *, d_in: int, buffer_tokens: int, batch_size: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0):
        if batch_size > buffer_tokens // 2:
            raise ValueError(f"batch_size {batch_size} must be at most half of buffer_tokens {buffer_tokens}.")
        self.source = source
        self.d_in = d_in
        self.buffer_tokens = buffer_tokens
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._storage = torch.empty(buffer_tokens, d_in, dtype=dtype, device=self.device)
        self._n = 0  # activations held, in _storage[:_n]
        self._leftover = torch.empty(0, d_in, dtype=dtype)  # generated but not yet fitting, < one model batch
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.tokens_generated = 0

    def __len__(self) -> int:
        return self._n

    def _fill(self) -> None:
        """Top the buffer up with fresh activations, then shuffle what it holds."""
        while self._n < self.buffer_tokens:
            if len(self._leftover):
                acts, self._leftover = self._leftover, self._leftover[:0]
            else:
                acts = next(self.source)
                self.tokens_generated += len(acts)
            take = min(len(acts), self.buffer_tokens - self._n)
            self._storage[self._n:self._n + take] = acts[:take].to(self._storage.dtype)
            self._n += take
            # What does not fit waits for the next fill (at most one model batch is held outside).
            self._leftover = acts[take:].to("cpu", self._storage.dtype)
        perm = torch.randperm(self._n, generator=self.generator).to(self.device)
        self._storage[:self._n] = self._storage[:self._n][perm]

    def peek(self, n: int) -> torch.Tensor:
        """Up to `n` activations currently held (after a fill), without consuming them."""
        if self._n < self.buffer_tokens // 2:
            self._fill()
        return self._storage[:min(n, self._n)]

    def next_batch(self) -> torch.Tensor:
        """A shuffled batch [batch_size, d_in] (float32)."""
        if self._n < self.buffer_tokens // 2 or self._n < self.batch_size:
            self._fill()
        # Serve from the end: what remains at the front stays mixed with the next fill.
        batch = self._storage[self._n - self.batch_size:self._n].float().clone()
        self._n -= self.batch_size
        return batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"activations": self._storage[:self._n].clone(), "leftover": self._leftover.clone(),
                "generator": self.generator.get_state(), "tokens_generated": self.tokens_generated}

    def load_state_dict(self, state: dict) -> None:
        acts = state["activations"]
        self._n = len(acts)
        self._storage[:self._n] = acts.to(self._storage.device, self._storage.dtype)
        self._leftover = state["leftover"].to("cpu", self._storage.dtype)
        self.generator.set_state(state["generator"].cpu())  # a CPU generator takes a CPU state only
        self.tokens_generated = int(state["tokens_generated"])


def expected_norm_scale(sample: torch.Tensor) -> float:
    """Scale that makes the mean squared norm of activations equal d_in (inputs then have unit
    variance per dimension on average): sqrt(d_in) / mean ||x||."""
    mean_norm = sample.norm(dim=-1).mean().item()
    return float(sample.shape[-1] ** 0.5 / max(mean_norm, 1e-8))


__all__ = ["ActivationSource", "ActivationBuffer", "expected_norm_scale"]
