"""Running a job on a backend: repeats, per-stage timing, verification, one record per run.

A run executes the job's stages one after another, each as its own graph, so that each stage's
wall time is its own (stages that overlapped would share their time). A stage's wall time runs
from the first submit to the sink's value in the driver: it includes every scheduling and
transfer cost a user of that backend would pay. Verification happens after the clock stops.

While a stage's graph runs, a :class:`~cluster_runner.runs.monitor.TreeMonitor` measures the CPU
time and peak memory of the driver's process tree (which holds the workers of every backend it
starts): each stage gets its ``usage``, and the record the sum of CPU seconds and the largest
peak. The monitor's snapshots fall outside the stage clock; verification, which runs in the
driver after the clock stops, is not in the figures.

Each run becomes a record (see :mod:`cluster_runner.results`) handed to ``on_record`` the
moment it ends, so the caller can write it before the next run starts.

Cold runs (issue 14). Every backend runs the workloads' warm-up hooks (compiled kernels) in the
driver and on each worker as it starts, so the first timed run does not pay for them whatever
``--warmup`` says. What no hook can reach (a lazily imported module, a cold cache, an engine's
first graph) may still land in the first run on a fresh backend, so a timed run with no run at
all before it on its backend is recorded as ``cold``; the report leaves it out when it is
measurably slower than the others (:func:`cluster_runner.analysis.hygiene.is_cold`).

A stage whose workload has no oracle of its own (``verify`` returns None: a user's workload)
is checked against a serial reference run of the same job and parameters (issue 13, see
:mod:`cluster_runner.runs.reference`), computed after the first run that needs it, outside its
clock, and kept in the records. Every workload's ``setup`` (a server its tasks fetch from) is
entered once, around all the runs of a call, before the graph is built.

With ``fault`` (``--inject-fault``, see :mod:`cluster_runner.runs.faults`) every run's first stage
loses a worker partway through; the record names the fault, and each stage says how many of its
tasks were rerun (``retried``). A run whose losses exceed the retry budget is recorded as failed.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from cluster_runner.backends.base import Backend
from cluster_runner.errors import ExecutionError, traceback_of
from cluster_runner.execution.tasks import TaskTrace
from cluster_runner.execution.traces import Traces
from cluster_runner.execution.walk import DEFAULT_RETRIES, execute
from cluster_runner.graph import Graph
from cluster_runner.jobspec import JobSpec, StageSpec
from cluster_runner.results import (
    BackendRecord,
    JobRecord,
    Placement,
    RunRecord,
    StageRecord,
    StageResult,
    SweepLabels,
    Timeline,
    Usage,
    driver_environment,
    new_id,
    now,
)
from cluster_runner.runs.faults import check_supported, inject
from cluster_runner.runs.monitor import TreeMonitor
from cluster_runner.runs.reference import PROCESS_STORE, ReferenceStore, kept, reference_key
from cluster_runner.runs.reference import check as check_reference
from cluster_runner.workloads import get_workload
from cluster_runner.workloads.base import call_hook

#: Runs started on each live backend, so the first one on a fresh backend is known (cold).
_RUNS_ON: weakref.WeakKeyDictionary[Backend, int] = weakref.WeakKeyDictionary()


def run_job(
    job: JobSpec,
    backend: Backend,
    *,
    repeat: int = 1,
    warmup: int = 0,
    timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    on_record: Callable[[RunRecord], None] = lambda record: None,
    session: str | None = None,
    labels: SweepLabels | None = None,
    first_index: int = 0,
    exclude_pids: Collection[int] = (),
    fault: str | None = None,
    references: ReferenceStore | None = None,
    transfer: str = "share",
    ready: Prepared | None = None,
) -> list[RunRecord]:
    """Run ``job`` ``warmup + repeat`` times on a started backend; return the records.

    A run that fails is recorded (status ``failed``, with the failed task's traceback when
    its error carries one) before its error is raised again. ``labels`` go into every record
    (a sweep's mode and point, for instance). ``first_index`` numbers the first run's
    ``repeat`` field, for a caller (a sweep) that makes a point's runs one call at a time.
    ``exclude_pids`` are processes (with their descendants) left out of the usage figures: the
    other backends a sweep keeps up meanwhile. ``fault`` is injected into the first stage of
    every run. ``references`` holds the serial references of stages without an oracle (see
    :mod:`cluster_runner.runs.reference`); by default, this process's own store.
    ``transfer`` is how the stages' driver inputs travel: ``share`` (placed once) or ``copy``
    (with every task), see :mod:`cluster_runner.execution.inputs`. ``ready`` is the job as
    :func:`prepare` made it (setups entered, graph built), kept by a caller that runs it
    more than once or wants its inputs checked before any engine starts; by default this call
    prepares it.
    """
    check_supported(fault, backend.name, backend.worker_processes)
    with contextlib.ExitStack() as stack:
        if ready is None:
            ready = stack.enter_context(prepare(job))
        return _run_all(
            job,
            backend,
            ready,
            references if references is not None else PROCESS_STORE,
            repeat=repeat,
            warmup=warmup,
            timeout=timeout,
            retries=retries,
            on_record=on_record,
            session=session,
            labels=labels,
            first_index=first_index,
            exclude_pids=exclude_pids,
            fault=fault,
            transfer=transfer,
        )


@dataclass(frozen=True)
class Prepared:
    """A job ready to run: every stage's parameters with its setup's values, and the graph."""

    live: dict[str, dict[str, Any]]
    graph: Graph


@contextlib.contextmanager
def prepare(job: JobSpec) -> Iterator[Prepared]:
    """Enter the job's setups (the workloads' servers, up for every run) and build its graph
    once: the driver's inputs are made and checked here (a value no worker could receive is
    refused in one line), before the caller starts anything else."""
    with job.setup() as live:
        yield Prepared(live, job.build_graph(live))


def _run_all(
    job: JobSpec,
    backend: Backend,
    ready: Prepared,
    references: ReferenceStore,
    *,
    repeat: int,
    warmup: int,
    timeout: float | None,
    retries: int,
    on_record: Callable[[RunRecord], None],
    session: str | None,
    labels: SweepLabels | None,
    first_index: int,
    exclude_pids: Collection[int],
    fault: str | None,
    transfer: str = "share",
) -> list[RunRecord]:
    """:func:`run_job`'s runs of the job ``ready`` holds (setups entered, graph built)."""
    live, graph = ready.live, ready.graph
    stage_graphs = [(stage, graph.stage(stage.name)) for stage in job.stages]
    session = session or new_id()
    records = []
    for i in range(warmup + repeat):
        record = _base_record(job, backend, session, first_index + i, i < warmup, labels)
        first_on_backend = _RUNS_ON.get(backend, 0) == 0
        _RUNS_ON[backend] = _RUNS_ON.get(backend, 0) + 1
        record = replace(record, fault=fault, cold=first_on_backend and i >= warmup)
        stages: list[StageRecord] = []
        began = time.perf_counter()
        try:
            for number, (stage, stage_graph) in enumerate(stage_graphs):
                with inject(fault if number == 0 else None, stage_graph) as run_graph:
                    check = _Check(stage_graph, live[stage.name], references)
                    stages.append(
                        _run_stage(
                            stage,
                            run_graph,
                            backend,
                            timeout,
                            retries,
                            exclude_pids,
                            check,
                            transfer,
                        )
                    )
        except ExecutionError as exc:
            on_record(
                replace(
                    record,
                    status="failed",
                    error=str(exc),
                    error_traceback=traceback_of(exc),
                    wall_s=time.perf_counter() - began,
                    stages=tuple(stages),
                    retried=sum(s.retried for s in stages),
                )
            )
            raise
        ok = all(s.result.verified for s in stages)
        record = replace(
            record,
            status="verified" if ok else "unverified",
            wall_s=sum(s.wall_s for s in stages),
            stages=tuple(stages),
            retried=sum(s.retried for s in stages),
            usage=_usage(stages, backend),
        )
        on_record(record)
        records.append(record)
    return records


