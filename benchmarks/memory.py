"""Peak memory of a piece of work: the process's resident memory sampled while it runs.

Standard library only, so that a peer's environment (tests/circuit_tracer_encode.py in
.venv-circuit-tracer) measures with the same code as this project's benchmarks."""

from __future__ import annotations

import resource
import threading

SAMPLE_SECONDS = 0.002


def resident_bytes() -> int:
    """The process's resident memory now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class PeakMemory:
    """`with PeakMemory() as peak: work()`; then `peak.bytes` is the largest resident memory seen
    during the block above what the process held when it began (sampled every 2 ms)."""

    def __enter__(self) -> "PeakMemory":
        self.start = self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def bytes(self) -> int:
        return self.peak - self.start
