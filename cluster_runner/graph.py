"""The workload graph: a small, inspectable DAG of tasks.

A graph is *data*. Workloads build one; backends turn it into work. Neither knows the other: a
workload never imports a backend, and a backend never knows what a task computes. This is the
same split as a Dask task graph (``{key: (func, *args)}``) with the keys made explicit.

A :class:`Task` is a key, a top-level (hence picklable) function and its arguments. An argument
that is a :class:`Ref` stands for the result of another task; every other argument is passed
as is. Tasks carry the name of the *stage* (workload) they belong to, so the runner can run and
time one stage at a time, and optional *resources* (``{"GPU": 1}``) that backends map to their
own placement mechanism.

The graph is not a scheduler: it only answers questions about its shape (dependencies,
topological order, stages) and checks that it is a DAG when a task is added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: The resources of every task that needs none: one shared empty mapping, not one per task.
_NO_RESOURCES: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True)
class Ref:
    """A reference to the result of the task named ``key``."""

    key: str


@dataclass(frozen=True)
class Task:
    """One unit of work: ``func(*args)`` with every :class:`Ref` replaced by its result."""

    key: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    stage: str
    resources: Mapping[str, float] = field(default_factory=lambda: _NO_RESOURCES)

    @property
    def dependencies(self) -> tuple[str, ...]:
        """Keys of the tasks whose results this task needs, in argument order."""
        return tuple(a.key for a in self.args if isinstance(a, Ref))

    def describe(self) -> str:
        """One line naming the function and arguments, with refs shown as ``<key>``."""
        shown = ", ".join(f"<{a.key}>" if isinstance(a, Ref) else _short(a) for a in self.args)
        return f"{self.key} = {self.func.__module__}.{self.func.__qualname__}({shown})"


@dataclass(frozen=True)
class Phased:
    """A task's value with the seconds its phases took (a GPU kernel's generate/compute/reduce).

    A task function may return one; the runner records ``phases`` and ``device`` in the task's
    trace and passes ``value`` on to the tasks that depend on it.
    """

    value: Any
    phases: Mapping[str, float]
    device: str


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Graph:
    """A DAG of :class:`Task` objects, kept in insertion order (which is topological).

    Tasks can only reference keys that already exist, so insertion order is always a valid
    topological order and cycles cannot be built.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def add(
        self,
        key: str,
        func: Callable[..., Any],
        *args: Any,
        stage: str,
        resources: Mapping[str, float] | None = None,
    ) -> Ref:
        """Add ``func(*args)`` under ``key`` and return a :class:`Ref` to its result."""
        if key in self._tasks:
            raise ValueError(f"duplicate task key {key!r}")
        for arg in args:
            if isinstance(arg, Ref) and arg.key not in self._tasks:
                raise ValueError(f"task {key!r} depends on unknown task {arg.key!r}")
        shared = MappingProxyType(dict(resources)) if resources else _NO_RESOURCES
        self._tasks[key] = Task(key, func, tuple(args), stage, shared)
        return Ref(key)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        """Tasks in a topological order (every task after its dependencies)."""
        return iter(self._tasks.values())

    def __getitem__(self, key: str) -> Task:
        return self._tasks[key]

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def dependents(self) -> dict[str, list[str]]:
        """Map each key to the keys of the tasks that consume its result."""
        out: dict[str, list[str]] = {key: [] for key in self._tasks}
        for task in self._tasks.values():
            for dep in task.dependencies:
                out[dep].append(task.key)
        return out

    def sinks(self) -> list[str]:
        """Keys whose results no other task consumes: the graph's outputs."""
        return [key for key, users in self.dependents().items() if not users]

    @property
    def stages(self) -> list[str]:
        """Stage names in the order they first appear."""
        return list(dict.fromkeys(task.stage for task in self._tasks.values()))

    def stage(self, name: str) -> Graph:
        """The sub-graph of one stage's tasks (a stage must not depend on another stage)."""
        sub = Graph()
        for task in self._tasks.values():
            if task.stage == name:
                for dep in task.dependencies:
                    if dep not in sub._tasks:
                        raise ValueError(f"stage {name!r} depends on {dep!r} of another stage")
                sub._tasks[task.key] = task
        if not sub._tasks:
            raise KeyError(name)
        return sub

    def describe(self) -> str:
        """A human-readable listing, one task a line."""
        return "\n".join(task.describe() for task in self._tasks.values())
