"""What a block of work cost this process: wall seconds, CPU seconds and peak resident memory."""
from __future__ import annotations

import resource
import threading
import time
from pathlib import Path

_PAGE = resource.getpagesize()
_STATM = Path("/proc/self/statm")


def rss_mb() -> float | None:
    """This process's resident memory now (Linux /proc); None where it cannot be read."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


def _cpu_seconds() -> float:
    # the process and its waited-for children (DataLoader workers, tuning workers)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Meter:
    """`with Meter() as m: ...`, then m.wall_s, m.cpu_s, m.rss_start_mb and m.peak_rss_mb.

    The peak is sampled (every `interval` seconds, in a daemon thread) because ru_maxrss is the
    process's high-water mark since it started: a stage after a bigger one would inherit its peak.
    Where /proc cannot be read, ru_maxrss stands in (an upper bound)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.wall_s = self.cpu_s = 0.0
        self.rss_start_mb = self.peak_rss_mb = None
        self._stop = threading.Event()
        self._thread = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = rss_mb()
            if now is not None and now > (self.peak_rss_mb or 0.0):
                self.peak_rss_mb = now

    def __enter__(self) -> "Meter":
        self.rss_start_mb = self.peak_rss_mb = rss_mb()
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = _cpu_seconds() - self._cpu
        end = rss_mb()
        if end is not None:
            self.peak_rss_mb = max(self.peak_rss_mb or 0.0, end)
        if self.peak_rss_mb is None:  # no /proc: the high-water mark (kB on Linux)
            self.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
