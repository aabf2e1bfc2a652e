"""Sweep plans: which points a scaling sweep times, and in which order.

See :mod:`cluster_runner.sweeps` for the axes, modes and the order against drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster_runner.backends import BackendOptions
from cluster_runner.errors import UsageError
from cluster_runner.jobspec import JobSpec

MODES = ("strong", "weak")


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
                warm_up=job.warm_ups(),
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
