"""Scale-out with `torch.distributed`, launched by `torchrun` (gloo on CPU, nccl on CUDA).

    torchrun --standalone --nproc-per-node 2 run_train_example.py smollm2 ...

Every entry point calls `init_distributed()`: under torchrun (WORLD_SIZE > 1 in the environment) it
joins the process group, with a collective timeout so that a rank that dies or hangs stops the
others with an error instead of a hang forever; run as one process it returns a `Distributed`
of world size 1 whose collectives do nothing. No home-made launcher, RPC or process pool.

How work is shared (see `core.activations.ShardedActivations`): the ranks walk the same token (or
cache) stream; rank r computes the activations of every W-th model batch (r, r + W, ...), and the
batches of a round are all-gathered in rank order, so every rank holds the same shuffle buffer —
filled with exactly the rows one process would have, in the same order — and the data position
is the same on every rank (a checkpoint written by rank 0 resumes every rank, and a run may even
resume with another world size). Then:

- data parallel (default): every rank holds every dictionary and trains it on its slice of each
  global batch (`train_batch_size` is global; it must divide by the world size); gradients are
  averaged over the ranks before the optimizer step (the same collective DDP uses), so the
  dictionaries stay identical on every rank and match one process's within float rounding;
- spread dictionaries: each dictionary lives on one rank and trains on the whole global batch;
  no gradients travel, only activations.

Only rank 0 writes logs, checkpoints and dictionaries; spread dictionaries' states travel to it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist

from .errors import DistributedError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Distributed:
    """This process's place in the job: rank, world size, and the collectives the library uses."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    """gloo or nccl; None for a single process."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def _check(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:  # torch.distributed's errors (DistBackendError, timeouts) are RuntimeErrors
            raise DistributedError(f"Rank {self.rank}: the collective {what} failed ({str(e).splitlines()[0][:300]}); "
                                   f"another rank probably stopped. The run stops here; start it again to resume "
                                   f"from its newest checkpoint.") from e

    def barrier(self) -> None:
        if self.active:
            self._check("barrier", dist.barrier)

    def all_reduce_(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place: the sum (or mean, max) of `tensor` over the ranks."""
        if self.active:
            reduce_op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
            self._check("all_reduce", dist.all_reduce, tensor, op=reduce_op)
            if op == "mean":
                tensor /= self.world_size
        return tensor

    def all_gather_rows(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's `tensors` {name: [n_rank, ...]} concatenated in rank order (row counts may differ)."""
        if not self.active:
            return tensors
        first = next(iter(tensors.values()))
        sizes = [torch.zeros(1, dtype=torch.long, device=first.device) for _ in range(self.world_size)]
        self._check("all_gather", dist.all_gather, sizes, torch.tensor([len(first)], device=first.device))
        sizes = [int(s) for s in sizes]
        longest = max(sizes)
        out = {}
        for name, t in tensors.items():
            padded = t.new_zeros((longest, *t.shape[1:]))
            padded[:len(t)] = t
            parts = [torch.empty_like(padded) for _ in range(self.world_size)]
            self._check("all_gather", dist.all_gather, parts, padded.contiguous())
            out[name] = torch.cat([p[:n] for p, n in zip(parts, sizes)])
        return out

    def gather_objects(self, obj: Any) -> Optional[list]:
        """Every rank's picklable `obj` on rank 0 (in rank order); None on the other ranks."""
        if not self.active:
            return [obj]
        gathered = [None] * self.world_size if self.is_main else None
        self._check("gather_object", dist.gather_object, obj, gathered, dst=0)
        return gathered

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's picklable `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        self._check("broadcast_object_list", dist.broadcast_object_list, box, src=0)
        return box[0]

    def take_turns(self, produce: Callable[[], T], skip: Callable[[], None]) -> Optional[T]:
        """One round of the ranks walking one stream: rank r produces the r-th of the next world_size
        items and skips the others, so every rank ends the round at the same place having done 1/world_size
        of the work. Returns this rank's item (`produce()`'s; a single process produces every item).
        The trainer's activations, the cache writer and the analyzer share work this way."""
        mine = None
        for r in range(self.world_size):
            if r == self.rank:
                mine = produce()
            else:
                skip()
        return mine

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank."""
        if not self.active:
            return flag
        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        return bool(self.all_reduce_(torch.tensor([int(flag)], device=device), "max").item())

    def check_same(self, what: str, value: Any) -> None:
        """DistributedError on every rank unless `value` (JSON-able) is the same on all of them."""
        if not self.active:
            return
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        digests = self.gather_objects(digest)
        verdict = None
        if self.is_main and len(set(digests)) > 1:
            differing = [r for r, d in enumerate(digests) if d != digests[0]]
            verdict = (f"The ranks of this torchrun job were given different {what}s (rank(s) {differing} differ "
                       f"from rank 0); start every rank with the same config.")
        verdict = self.broadcast_object(verdict)
        if verdict:
            raise DistributedError(verdict)


SINGLE_PROCESS = Distributed()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a single process: the one that prints summaries."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> Distributed:
    """Join the torchrun job this process belongs to (or return the single-process `Distributed`).

    The backend is nccl when the ranks use CUDA (`device` auto or cuda), else gloo; with CUDA each
    rank uses the GPU of its LOCAL_RANK. `timeout_s` bounds every collective: a rank that dies or
    hangs stops the others with DistributedError after at most that long."""
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("Rank %d of %d (%s).", rank, world, backend)
    return Distributed(rank=rank, world_size=world, local_rank=local, backend=backend)


def rank_device(device: str, dist_info: Distributed) -> str:
    """The device a rank uses for `device`: `auto` / `cuda` mean this rank's local GPU under torchrun."""
    if dist_info.backend == "nccl" and device in ("auto", "cuda"):
        return f"cuda:{dist_info.local_rank}"
    return device


__all__ = ["Distributed", "DistributedError", "init_distributed", "is_main_process", "launched_by_torchrun",
           "rank_device", "SINGLE_PROCESS"]
