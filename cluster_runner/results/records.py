"""Run records as types: what one run of a job wrote, and the one way to and from its JSON.

Every writer builds these frozen dataclasses (:func:`cluster_runner.runs.job.run_job`, the
sweep loop) and every reader gets them back (:func:`~cluster_runner.results.store.read_records`,
the aggregation, the report, the console), so a field is named in one place. The JSON form is
made by :meth:`RunRecord.to_json` and read by :meth:`RunRecord.from_json` only; each nested
type has its own pair, which the run record's pair is made of. The parts of a stage live in
:mod:`.stages`, the driver's environment in :mod:`.environment`.

Why hand-written and not a validation library: the JSON written must stay bit for bit what it
was (``1`` stays an int, ``1.0`` a float, keys that are absent stay absent), so nothing here
coerces a value; and a reader must accept every record an older runner wrote.

Schema history (bump :data:`SCHEMA_VERSION` on any change a reader must know about):

1. First version: job, backend, per-stage wall times, results, verification, task placement,
   environment. Added before release, readers need not check for them but must not require
   them (records written by ``submit`` before they were added lack them):

   - ``usage`` (per stage and per run): ``cpu_s``, CPU seconds of the driver's process tree
     while the stage ran; ``peak_rss_bytes``, its largest sampled resident memory;
     ``processes``; ``scope``, which says whether remote workers were outside the figures
     (see :mod:`cluster_runner.runs.monitor`).
   - ``status`` may be ``skipped``: a sweep point whose pre-flight found missing or busy
     workers, not timed; ``error`` says why, ``stages`` is empty, ``wall_s`` is null.
   - ``labels`` of a ``runner scale`` sweep (see :mod:`cluster_runner.sweeps.plan`): ``mode``,
     ``axis``, ``size``, ``workers``, ``nodes``, ``chunks``, ``factor``, ``base_digest`` (of
     the job before weak scaling or chunk overrides: what makes runs comparable), ``round``
     (null for warm-ups), ``point`` and ``other_load`` (percent of the CPUs that processes
     outside the sweep used just before its size was timed); all runs of a sweep share one
     ``session``.
   - ``fault``: the fault injected into the run (``--inject-fault``, e.g. ``kill-worker``) or
     null; ``retried``: the tasks the run had to rerun after losing workers, the sum of its
     stages' ``retried`` (which every record has). Reports never mix runs with and without
     a fault.
   - ``error_traceback`` (failed runs only): the traceback of the task that raised, as the
     worker formatted it (see :class:`~cluster_runner.errors.TaskFailedError`), or null when
     the run failed for another reason (a timeout, lost workers).

:meth:`RunRecord.from_json` requires only what no reader can do without (the job's name and
digest, the backend's name and worker count, the status); every other field takes its empty
value when absent, which is what an older record without it meant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster_runner.results.environment import Environment
from cluster_runner.results.stages import StageRecord, Usage

#: The version of the record format this runner writes; see the history above.
SCHEMA_VERSION = 1
#: Every record carries this, so a reader can tell our files from any other JSON Lines file.
RECORD_FORMAT = "cluster-runner/run"

Json = dict[str, Any]


@dataclass(frozen=True)
class JobStage:
    """A stage of the job spec as it ran: workload, weak-scaling parameter, parameters."""

    name: str
    workload: str
    weak: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "workload": self.workload,
            "weak": self.weak,
            "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobStage:
        return cls(
            name=data.get("name", ""),
            workload=data.get("workload", ""),
            weak=data.get("weak", ""),
            params=data.get("params", {}),
        )


@dataclass(frozen=True)
class JobRecord:
    """The job spec exactly as it ran, and its digest (equal digests: the same job)."""

    name: str
    digest: str
    description: str = ""
    stages: tuple[JobStage, ...] = ()

    @property
    def uses_gpu(self) -> bool:
        return any(s.params.get("device") == "gpu" for s in self.stages)

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "description": self.description,
            "stages": [s.to_json() for s in self.stages],
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobRecord:
        return cls(
            name=data["name"],
            digest=data["digest"],
            description=data.get("description", ""),
            stages=tuple(JobStage.from_json(s) for s in data.get("stages", ())),
        )


@dataclass(frozen=True)
class BackendRecord:
    """The engine that ran the job (from :class:`~cluster_runner.backends.base.BackendInfo`)."""

    name: str
    workers: int
    version: str = ""
    nodes: int = 1
    address: str | None = None  # None: the backend started its own engine
    start_method: str | None = None
    dashboard: str | None = None
    startup_s: float | None = None  # seconds the backend's start took, apart from the runs
    extra: Mapping[str, Any] = field(default_factory=dict)  # what only this engine says

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "version": self.version,
            "workers": self.workers,
            "nodes": self.nodes,
            "address": self.address,
            "start_method": self.start_method,
            "dashboard": self.dashboard,
            "startup_s": self.startup_s,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackendRecord:
        return cls(
            name=data["name"],
            workers=data["workers"],
            version=data.get("version", ""),
            nodes=data.get("nodes", 1),
            address=data.get("address"),
            start_method=data.get("start_method"),
            dashboard=data.get("dashboard"),
            startup_s=data.get("startup_s"),
            extra=data.get("extra", {}),
        )


@dataclass(frozen=True)
class SweepLabels:
    """Where a run of ``runner scale`` sits in its sweep (see :mod:`cluster_runner.sweeps`).

    A ``runner submit`` record has none (``{}`` in JSON, ``None`` on :class:`RunRecord`); a
    field an older sweep did not write is None.
    """

    mode: str | None = None  # strong or weak
    axis: str | None = None  # workers, nodes or chunks
    size: int | None = None  # the point's value on the axis
    workers: int | None = None
    nodes: int | None = None
    chunks: int | None = None
    factor: int | None = None  # weak scaling's factor (1 in strong mode)
    device: str | None = None  # cpu or gpu
    base_digest: str | None = None  # of the job before scaling or chunk overrides
    round: int | None = None  # None for warm-ups
    point: str | None = None  # the point's short name, e.g. ``local x2``
    other_load: float | None = None  # CPU % used by other processes before the size was timed

    def to_json(self) -> Json:
        return {
            "mode": self.mode,
            "axis": self.axis,
            "size": self.size,
            "workers": self.workers,
            "nodes": self.nodes,
            "chunks": self.chunks,
            "factor": self.factor,
            "device": self.device,
            "base_digest": self.base_digest,
            "round": self.round,
            "point": self.point,
            "other_load": self.other_load,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepLabels:
        return cls(
            mode=data.get("mode"),
            axis=data.get("axis"),
            size=data.get("size"),
            workers=data.get("workers"),
            nodes=data.get("nodes"),
            chunks=data.get("chunks"),
            factor=data.get("factor"),
            device=data.get("device"),
            base_digest=data.get("base_digest"),
            round=data.get("round"),
            point=data.get("point"),
            other_load=data.get("other_load"),
        )


@dataclass(frozen=True)
class RunRecord:
    """One run of a job on a backend (or a sweep point that was skipped), as written.

    ``status`` is ``verified``, ``unverified``, ``failed`` or ``skipped``. A skipped point was
    never run: its JSON has no ``fault`` or ``retried``; only a run that finished has ``usage``;
    only a failed one has ``error_traceback``.
    """

    run_id: str
    session: str  # shared by every run of one command
    time: str  # when the run began, ISO 8601 in UTC
    job: JobRecord
    backend: BackendRecord
    repeat: int  # the run's number, warm-ups first
    warmup: bool
    status: str
    environment: Environment
    error: str | None = None  # why it failed, or was skipped
    wall_s: float | None = None  # the sum of the stages' wall times; None: not timed
    stages: tuple[StageRecord, ...] = ()
    labels: SweepLabels | None = None  # None for a run of ``runner submit``
    fault: str | None = None  # the fault injected, e.g. ``kill-worker``
    retried: int = 0  # tasks rerun after losing workers, over all stages
    usage: Usage | None = None  # over the whole run; None unless it finished
    error_traceback: str | None = None  # a failed task's traceback, as its worker formatted it
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> Json:
        """The record as the JSON object a results file holds (one line, keys sorted)."""
        data: Json = {
            "format": RECORD_FORMAT,
            "schema_version": self.schema_version,
            "run_id": self.run_id,
            "session": self.session,
            "time": self.time,
            "job": self.job.to_json(),
            "backend": self.backend.to_json(),
            "repeat": self.repeat,
            "warmup": self.warmup,
            "status": self.status,
            "error": self.error,
            "wall_s": self.wall_s,
            "stages": [s.to_json() for s in self.stages],
            "labels": self.labels.to_json() if self.labels is not None else {},
            "environment": self.environment.to_json(),
        }
        if self.status != "skipped":
            data.update(fault=self.fault, retried=self.retried)
        if self.usage is not None:
            data["usage"] = self.usage.to_json()
        if self.status == "failed":
            data["error_traceback"] = self.error_traceback
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """A record from its JSON object; a field an older record lacks takes its empty value.

        Raises ``KeyError`` or ``TypeError`` for an object that is not a record at all (the
        reader turns them into a one-line error naming the file and line).
        """
        labels = data.get("labels") or None
        usage = data.get("usage")
        return cls(
            run_id=data.get("run_id", ""),
            session=data.get("session", ""),
            time=data.get("time", ""),
            job=JobRecord.from_json(data["job"]),
            backend=BackendRecord.from_json(data["backend"]),
            repeat=data.get("repeat", 0),
            warmup=data.get("warmup", False),
            status=data["status"],
            environment=Environment.from_json(data.get("environment") or {}),
            error=data.get("error"),
            wall_s=data.get("wall_s"),
            stages=tuple(StageRecord.from_json(s) for s in data.get("stages", ())),
            labels=SweepLabels.from_json(labels) if labels is not None else None,
            fault=data.get("fault"),
            retried=data.get("retried", 0),
            usage=Usage.from_json(usage) if usage is not None else None,
            error_traceback=data.get("error_traceback"),
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )
