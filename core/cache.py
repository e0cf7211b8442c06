"""Activation cache: the activations of chosen hooks for N tokens, written once, read by many runs.

`cache_activations(CacheConfig)` runs the model over the dataset (one forward per batch, stopped
after the deepest hook, every hook captured) and writes a folder:

    manifest.json                  what the cache holds (below); "complete": true once finished
    eval_sequences.safetensors     "tokens" [n, context_size]: held-out sequences (the dataset's
                                   first documents) for the evaluations of runs trained on the
                                   cache; their activations are not cached
    shard_00000.safetensors, ...   per shard: "tokens" [n_sequences, context_size] (int32),
                                   "text_mask" [n_sequences, context_size] (bool: the positions
                                   cached, BOS / separator / pad excluded) and, per hook,
                                   "acts.<hook>" [n_text_tokens, d_in] in the storage dtype, rows in
                                   the row-major order of text_mask's True positions
    writer_state_<n>.pt            where the writer stopped after shard n (data position)

Manifest: format_version, complete, model (LanguageModelConfig), hooks ({hook: {"d_in", "shape"}}),
dtype, dataset (DatasetConfig), context_size, bos_token_id, separator_token_id, first_document
(training data starts after the held-out documents), eval_sequences, total_tokens (text tokens
cached so far), shards ([{"file", "tokens", "sequences"}]), config (the CacheConfig).

Writing is resumable and never leaves a cache that reads as complete: each shard is written
atomically, then its writer state, and only then is the manifest (the commit point) rewritten with
the new shard; "complete" is set last. A cache whose writer was killed reads as incomplete and is
refused for training; running `cache_activations` again with the same config continues it.

`CachedActivations` is an activation source for `core.activations.ActivationBuffer`: it yields
every needed hook's rows shard by shard (in a new seeded shard order each epoch when shuffling),
a chunk at a time, so memory is bounded by the chunk, and `position()` (epoch, shard, row) resumes
exactly. Read without shuffling, it yields the rows in the order the model produced them, so a
dictionary trained on the cache equals one trained on the model fed the same tokens.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .activations import ActivationSource
from .config import CacheConfig, resolve_device, torch_dtype
from .data import held_out_and_batches
from .errors import CacheError
from .distributed import Distributed, init_distributed, rank_device
from .files import atomic_write
from .lm import LanguageModel, load_language_model

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILENAME = "manifest.json"
EVAL_FILENAME = "eval_sequences.safetensors"
READ_CHUNK_TOKENS = 8192
"""Rows a reader takes from a shard at once."""


def read_manifest(folder: str | Path, *, require_complete: bool = True) -> dict:
    """The manifest of the cache at `folder`; CacheError when there is none, it is damaged, or
    (with `require_complete`) the cache is not finished."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST_FILENAME
    if not path.is_file():
        raise CacheError(f"No activation cache at {folder} (no {MANIFEST_FILENAME}); write one with "
                         f"cache_activations (python run_cache_example.py) or fix activations.cache_path.")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CacheError(f"{path} is not valid JSON ({e}); the cache is damaged, write it again.") from e
    if not isinstance(manifest, dict) or manifest.get("format_version") not in range(1, FORMAT_VERSION + 1):
        raise CacheError(f"{path} is not a manifest this library reads (format_version "
                         f"{manifest.get('format_version') if isinstance(manifest, dict) else None!r}).")
    if require_complete and not manifest.get("complete"):
        raise CacheError(f"The activation cache at {folder} is incomplete: its writer stopped after "
                         f"{manifest.get('total_tokens', 0):,} of {manifest['config']['total_tokens']:,} tokens. Run "
                         f"cache_activations again with the same config to finish it.")
    return manifest


