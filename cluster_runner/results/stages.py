"""The parts of a run record that describe one stage: its value, placement, usage, timeline.

See :mod:`cluster_runner.results.records` for the record they belong to, its JSON form and
the history of the format. As there, nothing coerces a value (the JSON stays bit for bit), and
a field an older record lacks takes its empty value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """CPU seconds and peak memory of the driver's process tree over a stage, or a whole run."""

    cpu_s: float
    peak_rss_bytes: int
    processes: int = 0  # processes seen in the tree
    interval_s: float | None = None  # a stage's: seconds between the monitor's samples
    scope: str | None = None  # a run's: whether remote workers are outside the figures

    def to_json(self) -> Json:
        data: Json = {
            "cpu_s": self.cpu_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "processes": self.processes,
        }
        if self.interval_s is not None:
            data["interval_s"] = self.interval_s
        if self.scope is not None:
            data["scope"] = self.scope
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Usage:
        return cls(
            cpu_s=data["cpu_s"],
            peak_rss_bytes=data["peak_rss_bytes"],
            processes=data.get("processes", 0),
            interval_s=data.get("interval_s"),
            scope=data.get("scope"),
        )


@dataclass(frozen=True)
class StageResult:
    """A stage's value as its workload summarised it, and whether it verified."""

    result: Any = None  # a JSON number (or list) that stands for the value
    display: str = ""  # the value in words, for a terminal
    digest: str = ""  # of the exact result bits: equal digests, same answer
    verified: bool = False
    verification: str = ""  # how it was checked: the method, in words
    expected: Any = None  # what a check against a known value expected
    #: The serial reference the result was checked against (a workload without an oracle of
    #: its own, see cluster_runner.runs.reference): key, digest, display, value, backend,
    #: computed, seconds. None (absent in JSON) for a result checked by its workload.
    reference: Mapping[str, Any] | None = None

    def to_json(self) -> Json:
        data: Json = {
            "result": self.result,
            "display": self.display,
            "digest": self.digest,
            "verified": self.verified,
            "verification": self.verification,
            "expected": self.expected,
        }
        if self.reference is not None:
            data["reference"] = dict(self.reference)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageResult:
        return cls(
            result=data.get("result"),
            display=data.get("display", ""),
            digest=data.get("digest", ""),
            verified=data.get("verified", False),
            verification=data.get("verification", ""),
            expected=data.get("expected"),
            reference=data.get("reference"),
        )


@dataclass(frozen=True)
class Placement:
    """Where a stage's tasks ran and how long they kept the workers busy."""

    workers_used: Mapping[str, int] = field(default_factory=dict)  # worker -> tasks run
    nodes_used: Mapping[str, int] = field(default_factory=dict)  # node -> tasks run
    busy_s: float = 0.0  # sum of the tasks' own run times
    task_max_s: float = 0.0
    span_s: float = 0.0  # first task's start to last task's end
    phases: Mapping[str, float] | None = None  # GPU stages only: seconds per kernel phase
    devices_used: Mapping[str, int] | None = None  # GPU stages only: device -> tasks run

    def to_json(self) -> Json:
        data: Json = {}
        if self.devices_used is not None:
            data.update(phases=dict(self.phases or {}), devices_used=dict(self.devices_used))
        data.update(
            workers_used=dict(self.workers_used),
            nodes_used=dict(self.nodes_used),
            busy_s=self.busy_s,
            task_max_s=self.task_max_s,
            span_s=self.span_s,
        )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Placement:
        return cls(
            workers_used=data.get("workers_used", {}),
            nodes_used=data.get("nodes_used", {}),
            busy_s=data.get("busy_s", 0.0),
            task_max_s=data.get("task_max_s", 0.0),
            span_s=data.get("span_s", 0.0),
            phases=data.get("phases"),
            devices_used=data.get("devices_used"),
        )


#: Most tasks of one stage whose times a record keeps; beyond it the timeline holds none and
#: says how many there were (about 25 bytes of JSON a task: 20,000 tasks, half a megabyte).
MAX_TIMELINE_TASKS = 20_000


