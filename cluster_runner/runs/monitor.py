"""CPU time and peak memory of the driver's whole process tree while a run lasts.

A scaling study needs to know what a run *cost*, not only how long it took: a backend that is
fast because it spins four busy-waiting processes is not the same as one that keeps two cores
busy. :class:`TreeMonitor` measures that for the driver process and every descendant of it:
pool workers, a forkserver, and, when Dask or Ray are started by the backend (the embedded
case), their schedulers, raylets and workers, which are all children of the driver.

What is measured, honestly:

- ``cpu_s``: user + system CPU seconds the tree used during the span. A process alive at both
  ends counts its difference; one born during the span counts all of its CPU time; one that
  died during the span counts what it had used at the last sample the monitor took of it
  (so up to one ``interval`` of its CPU time can be missed). The monitor's own sampling thread
  runs in the driver and is included (well under 1% of a core at the default interval).
- ``peak_rss_bytes``: the largest sum of resident set sizes over the tree among the samples,
  taken every ``interval`` seconds and at both ends. A spike shorter than the interval can be
  missed, and pages shared between processes (a forked worker's copy-on-write pages, shared
  memory of an object store) are counted once per process, so this overstates the physical
  memory in use; it is a consistent yardstick between runs, not an exact figure.
- Processes on other machines (the workers of a cluster reached by ``--address``) are not
  measured: ``scope`` then says the figures cover the driver only.
- ``exclude`` leaves out processes (and their descendants) that belong to something else,
  such as the other backends a sweep keeps up while this one runs. A process started before
  any of them and shared by all (a multiprocessing forkserver, its resource tracker) is
  counted with every backend's runs.
- CPU times come from the operating system in clock ticks (10 ms on Linux), per process, so
  the CPU figure of a run that lasts a few tens of milliseconds is coarse.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

import psutil

#: Seconds between samples of the process tree.
DEFAULT_INTERVAL = 0.1

_Key = tuple[int, float]  # (pid, create_time): a pid may be reused, this pair may not


class TreeMonitor:
    """Context manager: CPU seconds and sampled peak RSS of this process tree over its span.

    Examples
    --------
    >>> with TreeMonitor() as monitor:
    ...     work()
    >>> monitor.result()["cpu_s"]
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, exclude: Collection[int] = ()) -> None:
        self.interval = interval
        self.exclude = frozenset(exclude)
        self._root = psutil.Process()
        self._start: dict[_Key, float] = {}
        self._last: dict[_Key, float] = {}
        self._seen: set[_Key] = set()
        self._peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: dict[str, Any] | None = None

    def __enter__(self) -> TreeMonitor:
        self._start = self._sample()
        self._last = dict(self._start)
        self._thread = threading.Thread(target=self._loop, name="runner-usage", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        end = self._sample()
        cpu = 0.0
        for key, last in self._last.items():
            final = end.get(key, last)  # died during the span: its last sample
            cpu += final - self._start.get(key, 0.0)  # born during the span: all of it
        self._result = {
            "cpu_s": max(cpu, 0.0),
            "peak_rss_bytes": self._peak_rss,
            "processes": len(self._seen),
            "interval_s": self.interval,
        }

    def result(self) -> dict[str, Any]:
        """``cpu_s``, ``peak_rss_bytes``, ``processes`` (seen in the tree), ``interval_s``."""
        if self._result is None:
            raise RuntimeError("the monitor's span has not ended")
        return dict(self._result)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> dict[_Key, float]:
        """CPU seconds per live process of the tree now; updates the peak RSS and last values."""
        procs = [self._root, *self._descendants()]
        cpu: dict[_Key, float] = {}
        rss = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.Error:  # gone between listing and reading, or not ours to read
                continue
            cpu[key] = times.user + times.system
        self._seen.update(cpu)
        self._last.update(cpu)
        self._peak_rss = max(self._peak_rss, rss)
        return cpu

    def _descendants(self) -> list[psutil.Process]:
        """The root's descendants, less every excluded process and everything below it."""
        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            return []
        if not self.exclude:
            return children
        parent = {}
        for proc in children:
            try:
                parent[proc.pid] = proc.ppid()
            except psutil.Error:
                parent[proc.pid] = None
        kept = []
        for proc in children:
            pid: int | None = proc.pid
            while pid is not None and pid != self._root.pid and pid not in self.exclude:
                pid = parent.get(pid)
            if pid is not None and pid not in self.exclude:
                kept.append(proc)
        return kept
