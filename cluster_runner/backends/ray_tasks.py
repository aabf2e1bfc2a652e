"""What a Ray task runs, and the wire format of what it returns.

Each task of the graph is a remote call of :func:`bind`'s body for the task's function, which
runs :func:`run_wire_task` on the worker: the Ray form of
:func:`~cluster_runner.execution.tasks.run_task`, with a cheaper wire format for the same
trace fields (:data:`WireOutput`); the driver turns it back into a
:class:`~cluster_runner.execution.tasks.TaskOutput` with :func:`from_wire`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from cluster_runner.execution.tasks import TaskOutput, TaskTrace, call_timed

_identity: tuple[str, str] | None = None  # this worker process's (worker id, node id)


def ray_identity() -> tuple[str, str]:
    """``(worker, node)`` inside a Ray task: the worker's id and its node's id.

    Asked of Ray once per worker process (a worker keeps its id and its node for life).
    """
    global _identity
    if _identity is None:
        context = ray.get_runtime_context()
        _identity = context.get_worker_id(), context.get_node_id()
    return _identity


def bind(func: Any) -> Any:
    """The Ray task body of one task function, with the function built in.

    Ray serialises every argument of every call, so passing the function with each task cost
    about 130 us a task more than a plain remote function; bound here, it is shipped once,
    when Ray exports the remote function. The body takes a *head* and, for a task that has
    upstream outputs, its arguments (see :meth:`RayBackend.submit`), and runs
    :func:`run_wire_task`.
    """

    def task_body(head: list[Any], *args: Any) -> WireOutput:
        key, rest = head
        if args:  # [key, positions of the upstream outputs], then the arguments
            return run_wire_task(key, func, args, rest)
        return run_wire_task(key, func, rest, ())  # [key, arguments]: nothing upstream

    task_body.__name__ = getattr(func, "__name__", "task")
    task_body.__qualname__ = f"run_task[{getattr(func, '__qualname__', task_body.__name__)}]"
    return task_body


#: What a Ray task returns: ``[value, traces]``, the traces of it and of every task upstream of
#: it, each the fields of a :class:`~cluster_runner.execution.tasks.TaskTrace` as a plain list.
#:
#: Why lists: Ray encodes lists, dicts, strings and numbers with msgpack, natively, and passes
#: anything else (tuples included, kept exact) to cloudpickle, which costs a Pickler and a
#: Python-level hook per object. A TaskOutput of TaskTrace dataclasses cost about 10 us to
#: pickle and 5 us to load; on 10,000 no-op tasks with two workers the runner went from 1.22x
#: to 1.07-1.09x the time of plain ``f.remote``/``ray.get`` with this format and the list head of
#: :meth:`RayBackend.submit`. The driver turns it into a TaskOutput (:func:`from_wire`).
#: Values themselves are returned as they are: a tuple value is pickled, and stays a tuple.
WireOutput = list[Any]


def run_wire_task(key: str, func: Any, args: Sequence[Any], upstream: Sequence[int]) -> WireOutput:
    """:func:`~cluster_runner.execution.tasks.run_task` for Ray, in the wire format.

    ``upstream`` are the positions of the arguments that are upstream outputs, to unwrap; the
    trace records the attempt Ray says this run of the task is.
    """
    traces: list[list[Any]] = []
    if upstream:
        args = list(args)
        for position in upstream:
            args[position], their_traces = args[position]
            traces.extend(their_traces)
    worker, node = ray_identity()
    value, start, end, phases, device = call_timed(key, func, args)
    traces.append([key, worker, node, start, end, phases, device, _attempt()])
    return [value, traces]


def _attempt() -> int:
    """The attempt Ray says the running task is: 0 the first run, n its n-th rerun."""
    try:
        return ray._private.worker.global_worker.core_worker.get_current_task_attempt_number()
    except AttributeError:  # a Ray without it: no retry count
        return 0


def from_wire(output: WireOutput) -> TaskOutput:
    """A Ray task's :data:`WireOutput` as the driver's TaskOutput."""
    value, traces = output
    return TaskOutput(value, tuple(TaskTrace(*trace) for trace in traces))
