"""Text data: load a dataset with HF `datasets`, tokenize, and pack documents into sequences.

Every sequence is `[BOS] + (context_size - 1)` tokens cut from the stream of documents, which
are joined with the separator token (for both, the model's document-boundary token
`<|endoftext|>` where its vocabulary has one; see `LanguageModel.bos_token_id`). BOS / separator /
pad positions are masked out of activations later (see `LanguageModel.token_mask`): their
activations have huge norms and would dominate training and CE-loss evaluation.

Training reads the data epoch after epoch. `PackedSequences.position()` says where it is —
the epoch, the dataset's own resumable state (`IterableDataset.state_dict()`: a shard and an
offset in it) taken at the start of the current tokenizer batch, the tokens carried into that
batch, the document-shuffle buffer, and how many sequences of the batch were served — and
`PackedSequences(..., position=...)` continues from there after re-tokenizing at most one batch
of documents, however many tokens came before. The first documents of the dataset can be held
out (`first_document`): every epoch starts after them, so the evaluation text they hold is never
trained on.

The built-in offline corpus (`builtin:python-docs`) is real English prose any fresh install can
build without network: the pydoc topic pages and the docstrings of the Python standard library,
each passage once (paragraphs repeated between topics or docstrings are dropped), written once
to a JSONL file and then read through the same `datasets` path as any local file.
"""

from __future__ import annotations

import ast
import copy
import json
import logging
import re
import sys
import sysconfig
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Optional

import numpy as np
import torch

from .config import BUILTIN_CORPUS, DatasetConfig
from .errors import ConfigError, DatasetError
from .files import atomic_write

if TYPE_CHECKING:
    from .lm import LanguageModel

log = logging.getLogger(__name__)

LOCAL_FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}

DOCS_PER_TOKENIZER_CALL = 64
"""Documents tokenized at once; a resumed run re-tokenizes at most this many."""

CORPUS_VERSION = 2
"""Bumped when the built-in corpus's content rules change (2: repeated passages removed)."""


# --------------------------------------------------------------------------- built-in corpus

def _stdlib_docstrings() -> Iterator[str]:
    """Module, class and function docstrings of the standard library, in sorted file order.
    Parsed with `ast` (nothing is imported), so the result depends only on the Python version."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo"}
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).parts
        if any(part in skip for part in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 80:
                    yield doc


def _without_repeated_passages(texts: list[str], shingle_words: int = 8) -> list[str]:
    """Drop every paragraph of which at least half of the `shingle_words`-word runs appeared in an
    earlier paragraph (pydoc topics include each other; many docstrings are shared), then every
    text left shorter than 80 characters."""
    seen: set[str] = set()
    kept_texts = []
    for text in texts:
        kept = []
        for paragraph in re.split(r"\n\s*\n", text):
            words = paragraph.split()
            if not words:
                continue
            shingles = {" ".join(words[i:i + shingle_words]) for i in range(max(1, len(words) - shingle_words + 1))}
            if 2 * len(shingles & seen) >= len(shingles):
                continue
            seen |= shingles
            kept.append(paragraph.strip("\n"))
        joined = "\n\n".join(kept)
        if len(joined) >= 80:
            kept_texts.append(joined)
    return kept_texts


def builtin_corpus_file(cache_dir: str | Path = "~/.cache/gpt2_dictionary") -> Path:
    """Write (once) and return the JSONL file of the built-in corpus for this Python version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    target = Path(cache_dir).expanduser() / f"python-docs-v{CORPUS_VERSION}-{version}.jsonl"
    if target.is_file():
        return target
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    texts = [topics[key].strip() for key in sorted(topics)] + list(_stdlib_docstrings())
    lines = [json.dumps({"text": text}) for text in _without_repeated_passages(texts)]
    atomic_write(target, "".join(line + "\n" for line in lines))
    log.info("Built the offline corpus %s (%d documents).", target, len(lines))
    return target


# --------------------------------------------------------------------------- loading

