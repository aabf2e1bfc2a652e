"""The nodes of a workload graph: tasks, maps of many tasks, and the refs to their results.

Data only, and picklable: :class:`Task` (one call), :class:`MapTask` (one function over a list
of arguments, made by :meth:`~cluster_runner.graph.Graph.map`), :class:`Ref` (one task's
result), :class:`MapRef` (all of a map's results, in index order), :class:`DataRef` (a driver
input, made by :meth:`~cluster_runner.graph.Graph.put`) and :class:`Phased` (a value with its
kernel phases). :mod:`cluster_runner.graph` puts them together into a DAG and
is where they are imported from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from types import MappingProxyType
from typing import Any

#: The resources of every task that needs none: one shared empty mapping, not one per task.
NO_RESOURCES: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True)
class Ref:
    """A reference to the result of the task named ``key``."""

    key: str


@dataclass(frozen=True)
class DataRef:
    """A driver input (made by :meth:`Graph.put`): data the driver holds, given to many tasks.

    As a task's argument (or in a map's ``shared``) it stands for the value; each backend
    moves the value the best way it has, once (shared memory, Ray's object store, a Dask
    scatter) or with every task (``--transfer copy``), see :mod:`cluster_runner.execution.inputs`.
    """

    key: str


@dataclass(frozen=True)
class MapRef:
    """The results of every task of the map ``key``, in index order (one object for all).

    A sequence of :class:`Ref` (``parts[3]``, ``len(parts)``, ``*parts``); as an argument of
    :meth:`Graph.add` it stands for all the results, spread in place.
    """

    key: str
    size: int
    digits: int

    def key_of(self, index: int) -> str:
        """The key of task ``index`` of the map."""
        return f"{self.key}-{index:0{self.digits}d}"

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Ref:
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(index)
        return Ref(self.key_of(index))

    def __iter__(self) -> Iterator[Ref]:
        return (Ref(self.key_of(i)) for i in range(self.size))


@dataclass(frozen=True)
class Task:
    """One unit of work: ``func(*args)`` with every :class:`Ref` replaced by its result."""

    key: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    stage: str
    resources: Mapping[str, float] = field(default_factory=lambda: NO_RESOURCES)

    @property
    def dependencies(self) -> tuple[str, ...]:
        """Keys of the tasks whose results this task needs, in argument order."""
        return tuple(_ref_keys(self.args))

    def describe(self) -> str:
        """One line naming the function and arguments, with refs shown as ``<key>``."""
        shown = ", ".join(_shown(a) for a in self.args)
        return f"{self.key} = {self.func.__module__}.{self.func.__qualname__}({shown})"


@dataclass(frozen=True)
class MapTask:
    """``len(args)`` tasks of one function (see the module docstring); made by :meth:`Graph.map`.

    ``wrapped`` replaces the function of a few tasks by a wrapper, called as
    ``wrapper(*before, func, *task_args)`` (fault injection kills one task's worker this way).
    """

    key: str  # task i is f"{key}-{i:0{digits}d}"
    func: Callable[..., Any]
    args: Sequence[Any]  # task i's argument (star: its tuple of arguments); a range stays lazy
    stage: str
    star: bool = False
    shared: tuple[Any, ...] = ()  # arguments after each task's own; Refs allowed here only
    resources: Mapping[str, float] = field(default_factory=lambda: NO_RESOURCES)
    digits: int = 6
    wrapped: Mapping[int, tuple[Callable[..., Any], tuple[Any, ...]]] = field(
        default_factory=lambda: NO_RESOURCES
    )

    def __len__(self) -> int:
        return len(self.args)

    @property
    def ref(self) -> MapRef:
        return MapRef(self.key, len(self.args), self.digits)

    def key_of(self, index: int) -> str:
        return f"{self.key}-{index:0{self.digits}d}"

    def arguments(self, index: int) -> tuple[Any, ...]:
        """Task ``index``'s arguments, shared ones included (Refs unresolved)."""
        own = self.args[index]
        return (*own, *self.shared) if self.star else (own, *self.shared)

    def task(self, index: int) -> Task:
        """Task ``index`` as a :class:`Task` of its own (made on demand, not kept)."""
        args = self.arguments(index)
        func = self.func
        if index in self.wrapped:
            wrapper, before = self.wrapped[index]
            func, args = wrapper, (*before, self.func, *args)
        return Task(self.key_of(index), func, args, self.stage, self.resources)

    def describe(self) -> str:
        """One line for the whole map: its keys, function, first arguments and shared ones."""
        n = len(self.args)
        first = ", ".join(_shown(a) for a in self.args[:3]) + (", ..." if n > 3 else "")
        shared = "".join(f", {_shown(a)}" for a in self.shared)
        each = "*each" if self.star else "each"
        return (
            f"{self.key_of(0)}..{self.key_of(n - 1)} = {self.func.__module__}."
            f"{self.func.__qualname__}({each} of {n:,}: [{first}]{shared})"
        )


@dataclass(frozen=True)
class Phased:
    """A task's value with the seconds its phases took (a GPU kernel's generate/compute/reduce).

    A task function may return one; the runner records ``phases`` and ``device`` in the task's
    trace and passes ``value`` on to the tasks that depend on it.
    """

    value: Any
    phases: Mapping[str, float]
    device: str


#: A node of the graph: one task, or a map of many.
Node = Task | MapTask


def _ref_keys(args: Sequence[Any]) -> Iterator[str]:
    for arg in args:
        if isinstance(arg, Ref):
            yield arg.key
        elif isinstance(arg, MapRef):
            yield from (arg.key_of(i) for i in range(arg.size))


def _shown(value: Any) -> str:
    if isinstance(value, DataRef):
        return f"<input {value.key}>"
    if isinstance(value, Ref):
        return f"<{value.key}>"
    if isinstance(value, MapRef):
        return f"<{value.key_of(0)}..{value.key_of(value.size - 1)}>"
    return _short(value)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_plain_args(args: Sequence[Any], star: bool, key: str) -> None:
    """Refuse refs among a map's per-task arguments (only ``shared`` may hold them)."""
    if isinstance(args, range):
        return
    items = chain.from_iterable(args) if star else args
    if any(isinstance(a, (Ref, MapRef, DataRef)) for a in items):
        raise ValueError(
            f"map {key!r}: a task's own arguments cannot be refs or inputs; pass them in"
            " shared=(...)"
        )
