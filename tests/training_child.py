"""One training run in its own process, for the tests that kill it (tests/test_resume.py).

    python -m tests.training_child <config.json>

Prints `TRAINING` once the trainer is built. With KILL_AT_CHECKPOINT_FSYNC=n in the environment,
the process SIGKILLs itself just before the n-th fsync of a checkpoint file or folder, i.e. in the
middle of writing a checkpoint (or, for the last fsync, after its rename and before the pruning).
"""

from __future__ import annotations

import os
import signal
import sys

from core import Trainer, TrainingConfig
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


def main() -> None:
    cfg = TrainingConfig.load_json(sys.argv[1])
    if os.environ.get("KILL_AT_CHECKPOINT_FSYNC"):
        kill_at_checkpoint_fsync(int(os.environ["KILL_AT_CHECKPOINT_FSYNC"]))
    trainer = run_entry_point(Trainer, cfg)
    print("TRAINING", flush=True)
    run_entry_point(trainer.run)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
