"""The graph walk, written once for every backend.

:func:`execute` runs a :class:`~cluster_runner.graph.Graph` on a started backend and returns the
values of its sinks and a :class:`~cluster_runner.execution.tasks.TaskTrace` for every task.

Two policies, chosen by the backend's ``native_dependencies`` flag, each calling exactly the
methods its kind of backend declares (:mod:`cluster_runner.backends.base`):

*Native* (a :class:`~cluster_runner.backends.base.GraphBackend`: Dask, Ray): ``submit`` every
task in topological order, passing upstream handles as arguments; the engine resolves them on
the workers. The driver then ``gather``-s the sinks only, and reads every task's trace from the
traces that travelled along with the values; the engine says how many tasks it reran.

*Ready-driven* (a :class:`~cluster_runner.backends.base.PoolBackend`: serial, threads, local):
an executor knows nothing of dependencies, so a task becomes ready the moment its last
dependency finishes, with the values filled in. Ready tasks are sent with ``submit_batch``, in
batches (:mod:`cluster_runner.execution.batching`: one message per batch, sized
from the task times measured so far), a few batches per worker at a time. Completions arrive
through a queue fed by ``Future.add_done_callback``, which costs O(1) per batch, where
``concurrent.futures.wait`` over all running futures would cost O(running) per completion.
If the pool breaks because a worker died, the backend replaces it and every task that was in
flight is submitted again, each at most ``retries`` times; the count of resubmissions is
reported. A task that raises fails the run with a
:class:`~cluster_runner.errors.TaskFailedError` that keeps the worker's traceback.

Every wait is bounded by the run's deadline.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

from cluster_runner.backends.base import Backend, GraphBackend, PoolBackend
from cluster_runner.backends.failures import timed_out, worker_lost
from cluster_runner.errors import RunnerError, TaskFailedError
from cluster_runner.execution.batching import BatchSizer
from cluster_runner.execution.tasks import TaskTrace
from cluster_runner.graph import Graph, Ref

#: Default number of tasks a run may resubmit after losing workers.
DEFAULT_RETRIES = 3


@dataclass
class GraphResult:
    """The sinks' values, the trace of every task, and how many tasks had to be rerun."""

    values: dict[str, Any]
    traces: list[TaskTrace]
    retried: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def execute(
    graph: Graph, backend: Backend, timeout: float | None = None, retries: int = DEFAULT_RETRIES
) -> GraphResult:
    """Run ``graph`` on ``backend``; raise a :class:`RunnerError` if it fails or times out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if backend.native_dependencies:
        return _execute_native(graph, cast(GraphBackend, backend), deadline)
    return _execute_ready(graph, cast(PoolBackend, backend), deadline, retries)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _execute_native(graph: Graph, backend: GraphBackend, deadline: float | None) -> GraphResult:
    handles: dict[str, Any] = {}
    for task in graph:
        args = [handles[a.key] if isinstance(a, Ref) else a for a in task.args]
        handles[task.key] = backend.submit(task, args)
    sinks = graph.sinks()
    gathered = backend.gather([handles[key] for key in sinks], _remaining(deadline))
    traces: dict[str, TaskTrace] = {}
    for output in gathered.outputs:
        for trace in output.traces:
            traces.setdefault(trace.key, trace)
    return GraphResult(
        {k: o.value for k, o in zip(sinks, gathered.outputs, strict=False)},
        list(traces.values()),
        retried=gathered.retried,
    )


def _execute_ready(
    graph: Graph, backend: PoolBackend, deadline: float | None, retries: int
) -> GraphResult:
    waiting = {task.key: len(set(task.dependencies)) for task in graph}
    users = graph.dependents()
    ready: deque[str] = deque(key for key, count in waiting.items() if count == 0)
    values: dict[str, Any] = {}
    traces: list[TaskTrace] = []
    done: queue.SimpleQueue[cf.Future] = queue.SimpleQueue()
    running: dict[cf.Future, list[str]] = {}  # a batch's future -> its task keys
    attempts: dict[str, int] = {}  # key -> times it was lost with a worker
    sizer = BatchSizer(backend.info().workers)
    retried = batches = 0

    def dispatch() -> None:
        nonlocal batches
        while ready and len(running) < sizer.max_in_flight:
            size = sizer.size(len(ready))
            keys = [ready.popleft() for _ in range(size)]
            batch = [
                (graph[key], [values[a.key] if isinstance(a, Ref) else a for a in graph[key].args])
                for key in keys
            ]
            try:
                future = backend.submit_batch(batch)
            except cf.BrokenExecutor as exc:  # a worker died since the last completion
                future = cf.Future()  # lost with the pool, like the batches in flight
                future.set_exception(exc)
            batches += 1
            running[future] = keys
            future.add_done_callback(done.put)

    try:
        dispatch()
        while running:
            try:
                future = done.get(timeout=_remaining(deadline))
            except queue.Empty:
                backend.abort_running()
                example = next(iter(running.values()))[0]
                raise timed_out(sum(map(len, running.values())), example=example) from None
            keys = running.pop(future, None)
            if keys is None:
                continue  # a future of a pool that was replaced
            try:
                outputs = future.result()
            except cf.BrokenExecutor as exc:
                # A worker died (killed, out of memory, segfault): every task in flight is
                # lost with the pool. Replace the pool and submit them again, each at most
                # ``retries`` times, as Dask and Ray do with their own retries.
                lost = [*keys, *(k for batch in running.values() for k in batch)]
                for lost_key in lost:
                    attempts[lost_key] = attempts.get(lost_key, 0) + 1
                worst = max(lost, key=lambda k: attempts[k])
                if attempts[worst] > retries:
                    backend.restart()  # a fresh pool for the next run
                    raise worker_lost(
                        f"task {worst}", attempts[worst], retries, detail=type(exc).__name__
                    ) from None
                retried += len(lost)
                running.clear()
                backend.restart()
                ready.extendleft(reversed(lost))
                dispatch()
                continue
            except RunnerError:
                raise
            except Exception as exc:  # not raised by a task (they raise TaskFailedError): keep it
                raise TaskFailedError.from_exception(keys[0], exc) from exc
            busy = 0.0
            for key, output in zip(keys, outputs, strict=True):
                values[key] = output.value
                traces.extend(output.traces)
                trace = output.traces[-1]
                busy += trace.end - trace.start
                for user in users[key]:
                    waiting[user] -= 1
                    if waiting[user] == 0:
                        ready.append(user)
            sizer.record(len(keys), busy)
            dispatch()
    finally:
        for future in running:
            future.cancel()
    sinks = graph.sinks()
    return GraphResult(
        {k: values[k] for k in sinks}, traces, retried=retried, extra={"batches": batches}
    )
