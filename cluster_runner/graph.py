"""The workload graph: a small, inspectable DAG of tasks, and of *maps* of many tasks at once.

A graph is *data*. Workloads build one; backends turn it into work. Neither knows the other: a
workload never imports a backend, and a backend never knows what a task computes. This is the
same split as a Dask task graph (``{key: (func, *args)}``) with the keys made explicit.

A :class:`Task` is a key, a top-level (hence picklable) function and its arguments. An argument
that is a :class:`Ref` stands for the result of another task; every other argument is passed
as is. Tasks carry the name of the *stage* (workload) they belong to, so the runner can run and
time one stage at a time, and optional *resources* (``{"GPU": 1}``) that backends map to their
own placement mechanism.

A :class:`MapTask` (made by :meth:`Graph.map` and :meth:`Graph.starmap`, as ``Pool.map`` and
``Pool.starmap``) is a fan-out of many tasks of one function: task ``i`` is
``func(args[i], *shared)`` (or ``func(*args[i], *shared)``) under the key
``f"{key}-{i:0{digits}d}"``. It costs what its list of arguments costs (nothing more for a
``range``): no :class:`Task`, key or :class:`Ref` exists per task until someone asks for one
(iterating the graph, ``graph[key]``, or an engine that needs one object a task, which the
walk makes one at a time). Its :class:`MapRef` stands for all its results, in index order: as
a task's argument it is spread in place, so ``graph.add(k, f, parts)`` runs ``f(*results)``, as
``graph.add(k, f, *parts)`` does with one Ref a task (a MapRef is a sequence of them).

Issue 16 measured the cost that made this worth it: a million-task no-op graph of single tasks
took about 1.2 KB of driver memory a task and 46,000 tasks a second on a local pool.

A *driver input* (:meth:`Graph.put`, issue 21) is data the driver already holds (an array it
loaded, a model, a table), given once and used by many tasks: its :class:`DataRef` stands for
it among a task's arguments or a map's ``shared`` ones. The graph keeps the value and its size
serialised; how it reaches the workers is the backend's business
(:mod:`cluster_runner.execution.inputs`), once (shared) or with every task (copied).

The graph is not a scheduler: it only answers questions about its shape (dependencies,
topological order, stages) and checks that it is a DAG when a task is added.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from cluster_runner.errors import JobSpecError
from cluster_runner.graph_nodes import (
    NO_RESOURCES,
    DataRef,
    MapRef,
    MapTask,
    Node,
    Phased,
    Ref,
    Task,
    check_plain_args,
)

__all__ = ["DataRef", "Graph", "MapRef", "MapTask", "Node", "Phased", "Ref", "Task"]


class Graph:
    """A DAG of :class:`Task` and :class:`MapTask` nodes, kept in insertion order (which is
    topological): a node can only reference keys that already exist, so cycles cannot be built.
    """

    def __init__(self) -> None:
        self._nodes: list[Node] = []
        self._tasks: dict[str, Task] = {}
        self._maps: dict[str, MapTask] = {}
        self._size = 0
        self._offset_cache: list[int] | None = None
        self._position_cache: dict[int, int] | None = None
        self._inputs: dict[str, tuple[Any, int, str]] = {}  # key -> (value, bytes, stage)

    # --- building ---------------------------------------------------------------------------

    def add(
        self,
        key: str,
        func: Callable[..., Any],
        *args: Any,
        stage: str,
        resources: Mapping[str, float] | None = None,
    ) -> Ref:
        """Add ``func(*args)`` under ``key`` and return a :class:`Ref` to its result."""
        if key in self or key in self._maps:
            raise ValueError(f"duplicate task key {key!r}")
        self._check_refs(args, key)
        shared = MappingProxyType(dict(resources)) if resources else NO_RESOURCES
        self._append(Task(key, func, tuple(args), stage, shared))
        return Ref(key)

    def put(self, key: str, value: Any, *, stage: str) -> DataRef:
        """Declare ``value``, held by the driver, as an input of ``stage``'s tasks: a
        :class:`DataRef` to pass them (in :meth:`add`'s arguments or a map's ``shared``).

        The value is serialised once here, to learn its size and to refuse, in one line, one
        that no worker could receive (a lambda, an open file, a lock): before anything runs.
        """
        from cluster_runner.execution.inputs import serialised_size

        if key in self._inputs or key in self._tasks or key in self._maps:
            raise ValueError(f"duplicate key {key!r}")
        try:
            size = serialised_size(value)
        except Exception as exc:  # pickle raises many kinds (TypeError, PicklingError, ...)
            raise JobSpecError(
                f"stage {stage!r}: its input {key!r} ({type(value).__name__}) cannot be sent to"
                f" workers: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__};"
                " give a picklable value (a numpy array, bytes, plain data) or make it inside"
                " the tasks"
            ) from None
        self._inputs[key] = (value, size, stage)
        return DataRef(key)

    def inputs(self) -> dict[str, tuple[Any, int]]:
        """The driver inputs, ``key -> (value, bytes serialised)``, in the order put."""
        return {key: (value, size) for key, (value, size, _) in self._inputs.items()}

    def map(
        self,
        key: str,
        func: Callable[..., Any],
        args: Sequence[Any],
        *,
        stage: str,
        shared: Sequence[Any] = (),
        resources: Mapping[str, float] | None = None,
        digits: int = 6,
    ) -> MapRef:
        """Add one task ``func(args[i], *shared)`` for each ``i``, keyed ``f"{key}-{i:06d}"``.

        ``args`` is kept as given when it is a ``range`` (lazy) and as a tuple otherwise: the
        map costs what that costs. Its tasks' own arguments must not be refs; ``shared`` may.
        """
        return self._add_map(key, func, args, False, stage, shared, resources, digits)

    def starmap(
        self,
        key: str,
        func: Callable[..., Any],
        args: Sequence[Sequence[Any]],
        *,
        stage: str,
        shared: Sequence[Any] = (),
        resources: Mapping[str, float] | None = None,
        digits: int = 6,
    ) -> MapRef:
        """:meth:`map` with each ``args[i]`` a tuple of arguments: ``func(*args[i], *shared)``."""
        return self._add_map(key, func, args, True, stage, shared, resources, digits)

    def _add_map(self, key, func, args, star, stage, shared, resources, digits) -> MapRef:
        if key in self._maps or key in self._tasks:
            raise ValueError(f"duplicate task key {key!r}")
        args = args if isinstance(args, range) else tuple(args)
        if not args:
            raise ValueError(f"map {key!r} has no tasks")
        if star:
            if isinstance(args, range):
                raise ValueError(f"starmap {key!r}: each task's arguments must be a tuple")
            args = tuple(map(tuple, args))
        check_plain_args(args, star, key)
        self._check_refs(shared, key)
        node = MapTask(
            key,
            func,
            args,
            stage,
            star=star,
            shared=tuple(shared),
            resources=MappingProxyType(dict(resources)) if resources else NO_RESOURCES,
            digits=digits,
        )
        clash = next((k for k in self._tasks if self._element(k, node) is not None), None)
        if clash is not None:
            raise ValueError(f"duplicate task key {clash!r}")
        self._append(node)
        return node.ref

    def _append(self, node: Node) -> None:
        self._nodes.append(node)
        if isinstance(node, MapTask):
            self._maps[node.key] = node
            self._size += len(node)
        else:
            self._tasks[node.key] = node
            self._size += 1
        self._offset_cache: list[int] | None = None

    def _check_refs(self, args: Sequence[Any], key: str) -> None:
        for arg in args:
            if isinstance(arg, DataRef) and arg.key not in self._inputs:
                raise ValueError(f"task {key!r} uses unknown input {arg.key!r}")
            if isinstance(arg, Ref) and arg.key not in self:
                raise ValueError(f"task {key!r} depends on unknown task {arg.key!r}")
            if isinstance(arg, MapRef) and self._maps.get(arg.key) is None:
                raise ValueError(f"task {key!r} depends on unknown map {arg.key!r}")

    # --- keys -------------------------------------------------------------------------------

    @staticmethod
    def _element(key: str, node: MapTask) -> int | None:
        """The index ``key`` names in ``node`` (its exact key), or None."""
        prefix, dash, digits = key.rpartition("-")
        if not dash or prefix != node.key or not digits.isdigit():
            return None
        index = int(digits)
        return index if index < len(node) and node.key_of(index) == key else None

    def locate(self, key: str) -> tuple[Node, int | None]:
        """The node that holds task ``key``, and its index in a map (None for a single task)."""
        task = self._tasks.get(key)
        if task is not None:
            return task, None
        node = self._maps.get(key.rpartition("-")[0])
        if node is not None:
            index = self._element(key, node)
            if index is not None:
                return node, index
        raise KeyError(key)

    def __len__(self) -> int:
        """The number of tasks (a map counts each of its tasks)."""
        return self._size

    def __iter__(self) -> Iterator[Task]:
        """Tasks in a topological order (every task after its dependencies), maps expanded."""
        for node in self._nodes:
            if isinstance(node, MapTask):
                yield from (node.task(i) for i in range(len(node)))
            else:
                yield node

    def __getitem__(self, key: str) -> Task:
        node, index = self.locate(key)
        return node if index is None else node.task(index)  # type: ignore[union-attr]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self.locate(key)
        except KeyError:
            return False
        return True

    # --- nodes and task numbers -------------------------------------------------------------

    def nodes(self) -> list[Node]:
        """The nodes (single tasks and maps), in insertion (topological) order."""
        return list(self._nodes)

    def requires(self, node: Node) -> list[Node]:
        """The nodes whose results ``node`` needs (a map as a whole), each once, in order."""
        args = node.shared if isinstance(node, MapTask) else node.args
        needed: dict[int, Node] = {}
        for arg in args:
            if isinstance(arg, Ref):
                found = self.locate(arg.key)[0]
            elif isinstance(arg, MapRef):
                found = self._maps[arg.key]
            else:
                continue
            needed[id(found)] = found
        return list(needed.values())

    @property
    def _offsets(self) -> list[int]:
        """The number of the first task of each node (tasks numbered in order from 0)."""
        if self._offset_cache is None:
            offsets, total = [], 0
            for node in self._nodes:
                offsets.append(total)
                total += len(node) if isinstance(node, MapTask) else 1
            self._offset_cache = offsets
        return self._offset_cache

    def first_number(self, position: int) -> int:
        """The number of the first task of the node at ``position`` in :meth:`nodes`."""
        return self._offsets[position]

    def key_of(self, number: int) -> str:
        """The key of task number ``number`` (tasks numbered in :meth:`__iter__` order)."""
        offsets = self._offsets
        position = bisect.bisect_right(offsets, number) - 1
        node = self._nodes[position]
        if isinstance(node, MapTask):
            return node.key_of(number - offsets[position])
        return node.key

    def number_of(self, key: str) -> int:
        """The number of task ``key`` (see :meth:`key_of`)."""
        node, index = self.locate(key)
        if self._position_cache is None or len(self._position_cache) != len(self._nodes):
            self._position_cache = {id(n): i for i, n in enumerate(self._nodes)}
        return self._offsets[self._position_cache[id(node)]] + (index or 0)

    # --- shape ------------------------------------------------------------------------------

    def _consumed(self) -> dict[int, set[int] | None]:
        """``id(node) -> None`` (every result used) or the map indices used by other nodes."""
        used: dict[int, set[int] | None] = {}
        for node in self._nodes:
            args = node.shared if isinstance(node, MapTask) else node.args
            for arg in args:
                if isinstance(arg, MapRef):
                    used[id(self._maps[arg.key])] = None
                elif isinstance(arg, Ref):
                    found, index = self.locate(arg.key)
                    if index is None:
                        used[id(found)] = None
                    elif used.get(id(found), set()) is not None:
                        used.setdefault(id(found), set()).add(index)
        return used

    def fed_keys(self) -> Iterator[str]:
        """Keys of the tasks whose results another task uses, in order (made lazily)."""
        used = self._consumed()
        for node in self._nodes:
            if id(node) not in used:
                continue
            indices = used[id(node)]
            if not isinstance(node, MapTask):
                yield node.key
            elif indices is None:
                yield from (node.key_of(i) for i in range(len(node)))
            else:
                yield from (node.key_of(i) for i in sorted(indices))

    def sinks(self) -> list[str]:
        """Keys whose results no other task consumes: the graph's outputs."""
        used = self._consumed()
        out = []
        for node in self._nodes:
            indices = used.get(id(node), set())
            if indices is None:
                continue
            if isinstance(node, MapTask):
                out.extend(node.key_of(i) for i in range(len(node)) if i not in indices)
            elif not indices:
                out.append(node.key)
        return out

    def dependents(self) -> dict[str, list[str]]:
        """Map each key to the keys of the tasks that consume its result (one entry a task)."""
        out: dict[str, list[str]] = {task.key: [] for task in self}
        for task in self:
            for dep in task.dependencies:
                out[dep].append(task.key)
        return out

    @property
    def stages(self) -> list[str]:
        """Stage names in the order they first appear."""
        return list(dict.fromkeys(node.stage for node in self._nodes))

    def stage(self, name: str) -> Graph:
        """The sub-graph of one stage's tasks (a stage must not depend on another stage)."""
        sub = Graph()
        for node in self._nodes:
            if node.stage != name:
                continue
            for needed in self.requires(node):
                if needed.stage != name:
                    raise ValueError(f"stage {name!r} depends on {needed.key!r} of another stage")
            sub._append(node)
        if not sub._nodes:
            raise KeyError(name)
        sub._inputs = {k: v for k, v in self._inputs.items() if v[2] == name}
        return sub

    def with_wrapped(self, key: str, wrapper: Callable[..., Any], *before: Any) -> Graph:
        """A copy in which task ``key`` runs ``wrapper(*before, func, *args)`` instead."""
        node, index = self.locate(key)
        copy = Graph()
        for each in self._nodes:
            if each is node and index is None:
                each = replace(node, func=wrapper, args=(*before, node.func, *node.args))
            elif each is node:
                each = replace(node, wrapped={**node.wrapped, index: (wrapper, before)})
            copy._append(each)
        copy._inputs = dict(self._inputs)
        return copy

    def describe(self) -> str:
        """A human-readable listing, one task (or one whole map) a line."""
        return "\n".join(node.describe() for node in self._nodes)
