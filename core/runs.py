"""A run folder (`RunFolder`: its config, metrics log and checkpoints) and `MetricsLog`, the one
writer and reader of `metrics.jsonl`.

`RunFolder` owns what a training run keeps in `<results>/<run>/` (paths from `core.layout`):

- `config.json`, the run's full TrainingConfig (`saved_config`, written by `begin`);
- `metrics.jsonl` (`metrics`, below), truncated to a resumed checkpoint's step by `begin`;
- `checkpoints/step_<n>/`, each written into a hidden temporary folder, synced and renamed into
  place (`write_checkpoint`), older ones pruned only after that; `checkpoints()` lists the complete
  ones; a reader of a checkpoint's files turns any failure into one `ConfigError` sentence.

Nothing is written until `begin`, which the trainer calls when it starts (on rank 0 only).

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
from typing import Any, Callable, Iterator, Literal, Optional

from .config import TrainingConfig
from .errors import ConfigError
from .files import atomic_write, publish, remove_tree, temp_sibling
from .layout import CHECKPOINTS_FOLDER, METRICS_FILENAME, RUN_CONFIG_FILENAME, finished_dictionaries

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


CHECKPOINT_PREFIX = "step_"
CHECKPOINT_STATE = "state.json"
"""A checkpoint's summary (step, tokens, data position numbers, dictionaries, world size)."""
TRAINER_STATE = "trainer_state.pt"
"""A checkpoint's buffer, RNG and data position (torch.save of tensors and plain containers)."""
CHECKPOINT_FILES = (TRAINER_STATE, CHECKPOINT_STATE)
"""The files that make a checkpoint folder complete (besides dictionaries/<name>/{sae.safetensors, optimizer.pt})."""


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint folder `step_<n>`."""
    return int(Path(checkpoint).name[len(CHECKPOINT_PREFIX):])


class RunFolder:
    """`<results>/<run>/`: a training run's config, metrics log and checkpoints (module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metrics = MetricsLog(self.path / METRICS_FILENAME)

    @property
    def config_path(self) -> Path:
        return self.path / RUN_CONFIG_FILENAME

    @property
    def checkpoints_folder(self) -> Path:
        return self.path / CHECKPOINTS_FOLDER

    # ---------------------------------------------------------------- reading

    def saved_config(self) -> Optional[TrainingConfig]:
        """The config the run was started with (None before it started)."""
        return TrainingConfig.load_json(self.config_path) if self.config_path.is_file() else None

    def finished_dictionaries(self) -> list[Path]:
        return finished_dictionaries(self.path)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        folder = self.checkpoints_folder
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                 and p.name[len(CHECKPOINT_PREFIX):].isdigit() and all((p / f).is_file() for f in CHECKPOINT_FILES)]
        return sorted(found, key=checkpoint_step)

    def latest_checkpoint(self) -> Optional[Path]:
        found = self.checkpoints()
        return found[-1] if found else None

    @staticmethod
    def read_checkpoint_file(checkpoint: Path, name: str, read: Callable[[Path], Any], *, what: str = "") -> Any:
        """`read(checkpoint / name)`; any failure is one ConfigError saying to delete the checkpoint."""
        try:
            return read(checkpoint / name)
        except Exception as e:
            raise ConfigError(f"Checkpoint {checkpoint} is unreadable{what} ({type(e).__name__}: {str(e)[:200]}); "
                              f"delete that folder to resume from an earlier one.") from e

    def checkpoint_state(self, checkpoint: Path) -> dict:
        """The checkpoint's state.json."""
        return self.read_checkpoint_file(checkpoint, CHECKPOINT_STATE, lambda p: json.loads(p.read_text()))

    # ---------------------------------------------------------------- writing

    def begin(self, cfg: TrainingConfig, resume_step: Optional[int]) -> None:
        """Prepare the folder for a run starting (or resuming at `resume_step`): throw away checkpoints
        a killed run was still writing, save the config, and drop the metrics logged after the
        checkpoint (all of them for a new run), which this run logs again."""
        for leftover in self.checkpoints_folder.glob(f".{CHECKPOINT_PREFIX}*.tmp") if self.checkpoints_folder.is_dir() \
                else ():
            remove_tree(leftover)
        self.path.mkdir(parents=True, exist_ok=True)
        cfg.save_json(self.config_path)
        self.metrics.truncate_after(resume_step or 0)

    def write_checkpoint(self, step: int, fill: Callable[[Path], None], *, keep: int) -> Path:
        """Write checkpoint `step_<step>` durably: `fill(folder)` writes its files into a hidden
        temporary folder, which is synced and renamed into place; then all but the newest `keep`
        checkpoints are pruned."""
        target = self.checkpoints_folder / f"{CHECKPOINT_PREFIX}{step}"
        tmp = temp_sibling(target, folder=True)
        try:
            fill(tmp)
            publish(tmp, target)
        finally:
            if tmp.exists():
                remove_tree(tmp)
        for old in self.checkpoints()[:-keep]:
            remove_tree(old)
        return target


__all__ = ["CHECKPOINT_FILES", "CHECKPOINT_STATE", "TRAINER_STATE", "RunFolder", "checkpoint_step", "DICTIONARY_KEY", "EVAL_KEY", "FINAL_EVAL_KEY", "MetricsLog", "RecordKind", "parse_record", "record_kind"]
