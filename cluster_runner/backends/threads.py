"""``threads``: a thread pool in the driver process.

The lesson every parallel-Python tutorial teaches, measurable here: kernels that release the GIL
(numpy's, and the numba sieve compiled with ``nogil=True``) scale on threads; pure-Python code
does not, except on a free-threaded build of CPython.
"""

from __future__ import annotations

import concurrent.futures as cf
import platform
import socket
import sys
import threading

from cluster_runner.backends.base import BackendInfo
from cluster_runner.backends.executor import ExecutorBackend


def thread_identity() -> tuple[str, str]:
    """``(worker, node)`` for a pool thread: its name and this host."""
    return threading.current_thread().name, socket.gethostname()


class ThreadsBackend(ExecutorBackend):
    name = "threads"
    identify = staticmethod(thread_identity)

    def start(self) -> None:
        self.warm_up_driver()
        self.executor = cf.ThreadPoolExecutor(self.spec.workers, thread_name_prefix="runner")

    def info(self) -> BackendInfo:
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        return BackendInfo(
            self.name,
            platform.python_version(),
            workers=self.spec.workers,
            startup_s=self.startup_s,
            warmup_s=self.warmup_s,
            extra={"gil_enabled": gil},
        )
