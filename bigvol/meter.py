"""What a stage cost: wall seconds, CPU seconds and peak resident memory.

Every stage record carries these figures (``seconds``, ``cpu_seconds``, ``peak_rss_bytes``);
``bigvol bench`` turns them into throughput and projections, and the report shows them in
its provenance section.

CPU time and memory are those of this process *and its child processes* (the workers of a
``processes`` LocalCluster run as children); the workers of a remote cluster are not seen
(their figures are in the Dask dashboard). Memory is sampled every ``interval`` seconds by a
thread, so a peak shorter than that can be missed.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Meter", "format_duration", "release_freed_memory"]


def release_freed_memory() -> None:
    """Collect garbage, then hand the heap's free pages back to the OS (glibc's
    ``malloc_trim``; nothing elsewhere).

    Freed buffers of a stage (torch's feature maps, decoded chunks, per-thread malloc
    arenas) stay in this process's RSS otherwise, and the next stage's peak starts from
    them. No library wraps this; Dask's worker docs use the same ctypes call.
    """
    import ctypes
    import ctypes.util
    import gc
    import sys

    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass


def format_duration(seconds: float) -> str:
    """A duration for people: '45 s', '3.2 min', '1.5 h'.

    >>> format_duration(45), format_duration(192), format_duration(5400)
    ('45 s', '3.2 min', '1.5 h')
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _tree():
    import psutil

    me = psutil.Process()
    try:
        kids = me.children(recursive=True)
    except psutil.Error:
        kids = []
    return me, kids


def _cpu_and_rss() -> tuple[dict, int]:
    """CPU seconds per live process (by pid) and the summed RSS of the process tree."""
    import psutil

    me, kids = _tree()
    cpu, rss = {}, 0
    for p in (me, *kids):
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
                rss += p.memory_info().rss
        except psutil.Error:
            continue
    return cpu, rss


class Meter:
    """Context manager measuring wall time, CPU time and peak RSS of the process tree.

    >>> import time
    >>> with Meter(interval=0.05) as m:
    ...     t0 = time.process_time()
    ...     while time.process_time() - t0 < 0.3:   # 0.3 s of this process's CPU
    ...         _ = sum(i * i for i in range(10**4))
    >>> m.seconds >= 0.29 and 0.25 < m.cpu_seconds  # doctest: +SKIP
    True
    """

    def __init__(self, interval: float = 0.2):
        self.interval = float(interval)
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.peak_rss_bytes = 0
        self._stop = threading.Event()
        self._cpu_last: dict = {}
        self._cpu_first: dict = {}

    def _sample(self) -> None:
        cpu, rss = _cpu_and_rss()
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        for pid, c in cpu.items():
            self._cpu_first.setdefault(pid, 0.0 if self._started else c)
            self._cpu_last[pid] = c

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Meter:
        self._started = False
        self._sample()  # CPU already used by processes alive now is not this stage's
        self._started = True
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="bigvol-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = time.perf_counter() - self._t0
        # children that ended between samples lose their last < interval of CPU
        self.cpu_seconds = sum(self._cpu_last[p] - self._cpu_first[p] for p in self._cpu_last)

    def as_record(self) -> dict:
        return {"cpu_seconds": round(self.cpu_seconds, 3),
                "peak_rss_bytes": int(self.peak_rss_bytes)}