def check_cache_matches(manifest: dict, folder: Path, *, model_name: str, widths: dict[str, int],
                        store_dtype: str) -> None:
    """CacheError naming the first thing in which the cache differs from a run that would read
    it: the model, a hook it lacks, a hook's width, or the storage dtype."""
    if manifest["model"]["name"] != model_name:
        raise CacheError(f"The activation cache at {folder} holds activations of model {manifest['model']['name']!r}, "
                         f"not {model_name!r}; set model.name to it or use another cache.")
    for hook, width in widths.items():
        if hook not in manifest["hooks"]:
            raise CacheError(f"The activation cache at {folder} has no activations of {hook!r} (it has "
                             f"{', '.join(manifest['hooks'])}); write a cache with that hook.")
        if manifest["hooks"][hook]["d_in"] != width:
            raise CacheError(f"The activation cache at {folder} holds {manifest['hooks'][hook]['d_in']} values per "
                             f"token of {hook!r}, but the model has {width}; it was written from another model.")
    if manifest["dtype"] != store_dtype:
        raise CacheError(f"The activation cache at {folder} stores {manifest['dtype']} activations but "
                         f"activations.store_dtype is {store_dtype!r}; set it to {manifest['dtype']!r}.")


def cached_eval_sequences(folder: str | Path) -> torch.Tensor:
    """The held-out sequences [n, context_size] a cache keeps for evaluations."""
    with safe_open(str(Path(folder).expanduser() / EVAL_FILENAME), "pt") as f:
        return f.get_tensor("tokens").long()


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def _writer_state_name(n_shards: int) -> str:
    return f"writer_state_{n_shards}.pt"


