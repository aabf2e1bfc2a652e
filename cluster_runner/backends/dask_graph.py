"""How one run becomes one Dask graph, what runs in Dask's workers, and how a task's failure
comes back.

The graph runs natively: each task is a Dask task (``dask.task_spec.Task``) whose upstream
arguments are references to other tasks' keys, so intermediate values move from worker to
worker and only the sinks reach the driver. :class:`DaskGraph` collects the run's tasks as the
walk submits them, and :meth:`DaskGraph.send` hands the whole graph to the scheduler in one
message (``client.get(graph, keys, sync=False)``, as ``client.map`` sends its tasks), not one
``client.submit`` a task. Dask would hand a new graph with a key that the scheduler still
holds the *old* result, so every key carries a token that changes after each run
(``primes/chunk-000003@5f2a9c01``): repeats are computed again, never served from memory.

``BackendOptions.nodes = k`` restricts every task to k of the cluster's workers (the first k by
name, chosen by :class:`~cluster_runner.backends.cluster.ClusterBackend`), through a per-key
``workers`` annotation, strict (no other workers): a sweep can time 1, 2, ... workers of one
running cluster without restarting it. Restricted tasks are placed where their inputs already
are (``distributed.scheduler.decide_worker`` picks among the workers holding a dependency), and
are never treated as root-ish, so the fan-out after one shared input (the base primes) would
all land on the worker holding that input, stealing moving only a few: measured 60 of 66 chunk
tasks on one of two workers. So tasks with inputs are dealt to the chosen workers round-robin,
one worker each; tasks without inputs keep the whole set, and the scheduler balances them by
occupancy.

In the worker processes of the embedded cluster, :func:`dask_setup` (a preload) prepares each
worker, and :func:`dask_identity` names it in every task's trace. A future that did not finish
becomes a runner error in :func:`future_error`: a task's own error is the
:class:`~cluster_runner.errors.TaskFailedError` the worker raised, with its traceback.
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import signal
import warnings
from collections.abc import Sequence
from typing import Any

import dask
from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef
from distributed import Client, Future, get_worker
from distributed.client import FutureCancelledError
from distributed.comm import get_address_host
from distributed.scheduler import KilledWorker

from cluster_runner.backends.failures import task_failed, worker_lost
from cluster_runner.devices import WORKER_GPU_ENV
from cluster_runner.errors import ExecutionError, TaskFailedError
from cluster_runner.execution.tasks import run_task
from cluster_runner.graph import Task

#: How many GPUs the embedded cluster's workers share out (read by :func:`dask_setup`).
GPUS_ENV = "CLUSTER_RUNNER_GPUS"


class _TaskErrorLog(logging.Filter):
    """Drops a worker's ``Compute Failed`` record of a task that raised a TaskFailedError.

    That error reaches the driver with the worker's traceback, and the run reports it: one
    line, and the traceback with ``--traceback``. The worker's own ERROR record (from
    ``distributed.worker``) would print it once more on the terminal, out of order. Records of
    any other failure pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ours = str(record.msg).startswith("Compute Failed") and "TaskFailedError" in str(
            record.args
        )
        return not ours


def dask_setup(worker: Any) -> None:
    """Preload hook run in each embedded worker process.

    Leaves Ctrl-C to the driver: a terminal's Ctrl-C reaches every process of the foreground
    group; the driver then closes the cluster in order, and a worker interrupted on its own
    would only print a traceback. Leaves a task's error to the driver too
    (:class:`_TaskErrorLog`). For a job with GPU stages, gives worker ``i`` the GPU
    ``i % gpus``, so the workers share out every GPU (as the local backend's workers do).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker").addFilter(_TaskErrorLog())
    # A lost scheduler is the run's one-line error, not each worker's INFO notice of it.
    logging.getLogger("distributed.core").setLevel(logging.WARNING)
    gpus = int(os.environ.get(GPUS_ENV, "0"))
    if gpus:
        digits = "".join(ch for ch in str(worker.name) if ch.isdigit()) or "0"
        os.environ[WORKER_GPU_ENV] = str(int(digits) % gpus)


def dask_identity() -> tuple[str, str]:
    """``(worker, node)`` inside a Dask worker: its address, and the host in that address."""
    address = get_worker().address
    return address, get_address_host(address)


def task_key(key: str) -> str:
    """The runner's key of a Dask key (``stage/chunk-000003@5f2a9c01``: ``stage/chunk-000003``)."""
    return str(key).rpartition("@")[0] or str(key)


