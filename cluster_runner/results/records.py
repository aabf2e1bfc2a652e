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
   - ``cold`` (issue 14; written only when true): the run was the first timed run on a freshly
     started backend with no untimed run before it (the workloads' warm-up hooks did run at
     start). Reports leave such a run out when it is measurably slower than the point's other
     runs (:func:`cluster_runner.analysis.hygiene.is_cold`) and say so.
   - ``labels.baseline`` and ``labels.precision`` (issue 14; written only when set): the
     speedup reference a sweep was run for (``--baseline``, e.g. ``serial@1``), which reports
     use unless told otherwise; and the ``--precision`` target in percent of the median.
   - ``stages[].reference`` (issue 13; only for a stage whose workload has no oracle of its
     own): the serial reference its result was checked against, ``key`` (of the workload, its
     parameters and source code, Python and numpy), ``digest``, ``display``, ``value`` (its
     JSON form, or null), ``backend`` (``serial``), ``computed`` (when), ``seconds``; see
     :mod:`cluster_runner.runs.reference`. ``verification`` says in words how the stage was
     checked.

   - ``stages[].timeline`` (issue 18): when and where each task of the stage ran, as
     parallel lists (``began``, the driver's clock at the first submit; ``workers``,
     ``nodes``, ``kinds``; per task ``worker``, ``kind``, ``start_us``, ``end_us`` after
     ``began``, and ``attempt`` when a task was rerun; ``dropped`` when a stage had more
     tasks than a record keeps), see :class:`~cluster_runner.results.stages.Timeline`.
     Reports draw it as a timeline; absent in older records, which simply have none.
   - ``source`` (issue 18; written when known): the job's folder as git saw it when the
     command started, ``path``, ``commit`` and ``dirty`` (uncommitted changes to tracked
     files); null ``commit`` outside a git work tree.
   - ``tags`` (issue 18; written only when given): ``--tag KEY=VALUE`` labels of the command
     that wrote the record, strings both, which ``compare`` and ``check`` select on.
   - ``backend.warmup_s`` (issue 16; written when measured): seconds the job's warm-up hooks
     (compiled kernels) took while the backend started, in the driver and the longest of the
     workers' (and in the local pool's forkserver); ``startup_s`` leaves them out since.

   - ``slurm`` (issue 19; written only for a sweep on nodes asked of Slurm): the Slurm jobs
     and nodes the run's point used, ``job_ids`` and ``nodes`` (one each per node, in the
     order the backend chose its nodes) and ``cluster`` (Slurm's cluster name, when known).
     Such a record's ``backend.address`` names the Slurm and the jobs file
     (``slurm:CLUSTER/slurm-dask``: one cluster to a report, whatever port the engine had that
     day), and ``backend.extra.engine_address`` the scheduler's or GCS's own address.
   - ``labels.params`` (issue 19; written only when a sweep varied parameters with
     ``--vary``): the point's values of them, ``NAME -> value`` as ``--set`` takes them
     (``primes.n``, or ``n`` for every stage that has it). Part of the point's identity, so
     reports group by them and ``--resume`` knows the point.
   - ``stages[].transfer`` (issue 21; written for a stage with driver inputs): what it moved
     between driver and workers: ``mode`` (``share`` or ``copy``, ``--transfer``), ``method``
     (in words), ``inputs`` and ``input_bytes`` (the driver inputs it declared),
     ``put_bytes`` and ``put_s`` (placed once: shared memory, ``ray.put``, a Dask scatter),
     ``sent_bytes`` and ``messages`` (inputs carried by task messages: a handle each when
     shared, the data itself when copied), ``returned_bytes`` (task results that reached
     the driver); see :class:`~cluster_runner.results.stages.Transfer`.

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
    warmup_s: float | None = None  # of which, seconds the job's warm-up hooks took (left out)
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
            **({"warmup_s": self.warmup_s} if self.warmup_s is not None else {}),
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
            warmup_s=data.get("warmup_s"),
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
    baseline: str | None = None  # the sweep's speedup reference, e.g. ``serial@1``
    precision: float | None = None  # the sweep's --precision target, percent of the median
    params: Mapping[str, Any] = field(default_factory=dict)  # --vary: the point's values

    def to_json(self) -> Json:
        data: Json = {
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
        if self.baseline is not None:  # absent when unset, as in records written before it
            data["baseline"] = self.baseline
        if self.precision is not None:
            data["precision"] = self.precision
        if self.params:
            data["params"] = dict(self.params)
        return data

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
            baseline=data.get("baseline"),
            precision=data.get("precision"),
            params=data.get("params") or {},
        )


@dataclass(frozen=True)
class Source:
    """Where the job came from: its folder, and that folder's git commit when it is in one."""

    path: str  # the folder of the job file (or of the built-in jobs)
    commit: str | None = None  # ``git rev-parse HEAD`` there; None outside a git work tree
    dirty: bool = False  # tracked files differ from the commit

    @property
    def short(self) -> str:
        """``1a2b3c4d`` or ``1a2b3c4d+dirty``; ``no git`` outside a work tree."""
        if self.commit is None:
            return "no git"
        return self.commit[:8] + ("+dirty" if self.dirty else "")

    def to_json(self) -> Json:
        return {"path": self.path, "commit": self.commit, "dirty": self.dirty}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Source:
        source = cls(
            path=data.get("path", ""), commit=data.get("commit"), dirty=data.get("dirty", False)
        )
        if not isinstance(source.path, str) or not isinstance(source.commit, str | None):
            raise ValueError("source.path and source.commit must be strings")
        if not isinstance(source.dirty, bool):
            raise ValueError("source.dirty must be true or false")
        return source


@dataclass(frozen=True)
class SlurmPlacement:
    """The Slurm jobs and nodes a run's point used (issue 19), one entry a node."""

    job_ids: tuple[str, ...]  # the Slurm job of each node used
    nodes: tuple[str, ...]  # Slurm's name of each node used
    cluster: str | None = None  # Slurm's cluster name, when known

    def to_json(self) -> Json:
        data: Json = {"job_ids": list(self.job_ids), "nodes": list(self.nodes)}
        if self.cluster is not None:
            data["cluster"] = self.cluster
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SlurmPlacement:
        return cls(
            job_ids=tuple(str(j) for j in data.get("job_ids", ())),
            nodes=tuple(str(n) for n in data.get("nodes", ())),
            cluster=data.get("cluster"),
        )


def tags_from_json(data: Any) -> dict[str, str]:
    """A record's ``tags``: an object of strings (``ValueError`` for anything else)."""
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError("tags must be an object of strings")
    return dict(data)


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
    cold: bool = False  # first timed run on a fresh backend, nothing untimed before it
    source: Source | None = None  # the job's folder and its git commit; None: not recorded
    tags: Mapping[str, str] = field(default_factory=dict)  # --tag KEY=VALUE labels
    slurm: SlurmPlacement | None = None  # the Slurm jobs and nodes used (issue 19)
    schema_version: int = SCHEMA_VERSION

    @property
    def transfer_mode(self) -> str | None:
        """How the run's driver inputs travelled (``share`` or ``copy``, ``--transfer``); None
        when no stage had any (a workload that makes its data in its tasks, an older record)."""
        for stage in self.stages:
            if stage.transfer is not None and stage.transfer.inputs:
                return stage.transfer.mode
        return None

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
        if self.cold:
            data["cold"] = True
        if self.source is not None:
            data["source"] = self.source.to_json()
        if self.tags:
            data["tags"] = dict(self.tags)
        if self.slurm is not None:
            data["slurm"] = self.slurm.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """A record from its JSON object; a field an older record lacks takes its empty value.

        Raises ``KeyError`` or ``TypeError`` for an object that is not a record at all (the
        reader turns them into a one-line error naming the file and line).
        """
        labels = data.get("labels") or None
        usage = data.get("usage")
        source = data.get("source")
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
            cold=data.get("cold", False),
            source=Source.from_json(source) if source is not None else None,
            tags=tags_from_json(data.get("tags", {})),
            slurm=SlurmPlacement.from_json(data["slurm"]) if data.get("slurm") else None,
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )
