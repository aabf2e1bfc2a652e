"""The backend contract: what the graph walk needs from an engine, and nothing more.

A backend is a lifecycle object around an engine that runs
:func:`~cluster_runner.execution.tasks.run_task` calls. Every backend has the same lifecycle:
``start``, ``close`` (and the context manager built on them), ``info``, and the defaults
``preflight``, ``restart`` and ``abort_running``. Beyond that there are two kinds, each with
exactly the methods :mod:`cluster_runner.execution.walk` calls, and told apart by the
``native_dependencies`` flag rather than by ``isinstance`` (as joblib does with its
capability flags):

:class:`PoolBackend` (``native_dependencies = False``: serial, threads, local)
    The engine knows nothing of dependencies. The walk hands :meth:`PoolBackend.submit_batch`
    a batch of ready tasks with concrete argument values (or a slice of a map), and gets a
    ``concurrent.futures.Future`` of their output: the one required method, as ``submit`` is
    for ``Executor``.

:class:`GraphBackend` (``native_dependencies = True``: Dask, Ray)
    The engine resolves dependencies itself. The walk calls :meth:`GraphBackend.submit` for
    every task in topological order, passing the handles of upstream tasks as arguments, so
    intermediate data moves worker to worker, then :meth:`GraphBackend.gather` on the sinks'
    handles, which returns their outputs and how many tasks the engine reran
    (:class:`Gathered`). An engine may send the graph when it is gathered rather than task by
    task (Dask sends it whole, in one message).

What a backend is asked to do is a :class:`BackendOptions`, checked when made; the backend
resolves it once into ``self.spec`` (:mod:`cluster_runner.backends.spec`): the worker count,
the address, the TLS policy, the warm-up hooks. Engine-neutral parts of the cluster backends
(node choice, resource checks, error mapping) live in :mod:`cluster_runner.backends.cluster`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cluster_runner.execution.inputs import PlacedInput, by_reference, copied_in_process
from cluster_runner.execution.tasks import BatchOutput, TaskOutput, WarmUp, run_warm_ups
from cluster_runner.graph import Task

if TYPE_CHECKING:
    from cluster_runner.backends.spec import BackendSpec


@dataclass(frozen=True)
class BackendOptions:
    """How the user asked for the engine; each backend uses the fields that apply to it.

    Checked when made (:func:`cluster_runner.backends.spec.check_options`): a bad value is a
    one-line :class:`~cluster_runner.errors.UsageError`.
    """

    workers: int | None = None  # workers (processes, threads, CPUs) to start; None: CPU count
    address: str | None = None  # an existing cluster to connect to; None: start our own
    connect_timeout: float = 30.0  # seconds an address has to answer before we give up
    start_method: str | None = None  # local backend: multiprocessing start method
    nodes: int | None = None  # use only k nodes/workers of an existing cluster; None: all of them
    gpu: bool = False  # the job has GPU stages: give each worker a GPU, place tasks on GPUs
    retries: int = 3  # times a task lost with its worker may be rerun (Dask, Ray: the engine's)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific settings (TLS files)
    #: Top-level, picklable functions of no arguments that load what the tasks need (compiled
    #: kernels): run once in the driver, then on every worker at start-up (JobSpec.warm_ups()).
    warm_up: tuple[WarmUp, ...] = ()

    def __post_init__(self) -> None:
        from cluster_runner.backends.spec import check_options  # pydantic: not at --help

        for name, value in check_options(self).items():
            object.__setattr__(self, name, value)  # frozen: the checked values, set once


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
    startup_s: float | None = None  # seconds start() took, the warm-up left out
    warmup_s: float | None = None  # seconds the job's warm-up hooks took within start()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EngineTrace:
    """What :meth:`Backend.profile` wrote (``--profile``): a file, or why there is none."""

    path: Path | None = None  # the engine's trace, once the ``profile`` block has ended
    error: str | None = None  # why it could not be written, in words


@dataclass(frozen=True)
class Gathered:
    """What :meth:`GraphBackend.gather` hands the walk: the sinks' outputs, and the reruns."""

    outputs: list[TaskOutput]
    retried: int = 0  # tasks the engine reran after losing their worker, in this run


