"""Driver inputs on their way to the workers: placed once (shared) or sent with every task.

A workload declares data the driver holds with :meth:`~cluster_runner.graph.Graph.put`
(issue 21). When a stage runs, :func:`placed_inputs` asks the backend to place each input the
best way it has (:meth:`~cluster_runner.backends.base.Backend.share_input`): the local pool
writes it once into ``multiprocessing.shared_memory``, Ray puts it once into its object store,
Dask scatters it once to the workers, serial and threads hand over a read-only reference.
With ``--transfer copy`` (:meth:`~cluster_runner.backends.base.Backend.copy_input`) it travels
inside every task's message instead, as code that passes a large argument to ``submit``
sends it: the difference is what sharing saves.

Whichever way, a task receives the value itself, read-only where it is a numpy array (as Ray
hands out its zero-copy views), so that a task that writes into its input fails the same way
on every backend and a result is bit-identical with and without sharing.

The :class:`InputTable` counts what moved: bytes placed once and the seconds it took, the
messages that carried an input and their bytes, the bytes of results that reached the driver;
:meth:`InputTable.record` is the stage's :class:`~cluster_runner.results.stages.Transfer`.
Every input placed is released when the stage ends, however it ends (an error, Ctrl-C, a lost
worker): the ``finally`` of :func:`placed_inputs`.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cluster_runner.backends.base import Backend
    from cluster_runner.graph import Graph
    from cluster_runner.results.stages import Transfer

#: The ways inputs may travel (``--transfer``).
TRANSFER_MODES = ("share", "copy")


def serialised_size(value: Any) -> int:
    """Bytes ``value`` takes pickled (protocol 5), its out-of-band buffers included.

    Large buffers (numpy arrays) are counted, not copied, so sizing a 1 GB array costs
    microseconds. Raises what pickle raises for a value that cannot be sent.
    """
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return len(stream) + sum(buffer.raw().nbytes for buffer in buffers)


def read_only(value: Any, depth: int = 0) -> Any:
    """``value`` as tasks get it: a numpy array as a read-only view, anything else as it is.

    Arrays inside plain dicts, lists and tuples (a few levels deep) are made read-only views
    too, in a new container: otherwise a task could write into the driver's own array (serial,
    threads) or into the copy other tasks on its worker use (a Dask scatter). An array that
    arrives misaligned (Dask builds arrays over its message frames, at any byte offset) is
    copied: numpy reduces a misaligned array in buffered blocks, so its sums differ in the last
    bits from the driver's, and results would not be bit-identical.
    """
    if isinstance(value, np.ndarray):
        if not value.flags.aligned:
            value = value.copy()
        if value.flags.writeable:
            value = value.view()
            value.flags.writeable = False
        return value
    if depth < 3 and type(value) is dict:
        return {k: read_only(v, depth + 1) for k, v in value.items()}
    if depth < 3 and type(value) in (list, tuple):
        return type(value)(read_only(v, depth + 1) for v in value)
    return value


def copied(value: Any) -> Any:
    """A fresh copy of ``value`` made the way a process boundary makes one (pickle)."""
    return read_only(load_own(pickle.dumps(value, protocol=5)))


def load_own(stream: Any, buffers: Any = ()) -> Any:
    """Unpickle what this runner pickled itself, in this session, for its own tasks: a driver
    input copied in-process, or written into shared memory for the pool's workers.

    The one place the package unpickles (``tests/test_security.py`` holds it to that): never a
    results file, a job spec or anything else read from outside; these bytes are the driver's
    own, in the same trust as the messages ``concurrent.futures`` pickles to its workers.
    """
    return pickle.loads(stream, buffers=buffers)


@dataclass(frozen=True)
class Copied:
    """An input sent inside a task message (``--transfer copy``): pickled with the message,
    it arrives as the value itself, read-only as a shared one would be."""

    value: Any

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return read_only, (self.value,)


def size_of(value: Any, depth: int = 0) -> int:
    """About how many bytes ``value`` takes on the wire: cheap, for every task's result.

    Exact for numpy arrays, bytes and strings; containers are summed a few levels deep;
    anything else counts its in-memory size.
    """
    if isinstance(value, (bool, int, float, type(None))):
        return 8
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if depth < 3 and isinstance(value, (list, tuple)):
        return sum(size_of(item, depth + 1) for item in value)
    if depth < 3 and isinstance(value, dict):
        return sum(size_of(k, depth + 1) + size_of(v, depth + 1) for k, v in value.items())
    return sys.getsizeof(value)


@dataclass
class PlacedInput:
    """One input as a backend placed it: what a task message carries in its place.

    ``handle`` is what a message carries (a shared-memory handle that becomes the value when
    a worker unpickles it, a Ray ``ObjectRef``, a Dask future, or the value itself);
    ``fresh``, where set, makes a new handle for each message instead (an in-process copy).
    ``wire_bytes`` is what the handle adds to a message; ``put_bytes`` what was written once
    (times the copies a broadcast made). ``release`` frees what was placed.
    """

    method: str
    handle: Any = None
    wire_bytes: int = 0
    put_bytes: int = 0
    release: Callable[[], None] = lambda: None
    fresh: Callable[[], Any] | None = None
    put_s: float = 0.0


def by_reference(value: Any) -> PlacedInput:
    """An input shared in-process (serial, threads): the driver's own object, read-only."""
    return PlacedInput("by reference", read_only(value))


