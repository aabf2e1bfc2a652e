"""The sweep loop: bring each size's backends up, check them, time the runs, record each.

See :mod:`cluster_runner.sweeps` for the pre-flight, usage figures and failure policy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cluster_runner.backends import Backend, BackendInfo, create_backend
from cluster_runner.errors import ExecutionError, NodesLostError
from cluster_runner.results import RunRecord, SweepLabels, new_id
from cluster_runner.runs.job import Prepared, prepare, run_job, skipped_record
from cluster_runner.runs.monitor import TreeMonitor
from cluster_runner.sweeps.plan import Engine, Point, Run, Step, SweepPlan, run_order

if TYPE_CHECKING:
    from cluster_runner.analysis.hygiene import PrecisionCheck
    from cluster_runner.jobspec import JobSpec

#: Seconds over which the CPU load of other processes is sampled before a size is timed.
LOAD_SAMPLE_S = 0.25


class SweepObserver:
    """What a sweep tells its caller as it goes; the defaults ignore everything."""

    def started(self, engine: Engine, info: BackendInfo) -> None:
        """A backend is up (``info.startup_s`` says how long that took)."""

    def checked(self, step: Step, load_percent: float, problems: dict[str, list[str]]) -> None:
        """The pre-flight of a size: other processes' CPU load, and each backend's problems."""

    def finished(self, record: RunRecord) -> None:
        """A run ended (verified, unverified, failed) or a point was skipped."""

    def advance(self, runs: int) -> None:
        """``runs`` of the planned runs are done, or will not be made."""

    def extended(self, runs: int) -> None:
        """``runs`` more runs were planned: points not yet as precise as ``--precision`` asks."""

    def precision(self, point: Point, check: PrecisionCheck) -> None:
        """Where a point stands against ``--precision`` once its runs are done."""


class SweepProvider:
    """Where a sweep's cluster comes from when the sweep itself asks for it (issue 19: nodes
    from Slurm, :mod:`cluster_runner.clusters.slurm_sweep`); the defaults change nothing."""

    def prepare(self, step: Step) -> Step:
        """Before a size is brought up, and before a run whose nodes were lost is retried:
        make the cluster whole again; return the step (with the address it has now)."""
        return step

    def check(self) -> None:
        """Before each run: raise :class:`NodesLostError` if the nodes are gone already, so that
        no engine is asked about a cluster that is not there (Ray's driver waits a minute on a
        GCS that is gone, then ends the whole process)."""

    def lost(self, error: ExecutionError) -> bool:
        """Whether a failed run's nodes were taken away from outside the engine (a batch job
        ended): such a run is retried once, on nodes asked for again, and the sweep goes on."""
        return isinstance(error, NodesLostError)


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
    on_record: Callable[[RunRecord], None] = lambda record: None,
    observer: SweepObserver | None = None,
    fault: str | None = None,
    transfer: str = "share",
    keep_going: bool = False,
    precision: float | None = None,
    max_repeats: int | None = None,
    around: Callable[[Step, Engine, Backend], contextlib.AbstractContextManager] | None = None,
    provider: SweepProvider | None = None,
) -> SweepOutcome:
    """Time every point of ``plan``; hand each record to ``on_record`` as its run ends.

    A run that fails is recorded; with ``keep_going`` its point is dropped from the later
    rounds and the sweep goes on, else its error is raised once the backends are closed.
    Errors the user must fix (a backend that is not installed, an address that does not
    answer) stop the sweep with a one-line error. ``fault`` is injected into every run;
    ``transfer`` is how every run's driver inputs travel (``--transfer``).

    ``precision`` (``--precision P``): after its ``repeat`` rounds, each point of a size that
    is not yet precise (:func:`~cluster_runner.analysis.hygiene.precision_reached`: the
    median's interval reaches its nominal level and its half-width is at most P% of the
    median) gets more rounds, still interleaved with the other such points, until it is or it
    has ``max_repeats`` timed runs.

    ``around(step, engine, backend)``, when given, is entered for each backend once its
    pre-flight is done and left before it closes: ``--profile`` keeps the engine's trace of
    that size's runs.

    ``provider`` (a sweep on nodes it asks a batch scheduler for) prepares each size before it
    is brought up. A run it says lost its nodes (:meth:`SweepProvider.lost`) is recorded as
    failed, the size's backends are brought up again on the nodes it asks for anew, and the run
    is retried once; a point that loses its nodes twice is dropped and the sweep goes on, with
    or without ``keep_going``.
    """
    observer = observer or SweepObserver()
    outcome = SweepOutcome()
    session = new_id()
    times: dict[str, list[tuple[float, bool]]] = {}  # verified timed runs: (wall, cold)

    def emit(record: RunRecord) -> None:
        on_record(record)
        outcome.records += 1
        outcome.verified += record.status == "verified"
        outcome.unverified_runs += record.status == "unverified"
        if record.status == "verified" and not record.warmup and record.labels is not None:
            times.setdefault(record.labels.point or "", []).append((record.wall_s, record.cold))
        observer.finished(record)

    retried: set[str] = set()  # points retried once after losing their nodes
    with _PreparedJob() as jobs:
        if plan.steps and plan.steps[0].engines and plan.steps[0].engines[0].points:
            jobs.of(plan.steps[0].engines[0].points[0].job)  # inputs checked before any engine
        for step in plan.steps:
            if provider is not None:
                step = provider.prepare(step)
            with contextlib.ExitStack() as stack:
                owned: list[set[int]] = []  # processes each backend started
                live = [_bring_up(engine, stack, observer, owned) for engine in step.engines]
                problems = {
                    step.engines[e].backend: _preflight(step.engines[e], backend)
                    for e, backend in enumerate(live)
                }
                load = _other_load()
                observer.checked(step, load, problems)
                for e, backend in enumerate(live):
                    if around is not None and not problems[step.engines[e].backend]:
                        stack.enter_context(around(step, step.engines[e], backend))
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

                def time(
                    run: Run,
                    live=live,
                    owned=owned,
                    load=load,
                    dropped=dropped,
                    step=step,
                    stack=stack,
                ) -> None:
                    """One run of the order, recorded; a failure stops the sweep or, with
                    keep_going, drops its point from the later rounds (this size's state is
                    bound as defaults: the function is called within its own iteration only)."""
                    round_ = None if run.warmup else run.index - warmup
                    labels = _labels(plan, run.point, round_, load, precision)
                    try:
                        if provider is not None:
                            provider.check()
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
                            transfer=transfer,
                            ready=jobs.of(run.point.job),
                        )
                    except ExecutionError as exc:
                        lost = provider is not None and provider.lost(exc)
                        if lost and run.point.label not in retried:
                            assert provider is not None
                            retried.add(run.point.label)
                            fresh = provider.prepare(step)  # the nodes, asked for again
                            for e, engine in enumerate(fresh.engines):
                                live[e].close()
                                again: list[set[int]] = []
                                live[e] = _bring_up(engine, stack, observer, again)
                                owned[e] = again[0]
                            time(run)
                            return
                        if not keep_going and not lost:
                            raise type(exc)(
                                f"{run.point.label}: {exc} (the sweep stopped here; --keep-going"
                                " records a failed run and goes on)"
                            ) from exc
                        dropped.add(run.point.label)
                        outcome.failed_points.append(run.point.label)
                        observer.advance(max(warmup + repeat - run.index, 0))
                        return
                    observer.advance(1)

                for run in run_order(step, warmup, repeat):
                    if run.point.label not in dropped:
                        time(run)
                if precision is not None:
                    _until_precise(step, warmup, repeat, max_repeats or repeat, precision, times,
                                   dropped, time, observer)  # fmt: skip

    return outcome


class _PreparedJob(contextlib.ExitStack):
    """The prepared job (setups entered, graph and driver inputs made: :func:`prepare`) of the
    runs under way, one at a time. A size's runs interleave the backends of one job, whose
    inputs are then made once, not once a run; another job (a weak-scaling size, a variant)
    replaces it, so that the driver never holds two jobs' inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.digest: str | None = None
        self.ready: Prepared | None = None
        self.inner: contextlib.ExitStack | None = None

    def of(self, job: JobSpec) -> Prepared:
        if self.ready is None or job.digest != self.digest:
            if self.inner is not None:
                self.ready = None
                self.inner.close()  # the last job's setups and inputs, before making these
            self.inner = self.enter_context(contextlib.ExitStack())
            self.ready = self.inner.enter_context(prepare(job))
            self.digest = job.digest
        return self.ready