class DaskGraph:
    """The tasks of the run in progress, with their placement, until :meth:`send` sends them."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(4)  # in every key of this run
        self._dealt = 0  # tasks with inputs dealt round-robin to the chosen workers so far
        self.discard()

    def discard(self) -> None:
        """Forget the tasks collected so far (a run that ends before it is sent)."""
        self.large = False  # the run copies driver inputs into its tasks
        self._tasks: dict[str, DaskTask] = {}
        self._workers: dict[str, list[str]] = {}  # worker restrictions (nodes=k)
        self._resources: dict[str, dict[str, float]] = {}  # resources (GPU)

    def add(self, task: Task, args: Sequence[Any], allowed: list[str] | None) -> TaskRef:
        """Add ``task``, restricted to the ``allowed`` worker addresses if any; its reference."""
        key = f"{task.key}@{self.token}"
        self._tasks[key] = DaskTask(key, run_task, dask_identity, task.key, task.func, *args)
        if allowed:
            workers = allowed
            if task.dependencies:
                workers = [workers[self._dealt % len(workers)]]  # see the module docstring
                self._dealt += 1
            self._workers[key] = workers
        self._resources[key] = dict(task.resources)
        return TaskRef(key)

    def send(self, client: Client) -> dict[str, Future]:
        """Send the graph to the scheduler in one message; a future for each task, by key.

        One ``update-graph`` for the whole graph, as ``client.map`` sends for its tasks, where
        a ``client.submit`` a task sends one each: on 5,000 no-op tasks, 8.8 s against 8.0 s.
        Placement goes with it as annotations, per key (the scheduler calls them with the key).
        The next run's keys get a new token.
        """
        annotations: dict[str, Any] = {}
        if self._workers:
            annotations["workers"] = self._workers.__getitem__
        if any(self._resources.values()):
            annotations["resources"] = self._resources.__getitem__
        keys = list(self._tasks)
        with dask.annotate(**annotations), warnings.catch_warnings():
            if self.large:  # inputs copied into every task (--transfer copy), on purpose
                warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
            futures = client.get(self._tasks, keys, sync=False)
        self.discard()
        self.token = secrets.token_hex(4)
        return dict(zip(keys, futures, strict=True))


def future_error(future: Future) -> Exception:
    """The runner error for a future that did not finish (erred, cancelled, lost)."""
    key = task_key(future.key)
    lost = ExecutionError(
        f"lost the connection to the Dask scheduler while task {key} was pending"
        " (the scheduler stopped or crashed)"
    )
    try:
        exc = future.exception(timeout=30)
    except FutureCancelledError as cancelled:
        if cancelled.reason == "scheduler-connection-lost":
            return lost
        return ExecutionError(f"task {key} was cancelled ({cancelled.reason})")
    except (OSError, TimeoutError):
        return lost
    if exc is None:  # cancelled without a reason, or lost with the scheduler
        if future.client.status != "running":
            return lost
        return ExecutionError(f"task {key} ended without a result (status {future.status})")
    if isinstance(exc, KilledWorker):
        key = task_key(getattr(exc, "task", key))  # the task that was lost
        allowed = getattr(exc, "allowed_failures", None)
        return worker_lost(
            f"task {key}",
            None if allowed is None else allowed + 1,
            allowed,
            note="on a connected cluster: its scheduler's allowed-failures",
        )
    if isinstance(exc, TaskFailedError):  # the worker's, as it raised it; but a copy: the
        # client keeps the one it received, which, raised, would hold this run's frames and
        # through them every future of the run: their results were never released (issue 21)
        exc = copy.copy(exc)
    return task_failed(exc, f"task {key}", key)
