"""Activations of hook points: one model forward for every hook a run needs, and a shuffle buffer.

`ActivationSource` runs the model on token batches, stopped after the deepest block any of its
hooks needs, and yields `{hook: [n_tokens, d_hook]}` for the real text tokens of the batch
(BOS / separator / pad positions dropped; per-head activations flattened). `ActivationBuffer`
mixes them: it holds at most `buffer_tokens` activations of every hook — one tensor per hook, the
same tokens in the same rows — refills itself when half empty, and serves shuffled training batches
`{hook: [batch, d_hook]}`. Memory is bounded by the buffer whatever the number of training tokens:

    buffer_tokens x (sum of the hooks' widths) x bytes per value of store_dtype

plus at most one model batch of activations waiting for the next refill. A transcoder's in-hook and
out-hook rows stay paired because every hook's rows move with one permutation.

Any `ActivationStream` works: it yields `{hook: [n, d_hook]}` batches in a deterministic order, can
move past a batch without computing it (`skip()`, what the other ranks of a torchrun job do while
one computes it) and can say where it is (`position()`, saved in checkpoints; its constructor takes
it back). `ActivationSource` runs the model, `core.cache.CachedActivations` reads a cache written
by `core.cache.cache_activations`, and `ShardedActivations` shares any of them among ranks.
"""

from __future__ import annotations

from typing import Iterator, Optional, Protocol, runtime_checkable

import torch

from .distributed import Distributed
from .hooks import stop_layer_for
from .lm import LanguageModel


@runtime_checkable
class ActivationStream(Protocol):
    """What `ActivationBuffer` reads: batches of every hook's activations for the same tokens."""

    hooks: tuple[str, ...]
    """The hooks of every batch, in this order."""

    def __next__(self) -> dict[str, torch.Tensor]:
        """The next batch {hook: [n_tokens, d_hook]} (the same tokens in every hook's rows)."""
        ...

    def skip(self) -> None:
        """Move past the next batch without producing it (another rank of a torchrun job does)."""
        ...

    def position(self) -> dict:
        """Where the stream is, as plain containers and tensors (for `torch.save(weights_only)`)."""
        ...


def stop_layer_for_hooks(hooks) -> Optional[int]:
    """The `stop_at_layer` that still runs every hook of `hooks` (None: the whole model)."""
    layers = [stop_layer_for(h) for h in hooks]
    return None if any(layer is None for layer in layers) else max(layers)


