"""Where and when every task of a run ran, as columns: about 22 bytes a task, not an object.

A run of a million tasks used to keep a :class:`~cluster_runner.execution.tasks.TaskTrace` a
task (a frozen dataclass with a key string, a worker and a node name: about 400 bytes with its
key), which the driver paid for in memory and in time (issue 16). :class:`Traces` keeps the
same facts in four arrays:

============ ====== ========================================================================
column       bytes  what
============ ====== ========================================================================
``number``   4      the task, numbered in the graph's order (:meth:`Graph.key_of` names it)
``start``    8      wall-clock time the task began, on its worker's host (``time.time()``)
``end``      8      when it ended
``where``    2      the worker, an index into :attr:`Traces.workers` (``(worker, node)``)
============ ====== ========================================================================

plus a side table, by position, for the rare trace that says more (a GPU kernel's phases and
device, a rerun's attempt number). A pool's batch comes back as one
:class:`~cluster_runner.execution.tasks.BatchOutput` (its worker once, its times as arrays) and
is appended whole; an engine that reports a :class:`TaskTrace` a task (Dask, Ray) is appended
one trace at a time. Iterating gives :class:`TaskTrace` objects again, made one at a time, and
:meth:`Traces.placement` computes the figures of a stage's record (workers and nodes used, busy
seconds, longest task, span) from the columns, with the same arithmetic as the objects had: the
busy seconds are summed in trace order, as Python's ``sum`` did.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import repeat
from typing import Any

from cluster_runner.execution.tasks import BatchOutput, TaskTrace

#: What a trace says beyond its columns: ``(phases, device, attempt)``.
Extra = tuple[Mapping[str, float] | None, str | None, int]


class Traces:
    """Every task's trace of one run, as columns (see the module docstring)."""

    def __init__(self, key_of: Callable[[int], str]) -> None:
        self.key_of = key_of  # a task's number to its key: the graph's Graph.key_of
        self.number = array("I")
        self.start = array("d")
        self.end = array("d")
        self.where = array("H")
        self.workers: list[tuple[str, str]] = []  # (worker, node) by index
        self._index: dict[tuple[str, str], int] = {}
        self.extra: dict[int, Extra] = {}  # position -> what the columns do not hold

    def _worker(self, worker: str, node: str) -> int:
        found = self._index.get((worker, node))
        if found is None:
            found = self._index[(worker, node)] = len(self.workers)
            self.workers.append((worker, node))
        return found

    def add_batch(self, numbers: Iterable[int], output: BatchOutput) -> None:
        """Append a pool batch's traces: task ``numbers[i]`` ran as ``output``'s i-th."""
        first = len(self.number)
        self.number.extend(numbers)
        self.start.extend(output.start)
        self.end.extend(output.end)
        self.where.extend(repeat(self._worker(output.worker, output.node), len(output.start)))
        if output.extra:
            for i, (phases, device) in output.extra.items():
                self.extra[first + i] = (phases, device, 0)
        assert len(self.number) == len(self.start), "one number a task"

    def add(self, trace: TaskTrace, number: int) -> None:
        """Append one trace object (an engine that reports one a task), as task ``number``."""
        if trace.phases is not None or trace.device is not None or trace.attempt:
            self.extra[len(self.number)] = (trace.phases, trace.device, trace.attempt)
        self.number.append(number)
        self.start.append(trace.start)
        self.end.append(trace.end)
        self.where.append(self._worker(trace.worker, trace.node))

    @classmethod
    def of(cls, traces: Iterable[TaskTrace], number_of: Callable[[str], int]) -> Traces:
        """Columns from trace objects, numbered by ``number_of(key)`` (and named back by it)."""
        keys: dict[int, str] = {}
        out = cls(keys.__getitem__)
        for trace in traces:
            number = number_of(trace.key)
            keys[number] = trace.key
            out.add(trace, number)
        return out

    def __len__(self) -> int:
        return len(self.number)

    def __getitem__(self, position: int) -> TaskTrace:
        worker, node = self.workers[self.where[position]]
        phases, device, attempt = self.extra.get(position, (None, None, 0))
        return TaskTrace(
            self.key_of(self.number[position]),
            worker,
            node,
            self.start[position],
            self.end[position],
            dict(phases) if phases is not None else None,
            device,
            attempt,
        )

    def __iter__(self) -> Iterator[TaskTrace]:
        """The traces as objects, in the order they were recorded (made one at a time)."""
        return (self[i] for i in range(len(self.number)))

    def nbytes(self) -> int:
        """Bytes the columns hold (the side table and the worker names left out)."""
        return sum(a.itemsize * len(a) for a in (self.number, self.start, self.end, self.where))

    def placement(self) -> dict[str, Any]:
        """The figures of a stage's placement, from the columns (see the module docstring):
        ``workers_used``, ``nodes_used``, ``busy_s``, ``task_max_s``, ``span_s``, ``phases`` and
        ``devices_used`` (None unless a task ran on a device)."""
        import numpy as np

        n = len(self.number)
        start = np.frombuffer(self.start, dtype=np.float64) if n else np.zeros(0)
        end = np.frombuffer(self.end, dtype=np.float64) if n else np.zeros(0)
        busy = end - start
        counts = np.bincount(np.frombuffer(self.where, dtype=np.uint16), minlength=0) if n else []
        workers: dict[str, int] = {}
        nodes: dict[str, int] = {}
        for index, count in enumerate(counts):
            if count:
                worker, node = self.workers[index]
                workers[worker] = workers.get(worker, 0) + int(count)
                nodes[node] = nodes.get(node, 0) + int(count)
        phases: Counter[str] = Counter()
        devices: Counter[str] = Counter()
        for position in sorted(self.extra):
            extra_phases, device, _ = self.extra[position]
            phases.update(extra_phases or {})
            if device:
                devices[device] += 1
        return {
            "workers_used": workers,
            "nodes_used": nodes,
            "busy_s": sum(busy.tolist()),  # in trace order, as the objects were summed
            "task_max_s": float(busy.max()) if n else 0.0,
            "span_s": float(end.max() - start.min()) if n else 0.0,
            "phases": dict(phases) if devices else None,
            "devices_used": dict(devices) if devices else None,
        }
