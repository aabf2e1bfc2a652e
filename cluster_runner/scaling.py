"""Scaling sweeps: which points to time, in which order, and the loop that times them.

A sweep times one job at several *sizes* on one or more backends. The size is what the sweep
varies (its *axis*):

``workers``
    Each backend is brought up at each worker count in turn (the local pool's size, a Dask
    LocalCluster's workers, Ray's CPUs) and closed before the next.
``nodes``
    On an existing cluster (``--address``) the cluster is left as it is, and each point
    restricts the graph to k of its nodes (``BackendOptions.nodes``; each backend says what a
    node is: Dask restricts tasks to k workers, Ray to k nodes by a node-id label selector). A
    new client connects for each k; the cluster is never restarted.
``chunks``
    Granularity: the task count of every stage (``chunks=``) at fixed workers, to find where
    per-task overhead starts to cost more than the work.

``strong`` mode keeps the problem fixed; ``weak`` multiplies each stage's weak parameter by the
size (:meth:`JobSpec.scaled`), so the work per worker stays constant (Gustafson).

Order, against drift. On a shared machine the speed of the machine drifts while a sweep runs.
All backends of one size are started together (each start timed on its own, and reported
apart from the run times); after the warm-up runs, their timed runs alternate, one run of each
backend (and of each chunk count) per round: A B A B ..., so drift hits every backend alike.
Different sizes cannot be interleaved the same way, as an embedded Ray can only be started
once per process at a time. The cost: idle engines of the other backends stay up while one
runs; their background work (heartbeats) lands on every backend's runs alike.

Pre-flight. Before timing a size, each backend's :meth:`~Backend.preflight` must find the
expected workers (and nodes) up and idle; a backend that does not is not timed at that size,
and a ``skipped`` record saying why is written in place of its runs. The CPU load of processes
outside the sweep is sampled too, and recorded (``other_load``): a busy machine is reported,
not refused, since on a shared machine it may never be idle.

Usage figures. The processes each backend started are noted, so that the CPU and memory of a
run (:mod:`cluster_runner.usage`) leave out the other backends kept up meanwhile.

Every record is handed to ``on_record`` the moment its run ends, so an interrupted sweep keeps
every run it finished; on Ctrl-C every backend started is closed on the way out.

Failures. A run that fails (its timeout passed, or workers were lost more often than the retry
budget allows) is recorded as ``failed``. With ``keep_going`` its point is dropped from the
later rounds and the sweep goes on; without it the sweep stops there, its backends closed, and
the run's error is raised to the caller (the CLI prints it in one line).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster_runner.backends import Backend, BackendInfo, BackendOptions, create_backend
from cluster_runner.errors import ExecutionError, UsageError
from cluster_runner.jobspec import JobSpec
from cluster_runner.results import new_id
from cluster_runner.run import run_job, skipped_record
from cluster_runner.usage import TreeMonitor

MODES = ("strong", "weak")

#: Seconds over which the CPU load of other processes is sampled before a size is timed.
LOAD_SAMPLE_S = 0.25


@dataclass(frozen=True)
class Point:
    """One configuration to time: a job variant on one backend at one size."""

    backend: str
    size: int  # the value this point has on the sweep's axis
    workers: int | None  # workers expected (per node on a cluster); None: whatever is there
    nodes: int | None  # use k nodes of an existing cluster; None: all of them
    chunks: int | None  # the task-count override; None: the job's own
    factor: int  # weak-scaling factor the job was scaled by (1 in strong mode)
    job: JobSpec  # the job exactly as it runs at this point

    @property
    def device(self) -> str:
        """``gpu`` when the point's array stages run on GPUs, else ``cpu``."""
        return "gpu" if self.job.uses_gpu else "cpu"

    @property
    def label(self) -> str:
        """A short name: ``local x2``, ``dask 1 node``, ``ray x2 c128``, ``local x2 gpu``."""
        where = f" {self.nodes} node{'s' * (self.nodes != 1)}" if self.nodes else ""
        size = f" x{self.workers}" if self.workers and not self.nodes else ""
        chunks = f" c{self.chunks}" if self.chunks else ""
        gpu = " gpu" if self.device == "gpu" else ""
        return f"{self.backend}{size}{where}{chunks}{gpu}"


@dataclass(frozen=True)
class Engine:
    """One backend brought up for one size, and the points timed on it."""

    backend: str
    options: BackendOptions
    expected_workers: int | None  # what the pre-flight must find; None: no worker count check
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Step:
    """The engines of one size: started together, their runs interleaved, closed together."""

    size: int
    engines: tuple[Engine, ...]


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep will time, in order; pure data, built before anything starts."""

    job: JobSpec  # the job as given (before scaling or chunk overrides)
    mode: str
    axis: str  # "workers", "nodes" or "chunks"
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()  # what the plan left out, for the user

    def runs(self, warmup: int, repeat: int) -> int:
        """Runs the sweep will make if nothing is skipped: the progress bar's total."""
        points = sum(len(e.points) for s in self.steps for e in s.engines)
        return points * (warmup + repeat)


