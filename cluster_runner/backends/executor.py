"""Backends built on a ``concurrent.futures.Executor``: the shared half of serial, threads, local.

Such an engine knows nothing of dependencies, so the ready-driven walk hands
:meth:`~ExecutorBackend.submit_batch` batches of ready tasks with concrete values and waits on
the returned futures (a :class:`~cluster_runner.backends.base.PoolBackend`). A subclass only
creates ``self.executor`` in ``start`` and says who its workers are.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any

from cluster_runner.backends.base import PoolBackend
from cluster_runner.execution.tasks import BatchOutput, local_identity


class ExecutorBackend(PoolBackend):
    """A backend whose engine is ``self.executor``; subclasses create it in :meth:`start`."""

    executor: cf.Executor | None = None
    #: Names the worker a task ran on, from inside it (a top-level function, so it pickles).
    identify: Callable[[], tuple[str, str]] = staticmethod(local_identity)

    def submit_batch(self, run: Callable[..., BatchOutput], *args: Any) -> cf.Future:
        """Start one batch in one message; the future's value is its :class:`BatchOutput`."""
        assert self.executor is not None, "start() the backend before submitting"
        return self.executor.submit(run, self.identify, *args)

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