@dataclass(frozen=True)
class Timeline:
    """When and where each task of a stage ran, as parallel lists: one entry per task.

    Compact on purpose (issue 18): a task is five small integers, not an object with names.
    ``workers`` and ``kinds`` are the distinct worker names and task kinds (``chunk``,
    ``reduce``: a task's key without its stage and number), and ``worker``/``kind`` index
    them. Times are whole microseconds after ``began``, the driver's wall clock when the
    stage's first task was submitted; a worker on another machine reads its own clock, so its
    bars may be shifted by the two clocks' difference. ``attempt`` is empty when every task
    ran once, else the attempt each ran in (0 the first, n its n-th rerun after losing its
    worker). A stage of more than :data:`MAX_TIMELINE_TASKS` tasks keeps none: ``dropped``
    says how many it had.
    """

    began: float  # driver's wall clock (seconds since the epoch) at the first submit
    workers: tuple[str, ...] = ()  # the distinct workers' names
    nodes: tuple[str, ...] = ()  # the node of each of ``workers``
    kinds: tuple[str, ...] = ()  # the distinct task kinds
    worker: tuple[int, ...] = ()  # per task: an index into ``workers``
    kind: tuple[int, ...] = ()  # per task: an index into ``kinds``
    start_us: tuple[int, ...] = ()  # per task: start, microseconds after ``began``
    end_us: tuple[int, ...] = ()  # per task: end, microseconds after ``began``
    attempt: tuple[int, ...] = ()  # per task, or empty: every task ran once
    dropped: int = 0  # tasks not kept (more than MAX_TIMELINE_TASKS)

    def __len__(self) -> int:
        return len(self.start_us)

    @classmethod
    def from_traces(cls, traces: Iterable[Any], began: float) -> Timeline:
        """The timeline of task traces: anything with ``key``, ``worker``, ``node``, ``start``,
        ``end`` and ``attempt``, as :class:`~cluster_runner.execution.tasks.TaskTrace`."""
        if isinstance(traces, Sized) and len(traces) > MAX_TIMELINE_TASKS:
            return cls(began=began, dropped=len(traces))  # compact traces: none made (issue 16)
        traces = sorted(traces, key=lambda t: t.start)
        if len(traces) > MAX_TIMELINE_TASKS:
            return cls(began=began, dropped=len(traces))
        workers: dict[str, int] = {}
        nodes: list[str] = []
        kinds: dict[str, int] = {}
        worker, kind, start, end, attempt = [], [], [], [], []
        for t in traces:
            if t.worker not in workers:
                workers[t.worker] = len(workers)
                nodes.append(str(t.node))
            worker.append(workers[t.worker])
            kind.append(kinds.setdefault(task_kind(t.key), len(kinds)))
            start.append(round((t.start - began) * 1e6))
            end.append(round((t.end - began) * 1e6))
            attempt.append(int(getattr(t, "attempt", 0) or 0))
        return cls(
            began=began,
            workers=tuple(str(w) for w in workers),
            nodes=tuple(nodes),
            kinds=tuple(kinds),
            worker=tuple(worker),
            kind=tuple(kind),
            start_us=tuple(start),
            end_us=tuple(end),
            attempt=tuple(attempt) if any(attempt) else (),
        )

    def to_json(self) -> Json:
        data: Json = {
            "began": self.began,
            "workers": list(self.workers),
            "nodes": list(self.nodes),
            "kinds": list(self.kinds),
            "worker": list(self.worker),
            "kind": list(self.kind),
            "start_us": list(self.start_us),
            "end_us": list(self.end_us),
        }
        if self.attempt:
            data["attempt"] = list(self.attempt)
        if self.dropped:
            data["dropped"] = self.dropped
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Timeline:
        """Read a timeline, checking that its lists agree (``ValueError`` if not: the reader
        turns it into one line naming the file and line)."""
        timeline = cls(
            began=float(data["began"]),
            workers=tuple(data.get("workers", ())),
            nodes=tuple(data.get("nodes", ())),
            kinds=tuple(data.get("kinds", ())),
            worker=tuple(data.get("worker", ())),
            kind=tuple(data.get("kind", ())),
            start_us=tuple(data.get("start_us", ())),
            end_us=tuple(data.get("end_us", ())),
            attempt=tuple(data.get("attempt", ())),
            dropped=data.get("dropped", 0),
        )
        timeline.check()
        return timeline

    def check(self) -> None:
        """Raise ``ValueError`` unless the parallel lists agree and every index is in range."""
        n = len(self.start_us)
        lists = {"worker": self.worker, "kind": self.kind, "end_us": self.end_us}
        if self.attempt:
            lists["attempt"] = self.attempt
        for name, values in lists.items():
            if len(values) != n:
                raise ValueError(f"timeline.{name} has {len(values)} entries, start_us {n}")
        if len(self.nodes) != len(self.workers):
            raise ValueError("timeline.nodes and timeline.workers differ in length")
        names = (*self.workers, *self.nodes, *self.kinds)
        if not all(isinstance(x, str) for x in names):
            raise ValueError("timeline names must be strings")
        numbers = (*self.worker, *self.kind, *self.start_us, *self.end_us, *self.attempt)
        if not all(type(x) is int for x in numbers):
            raise ValueError("timeline entries must be integers")
        if any(not 0 <= i < len(self.workers) for i in self.worker) or any(
            not 0 <= i < len(self.kinds) for i in self.kind
        ):
            raise ValueError("timeline index out of range")
        if any(e < s for s, e in zip(self.start_us, self.end_us, strict=True)):
            raise ValueError("timeline task ends before it starts")
        if type(self.dropped) is not int or self.dropped < 0:
            raise ValueError("timeline.dropped must be a count")