def plan_sweep(
    job: JobSpec,
    backends: Sequence[str],
    *,
    workers: Sequence[int],
    nodes: Sequence[int] = (),
    chunks: Sequence[int] = (),
    mode: str = "strong",
    address: str | None = None,
    connect_timeout: float = 30.0,
    start_method: str | None = None,
    gpu: bool = False,
    extra: Mapping[str, Any] | None = None,
    retries: int = 3,
) -> SweepPlan:
    """The points of a sweep; raise a one-line :class:`UsageError` for impossible requests.

    Every job variant (scaled, re-chunked, on GPUs) is built and validated here, so a sweep
    that would fail at its last point for a bad parameter fails before its first. With ``gpu``
    every point is timed twice, as given and with the array stages on GPUs, so one report
    compares CPU and GPU scaling.
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (choose strong or weak)")
    if not backends:
        raise UsageError("no backend to sweep (e.g. --backend local,dask,ray)")
    if nodes and not address:
        raise UsageError("--nodes restricts an existing cluster: give its --address too")
    if address and not nodes:
        raise UsageError(
            "on an existing cluster (--address) the workers are fixed: sweep the node count"
            " with --nodes 1,2,..."
        )
    if address and len(backends) > 1:
        raise UsageError("--address names one cluster: sweep one --backend at a time on it")
    if nodes and len(workers) > 1:
        raise UsageError("with --nodes, --workers is the worker count expected on each node")
    axis = "chunks" if len(chunks) > 1 else ("nodes" if nodes else "workers")
    sizes = sorted(nodes or workers)
    notes = []
    steps = []
    for size in sizes:
        factor = size if mode == "weak" else 1
        engines = []
        for name in backends:
            if name == "serial" and size != 1:
                notes.append(f"serial runs on one worker only: not timed at {size}")
                continue
            per_node = workers[0] if nodes and workers else None
            count = None if nodes else size
            options = BackendOptions(
                workers=count,  # None on a cluster: its workers are what they are
                address=address,
                connect_timeout=connect_timeout,
                start_method=start_method,
                nodes=size if nodes else None,
                gpu=gpu or job.uses_gpu,
                retries=retries,
                extra=dict(extra or {}),  # backend-specific settings (TLS files)
            )
            expected = per_node * size if per_node else count
            points = tuple(
                Point(
                    backend=name,
                    size=size,
                    workers=count if not nodes else per_node,
                    nodes=size if nodes else None,
                    chunks=c,
                    factor=factor,
                    job=_variant(job, c, factor, on_gpu),
                )
                for c in (chunks or [None])
                for on_gpu in ((False, True) if gpu else (False,))
            )
            engines.append(Engine(name, options, expected, points))
        if engines:
            steps.append(Step(size, tuple(engines)))
    if not steps:
        raise UsageError("nothing to time: " + "; ".join(notes))
    return SweepPlan(job, mode, axis, tuple(steps), tuple(notes))


def _variant(job: JobSpec, chunks: int | None, factor: int, on_gpu: bool = False) -> JobSpec:
    variant = job if chunks is None else job.with_overrides([f"chunks={chunks}"])
    variant = variant.on_gpu() if on_gpu else variant
    return variant.scaled(factor) if factor != 1 else variant


@dataclass(frozen=True)
class Run:
    """One run of the order: which engine of the step, which point, which repeat."""

    engine: int  # index into the step's engines
    point: Point
    index: int  # 0-based over the point's warm-ups, then its timed runs
    warmup: bool


def run_order(step: Step, warmup: int, repeat: int) -> list[Run]:
    """Warm-ups first (each point's together), then rounds with one timed run of every point.

    Rounds alternate the backends (and chunk counts): A B A B ..., never A A B B.
    """
    order = []
    for e, engine in enumerate(step.engines):
        for point in engine.points:
            order.extend(Run(e, point, i, True) for i in range(warmup))
    for round_ in range(repeat):
        for e, engine in enumerate(step.engines):
            for point in engine.points:
                order.append(Run(e, point, warmup + round_, False))
    return order


class SweepObserver:
    """What a sweep tells its caller as it goes; the defaults ignore everything."""

    def started(self, engine: Engine, info: BackendInfo) -> None:
        """A backend is up (``info.startup_s`` says how long that took)."""

    def checked(self, step: Step, load_percent: float, problems: dict[str, list[str]]) -> None:
        """The pre-flight of a size: other processes' CPU load, and each backend's problems."""

    def finished(self, record: dict[str, Any]) -> None:
        """A run ended (verified, unverified, failed) or a point was skipped."""

    def advance(self, runs: int) -> None:
        """``runs`` of the planned runs are done, or will not be made."""


@dataclass
class SweepOutcome:
    """What happened: counts of runs by status, and the points that did not all verify."""

    records: int = 0
    verified: int = 0
    failed_points: list[str] = field(default_factory=list)
    skipped_points: list[str] = field(default_factory=list)
    unverified_runs: int = 0

    @property
    def ok(self) -> bool:
        return not (self.failed_points or self.skipped_points or self.unverified_runs)


def run_sweep(
    plan: SweepPlan,
    *,
    warmup: int,
    repeat: int,
    timeout: float | None = None,
    retries: int = 3,
    on_record: Callable[[dict[str, Any]], None] = lambda record: None,
    observer: SweepObserver | None = None,
    fault: str | None = None,
    keep_going: bool = False,
) -> SweepOutcome:
    """Time every point of ``plan``; hand each record to ``on_record`` as its run ends.

    A run that fails is recorded; with ``keep_going`` its point is dropped from the later
    rounds and the sweep goes on, else its error is raised once the backends are closed.
    Errors the user must fix (a backend that is not installed, an address that does not
    answer) stop the sweep with a one-line error. ``fault`` is injected into every run.
    """
    observer = observer or SweepObserver()
    outcome = SweepOutcome()
    session = new_id()

    def emit(record: dict[str, Any]) -> None:
        on_record(record)
        outcome.records += 1
        outcome.verified += record["status"] == "verified"
        outcome.unverified_runs += record["status"] == "unverified"
        observer.finished(record)

    for step in plan.steps:
        with contextlib.ExitStack() as stack:
            owned: list[set[int]] = []  # processes each backend started
            live = [_bring_up(engine, stack, observer, owned) for engine in step.engines]
            problems = {
                step.engines[e].backend: _preflight(step.engines[e], backend)
                for e, backend in enumerate(live)
            }
            load = _other_load()
            observer.checked(step, load, problems)
            dropped: set[str] = set()  # labels of points not timed further
            for e, engine in enumerate(step.engines):
                if problems[engine.backend]:
                    for point in engine.points:
                        dropped.add(point.label)
                        outcome.skipped_points.append(point.label)
                        labels = _labels(plan, point, None, load)
                        emit(
                            skipped_record(
                                point.job,
                                live[e],
                                problems[engine.backend],
                                session=session,
                                labels=labels,
                            )
                        )
                        observer.advance(warmup + repeat)
            for run in run_order(step, warmup, repeat):
                if run.point.label in dropped:
                    continue
                round_ = None if run.warmup else run.index - warmup
                labels = _labels(plan, run.point, round_, load)
                try:
                    run_job(
                        run.point.job,
                        live[run.engine],
                        repeat=0 if run.warmup else 1,
                        warmup=1 if run.warmup else 0,
                        timeout=timeout,
                        retries=retries,
                        on_record=emit,
                        session=session,
                        labels=labels,
                        first_index=run.index,
                        exclude_pids=set().union(
                            *(pids for e, pids in enumerate(owned) if e != run.engine)
                        ),
                        fault=fault,
                    )
                except ExecutionError as exc:
                    if not keep_going:
                        raise type(exc)(
                            f"{run.point.label}: {exc} (the sweep stopped here; --keep-going"
                            " records a failed run and goes on)"
                        ) from exc
                    dropped.add(run.point.label)
                    outcome.failed_points.append(run.point.label)
                    observer.advance(warmup + repeat - run.index)
                    continue
                observer.advance(1)
    return outcome


def _bring_up(
    engine: Engine, stack: contextlib.ExitStack, observer: SweepObserver, owned: list[set[int]]
) -> Backend:
    """Start one backend, timed, with its ``close`` registered first (a start interrupted by
    Ctrl-C still closes whatever it had started); note the processes it started in ``owned``,
    so the usage figures of the other backends' runs can leave them out."""
    backend = create_backend(engine.backend, engine.options)
    before = _descendants()
    stack.callback(backend.close)
    backend.__enter__()  # times start() into backend.startup_s
    owned.append(_descendants() - before)
    observer.started(engine, backend.info())
    return backend


def _descendants() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _preflight(engine: Engine, backend: Backend) -> list[str]:
    """The backend's own pre-flight: it alone knows what a node is to it (a Ray node, a Dask
    worker) and whether the k it chose are still there and idle."""
    expected = engine.expected_workers or backend.info().workers
    return list(backend.preflight(expected))


def _other_load(seconds: float = LOAD_SAMPLE_S) -> float:
    """CPU load of processes outside this sweep's process tree, in percent of all the cores.

    The machine's busy CPU time over a short wait, less what the driver and the backends it
    started used meanwhile (a Ray that is still settling after its start is ours, not noise).
    """
    import psutil

    before = psutil.cpu_times()
    with TreeMonitor(interval=seconds) as ours:
        time.sleep(seconds)
    after = psutil.cpu_times()
    busy = _busy(after) - _busy(before)
    others = max(busy - ours.result()["cpu_s"], 0.0)
    return min(100.0, 100.0 * others / (seconds * (psutil.cpu_count() or 1)))


def _busy(times: Any) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _labels(plan: SweepPlan, point: Point, round_: int | None, load: float) -> dict[str, Any]:
    return {
        "mode": plan.mode,
        "axis": plan.axis,
        "size": point.size,
        "workers": point.workers,
        "nodes": point.nodes,
        "chunks": point.chunks,
        "factor": point.factor,
        "device": point.device,
        "base_digest": plan.job.digest,
        "round": round_,
        "point": point.label,
        "other_load": round(load, 1),
    }
