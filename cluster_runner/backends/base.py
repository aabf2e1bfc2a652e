"""The backend contract: what the graph walk needs from an engine, and nothing more.

A backend is a lifecycle object (``start``, ``close``, context manager) around an engine that
runs :func:`run_task` calls. There are two kinds, told apart by a capability flag rather than by
``isinstance`` (as joblib does with ``supports_timeout``):

``native_dependencies = False``
    The engine is a ``concurrent.futures.Executor`` (serial, threads, local process pool).
    :meth:`Backend.submit` gets concrete argument values and returns a ``Future``; the walk in
    :mod:`cluster_runner.execution.walk` submits each task once its dependencies are done.

``native_dependencies = True``
    The engine resolves dependencies itself (Dask futures, Ray ObjectRefs). ``submit`` gets the
    handles of upstream tasks as arguments, so intermediate data moves worker to worker, and the
    walk submits the whole graph at once and only gathers the sinks.

Every task runs through :func:`run_task`, on whichever worker the engine picks. It unwraps
upstream :class:`TaskOutput` objects, times the call and records where it ran in a
:class:`TaskTrace`; traces ride along with the values, so the driver learns where every task of
a native graph ran by gathering the sinks alone. The function itself is called, timed and its
errors named in one place, :func:`call_timed`; a backend whose engine pays for every object
it serialises (Ray) runs its tasks through its own wrapper around it, with a cheaper wire format
for the same trace fields, and hands the walk the same :class:`TaskOutput` objects.
"""

from __future__ import annotations

import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cluster_runner.errors import TaskFailedError, UsageError
from cluster_runner.graph import Phased, Task


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


def warm_worker(hold: float = 0.0) -> tuple[int, int]:
    """Start-up probe run on each worker: load the compiled kernels, report ``(pid, BLAS threads)``.

    ``hold`` keeps the worker busy a moment, so that the probes of one round land on different
    workers of a pool or cluster that hands out work on demand.
    """
    from threadpoolctl import threadpool_info

    from cluster_runner.workloads.sieve import base_primes, count_primes_between

    count_primes_between(0, 100, base_primes(10))
    time.sleep(hold)
    blas = [lib.get("num_threads", 1) for lib in threadpool_info()]
    return os.getpid(), max(blas, default=1)


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


def run_batch(
    identify: Callable[[], tuple[str, str]],
    batch: Sequence[tuple[str, Callable[..., Any], Sequence[Any]]],
) -> list[TaskOutput]:
    """Run several ``(key, func, args)`` tasks in one message, each traced as :func:`run_task`."""
    worker, node = identify()
    return [_traced(worker, node, key, func, args) for key, func, args in batch]


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
    is named after the task here, on the worker: engines re-raise the error without our key.
    """
    start = time.time()
    try:
        value = func(*values)
    except Exception as exc:
        raise TaskFailedError(f"task {key} failed: {type(exc).__name__}: {exc}") from exc
    end = time.time()
    if isinstance(value, Phased):
        return value.value, start, end, dict(value.phases), value.device
    return value, start, end, None, None


@dataclass(frozen=True)
class BackendOptions:
    """How the user asked for the engine; each backend uses the fields that apply to it."""

    workers: int | None = None  # workers (processes, threads, CPUs) to start; None: CPU count
    address: str | None = None  # an existing cluster to connect to; None: start our own
    connect_timeout: float = 30.0  # seconds an address has to answer before we give up
    start_method: str | None = None  # local backend: multiprocessing start method
    nodes: int | None = None  # use only k nodes/workers of an existing cluster; None: all of them
    gpu: bool = False  # the job has GPU stages: give each worker a GPU, place tasks on GPUs
    retries: int = 3  # times a task lost with its worker may be rerun (Dask, Ray: the engine's)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific settings (TLS files)


@dataclass
class BackendInfo:
    """What a results record says about the engine that ran it."""

    name: str
    version: str
    workers: int
    nodes: int = 1
    address: str | None = None  # None: the backend started its own engine
    start_method: str | None = None  # multiprocessing start method, for the local backend
    dashboard: str | None = None
    startup_s: float | None = None  # seconds start() took
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """An engine that runs :func:`run_task` calls: the narrow interface every backend fills.

    Subclasses set :attr:`name` and :attr:`native_dependencies`, and implement :meth:`start`,
    :meth:`submit`, :meth:`gather` and :meth:`close`. Everything else (the graph walk, timing,
    verification, records) is written once, elsewhere, on top of these four.
    """

    name: ClassVar[str]
    native_dependencies: ClassVar[bool] = False
    #: Can connect to an existing cluster by ``--address``.
    supports_address: ClassVar[bool] = False
    #: The engine retries tasks lost with a worker on its own (Dask, Ray).
    retries_lost_tasks: ClassVar[bool] = False
    #: Tasks run in worker processes apart from the driver's, which a fault can kill
    #: (``--inject-fault kill-worker``); False where killing a task's process kills the driver.
    worker_processes: ClassVar[bool] = False

    def __init__(self, options: BackendOptions) -> None:
        if options.address and not self.supports_address:
            raise UsageError(
                f"the {self.name} backend runs on this machine only and takes no"
                " --address (use --backend dask or --backend ray)"
            )
        self.options = options
        self.startup_s: float | None = None

    @abstractmethod
    def start(self) -> None:
        """Bring the engine up (pool, cluster, connection). Called once, before any submit."""

    @abstractmethod
    def submit(self, task: Task, args: Sequence[Any]) -> Any:
        """Start ``task`` with ``args`` (values, or upstream handles if native); return a handle."""

    @abstractmethod
    def gather(self, handles: Sequence[Any], timeout: float | None) -> list[TaskOutput]:
        """Wait for the handles' :class:`TaskOutput` values, raising the first task error."""

    @abstractmethod
    def close(self) -> None:
        """Stop everything this backend started (and nothing it merely connected to)."""

    @abstractmethod
    def info(self) -> BackendInfo:
        """The engine's name, version, worker and node counts, address."""

    def preflight(self, expected_workers: int) -> list[str]:
        """Problems that would make a timing meaningless, in words; ``[]`` when ready to time.

        A scaling sweep calls this after :meth:`start` and before timing a point, and does not
        time a point that has problems. This default only checks that the engine has as many
        workers as the point asks for; engines that connect to a cluster also report workers
        that are missing or busy with someone else's tasks.
        """
        workers = self.info().workers
        if workers != expected_workers:
            return [f"{self.name}: {workers} worker(s) up, {expected_workers} expected"]
        return []

    def abort_running(self) -> None:
        """Stop the tasks in flight after a run timed out, leaving the backend usable.

        The default does nothing: threads cannot be stopped, and engines that can cancel
        (Dask, Ray) do so in :meth:`gather` when its timeout expires.
        """

    def restart(self) -> None:
        """Replace a broken engine (a process pool whose worker died); default: close + start."""
        self.close()
        self.start()

    def __enter__(self) -> Backend:
        began = time.perf_counter()
        self.start()
        self.startup_s = time.perf_counter() - began
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
