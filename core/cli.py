"""What every entry point shares: errors a user caused end the program with their one-sentence
message, not a traceback; a run stopped by a signal says where it saved its checkpoint."""

from __future__ import annotations

import signal
import sys
from typing import Callable, TypeVar

from .errors import USER_ERRORS, DistributedError, TrainingInterrupted

T = TypeVar("T")


def run_entry_point(main: Callable[..., T], *args, **kwargs) -> T:
    """Call `main`; a user error exits with status 2 and `error: <message>`, a signal-stopped training
    run with 128 + the signal's number and where its checkpoint is, a torchrun job whose ranks cannot
    go on together (a rank died, configs differ) with status 1 and its message."""
    try:
        return main(*args, **kwargs)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(128 + signal.Signals[e.signal_name].value) from None
    except DistributedError as e:  # the ranks of a torchrun job cannot go on together
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


__all__ = ["USER_ERRORS", "run_entry_point"]