class ActivationSource:
    """Runs the model on token batches and yields every hook's activations of real text tokens."""

    def __init__(self, model: LanguageModel, hooks, token_batches: Iterator[torch.Tensor]):
        self.hooks = tuple(dict.fromkeys([hooks] if isinstance(hooks, str) else hooks))
        for hook in self.hooks:
            model.hook_shape(hook)  # unknown or not per-token: refused before any compute
        self.model = model
        self.token_batches = token_batches
        self.stop_at_layer = stop_layer_for_hooks(self.hooks)

    @torch.no_grad()
    def activations_of(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """{hook: activations [batch, seq, d_hook]} of `tokens` [batch, seq]; later blocks never run.
        Per-head activations ([batch, seq, n_heads, d_head], `attn.hook_z`) come flattened."""
        tokens = tokens.to(self.model.device)
        with self.model.autocast():
            _, cache = self.model.bridge.run_with_cache(
                tokens, names_filter=list(self.hooks), stop_at_layer=self.stop_at_layer, return_cache_object=False
            )
        return {hook: cache[hook].reshape(*cache[hook].shape[:2], -1) for hook in self.hooks}

    def position(self) -> dict:
        """Where the token stream is (see `core.data.PackedSequences.position`)."""
        return self.token_batches.position()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        tokens = next(self.token_batches)
        acts = self.activations_of(tokens)
        mask = self.model.token_mask(tokens.to(self.model.device))
        return {hook: a[mask] for hook, a in acts.items()}  # [n_text_tokens, d_hook]

    def skip(self) -> None:
        """Move past the next batch without running the model on it (another rank does)."""
        next(self.token_batches)


class ShardedActivations:
    """The rows of `source`, computed by the ranks of a torchrun job in turn and all-gathered.

    In each round rank r computes the r-th of the next world_size chunks of `source` and skips the
    others; the round's chunks are gathered in rank order. Every rank therefore yields the rows one
    process would yield, in the same order, having computed 1/world_size of them, and every rank's
    `source` is at the same position afterwards."""

    def __init__(self, source: ActivationStream, dist: Distributed):
        self.source, self.dist = source, dist
        self.hooks = source.hooks

    def __iter__(self) -> "ShardedActivations":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.dist.all_gather_rows(self.dist.take_turns(lambda: next(self.source), self.source.skip))

    def skip(self) -> None:
        for _ in range(self.dist.world_size):
            self.source.skip()

    def position(self) -> dict:
        return self.source.position()


class ActivationBuffer:
    """A bounded shuffle buffer of several hooks' activations that refills when half empty.

    State for exact resumption (`state_dict` / `load_state_dict`): the activations currently held,
    those waiting for the next refill, and the generator that shuffles them. What the buffer holds
    depends only on the order of the rows the source yields, not on how they are batched.
    """

    def __init__(self, source: ActivationStream, *, widths: dict[str, int], buffer_tokens: int, batch_size: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0,
                 total_tokens: Optional[int] = None):
        if batch_size > buffer_tokens // 2:
            raise ValueError(f"batch_size {batch_size} must be at most half of buffer_tokens {buffer_tokens}.")
        self.source = source
        self.widths = dict(widths)
        self.buffer_tokens = buffer_tokens
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._storage = {hook: torch.empty(buffer_tokens, d, dtype=dtype, device=self.device)
                         for hook, d in self.widths.items()}
        self._n = 0  # activations held, in _storage[hook][:_n]
        # Generated but not yet fitting (less than one model batch), kept on the CPU.
        self._leftover = {hook: torch.empty(0, d, dtype=dtype) for hook, d in self.widths.items()}
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.tokens_generated = 0
        self.total_tokens = total_tokens
        """The rows it will ever be asked for (batches served, and samples peeked at after the last one);
        the source is asked for nothing more once that many rows exist, so a run's last refill does not run
        the model for activations nobody trains on, and rows past that many are dropped, so what the
        buffer holds does not depend on how the source chunks it (a cache's shards or the model's
        batches). None: no end."""

    def __len__(self) -> int:
        return self._n

    @property
    def memory_bytes(self) -> int:
        """Bytes the buffer's storage takes: buffer_tokens x sum of widths x bytes per value."""
        return sum(t.numel() * t.element_size() for t in self._storage.values())

    def _fill(self) -> None:
        """Top the buffer up with fresh activations, then shuffle what it holds."""
        while self._n < self.buffer_tokens:
            n_left = len(next(iter(self._leftover.values())))
            if n_left:
                acts, self._leftover = self._leftover, {h: t[:0] for h, t in self._leftover.items()}
            elif self.total_tokens is not None and self.tokens_generated >= self.total_tokens:
                break  # every row the run will need exists already
            else:
                acts = next(self.source)
                if self.total_tokens is not None:  # rows past the last needed are dropped, whatever the chunking
                    keep = self.total_tokens - self.tokens_generated
                    acts = {hook: t[:keep] for hook, t in acts.items()}
                self.tokens_generated += len(next(iter(acts.values())))
            n = len(next(iter(acts.values())))
            take = min(n, self.buffer_tokens - self._n)
            for hook, storage in self._storage.items():
                storage[self._n:self._n + take] = acts[hook][:take].to(storage.dtype)
                # What does not fit waits for the next fill (at most one model batch is held outside).
                self._leftover[hook] = acts[hook][take:].to("cpu", storage.dtype)
            self._n += take
        perm = torch.randperm(self._n, generator=self.generator).to(self.device)
        for storage in self._storage.values():
            storage[:self._n] = storage[:self._n][perm]

    def peek(self, n: int) -> dict[str, torch.Tensor]:
        """Up to `n` activations of every hook currently held (after a fill), without consuming them."""
        if self._n < self.buffer_tokens // 2:
            self._fill()
        return {hook: storage[:min(n, self._n)] for hook, storage in self._storage.items()}

    def next_batch(self) -> dict[str, torch.Tensor]:
        """A shuffled batch {hook: [batch_size, d_hook]} (float32), the same tokens in every hook."""
        if self._n < self.buffer_tokens // 2 or self._n < self.batch_size:
            self._fill()
        # Serve from the end: what remains at the front stays mixed with the next fill.
        batch = {hook: storage[self._n - self.batch_size:self._n].float().clone()
                 for hook, storage in self._storage.items()}
        self._n -= self.batch_size
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"activations": {h: s[:self._n].cpu().clone() for h, s in self._storage.items()},
                "leftover": {h: t.clone() for h, t in self._leftover.items()},
                "generator": self.generator.get_state(), "tokens_generated": self.tokens_generated}

    def load_state_dict(self, state: dict) -> None:
        if set(state["activations"]) != set(self._storage):
            raise ValueError(f"The saved buffer holds hooks {sorted(state['activations'])}, not {sorted(self._storage)}.")
        for hook, storage in self._storage.items():
            acts = state["activations"][hook]
            self._n = len(acts)
            storage[:self._n] = acts.to(storage.device, storage.dtype)
            self._leftover[hook] = state["leftover"][hook].to("cpu", storage.dtype)
        self.generator.set_state(state["generator"].cpu())  # a CPU generator takes a CPU state only
        self.tokens_generated = int(state["tokens_generated"])


def expected_norm_scale(sample: torch.Tensor) -> float:
    """Scale that makes the mean squared norm of activations equal d_in (inputs then have unit
    variance per dimension on average): sqrt(d_in) / mean ||x||."""
    mean_norm = sample.norm(dim=-1).mean().item()
    return float(sample.shape[-1] ** 0.5 / max(mean_norm, 1e-8))


__all__ = ["ActivationSource", "ActivationBuffer", "ActivationStream", "ShardedActivations", "expected_norm_scale",
           "stop_layer_for_hooks"]
