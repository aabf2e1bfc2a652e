"""What runs on a worker: one task (or a batch of them), timed, traced, its errors named.

On a cluster engine (Dask, Ray) every task runs through :func:`run_task`, on whichever worker
the engine picks. It unwraps upstream :class:`TaskOutput` objects, times the call and records
where it ran in a :class:`TaskTrace`; traces ride along with the values, so the driver learns
where every task of a native graph ran by gathering the sinks alone. A backend whose engine
pays for every object it serialises (Ray) runs its tasks through its own wrapper around
:func:`call_timed`, with a cheaper wire format for the same trace fields.

On a pool (serial, threads, local) the walk sends *batches*, and a batch comes back as one
:class:`BatchOutput`: the values in order, the worker named once, the start and end times as
two arrays of doubles (16 bytes a task), and the rare task that said more (a GPU kernel's
phases) in a side table. :func:`run_batch` runs a list of single tasks; :func:`run_slice` runs
a slice of a map (:class:`~cluster_runner.graph.MapTask`), one function over a run of
arguments, in a loop that costs a few hundred nanoseconds a task (issue 16: a million no-op
tasks at a pool's pace). The driver keeps them as columns (:mod:`.traces`).

A task that raises becomes a :class:`~cluster_runner.errors.TaskFailedError` here, on the
worker, while its traceback still exists: the error carries the task's key and the worker's
formatted traceback to the driver, whatever the engine's serialiser (as ``concurrent.futures``
keeps a worker's traceback as the cause of the error it re-raises).

:func:`warm_worker` is the start-up probe every process backend runs on each worker: it runs
the job's warm-up hooks (``BackendOptions.warm_up``, e.g. loading the primes workload's compiled
kernels) and reports the worker's pid and BLAS thread count.
"""

from __future__ import annotations

import operator
import os
import socket
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cluster_runner.errors import TaskFailedError
from cluster_runner.graph import Phased


@dataclass(frozen=True, slots=True)
class TaskTrace:
    """Where and when one task ran (wall-clock times of the worker's host)."""

    key: str
    worker: str  # the engine's name for the worker: a pid, a Dask worker address, a Ray worker id
    node: str  # the machine or engine node it belongs to
    start: float
    end: float
    phases: Mapping[str, float] | None = None  # seconds per phase, for kernels that report them
    device: str | None = None  # the accelerator a GPU kernel ran on
    attempt: int = 0  # 0: the first run of the task; n: its n-th rerun (engines that say so)


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """A task's value together with the traces of it and of every task upstream of it."""

    value: Any
    traces: tuple[TaskTrace, ...]


#: BLAS/OpenMP thread variables, set to 1 in every worker process the runner starts, so that N
#: workers use N cores rather than N x cores (each backend passes them its own way).
SINGLE_THREAD_ENV = dict.fromkeys(
    (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ),
    "1",
)

#: A warm-up hook: a top-level, picklable function of no arguments (see :func:`warm_worker`).
WarmUp = Callable[[], object]


def run_warm_ups(warm_up: Sequence[WarmUp]) -> None:
    """Call each warm-up hook once, in this process."""
    for hook in warm_up:
        hook()


def warm_worker(warm_up: Sequence[WarmUp] = (), hold: float = 0.0) -> tuple[int, int, float]:
    """Start-up probe run on each worker: run the warm-up hooks, report
    ``(pid, BLAS threads, seconds the hooks took)``.

    The hooks load what the job's tasks will need (compiled kernels), so that the cost is paid
    at start-up rather than in the first timed run; their time is the worker's warm-up, which
    the backend records apart from its start-up. ``hold`` keeps the worker busy a moment, so
    that the probes of one round land on different workers of a pool or cluster that hands
    out work on demand.
    """
    from threadpoolctl import threadpool_info

    began = time.perf_counter()
    run_warm_ups(warm_up)
    took = time.perf_counter() - began if warm_up else 0.0
    time.sleep(hold)
    blas = [lib.get("num_threads", 1) for lib in threadpool_info()]
    return os.getpid(), max(blas, default=1), took


def local_identity() -> tuple[str, str]:
    """``(worker, node)`` for a plain process: its pid and its host name."""
    return f"pid-{os.getpid()}", socket.gethostname()


def run_task(
    identify: Callable[[], tuple[str, str]], key: str, func: Callable[..., Any], *args: Any
) -> TaskOutput:
    """Run one task on a worker: ``func(*args)`` with upstream outputs unwrapped, and traced.

    ``identify`` is a top-level function of the backend's module that names the worker and node
    from inside the worker (a pid, a Dask worker address, a Ray node id).
    """
    worker, node = identify()
    return _traced(worker, node, key, func, args)


