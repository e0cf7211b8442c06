"""A run folder and its metrics log: the one writer and reader of `metrics.jsonl`.

`metrics.jsonl` holds one JSON object per line:

- a logged training step of one dictionary: `{"step", "tokens", "dictionary": name, "loss", "l0",
  "explained_variance", "dead_features", ..., "tokens_per_s"}`;
- a periodic evaluation: `{"step", "tokens", "dictionary", "eval": {metric: value}}`;
- the final evaluation: `{"step", "tokens", "dictionary", "final_eval": {metric: value}}`.

Lines of runs from before multi-dictionary training have no "dictionary". A run still training
appends to the file, and a killed one may end in a torn line: readers take complete lines only
(`MetricsLog.lines_after` reads incrementally from a byte offset) and skip lines that are not JSON
objects. A resumed run drops the lines logged after its checkpoint (`truncate_after`) and logs them
again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from .files import atomic_write
from .layout import METRICS_FILENAME

DICTIONARY_KEY = "dictionary"
"""The dictionary a record belongs to (absent in runs of one dictionary from before multi-dictionary training)."""
EVAL_KEY = "eval"
"""A periodic evaluation's metrics."""
FINAL_EVAL_KEY = "final_eval"
"""The final evaluation's metrics."""
READ_CHUNK = 1 << 20

RecordKind = Literal["train", "eval", "final_eval"]


def record_kind(record: dict) -> RecordKind:
    """What a metrics record is: a logged training step, a periodic or the final evaluation."""
    if isinstance(record.get(FINAL_EVAL_KEY), dict):
        return "final_eval"
    if isinstance(record.get(EVAL_KEY), dict):
        return "eval"
    return "train"


def parse_record(line: bytes | str) -> Optional[dict]:
    """The record of one line, or None for a line that is not a JSON object with a numeric "tokens"."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    tokens = record.get("tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, (int, float)) or not math.isfinite(tokens):
        return None
    return record


class MetricsLog:
    """`<run>/metrics.jsonl`: appended by the trainer (rank 0), read by the server and notebooks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of_run(cls, run_dir: str | Path) -> "MetricsLog":
        return cls(Path(run_dir) / METRICS_FILENAME)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append records, one line each, in one write."""
        if records:
            with open(self.path, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))

    def truncate_after(self, step: int) -> None:
        """Drop the records logged after `step` (a resumed run logs them again) and a last line torn by
        a kill, in one atomic rewrite."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(errors="replace").splitlines()
                if (record := parse_record(line)) is not None and record.get("step", 0) <= step]
        atomic_write(self.path, "".join(line + "\n" for line in kept))

    def records(self) -> Iterator[dict]:
        """Every complete, well-formed record, in order."""
        lines, _ = self.lines_after(0)
        for line in lines:
            record = parse_record(line)
            if record is not None:
                yield record

    def lines_after(self, offset: int) -> tuple[list[bytes], int]:
        """The complete non-empty lines after byte `offset` and the offset just after the last complete
        line (a torn or unfinished last line is left for a later call). ([], offset) without a file."""
        try:
            f = open(self.path, "rb")
        except OSError:
            return [], offset
        out: list[bytes] = []
        with f:
            f.seek(offset)
            pending = b""
            while chunk := f.read(READ_CHUNK):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    offset += len(line) + 1
                    if line.strip():
                        out.append(line)
        return out, offset


__all__ = ["DICTIONARY_KEY", "EVAL_KEY", "FINAL_EVAL_KEY", "MetricsLog", "RecordKind", "parse_record", "record_kind"]
