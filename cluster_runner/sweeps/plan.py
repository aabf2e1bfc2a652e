"""Sweep plans: which points a scaling sweep times, and in which order.

See :mod:`cluster_runner.sweeps` for the axes, modes and the order against drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster_runner.backends import BackendOptions
from cluster_runner.errors import JobSpecError, UsageError
from cluster_runner.jobspec import JobSpec
from cluster_runner.sweeps.vary import Variation, params_text

MODES = ("strong", "weak", "throughput")


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
    params: tuple[tuple[str, Any], ...] = ()  # --vary: this variant's values, in --vary order
    done: int = 0  # timed rounds already in the results file (--resume): timed from this one

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
        varied = f" {params_text(self.params)}" if self.params else ""
        return f"{self.backend}{size}{where}{chunks}{gpu}{varied}"


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
    axis: str  # "workers", "nodes", "chunks", or the --vary parameter (throughput mode)
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()  # what the plan left out, for the user
    baseline: str | None = None  # the speedup reference, e.g. ``serial@1`` (--baseline)

    def runs(self, warmup: int, repeat: int) -> int:
        """Runs the sweep will make if nothing is skipped: the progress bar's total."""
        return sum(
            warmup + max(repeat - p.done, 0)
            for s in self.steps
            for e in s.engines
            for p in e.points
        )


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
    baseline: tuple[str, int | None] | None = None,
    vary: Variation | None = None,
) -> SweepPlan:
    """The points of a sweep; raise a one-line :class:`UsageError` for impossible requests.

    Every job variant (scaled, re-chunked, on GPUs) is built and validated here, so a sweep
    that would fail at its last point for a bad parameter fails before its first. With ``gpu``
    every point is timed twice, as given and with the array stages on GPUs, so one report
    compares CPU and GPU scaling. ``baseline`` (``--baseline``, as ``(backend, size)``) is
    timed too when the sweep would not time it anyway, so the speedup's reference is there.

    ``vary`` (``--vary``, :mod:`.vary`): every size is timed at each variant. In
    ``throughput`` mode the one varied parameter is the axis instead (the problem grows, the
    resources stay: one worker or node count), see :func:`_throughput`.
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (choose strong, weak or throughput)")
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
    if vary is not None and chunks and "chunks" in {n.rpartition(".")[2] for n in vary.names}:
        raise UsageError("--vary chunks=... and --chunks both set chunks: give one of them")
    if mode == "throughput":
        return _throughput(
            job, backends, vary, workers, nodes, chunks, address, baseline, gpu,
            dict(connect_timeout=connect_timeout, start_method=start_method,
                 extra=dict(extra or {}), retries=retries),
        )  # fmt: skip
    axis = "chunks" if len(chunks) > 1 else ("nodes" if nodes else "workers")
    requested = sorted(nodes or workers)
    timed_at = {size: list(backends) for size in requested}
    if baseline is not None and baseline[0] != "own":  # own: each backend's smallest size
        _add_baseline(baseline, axis, address, timed_at)
    notes = []
    steps = []
    for size in sorted(timed_at):
        factor = size if mode == "weak" else 1
        engines = []
        for name in timed_at[size]:
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
                    job=_variant(job, c, factor, on_gpu, vary, v),
                    params=_params(vary, v),
                )
                for c in (chunks or [None])
                for v in range(len(vary.variants) if vary else 1)
                for on_gpu in ((False, True) if gpu else (False,))
            )
            engines.append(Engine(name, options, expected, points))
        if engines:
            steps.append(Step(size, tuple(engines)))
    if not steps:
        raise UsageError("nothing to time: " + "; ".join(notes))
    spec = (
        None
        if baseline is None
        else baseline[0]
        if baseline[0] == "own"
        else (f"{baseline[0]}@{baseline[1]}")
    )
    return SweepPlan(job, mode, axis, tuple(steps), tuple(notes), spec)


def _throughput(job, backends, vary, workers, nodes, chunks, address, baseline, gpu, shared):
    """Throughput mode: the problem grows (the one ``--vary`` parameter, the sweep's axis), the
    resources stay (one worker or node count): does the work per second hold as it grows?"""
    if vary is None or len(vary.names) != 1:
        raise UsageError(
            "--mode throughput grows one parameter: give one --vary, e.g. --vary n=1e8,1e9,1e10"
        )
    name = vary.names[0]
    values = [v[0] for v in vary.variants]
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not value > 0
            or (int(value) != value)
        ):
            raise UsageError(
                f"--mode throughput: --vary {name} takes whole numbers above 0 (the problem"
                f" size), not {value!r}"
            )
    fixed = nodes or workers
    if len(fixed) != 1:
        raise UsageError(
            "--mode throughput keeps the resources fixed: give one --workers (or --nodes) value"
        )
    if len(chunks) > 1:
        raise UsageError("--mode throughput grows the problem: sweep --chunks on its own")
    if baseline is not None:
        raise UsageError("--baseline: a throughput sweep compares problem sizes: no speedup")
    size, chunk = fixed[0], (chunks[0] if chunks else None)
    engines, notes = [], []
    for backend in backends:
        if backend == "serial" and size != 1:
            notes.append(f"serial runs on one worker only: not timed at {size}")
            continue
        count = None if nodes else size
        per_node = workers[0] if nodes and workers else None
        options = BackendOptions(
            workers=count, address=address, nodes=size if nodes else None,
            gpu=gpu or job.uses_gpu, warm_up=job.warm_ups(), **shared,
        )  # fmt: skip
        points = tuple(
            Point(
                backend=backend,
                size=int(value),
                workers=per_node if nodes else count,
                nodes=size if nodes else None,
                chunks=chunk,
                factor=1,
                job=_variant(job, chunk, 1, on_gpu, vary, i),
                params=_params(vary, i),
            )
            for i, value in enumerate(values)
            for on_gpu in ((False, True) if gpu else (False,))
        )
        engines.append(Engine(backend, options, per_node * size if per_node else count, points))
    if not engines:
        raise UsageError("nothing to time: " + "; ".join(notes))
    return SweepPlan(job, "throughput", name, (Step(size, tuple(engines)),), tuple(notes))


def _add_baseline(
    baseline: tuple[str, int], axis: str, address: str | None, timed_at: dict[int, list[str]]
) -> None:
    """Add the ``--baseline`` point to the sizes and backends to time, or refuse it."""
    backend, size = baseline
    if axis == "chunks":
        raise UsageError(
            "--baseline: a granularity sweep (--chunks) compares task counts, not sizes;"
            " it has no speedup to refer to a baseline"
        )
    if backend == "serial" and size != 1:
        raise UsageError(f"--baseline serial@{size}: serial runs on one worker only (serial@1)")
    if address and backend not in timed_at[min(timed_at)]:
        raise UsageError(
            f"--baseline {backend}@{size}: on an existing cluster the reference must be the"
            f" swept backend ({', '.join(timed_at[min(timed_at)])})"
        )
    names = timed_at.setdefault(size, [])
    if backend not in names:
        names.append(backend)


def _params(vary: Variation | None, index: int) -> tuple[tuple[str, Any], ...]:
    return tuple(vary.params(index).items()) if vary is not None else ()


def _variant(
    job: JobSpec,
    chunks: int | None,
    factor: int,
    on_gpu: bool = False,
    vary: Variation | None = None,
    index: int = 0,
) -> JobSpec:
    if vary is not None:
        try:
            job = job.with_overrides(vary.overrides(index))
        except JobSpecError as exc:  # worded for --set: say --vary
            raise JobSpecError(str(exc).replace("--set ", "--vary ", 1)) from None
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
                if round_ >= point.done:  # --resume: the rounds the file lacks
                    order.append(Run(e, point, warmup + round_, False))
    return order