def task_kind(key: str) -> str:
    """A task's kind from its key: ``primes/chunk-000003`` -> ``chunk``, ``dot/reduce`` ->
    ``reduce`` (the stage prefix and a trailing number dropped)."""
    name = key.rsplit("/", 1)[-1]
    stem = name.rstrip("0123456789").rstrip("-_")
    return stem or name


@dataclass(frozen=True)
class Transfer:
    """What a stage moved between the driver and its workers (issue 21).

    ``mode`` is how driver inputs travelled: ``share`` (placed once where workers can reach
    them: shared memory, Ray's object store, a Dask scatter; by reference in-process) or
    ``copy`` (sent with every task). A stage without driver inputs has no transfer record
    (``transfer`` absent, as in records written before issue 21).
    """

    mode: str = "share"  # share | copy
    method: str = ""  # how the inputs moved, in words: "shared memory", "ray.put", ...
    inputs: int = 0  # driver inputs the stage declared
    input_bytes: int = 0  # their size, serialised (pickle protocol 5, buffers included)
    put_bytes: int = 0  # bytes written once before the tasks ran (x copies for a broadcast)
    put_s: float = 0.0  # seconds the driver spent placing them (inside the stage's wall time)
    sent_bytes: int = 0  # bytes of inputs carried by task messages (handles, or the data)
    messages: int = 0  # task messages that carried an input
    returned_bytes: int = 0  # bytes of task results that reached the driver

    @property
    def moved_bytes(self) -> int:
        """Every byte of driver input that moved: placed once, plus carried by messages."""
        return self.put_bytes + self.sent_bytes

    def to_json(self) -> Json:
        return {
            "mode": self.mode,
            "method": self.method,
            "inputs": self.inputs,
            "input_bytes": self.input_bytes,
            "put_bytes": self.put_bytes,
            "put_s": self.put_s,
            "sent_bytes": self.sent_bytes,
            "messages": self.messages,
            "returned_bytes": self.returned_bytes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transfer:
        return cls(
            mode=data.get("mode", "share"),
            method=data.get("method", ""),
            inputs=data.get("inputs", 0),
            input_bytes=data.get("input_bytes", 0),
            put_bytes=data.get("put_bytes", 0),
            put_s=data.get("put_s", 0.0),
            sent_bytes=data.get("sent_bytes", 0),
            messages=data.get("messages", 0),
            returned_bytes=data.get("returned_bytes", 0),
        )


@dataclass(frozen=True)
class StageRecord:
    """One stage of a run: its tasks, wall time, value, placement and usage.

    In JSON the result and placement fields sit flat in the stage's object, as they always did.
    """

    name: str
    workload: str
    tasks: int
    wall_s: float | None
    result: StageResult
    placement: Placement
    retried: int = 0  # tasks rerun after their worker was lost
    usage: Usage | None = None
    timeline: Timeline | None = None  # when and where each task ran; None in older records
    transfer: Transfer | None = None  # what moved to and from the workers; None in older records

    def to_json(self) -> Json:
        data: Json = {
            "name": self.name,
            "workload": self.workload,
            "tasks": self.tasks,
            "wall_s": self.wall_s,
            **self.result.to_json(),
            "retried": self.retried,
        }
        if self.usage is not None:
            data["usage"] = self.usage.to_json()
        data.update(self.placement.to_json())
        if self.timeline is not None:
            data["timeline"] = self.timeline.to_json()
        if self.transfer is not None:
            data["transfer"] = self.transfer.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageRecord:
        usage = data.get("usage")
        timeline = data.get("timeline")
        transfer = data.get("transfer")
        return cls(
            name=data.get("name", ""),
            workload=data.get("workload", ""),
            tasks=data["tasks"],
            wall_s=data.get("wall_s"),
            result=StageResult.from_json(data),
            placement=Placement.from_json(data),
            retried=data.get("retried", 0),
            usage=Usage.from_json(usage) if usage is not None else None,
            timeline=Timeline.from_json(timeline) if timeline is not None else None,
            transfer=Transfer.from_json(transfer) if transfer is not None else None,
        )
