"""The sweep loop: bring each size's backends up, check them, time the runs, record each.

See :mod:`cluster_runner.sweeps` for the pre-flight, usage figures and failure policy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster_runner.backends import Backend, BackendInfo, create_backend
from cluster_runner.errors import ExecutionError
from cluster_runner.results import RunRecord, SweepLabels, new_id
from cluster_runner.runs.job import run_job, skipped_record
from cluster_runner.runs.monitor import TreeMonitor
from cluster_runner.sweeps.plan import Engine, Point, Step, SweepPlan, run_order

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

    def emit(record: RunRecord) -> None:
        on_record(record)
        outcome.records += 1
        outcome.verified += record.status == "verified"
        outcome.unverified_runs += record.status == "unverified"
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


def _labels(plan: SweepPlan, point: Point, round_: int | None, load: float) -> SweepLabels:
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
    )
