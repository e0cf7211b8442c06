"""Background jobs: work that takes longer than a request should (explaining a feature with a language
model, computing an attribution graph), started by one request and followed by polling its status.

A job takes one of the GPT2DICT_INFERENCE_CONCURRENCY slots when it is submitted (none free: HTTP
503 at once, as for custom text and steering) and keeps it until it ends, so the server never runs
more model computations at once than it is told to. It runs in its own thread; its `stage` says what
it is doing and `step` / `steps` how far it is. Finished jobs stay readable for KEEP_S seconds.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from core.errors import USER_ERRORS

from .inference import InferenceBusy, ModelLoadFailed
from .results import NotFound

log = logging.getLogger(__name__)

KEEP_S = 3600.0
"""How long a finished job's status stays readable."""
BUSY_RETRY_AFTER_S = 5


@dataclass
class Job:
    id: str
    kind: str
    """What it does: "explain" (server/explanations.py) or "graph" (server/graphs.py)."""
    dictionary: str
    subject: dict[str, Any]
    """What it works on, e.g. {"analysis": ..., "feature": ...}."""
    steps: int
    status: str = "queued"
    """queued, running, done or failed."""
    stage: str = "waiting to start"
    step: int = 0
    """Steps done of `steps`."""
    error: Optional[str] = None
    result: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None

    def begin(self, step: int, stage: str) -> None:
        """Say what it does now, `step` steps of `steps` being done."""
        self.step, self.stage = step, stage

    @property
    def seconds(self) -> float:
        """Since it was submitted (until it ended)."""
        end = self.finished if self.finished is not None else time.monotonic()
        return round(end - self.started, 2)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "dictionary": self.dictionary, **self.subject, "status": self.status,
                "stage": self.stage, "step": self.step, "steps": self.steps, "error": self.error,
                "result": self.result, "seconds": self.seconds}


class Jobs:
    """The app's jobs, each in its own thread holding an inference slot (module docstring)."""

    def __init__(self, slots: threading.BoundedSemaphore, concurrency: int) -> None:
        self.slots, self.concurrency = slots, concurrency
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def submit(self, kind: str, dictionary: str, subject: dict[str, Any], steps: int,
               work: Callable[[Job], dict[str, Any]]) -> Job:
        """Start `work(job)` (which returns the job's result) in a thread; InferenceBusy (503) when every
        inference slot is taken."""
        if not self.slots.acquire(blocking=False):
            raise InferenceBusy(f"All {self.concurrency} inference slots are busy (GPT2DICT_INFERENCE_CONCURRENCY); "
                                "try again in a few seconds.", BUSY_RETRY_AFTER_S)
        try:
            job = Job(uuid.uuid4().hex, kind, dictionary, subject, steps)
            with self._lock:
                self._forget_old()
                self._jobs[job.id] = job
            threading.Thread(target=self._run, args=(job, work), name=f"{kind}-{job.id[:8]}", daemon=True).start()
        except BaseException:
            self.slots.release()
            raise
        return job

    def get(self, job_id: str, *, kind: Optional[str] = None) -> Job:
        """The job `job_id` (of this kind, when given); NotFound otherwise."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or kind not in (None, job.kind):
            raise NotFound(f"No {kind + ' ' if kind else ''}job {job_id!r} (finished jobs are forgotten after "
                           f"{KEEP_S:g} s).")
        return job

    def of_kind(self, kind: str, dictionary: str) -> list[Job]:
        """The jobs of this kind on this dictionary that are still kept, finished or not."""
        with self._lock:
            return [j for j in self._jobs.values() if j.kind == kind and j.dictionary == dictionary]

    def running(self, kind: str, dictionary: str, subject: dict[str, Any]) -> Job | None:
        """The unfinished job of this kind on this subject, if one is under way."""
        with self._lock:
            return next((j for j in self._jobs.values() if j.finished is None and j.kind == kind
                         and j.dictionary == dictionary and j.subject == subject), None)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for job_id in [i for i, j in self._jobs.items() if j.finished is not None and now - j.finished > KEEP_S]:
            del self._jobs[job_id]

    def _run(self, job: Job, work: Callable[[Job], dict[str, Any]]) -> None:
        job.status = "running"
        try:
            job.result = work(job) or {}
            job.step, job.stage, job.status = job.steps, "done", "done"
        except (*USER_ERRORS, InferenceBusy, ModelLoadFailed) as e:
            job.status, job.error = "failed", str(e)
        except Exception as e:  # noqa: BLE001  (a bug: logged with its traceback, the viewer told where)
            log.exception("Job %s (%s of %s) failed", job.id, job.kind, job.dictionary)
            job.status, job.error = "failed", f"The job failed ({type(e).__name__}); the server log has the details."
        finally:
            job.finished = time.monotonic()
            self.slots.release()


__all__ = ["Job", "Jobs", "KEEP_S"]