class Backend(ABC):
    """An engine that runs tasks: the lifecycle every backend fills (see the module doc).

    Subclasses set :attr:`name` and the flags, and implement :meth:`start`, :meth:`close`,
    :meth:`info`, and the submit methods of their kind (:class:`PoolBackend` or
    :class:`GraphBackend`). Everything else (the graph walk, timing, verification, records) is
    written once, elsewhere, on top of these.
    """

    name: ClassVar[str]
    #: The engine resolves dependencies itself (a :class:`GraphBackend`).
    native_dependencies: ClassVar[bool] = False
    #: Can connect to an existing cluster by ``--address``.
    supports_address: ClassVar[bool] = False
    #: ``--address`` schemes accepted (``""``: none given), and how the form reads in errors.
    address_schemes: ClassVar[tuple[str, ...]] = ()
    address_form: ClassVar[str] = ""
    #: ``--address`` words the engine resolves itself (Ray's ``auto``).
    address_keywords: ClassVar[tuple[str, ...]] = ()
    #: Speaks mutual TLS, under the loopback policy of :mod:`cluster_runner.backends.tls`.
    supports_tls: ClassVar[bool] = False
    #: Tasks run in worker processes apart from the driver's, which a fault can kill
    #: (``--inject-fault kill-worker``); False where killing a task's process kills the driver.
    worker_processes: ClassVar[bool] = False

    def __init__(self, options: BackendOptions) -> None:
        from cluster_runner.backends.spec import resolve

        self.options = options
        self.spec: BackendSpec = resolve(options, type(self))
        self.startup_s: float | None = None  # start() without the warm-up: the engine's own
        self.warmup_s: float | None = None  # the job's warm-up hooks, where they ran
        self._warm_s = 0.0  # warm-up seconds measured in the start() under way

    @abstractmethod
    def start(self) -> None:
        """Bring the engine up (pool, cluster, connection). Called once, before any submit.

        Starts with :meth:`warm_up_driver`, so that workers load what the driver built.
        """

    @abstractmethod
    def close(self) -> None:
        """Stop everything this backend started (and nothing it merely connected to)."""

    @abstractmethod
    def info(self) -> BackendInfo:
        """The engine's name, version, worker and node counts, address."""

    def warm_up_driver(self) -> None:
        """Run the warm-up hooks in the driver, before any worker starts; timed as warm-up.

        Compiled kernels are then in numba's cache, which the workers load, where they would
        otherwise all compile them at the same time.
        """
        if self.spec.warm_up:
            began = time.perf_counter()
            run_warm_ups(self.spec.warm_up)
            self._warm_s += time.perf_counter() - began

    def warmed_on_workers(self, seconds: Iterable[float]) -> None:
        """Count the warm-up the workers reported (run in parallel: the longest) as warm-up.

        The start-up probe (:func:`~cluster_runner.execution.tasks.warm_worker`) runs the
        hooks on each worker and says how long they took there (issue 16: the warm-up belongs
        to the workload, and is recorded apart from the engine's start-up).
        """
        self._warm_s += max(seconds, default=0.0)

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

    @contextlib.contextmanager
    def profile(self, stem: Path) -> Iterator[EngineTrace]:
        """Keep the engine's own trace of what runs inside the block (``--profile``).

        ``stem`` is the file's path without its suffix; the engine adds its own (Dask: a
        ``performance_report`` page, ``.html``; Ray: its timeline, Chrome trace ``.json``).
        The default keeps nothing: a pool's tasks are in the records' timelines already. A
        trace that cannot be written never fails the runs: the yielded object says why.
        """
        yield EngineTrace(error=f"{self.name} has no engine trace (see the records' timeline)")

    def share_input(self, key: str, value: Any, nbytes: int) -> PlacedInput:
        """Place a driver input once where every worker can reach it (issue 21).

        The default, for backends whose tasks run in the driver's process (serial, threads),
        hands over the driver's own object, read-only. Process backends override it: shared
        memory (local), the object store (Ray), a scatter (Dask). A value too large for the
        place is refused with a :class:`~cluster_runner.errors.UsageError`, before any task.
        """
        return by_reference(value)

    def copy_input(self, key: str, value: Any, nbytes: int) -> PlacedInput:
        """Send a driver input with every task instead (``--transfer copy``).

        The default copies it for each message in the driver's process (a pickle round trip,
        what a process boundary costs); process backends send the value in the message.
        """
        return copied_in_process(value, nbytes)

    def abort_running(self) -> None:
        """Stop the tasks in flight after a run timed out, leaving the backend usable.

        The default does nothing: threads cannot be stopped, and engines that can cancel
        (Dask, Ray) do so in :meth:`GraphBackend.gather` when its timeout expires.
        """

    def restart(self) -> None:
        """Replace a broken engine (a process pool whose worker died); default: close + start."""
        self.close()
        self.start()

    def __enter__(self) -> Backend:
        """Start, timed: ``startup_s`` is the engine's start-up, ``warmup_s`` the job's warm-up
        hooks within it (in the driver, and the longest of the workers'), measured apart."""
        self._warm_s = 0.0
        began = time.perf_counter()
        self.start()
        took = time.perf_counter() - began
        self.warmup_s = min(self._warm_s, took)
        self.startup_s = took - self.warmup_s
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoolBackend(Backend):
    """A backend whose engine runs ready tasks with concrete values: the ready-driven walk."""

    native_dependencies = False

    @abstractmethod
    def submit_batch(self, run: Callable[..., BatchOutput], *args: Any) -> cf.Future:
        """Start one batch of ready tasks, in one message: ``run(identify, *args)`` on a worker.

        ``run`` is :func:`~cluster_runner.execution.tasks.run_batch` (single tasks, argument
        values given) or :func:`~cluster_runner.execution.tasks.run_slice` (a slice of a map);
        ``identify`` is the backend's, naming the worker from inside it. The future's value is
        the batch's :class:`~cluster_runner.execution.tasks.BatchOutput`; it raises the first
        task error, or ``concurrent.futures.BrokenExecutor`` if a worker died (the walk then
        calls :meth:`restart` and submits the lost tasks again).
        """


class GraphBackend(Backend):
    """A backend whose engine resolves dependencies itself: the whole graph at once."""

    native_dependencies = True

    @abstractmethod
    def submit(self, task: Task, args: Sequence[Any]) -> Any:
        """Add ``task`` to the run, with upstream tasks' handles among ``args``; its handle."""

    @abstractmethod
    def gather(self, handles: Sequence[Any], timeout: float | None) -> Gathered:
        """Run what was submitted; wait for ``handles``' outputs, raising the first task error.

        Raises :class:`~cluster_runner.errors.RunTimeoutError` (the tasks in flight cancelled)
        if ``timeout`` seconds pass first.
        """
