"""The parts of a run record that describe one stage: its value, placement and usage.

See :mod:`cluster_runner.results.records` for the record they belong to, its JSON form and
the history of the format. As there, nothing coerces a value (the JSON stays bit for bit), and
a field an older record lacks takes its empty value.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    def to_json(self) -> Json:
        return {
            "result": self.result,
            "display": self.display,
            "digest": self.digest,
            "verified": self.verified,
            "verification": self.verification,
            "expected": self.expected,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageResult:
        return cls(
            result=data.get("result"),
            display=data.get("display", ""),
            digest=data.get("digest", ""),
            verified=data.get("verified", False),
            verification=data.get("verification", ""),
            expected=data.get("expected"),
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
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageRecord:
        usage = data.get("usage")
        return cls(
            name=data.get("name", ""),
            workload=data.get("workload", ""),
            tasks=data["tasks"],
            wall_s=data.get("wall_s"),
            result=StageResult.from_json(data),
            placement=Placement.from_json(data),
            retried=data.get("retried", 0),
            usage=Usage.from_json(usage) if usage is not None else None,
        )