class BatchOutput(NamedTuple):
    """What a pool batch returns: its values in order, where it ran, when each task ran."""

    worker: str  # the engine's name for the worker (a pid, a thread)
    node: str  # its host
    values: list[Any]
    start: array  # of doubles: each task's start, time.time() on the worker
    end: array  # each task's end
    busy: float  # the sum of the tasks' run times, for the batch sizer
    extra: dict[int, tuple[dict[str, float], str]] | None  # position -> (phases, device)


def run_batch(
    identify: Callable[[], tuple[str, str]],
    batch: Sequence[tuple[str, Callable[..., Any], Sequence[Any]]],
) -> BatchOutput:
    """Run several ``(key, func, args)`` tasks (argument values given) in one message."""
    worker, node = identify()
    values, times, extra = [], [], None
    for position, (key, func, args) in enumerate(batch):
        value, start, end, phases, device = call_timed(key, func, args)
        values.append(value)
        times.append((start, end))
        if device is not None or phases is not None:
            extra = extra or {}
            extra[position] = (phases, device)
    return _output(worker, node, values, [s for s, _ in times], [e for _, e in times], extra)


def run_slice(
    identify: Callable[[], tuple[str, str]],
    func: Callable[..., Any],
    args: Sequence[Any],
    star: bool,
    shared: Sequence[Any],
    name: tuple[str, int, int],
) -> BatchOutput:
    """Run ``func`` over a slice of a map's arguments: ``func(args[i], *shared)`` for each
    ``i`` (``func(*args[i], *shared)`` with ``star``), timed one by one.

    ``name`` is ``(map key, index of args[0], digits)``: a task that fails is named by its
    key, made only then. The loop is written for each calling convention, so that a no-op
    task costs the worker a function call and two clock reads.
    """
    worker, node = identify()
    values: list[Any] = []
    starts: list[float] = []
    ends: list[float] = []
    keep, began, ended, clock = values.append, starts.append, ends.append, time.time
    try:
        if star:
            for own in args:
                began(clock())
                keep(func(*own, *shared))
                ended(clock())
        elif shared:
            for own in args:
                began(clock())
                keep(func(own, *shared))
                ended(clock())
        else:
            for own in args:
                began(clock())
                keep(func(own))
                ended(clock())
    except Exception as exc:  # the task that raised is the one after the last that ended
        key, first, digits = name
        failed = f"{key}-{first + len(ends):0{digits}d}"
        # Its traceback is text now; dropped, its frames no longer hold the task's arguments
        # (a process pool worker keeps its last error: a shared input's mapping, issue 21).
        raise TaskFailedError.from_exception(failed, exc) from exc.with_traceback(None)
    extra = None
    for position, value in enumerate(values):
        if type(value) is Phased:
            extra = extra or {}
            extra[position] = (dict(value.phases), value.device)
            values[position] = value.value
    return _output(worker, node, values, starts, ends, extra)


def _output(
    worker: str,
    node: str,
    values: list[Any],
    starts: list[float],
    ends: list[float],
    extra: dict[int, tuple[dict[str, float], str]] | None,
) -> BatchOutput:
    busy = sum(map(operator.sub, ends, starts))  # task by task: each time is ~1.8e9 s
    return BatchOutput(worker, node, values, array("d", starts), array("d", ends), busy, extra)


def _traced(
    worker: str, node: str, key: str, func: Callable[..., Any], args: Sequence[Any]
) -> TaskOutput:
    upstream: list[TaskTrace] = []
    values = []
    for arg in args:
        if isinstance(arg, TaskOutput):
            upstream.extend(arg.traces)
            values.append(arg.value)
        else:
            values.append(arg)
    value, start, end, phases, device = call_timed(key, func, values)
    trace = TaskTrace(key, worker, node, start, end, phases, device)
    return TaskOutput(value, (*upstream, trace))


def call_timed(
    key: str, func: Callable[..., Any], values: Sequence[Any]
) -> tuple[Any, float, float, dict[str, float] | None, str | None]:
    """``func(*values)`` on a worker: ``(value, start, end, phases, device)``.

    The one place a task's function is called, whatever the backend's wire format. A failure
    is named after the task here, on the worker, with the worker's traceback: engines re-raise
    the error without our key, and the traceback exists only here.
    """
    start = time.time()
    try:
        value = func(*values)
    except Exception as exc:  # the traceback, as text, is kept; its frames are not (run_slice)
        raise TaskFailedError.from_exception(key, exc) from exc.with_traceback(None)
    end = time.time()
    if isinstance(value, Phased):
        return value.value, start, end, dict(value.phases), value.device
    return value, start, end, None, None
