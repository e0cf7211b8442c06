"""Training runs for the run page: curves from `metrics.jsonl`, read as the file grows.

A run's `metrics.jsonl` gets one line per dictionary per logged step (`loss`, `l0`,
`explained_variance`, `dead_features`, ... against `tokens`), per periodic evaluation (`"eval"`)
and at the end (`"final_eval"`); lines of runs from before multi-dictionary training have no
`"dictionary"`. A run still training appends to it, and a killed one may end in a torn line.

`RunCurves` reads the file incrementally through `core.runs.MetricsLog.lines_after`: each request
reads only the bytes appended since the last one (the reader remembers the byte offset after the
last complete line, so a torn last line is read again once its newline arrives). A file that
shrank or was replaced (a resumed run rewrites it without the lines after its checkpoint) is read
again from the start. Memory is
bounded whatever the file's length: each series keeps at most `max_points` points, by keeping
every `stride`-th point and doubling the stride (dropping every other kept point) when it fills
up; the newest point is always shown.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.runs import DICTIONARY_KEY, EVAL_KEY, FINAL_EVAL_KEY, MetricsLog, RunFolder, parse_record, record_kind

TRAIN_KEYS = ("loss", "l0", "explained_variance", "dead_features")
"""The curves drawn from the logged training steps."""
EVAL_KEYS = ("l0", "explained_variance", "ce_loss_recovered")
"""The curves drawn from the periodic evaluations."""
FINAL_KEYS = ("l0", "explained_variance", "ce_loss_recovered", "mse", "unfired_features")
MAX_POINTS = 1000


class Series:
    """Points (tokens, {key: value}) of one curve family, at most `max_points` kept (see the module docstring)."""

    def __init__(self, keys: tuple[str, ...], max_points: int = MAX_POINTS) -> None:
        self.keys = keys
        self.max_points = max(2, max_points)
        self.stride = 1
        self.seen = 0
        self.tokens: list[float] = []
        self.values: dict[str, list[float | None]] = {k: [] for k in keys}
        self.latest: tuple[float, dict[str, float | None]] | None = None

    def add(self, tokens: float, record: dict) -> None:
        point = {k: _number(record.get(k)) for k in self.keys}
        self.latest = (tokens, point)
        if self.seen % self.stride == 0:
            self.tokens.append(tokens)
            for k in self.keys:
                self.values[k].append(point[k])
            if len(self.tokens) >= self.max_points:  # keep every other point, from now on every 2*stride-th
                self.tokens = self.tokens[::2]
                self.values = {k: v[::2] for k, v in self.values.items()}
                self.stride *= 2
        self.seen += 1

    def to_dict(self) -> dict[str, Any]:
        tokens, values = list(self.tokens), {k: list(v) for k, v in self.values.items()}
        if self.latest is not None and (not tokens or tokens[-1] != self.latest[0]):
            tokens.append(self.latest[0])
            for k in self.keys:
                values[k].append(self.latest[1][k])
        return {"tokens": tokens, "values": values, "points": self.seen}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class DictionaryCurves:
    train: Series = field(default_factory=lambda: Series(TRAIN_KEYS))
    eval: Series = field(default_factory=lambda: Series(EVAL_KEYS))
    final: dict[str, float | None] | None = None
    final_tokens: float | None = None


class RunCurves:
    """The curves of one run's metrics.jsonl, brought up to date by `refresh()` (thread-safe)."""

    def __init__(self, log: MetricsLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        self.identity = identity
        self.offset = 0
        self.lines = 0
        self.skipped = 0
        self.curves: dict[str, DictionaryCurves] = {}
        self._tail = b""  # the last complete line read, to notice a rewrite that kept the size

    def refresh(self) -> "RunCurves":
        with self._lock:
            try:
                st = os.stat(self.log.path)
            except OSError:
                self._reset(None)
                return self
            identity = (st.st_dev, st.st_ino)
            if identity != self.identity or st.st_size < self.offset or not self._tail_unchanged():
                self._reset(identity)
            if st.st_size > self.offset:
                lines, self.offset = self.log.lines_after(self.offset)
                for line in lines:
                    self._add(line)
                if lines:
                    self._tail = lines[-1] + b"\n"
            return self

    def _tail_unchanged(self) -> bool:
        if not self._tail:
            return True
        try:
            with open(self.log.path, "rb") as f:
                f.seek(self.offset - len(self._tail))
                return f.read(len(self._tail)) == self._tail
        except OSError:
            return False

    def _add(self, line: bytes) -> None:
        self.lines += 1
        record = parse_record(line)
        if record is None:
            self.skipped += 1
            return
        tokens = float(record["tokens"])
        name = record.get(DICTIONARY_KEY)
        curves = self.curves.setdefault(name if isinstance(name, str) else "", DictionaryCurves())
        kind = record_kind(record)
        if kind == "final_eval":
            curves.final = {k: _number(record[FINAL_EVAL_KEY].get(k)) for k in FINAL_KEYS}
            curves.final_tokens = tokens
        elif kind == "eval":
            curves.eval.add(tokens, record[EVAL_KEY])
        else:
            curves.train.add(tokens, record)


class RunLogs:
    """One `RunCurves` per run folder, kept between requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[Path, RunCurves] = {}

    def get(self, run_folder: Path) -> RunCurves:
        log = RunFolder(run_folder).metrics
        with self._lock:
            curves = self._runs.get(log.path)
            if curves is None:
                curves = self._runs[log.path] = RunCurves(log)
        return curves.refresh()