def _until_precise(step, warmup, repeat, most, target, times, dropped, time, observer) -> None:
    """More rounds of the points not yet precise enough, interleaved, up to ``most`` runs.

    Precision is judged on the runs the report will count (a cold first run left out)."""
    from cluster_runner.analysis.hygiene import counted, precision_reached

    def check(done: list[tuple[float, bool]]) -> PrecisionCheck:
        walls = [t for t, _ in done]
        return precision_reached([walls[i] for i in counted(walls, [c for _, c in done])], target)

    def pending() -> list[Run]:
        runs = []
        for e, engine in enumerate(step.engines):
            for point in engine.points:
                done = times.get(point.label, [])
                if point.label in dropped or not done or len(done) >= most:
                    continue
                if not check(done).reached:
                    runs.append(Run(e, point, warmup + len(done), False))
        return runs

    for _ in range(repeat, most):
        extra = pending()
        if not extra:
            break
        observer.extended(len(extra))
        for run in extra:
            if run.point.label not in dropped:
                time(run)
    for engine in step.engines:
        for point in engine.points:
            done = times.get(point.label, [])
            if done and point.label not in dropped:
                observer.precision(point, check(done))


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


def _labels(
    plan: SweepPlan, point: Point, round_: int | None, load: float, precision: float | None = None
) -> SweepLabels:
    return SweepLabels(
        mode=plan.mode,
        axis=plan.axis,
        size=point.size,
        workers=point.workers,
        nodes=point.nodes,
        chunks=point.chunks,
        factor=point.factor,
        device=point.device,
        base_digest=plan.job.digest,
        round=round_,
        point=point.label,
        other_load=round(load, 1),
        baseline=plan.baseline,
        precision=precision,
        params=dict(point.params),
    )