def _usage(stages: list[StageRecord], backend: Backend) -> Usage:
    """A run's CPU seconds and peak memory over its stages, and what the figures cover."""
    remote = backend.options.address is not None
    usages = [s.usage for s in stages if s.usage is not None]
    return Usage(
        cpu_s=sum(u.cpu_s for u in usages),
        peak_rss_bytes=max((u.peak_rss_bytes for u in usages), default=0),
        processes=max((u.processes for u in usages), default=0),
        scope="driver only (workers are remote)" if remote else "driver process tree",
    )


@dataclass(frozen=True)
class _Check:
    """What verifying a stage needs beyond its value: the stage's graph as the job built it (a
    serial reference runs it, without any fault), its parameters with its setup's values, and
    the references known."""

    graph: Graph
    params: Mapping[str, Any]
    references: ReferenceStore


def _run_stage(
    stage: StageSpec,
    stage_graph,
    backend: Backend,
    timeout,
    retries,
    exclude_pids: Collection[int] = (),
    check: _Check | None = None,
    transfer: str = "share",
) -> StageRecord:
    workload = get_workload(stage.workload)
    params = check.params if check is not None else stage.params
    with TreeMonitor(exclude=exclude_pids) as monitor:  # its snapshots stay outside the clock
        submitted = time.time()  # the timeline's origin: wall clock, as the tasks' traces
        began = time.perf_counter()
        result = execute(stage_graph, backend, timeout=timeout, retries=retries, transfer=transfer)
        wall = time.perf_counter() - began
    (value,) = result.values.values()
    verification = call_hook(f"{stage.name}/verify", workload.verify, params, value)
    summary = call_hook(f"{stage.name}/summarize", workload.summarize, params, value)
    reference = None
    if verification is None:  # no oracle of its own: the serial reference decides
        verification, found = check_reference(
            key=reference_key(stage.workload, stage.params),
            graph=check.graph if check is not None else stage_graph,
            workload=workload,
            params=params,
            value=value,
            summary=summary,
            store=check.references if check is not None else PROCESS_STORE,
            backend=backend.name,
            timeout=timeout,
        )
        reference = kept(found).to_json()
    return StageRecord(
        name=stage.name,
        workload=stage.workload,
        tasks=len(stage_graph),
        wall_s=wall,
        result=StageResult(
            result=summary.value,
            display=summary.display,
            digest=summary.digest,
            verified=verification.ok,
            verification=verification.method,
            expected=verification.expected,
            reference=reference,
        ),
        placement=placement(result.traces),
        retried=result.retried,
        usage=Usage.from_json(monitor.result()),
        timeline=Timeline.from_traces(result.traces, submitted),
        transfer=result.transfer,
    )


