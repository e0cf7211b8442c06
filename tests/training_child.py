"""A training (or analysis) run in its own process, for the tests that kill it or launch it with
torchrun (tests/test_resume.py, tests/test_distributed.py).

    python -m tests.training_child <config.json>                 # a TrainingConfig
    torchrun --standalone --nproc-per-node 2 -m tests.training_child <config.json>
    python -m tests.training_child --analysis <config.json>      # an AnalysisConfig

Prints `TRAINING` once the trainer is built and `DONE` at the end. Test-only knobs, from the
environment:
- KILL_AT_CHECKPOINT_FSYNC=n: SIGKILL this process just before the n-th fsync of a checkpoint file
  or folder, i.e. in the middle of writing a checkpoint (or, for the last ones, after its rename).
- AUDIT_WRITES=<file>: record every file-system write Python makes (opening a file for writing,
  creating, renaming or deleting files and folders) to <file>.rank<RANK>, one path per line; the
  tests check that only rank 0 writes into the results folder.
- A file `<config>.rank<RANK>.json` next to the config, when it exists, is this rank's config
  instead (the test of ranks started with different configs).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from core import AnalysisConfig, TrainingConfig, analyze
from core.training import build_trainer
from core.cli import run_entry_point


def kill_at_checkpoint_fsync(n: int) -> None:
    import core.files

    real_fsync = core.files.fsync_path
    count = 0

    def fsync_path(path) -> None:
        nonlocal count
        if "checkpoints" in str(path):
            count += 1
            if count == n:
                os.kill(os.getpid(), signal.SIGKILL)
        real_fsync(path)

    core.files.fsync_path = fsync_path


def audit_writes(log_path: str) -> None:
    """Append the path of every write Python makes to `log_path` (PEP 578 audit events)."""
    log = open(log_path, "a", buffering=1)
    writes = {"os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree",
              "tempfile.mkstemp", "tempfile.mkdtemp", "os.truncate"}

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = (args[1] or "r"), (args[2] or 0)
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR):
                log.write(f"{os.fsdecode(args[0])}\n")
        elif event in writes and args:
            log.write(f"{os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else args[0]}\n")

    sys.addaudithook(hook)


def main() -> None:
    analysis = sys.argv[1] == "--analysis"
    path = Path(sys.argv[-1])
    rank = os.environ.get("RANK", "0")
    rank_config = path.with_name(f"{path.stem}.rank{rank}.json")
    if rank_config.is_file():
        path = rank_config
    if os.environ.get("KILL_AT_CHECKPOINT_FSYNC"):
        kill_at_checkpoint_fsync(int(os.environ["KILL_AT_CHECKPOINT_FSYNC"]))
    if os.environ.get("AUDIT_WRITES"):
        audit_writes(f"{os.environ['AUDIT_WRITES']}.rank{rank}")
    if analysis:
        run_entry_point(analyze, AnalysisConfig.load_json(path))
    else:
        trainer = run_entry_point(build_trainer, TrainingConfig.load_json(path))
        run_entry_point(trainer.begin)  # the run folder prepared: stale metrics of a killed run dropped
        print(f"TRAINING from step {trainer.step}", flush=True)
        run_entry_point(trainer.run)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
