"""Backends built on a ``concurrent.futures.Executor``: the shared half of serial, threads, local.

Such an engine knows nothing of dependencies, so the graph walk hands :meth:`submit` concrete
values and waits on the returned futures (``native_dependencies = False``).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Sequence
from typing import Any

from cluster_runner.backends.base import (
    Backend,
    TaskOutput,
    local_identity,
    run_batch,
    run_task,
)
from cluster_runner.errors import RunTimeoutError
from cluster_runner.graph import Task


class ExecutorBackend(Backend):
    """A backend whose engine is ``self.executor``; subclasses create it in :meth:`start`."""

    executor: cf.Executor | None = None
    #: Names the worker a task ran on, from inside it (a top-level function, so it pickles).
    identify: Callable[[], tuple[str, str]] = staticmethod(local_identity)

    def submit(self, task: Task, args: Sequence[Any]) -> cf.Future:
        assert self.executor is not None, "start() the backend before submitting"
        return self.executor.submit(run_task, self.identify, task.key, task.func, *args)

    def submit_batch(self, batch: Sequence[tuple[Task, Sequence[Any]]]) -> cf.Future:
        """Start several ready tasks in one message; the future's value is their outputs."""
        assert self.executor is not None, "start() the backend before submitting"
        work = [(task.key, task.func, args) for task, args in batch]
        return self.executor.submit(run_batch, self.identify, work)

    def gather(self, handles: Sequence[cf.Future], timeout: float | None) -> list[TaskOutput]:
        done, pending = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_EXCEPTION)
        if pending and not any(f.exception() for f in done):
            raise RunTimeoutError(f"{len(pending)} task(s) still running after {timeout:g} s")
        return [f.result() for f in handles]

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


class SynchronousExecutor(cf.Executor):
    """Runs each call at once in the calling thread: the serial reference and a debugging aid."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future