def copied_in_process(value: Any, nbytes: int) -> PlacedInput:
    """An input copied for every message in-process: a pickle round trip each time."""
    return PlacedInput("pickled with every task", wire_bytes=nbytes, fresh=lambda: copied(value))


class InputTable:
    """The placed inputs of one stage run, and the count of what moved (see module doc)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.placed: dict[str, PlacedInput] = {}
        self.input_bytes = 0
        self.sent_bytes = 0
        self.messages = 0
        self.returned_bytes = 0
        self._lock = threading.Lock()  # results may be counted from callback threads

    def __bool__(self) -> bool:
        return bool(self.placed)

    def handle(self, key: str) -> Any:
        """What the next message carries for input ``key`` (counted as carried once)."""
        placed = self.placed[key]
        with self._lock:
            self.messages += 1
            self.sent_bytes += placed.wire_bytes
        return placed.fresh() if placed.fresh is not None else placed.handle

    def returned(self, values: Any) -> None:
        """Count task results that reached the driver."""
        size = sum(size_of(v) for v in values)
        with self._lock:
            self.returned_bytes += size

    def record(self) -> Transfer:
        # Imported here: the results package reads files (pydantic), which workers and
        # ``runner --help``, importing this module through the backends, must not load.
        from cluster_runner.results.stages import Transfer

        methods = dict.fromkeys(p.method for p in self.placed.values())
        return Transfer(
            mode=self.mode,
            method=", ".join(methods),
            inputs=len(self.placed),
            input_bytes=self.input_bytes,
            put_bytes=sum(p.put_bytes for p in self.placed.values()),
            put_s=sum(p.put_s for p in self.placed.values()),
            sent_bytes=self.sent_bytes,
            messages=self.messages,
            returned_bytes=self.returned_bytes,
        )

    def release(self) -> None:
        """Free every placed input; the first error (after trying them all) is raised."""
        failure: BaseException | None = None
        for placed in self.placed.values():
            release, placed.release, placed.handle = placed.release, _nothing, None
            try:
                release()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


def _nothing() -> None:
    """What releasing an input released already does."""


@contextlib.contextmanager
def placed_inputs(graph: Graph, backend: Backend, mode: str = "share") -> Iterator[InputTable]:
    """The graph's driver inputs placed on ``backend`` for one run of it, released after.

    Placing is timed (``put_s``) and inside the caller's clock: it is a cost of the run.
    """
    if mode not in TRANSFER_MODES:
        raise ValueError(f"transfer mode {mode!r}: choose one of {', '.join(TRANSFER_MODES)}")
    table = InputTable(mode)
    inputs: Mapping[str, tuple[Any, int]] = graph.inputs()
    try:
        for key, (value, nbytes) in inputs.items():
            began = time.perf_counter()
            place = backend.share_input if mode == "share" else backend.copy_input
            placed = place(key, value, nbytes)
            placed.put_s = time.perf_counter() - began
            table.placed[key] = placed
            table.input_bytes += nbytes
        yield table
    finally:
        table.release()
