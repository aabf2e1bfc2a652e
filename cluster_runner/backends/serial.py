"""``serial``: every task in the driver's own thread, one after another.

The T(1) reference of a scaling study with no parallel machinery at all, and the backend to
debug a workload with (a breakpoint in a task stops right there).
"""

from __future__ import annotations

import platform

from cluster_runner.backends.base import BackendInfo
from cluster_runner.backends.executor import ExecutorBackend, SynchronousExecutor


class SerialBackend(ExecutorBackend):
    name = "serial"

    def start(self) -> None:
        self.warm_up_driver()
        self.executor = SynchronousExecutor()

    def info(self) -> BackendInfo:
        return BackendInfo(
            self.name,
            platform.python_version(),
            workers=1,
            startup_s=self.startup_s,
            warmup_s=self.warmup_s,
        )