def load_text_dataset(cfg: DatasetConfig, cache_dir: str | Path = "~/.cache/gpt2_dictionary"):
    """An `IterableDataset` of rows (dicts) for `cfg`, checked for the configured column."""
    import datasets

    path = cfg.path
    if path == BUILTIN_CORPUS:
        path = str(builtin_corpus_file(cache_dir))
    elif path.startswith("builtin:"):
        raise ConfigError(f"dataset.path {cfg.path!r} is unknown; the built-in corpus is {BUILTIN_CORPUS!r}.")

    local = Path(path).expanduser()
    if local.exists():
        if local.is_dir() and ((local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise DatasetError(f"{local} has splits {list(ds)}, not {cfg.split!r}; set dataset.split.")
                ds = ds[cfg.split]
            ds = ds.to_iterable_dataset()
        else:
            files = sorted(p for p in local.rglob("*") if p.suffix in LOCAL_FORMATS) if local.is_dir() else [local]
            if not files:
                raise DatasetError(f"{local} holds no {'/'.join(LOCAL_FORMATS)} files.")
            formats = {LOCAL_FORMATS.get(p.suffix) for p in files}
            if None in formats or len(formats) != 1:
                raise DatasetError(
                    f"{local}: use files of one format among {', '.join(LOCAL_FORMATS)} (got {sorted(map(str, formats))})."
                )
            ds = datasets.load_dataset(formats.pop(), data_files=[str(p) for p in files], split="train",
                                       streaming=True)
    elif path.startswith((".", "/", "~")):
        raise DatasetError(f"Dataset file or folder {path} does not exist; check dataset.path.")
    else:
        try:
            ds = datasets.load_dataset(path, cfg.name, split=cfg.split, streaming=cfg.streaming)
        except Exception as e:  # the hub raises many types; one message for all
            raise DatasetError(
                f"Could not load dataset {path!r} from the hub ({type(e).__name__}: {str(e)[:200]}); "
                f"without network use a local file or {BUILTIN_CORPUS!r}."
            ) from e
        if not cfg.streaming:
            ds = ds.to_iterable_dataset()
    column = cfg.tokens_column if cfg.is_tokenized else cfg.text_column
    names = ds.column_names
    if names is None:  # some streamed datasets only know their columns after the first row
        first = next(iter(ds), None)
        names = list(first) if first else []
    if column not in names:
        which = "tokens_column" if cfg.is_tokenized else "text_column"
        raise DatasetError(
            f"Dataset {cfg.path!r} has no column {column!r}; its columns are {names}; set dataset.{which}."
        )
    return ds


# --------------------------------------------------------------------------- packing

def _token_lists(batch: list, cfg: DatasetConfig, tokenizer, bos_token_id: int) -> list[list[int]]:
    """Token ids of a batch of rows' texts (or of their pre-tokenized ids, a leading BOS dropped)."""
    if cfg.is_tokenized:
        docs = [list(map(int, ids)) for ids in batch]
        return [ids[1:] if ids and ids[0] == bos_token_id else ids for ids in docs]
    texts = [t if isinstance(t, str) else "" for t in batch]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


class HeldOut(NamedTuple):
    """The evaluation text at the start of a dataset."""

    sequences: list[list[int]]
    """Packed sequences of `context_size` tokens, BOS first."""
    n_documents: int
    """Documents they were cut from; the rest of the last one is dropped too, and training starts after them."""


def held_out_sequences(cfg: DatasetConfig, tokenizer, *, bos_token_id: int, separator_token_id: int,
                       n_sequences: int, cache_dir: str | Path = "~/.cache/gpt2_dictionary") -> HeldOut:
    """The first `n_sequences` packed sequences of the dataset and how many whole documents hold them."""
    ds = load_text_dataset(cfg, cache_dir)
    column = cfg.tokens_column if cfg.is_tokenized else cfg.text_column
    body = cfg.context_size - 1
    pending: list[int] = []
    sequences: list[list[int]] = []
    rows: list = []
    n_documents = 0

    def pack(batch: list) -> bool:
        nonlocal n_documents
        for ids in _token_lists(batch, cfg, tokenizer, bos_token_id):
            n_documents += 1
            pending.extend(ids)
            pending.append(separator_token_id)
            while len(pending) >= body and len(sequences) < n_sequences:
                sequences.append([bos_token_id] + pending[:body])
                del pending[:body]
            if len(sequences) == n_sequences:
                return True
        return False

    for row in ds:
        rows.append(row[column])
        if len(rows) == DOCS_PER_TOKENIZER_CALL:
            if pack(rows):
                return HeldOut(sequences, n_documents)
            rows = []
    if rows and pack(rows):
        return HeldOut(sequences, n_documents)
    raise DatasetError(f"Dataset {cfg.path!r} holds only {len(sequences)} sequences of {cfg.context_size} tokens, "
                       f"fewer than the {n_sequences} held out for evaluation; use more text, a smaller "
                       f"context_size or fewer trainer.eval_batches.")


class PackedSequences:
    """Packed sequences of `context_size` ids (BOS first), from document `first_document` on, epoch
    after epoch. `position()` / `PackedSequences(..., position=)` resume exactly (module docstring).

    With `cfg.shuffle_documents`, documents pass through a shuffle buffer of
    `cfg.shuffle_buffer_documents` tokenized documents driven by a generator seeded with `seed`;
    the buffer is part of the position, so a shuffled stream resumes exactly too.
    """

    def __init__(self, cfg: DatasetConfig, tokenizer, *, bos_token_id: int, separator_token_id: int,
                 cache_dir: str | Path = "~/.cache/gpt2_dictionary", first_document: int = 0, seed: int = 0,
                 position: Optional[dict] = None):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.bos_token_id, self.separator_token_id = bos_token_id, separator_token_id
        self.first_document = first_document
        self._base = load_text_dataset(cfg, cache_dir)
        self._column = cfg.tokens_column if cfg.is_tokenized else cfg.text_column
        self.epoch = 0
        self.sequences_served = 0
        self._pending: list[int] = []
        self._shuffle: list[np.ndarray] = []
        self._rng = torch.Generator().manual_seed(seed)
        self._ready: deque[list[int]] = deque()
        self._served_in_batch = 0
        self._snapshot: dict[str, Any] = {}
        if position is None:
            self._start_epoch(0)
        else:
            self._restore(position)

    # -- epochs and batches ----------------------------------------------------------------

    def _start_epoch(self, epoch: int, dataset_state: Optional[dict] = None) -> None:
        self.epoch = epoch
        # A new dataset object per epoch: a loaded state would otherwise stick to later iterations.
        self._dataset = self._base.skip(self.first_document)
        if dataset_state is not None:
            self._dataset.load_state_dict(dataset_state)
        self._rows = iter(self._dataset)
        self._exhausted = False
        self._take_snapshot()
        self._served_in_batch = 0

    def _take_snapshot(self) -> None:
        self._snapshot = {"dataset_state": copy.deepcopy(self._dataset.state_dict()),
                          "pending": list(self._pending), "shuffle": list(self._shuffle),
                          "rng": self._rng.get_state(), "exhausted": self._exhausted}

    def _read_batch(self) -> bool:
        """Tokenize and pack the next batch of documents into `_ready`; False at the epoch's end."""
        self._take_snapshot()
        self._served_in_batch = 0
        if self._exhausted:
            return False
        rows = []
        for row in self._rows:
            rows.append(row[self._column])
            if len(rows) == DOCS_PER_TOKENIZER_CALL:
                break
        if len(rows) < DOCS_PER_TOKENIZER_CALL:
            self._exhausted = True
        docs = [np.asarray(ids, dtype=np.int64) for ids in _token_lists(rows, self.cfg, self.tokenizer,
                                                                           self.bos_token_id)] if rows else []
        if self.cfg.shuffle_documents:
            docs = self._through_shuffle_buffer(docs)
        for ids in docs:
            self._pack(ids)
        return bool(rows) or bool(docs)

    def _through_shuffle_buffer(self, docs: list[np.ndarray]) -> list[np.ndarray]:
        """Documents leaving the shuffle buffer as `docs` enter it; all of it at the epoch's end."""
        out = []
        size = self.cfg.shuffle_buffer_documents
        for doc in docs:
            if len(self._shuffle) < size:
                self._shuffle.append(doc)
                continue
            j = int(torch.randint(size, (1,), generator=self._rng))
            out.append(self._shuffle[j])
            self._shuffle[j] = doc
        if self._exhausted:
            order = torch.randperm(len(self._shuffle), generator=self._rng).tolist()
            out += [self._shuffle[j] for j in order]
            self._shuffle = []
        return out

    def _pack(self, ids: np.ndarray) -> None:
        body = self.cfg.context_size - 1
        self._pending.extend(ids.tolist())
        self._pending.append(self.separator_token_id)
        while len(self._pending) >= body:
            self._ready.append([self.bos_token_id] + self._pending[:body])
            del self._pending[:body]

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        """The next sequence; at a finite dataset's end the next epoch starts (`epoch` counts them)."""
        empty_epochs = 0
        while not self._ready:
            if self._read_batch():
                continue
            empty_epochs = empty_epochs + 1 if self.sequences_served == 0 else 0
            if empty_epochs > 1:
                raise DatasetError(f"Dataset {self.cfg.path!r} yields no sequence of {self.cfg.context_size} "
                                   f"tokens after its first {self.first_document} (held-out) documents; use more "
                                   f"text or a smaller context_size.")
            self._pending = []  # the tail of an epoch is not carried into the next one
            log.info("Dataset %s exhausted; starting epoch %d.", self.cfg.path, self.epoch + 2)
            self._start_epoch(self.epoch + 1)
        self._served_in_batch += 1
        self.sequences_served += 1
        return self._ready.popleft()

    # -- resumption ------------------------------------------------------------------------

    def position(self) -> dict:
        """Where the stream is: everything `PackedSequences(..., position=)` needs to continue
        exactly here (plain containers and tensors, for `torch.save(weights_only)` checkpoints)."""
        snap = self._snapshot
        shuffle = snap["shuffle"]
        return {"epoch": self.epoch, "first_document": self.first_document,
                "sequences_served": self.sequences_served, "dataset_state": snap["dataset_state"],
                "pending": torch.tensor(snap["pending"], dtype=torch.int64),
                "shuffle_lengths": torch.tensor([len(d) for d in shuffle], dtype=torch.int64),
                "shuffle_tokens": torch.from_numpy(np.concatenate(shuffle)) if shuffle else torch.empty(0, dtype=torch.int64),
                "rng": snap["rng"], "exhausted": snap["exhausted"], "served_in_batch": self._served_in_batch}

    def _restore(self, position: dict) -> None:
        if position["first_document"] != self.first_document:
            raise DatasetError(f"The saved data position starts training at document {position['first_document']} "
                               f"but this run holds out {self.first_document}; the dataset or the evaluation "
                               f"settings changed since the checkpoint.")
        self._start_epoch(int(position["epoch"]), position["dataset_state"])
        self._exhausted = bool(position["exhausted"])
        self._pending = position["pending"].tolist()
        lengths = position["shuffle_lengths"].tolist()
        tokens = position["shuffle_tokens"].numpy()
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._shuffle = [tokens[offsets[i]:offsets[i + 1]].copy() for i in range(len(lengths))]
        self._rng.set_state(position["rng"].cpu())
        # Re-read the batch the position points into and drop what was already served from it.
        self._read_batch()
        skip = int(position["served_in_batch"])
        if skip > len(self._ready):
            raise DatasetError("The saved data position does not match the dataset (it points past the end of a "
                               "batch of documents); the dataset changed since the checkpoint.")
        for _ in range(skip):
            self._ready.popleft()
        self._served_in_batch = skip
        self.sequences_served = int(position["sequences_served"])


class TokenBatches:
    """Batches `[batch_size, context_size]` of `PackedSequences` (same arguments); `position()`
    after a batch is where the next one starts."""

    def __init__(self, cfg: DatasetConfig, tokenizer, *, bos_token_id: int, separator_token_id: int,
                 batch_size: int, cache_dir: str | Path = "~/.cache/gpt2_dictionary", first_document: int = 0,
                 seed: int = 0, position: Optional[dict] = None):
        self.cfg = cfg
        self.batch_size = batch_size
        self.sequences = PackedSequences(cfg, tokenizer, bos_token_id=bos_token_id,
                                         separator_token_id=separator_token_id, cache_dir=cache_dir,
                                         first_document=first_document, seed=seed, position=position)

    @property
    def epoch(self) -> int:
        return self.sequences.epoch

    @property
    def sequences_served(self) -> int:
        return self.sequences.sequences_served

    def position(self) -> dict:
        return self.sequences.position()

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        return torch.tensor([next(self.sequences) for _ in range(self.batch_size)], dtype=torch.long)


def held_out_and_batches(dataset: DatasetConfig, model: "LanguageModel", *, batch_size: int, held_out: int = 0,
                         seed: int = 0, position: Optional[dict] = None) -> tuple[Optional[HeldOut], TokenBatches]:
    """The model's token stream of `dataset`: its first `held_out` packed sequences (the evaluation's
    text; None when 0) and the batches of `batch_size` sequences after them, continuing from
    `position` when given. The one place that cuts the held-out text and starts training after it,
    for the trainer, the activation cache, the analyzer and the evaluation of imported dictionaries."""
    tokens = dict(bos_token_id=model.bos_token_id, separator_token_id=model.separator_token_id,
                  cache_dir=model.config.cache_dir)
    held = held_out_sequences(dataset, model.tokenizer, n_sequences=held_out, **tokens) if held_out else None
    batches = TokenBatches(dataset, model.tokenizer, batch_size=batch_size, seed=seed, position=position,
                           first_document=held.n_documents if held else 0, **tokens)
    return held, batches