def placement(traces: Traces | Iterable[TaskTrace]) -> Placement:
    """Where a stage's tasks ran, how busy they kept the workers, and any device phases.

    Computed from the compact columns of :class:`~cluster_runner.execution.traces.Traces`;
    trace objects are put into columns first.
    """
    if not isinstance(traces, Traces):
        numbered = list(traces)
        traces = Traces.of(numbered, {t.key: i for i, t in enumerate(numbered)}.__getitem__)
    return Placement(**traces.placement())


def _base_record(
    job: JobSpec,
    backend: Backend,
    session: str,
    index: int,
    warmup: bool,
    labels: SweepLabels | None,
) -> RunRecord:
    return RunRecord(
        run_id=new_id(),
        session=session,
        time=now(),
        job=JobRecord.from_json({**job.to_dict(), "digest": job.digest}),
        backend=BackendRecord.from_json(asdict(backend.info())),
        repeat=index,
        warmup=warmup,
        status="running",
        environment=driver_environment(),
        labels=labels,
    )


def skipped_record(
    job: JobSpec,
    backend: Backend,
    problems: list[str],
    *,
    session: str,
    labels: SweepLabels | None = None,
) -> RunRecord:
    """The record of a sweep point that was not timed, because its pre-flight found problems.

    Writing it keeps the results file honest about what a sweep left out, and why.
    """
    record = _base_record(job, backend, session, 0, False, labels)
    return replace(record, status="skipped", error="; ".join(problems))