def cache_activations(cfg: CacheConfig, *, model: Optional[LanguageModel] = None, progress: bool = True) -> Path:
    """Write (or finish) the activation cache of `cfg`; returns its folder (see the module docstring).

    Under torchrun the ranks walk the same token stream and each runs the model on every
    world_size-th batch; each rank writes its own shards and rank 0 the manifest, which commits a
    round's shards together, so one cache comes out and an interrupted one resumes on any number of
    ranks."""
    from tqdm.auto import tqdm

    cfg.validate()
    dist = init_distributed(cfg.device)
    dist.check_same("cache config", cfg.to_dict())
    folder = Path(cfg.cache_path).expanduser()
    manifest = None
    if (folder / MANIFEST_FILENAME).is_file():
        manifest = read_manifest(folder, require_complete=False)
        if manifest.get("complete"):
            raise FileExistsError(f"A complete activation cache already exists at {folder}; choose another "
                                  f"cache_path or delete that folder.")
        if not cfg.resume:
            raise FileExistsError(f"An interrupted activation cache exists at {folder} and resume=False; set "
                                  f"resume=True to finish it, or choose another cache_path.")
        if _comparable(manifest["config"]) != _comparable(cfg.to_dict()):
            raise CacheError(f"The interrupted activation cache at {folder} was started with another config; "
                             f"restore that config to finish it, or choose another cache_path.")
        log.info("Continuing the activation cache at %s after %d shards.", folder, len(manifest["shards"]))
    elif folder.exists() and any(p.name != EVAL_FILENAME for p in folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not an activation cache; choose an empty or new cache_path.")

    device = resolve_device(rank_device(cfg.device, dist))
    model = model if model is not None else load_language_model(cfg.model, device)
    shapes = {hook: model.hook_shape(hook) for hook in cfg.hooks}
    dtype = torch_dtype(cfg.store_dtype)
    position = None
    if manifest is not None and manifest["shards"]:
        position = torch.load(folder / _writer_state_name(len(manifest["shards"])), map_location="cpu",
                              weights_only=True)["data"]
    held, token_batches = held_out_and_batches(cfg.dataset, model, batch_size=cfg.model_batch_size,
                                               held_out=cfg.eval_sequences, seed=cfg.seed, position=position)
    if dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / EVAL_FILENAME, lambda p: save_file(
            {"tokens": torch.tensor(held.sequences, dtype=torch.int32)}, str(p)))
    if manifest is None:
        manifest = {"format_version": FORMAT_VERSION, "complete": False, "model": cfg.model.to_dict(),
                    "hooks": {hook: {"d_in": int(torch.Size(shape).numel()), "shape": list(shape)}
                              for hook, shape in shapes.items()},
                    "dtype": cfg.store_dtype, "dataset": cfg.dataset.to_dict(),
                    "context_size": cfg.dataset.context_size, "bos_token_id": model.bos_token_id,
                    "separator_token_id": model.separator_token_id, "first_document": held.n_documents,
                    "eval_sequences": len(held.sequences), "total_tokens": 0, "shards": [],
                    "config": cfg.to_dict()}
        if dist.is_main:
            _write_manifest(folder, manifest)
    source = ActivationSource(model, cfg.hooks, token_batches)
    bar = tqdm(total=cfg.total_tokens, initial=manifest["total_tokens"], unit="tok", unit_scale=True,
               desc=f"cache {folder.name}", disable=not progress or not dist.is_main, dynamic_ncols=True)
    started = time.perf_counter()
    tokens, masks, acts = [], [], {hook: [] for hook in cfg.hooks}  # this rank's rows since the last commit
    pending = 0  # every rank's rows since the last commit

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank reads every batch and counts its text tokens (the rounds stay in step)."""
        nonlocal pending
        batch = next(token_batches)
        mask = model.token_mask(batch)
        # Exactly total_tokens text tokens: the last batch's positions beyond are not cached.
        flat = mask.flatten()
        mask = (flat & (flat.cumsum(0) <= cfg.total_tokens - manifest["total_tokens"] - pending)).view_as(mask)
        pending += int(mask.sum())
        bar.update(int(mask.sum()))
        return batch, mask

    def cache_next_batch() -> None:
        batch, mask = next_batch()
        hook_acts = source.activations_of(batch)
        for hook in cfg.hooks:
            acts[hook].append(hook_acts[hook][mask.to(hook_acts[hook].device)].to("cpu", dtype))
        tokens.append(batch.to(torch.int32))
        masks.append(mask.cpu())

    try:
        while manifest["total_tokens"] + pending < cfg.total_tokens:
            dist.take_turns(cache_next_batch, next_batch)  # a round: one batch per rank
            if pending >= cfg.shard_tokens * dist.world_size or manifest["total_tokens"] + pending >= cfg.total_tokens:
                _commit_shards(folder, manifest, tokens, masks, acts, token_batches.position(), dist)
                tokens, masks, acts, pending = [], [], {hook: [] for hook in cfg.hooks}, 0
    finally:
        bar.close()
    manifest["complete"] = True
    if dist.is_main:
        _write_manifest(folder, manifest)
    dist.barrier()
    log.info("Cached %d tokens of %s in %d shards at %s (%.0f tokens/s).", manifest["total_tokens"],
             ", ".join(cfg.hooks), len(manifest["shards"]), folder,
             manifest["total_tokens"] / max(time.perf_counter() - started, 1e-9))
    return folder


def _comparable(config: dict) -> dict:
    """A cache config as JSON holds it, without the fields that may change between a writer and its
    continuation."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in ("resume", "device")}


def _write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write(folder / MANIFEST_FILENAME, json.dumps(manifest, indent=2) + "\n")


