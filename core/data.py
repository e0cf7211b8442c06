"""Text data: load a dataset with HF `datasets`, tokenize, and pack documents into sequences.

Every sequence is `[BOS] + (context_size - 1)` tokens cut from the stream of documents, which
are joined with the separator token (EOS; for GPT-2 that is BOS too). BOS / EOS / pad positions
are masked out of activations later (see `LanguageModel.token_mask`): their activations have huge
norms and would dominate training and CE-loss evaluation.

The built-in offline corpus (`builtin:python-docs`) is real English prose any fresh install can
build without network: the pydoc topic pages and the docstrings of the Python standard library,
written once to a JSONL file and then read through the same `datasets` path as any local file.
"""

from __future__ import annotations

import ast
import json
import logging
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

import torch

from .config import BUILTIN_CORPUS, ConfigError, DatasetConfig, atomic_write_text

log = logging.getLogger(__name__)

LOCAL_FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class DatasetError(ValueError):
    """The dataset cannot be used as configured; the message says what to change."""


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


def builtin_corpus_file(cache_dir: str | Path = "~/.cache/gpt2_dictionary") -> Path:
    """Write (once) and return the JSONL file of the built-in corpus for this Python version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    target = Path(cache_dir).expanduser() / f"python-docs-{version}.jsonl"
    if target.is_file():
        return target
    import pydoc_data.topics

    target.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text": pydoc_data.topics.topics[key].strip(), "source": f"pydoc:{key}"})
             for key in sorted(pydoc_data.topics.topics)]
    lines += [json.dumps({"text": doc, "source": "stdlib"}) for doc in _stdlib_docstrings()]
    atomic_write_text(target, "".join(line + "\n" for line in lines))
    log.info("Built the offline corpus %s (%d documents).", target, len(lines))
    return target


# --------------------------------------------------------------------------- loading

def load_text_dataset(cfg: DatasetConfig, cache_dir: str | Path = "~/.cache/gpt2_dictionary"):
    """An iterable of dataset rows (dicts) for `cfg`, checked for the configured column."""
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
    if cfg.shuffle_documents:
        ds = ds.shuffle(seed=0, buffer_size=10_000)
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

def iterate_sequences(cfg: DatasetConfig, tokenizer, *, bos_token_id: int, separator_token_id: int,
                      cache_dir: str | Path = "~/.cache/gpt2_dictionary",
                      docs_per_tokenizer_call: int = 64) -> Iterator[list[int]]:
    """Yield packed sequences of exactly `context_size` ids, each starting with BOS. Deterministic
    for a given dataset and tokenizer, so a run can skip to where a checkpoint stopped."""
    ds = load_text_dataset(cfg, cache_dir)
    body = cfg.context_size - 1
    pending: list[int] = []

    def documents() -> Iterator[list[list[int]]]:
        batch: list = []
        for row in ds:
            batch.append(row[cfg.tokens_column] if cfg.is_tokenized else row[cfg.text_column])
            if len(batch) == docs_per_tokenizer_call:
                yield _token_lists(batch, cfg, tokenizer)
                batch = []
        if batch:
            yield _token_lists(batch, cfg, tokenizer)

    for docs in documents():
        for ids in docs:
            if cfg.is_tokenized and ids and ids[0] == bos_token_id:
                ids = ids[1:]
            pending.extend(ids)
            pending.append(separator_token_id)
            while len(pending) >= body:
                yield [bos_token_id] + pending[:body]
                del pending[:body]


def _token_lists(batch: list, cfg: DatasetConfig, tokenizer) -> list[list[int]]:
    if cfg.is_tokenized:
        return [list(map(int, ids)) for ids in batch]
    texts = [t if isinstance(t, str) else "" for t in batch]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


class TokenBatches:
    """Batches of packed sequences `[batch_size, context_size]`; counts what it has handed out so
    a resumed run can skip exactly that many sequences."""

    def __init__(self, cfg: DatasetConfig, tokenizer, *, bos_token_id: int, separator_token_id: int,
                 batch_size: int, cache_dir: str | Path = "~/.cache/gpt2_dictionary", skip_sequences: int = 0):
        self.cfg = cfg
        self.batch_size = batch_size
        self.sequences_served = 0
        self.epochs = 0
        self._restart = lambda: iterate_sequences(cfg, tokenizer, bos_token_id=bos_token_id,
                                                  separator_token_id=separator_token_id, cache_dir=cache_dir)
        self._sequences = self._restart()
        for _ in range(skip_sequences):
            if next(self._sequences, None) is None:
                break
            self.sequences_served += 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        """The next batch; a finite dataset starts over (and `epochs` counts how often)."""
        rows: list[list[int]] = []
        while len(rows) < self.batch_size:
            seq = next(self._sequences, None)
            if seq is None:
                if self.epochs > 1000 or (not rows and self.sequences_served == 0):
                    raise DatasetError(f"Dataset {self.cfg.path!r} yields no sequence of "
                                       f"{self.cfg.context_size} tokens; use more text or a smaller context_size.")
                self.epochs += 1
                log.info("Dataset %s exhausted; starting epoch %d.", self.cfg.path, self.epochs + 1)
                self._sequences = self._restart()
                continue
            rows.append(seq)
            self.sequences_served += 1
        return torch.tensor(rows, dtype=torch.long)