def _commit_shards(folder: Path, manifest: dict, tokens: list, masks: list, acts: dict, position: dict,
                   dist: Distributed) -> None:
    """Each rank writes its shard of the round(s) since the last commit; then rank 0 writes the
    writer state after them and the manifest that lists them (the commit point), and every rank
    updates its copy of the manifest the same way."""
    first = len(manifest["shards"])
    entry = None
    if masks and bool(torch.cat(masks).any()):
        name = _shard_name(first + dist.rank)
        tensors = {"tokens": torch.cat(tokens), "text_mask": torch.cat(masks)}
        tensors.update({f"acts.{hook}": torch.cat(parts).contiguous() for hook, parts in acts.items()})
        atomic_write(folder / name, lambda p: save_file(tensors, str(p)))
        entry = {"file": name, "tokens": int(tensors["text_mask"].sum()), "sequences": len(tensors["tokens"])}
    entries = dist.broadcast_object([e for e in dist.gather_objects(entry) or [] if e is not None])
    manifest["shards"].extend(entries)
    manifest["total_tokens"] += sum(e["tokens"] for e in entries)
    if dist.is_main:
        atomic_write(folder / _writer_state_name(len(manifest["shards"])), lambda p: torch.save({"data": position}, p))
        _write_manifest(folder, manifest)
        (folder / _writer_state_name(first)).unlink(missing_ok=True)  # superseded
    dist.barrier()


class CachedActivations:
    """Rows of a complete cache's hooks, shard by shard, epoch after epoch (a `core.activations`
    activation source). `position()` / `CachedActivations(..., position=)` resume exactly."""

    def __init__(self, folder: str | Path, hooks, *, shuffle_shards: bool = True, seed: int = 0,
                 position: Optional[dict] = None, chunk_tokens: int = READ_CHUNK_TOKENS):
        self.folder = Path(folder).expanduser()
        self.manifest = read_manifest(self.folder)
        self.hooks = tuple(hooks)
        missing = [h for h in self.hooks if h not in self.manifest["hooks"]]
        if missing:
            raise CacheError(f"The activation cache at {self.folder} has no activations of {', '.join(missing)}.")
        self.shuffle_shards, self.seed, self.chunk_tokens = shuffle_shards, seed, chunk_tokens
        self.epoch, self._shard, self._row = 0, 0, 0
        if position is not None:
            self.epoch, self._shard, self._row = int(position["epoch"]), int(position["shard"]), int(position["row"])
        self._order = self._shard_order(self.epoch)
        self._open: tuple[int, object] | None = None

    def _shard_order(self, epoch: int) -> list[int]:
        n = len(self.manifest["shards"])
        if not self.shuffle_shards:
            return list(range(n))
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)).tolist()

    def position(self) -> dict:
        return {"epoch": self.epoch, "shard": self._shard, "row": self._row}

    def _reader(self, shard: int):
        if self._open is None or self._open[0] != shard:
            path = self.folder / self.manifest["shards"][shard]["file"]
            try:
                self._open = (shard, safe_open(str(path), "pt"))
            except Exception as e:
                raise CacheError(f"Shard {path} of the activation cache cannot be read ({e}); the cache is "
                                 f"damaged, write it again.") from e
        return self._open[1]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def _next_chunk(self) -> tuple[int, int, int]:
        """(shard, first row, end row) of the next chunk; moves the position past it."""
        while True:
            if self._shard >= len(self._order):
                self.epoch, self._shard, self._row = self.epoch + 1, 0, 0
                self._order = self._shard_order(self.epoch)
            shard = self._order[self._shard]
            n = self.manifest["shards"][shard]["tokens"]
            if self._row < n:
                break
            self._shard, self._row = self._shard + 1, 0
        start, end = self._row, min(self._row + self.chunk_tokens, n)
        self._row = end
        return shard, start, end

    def __next__(self) -> dict[str, torch.Tensor]:
        shard, start, end = self._next_chunk()
        reader = self._reader(shard)
        return {hook: reader.get_slice(f"acts.{hook}")[start:end] for hook in self.hooks}

    def skip(self) -> None:
        """Move past the next chunk without reading it (another rank reads it)."""
        self._next_chunk()

    def token_ids(self, shard: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [n_sequences, context_size], text_mask) of a shard: row i of its activations is
        the i-th True position of text_mask, in row-major order."""
        reader = self._reader(shard)
        return reader.get_tensor("tokens").long(), reader.get_tensor("text_mask")


__all__ = ["cache_activations", "CachedActivations", "CacheError", "read_manifest", "check_cache_matches",
           "cached_eval_sequences"]
