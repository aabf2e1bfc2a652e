"""Dask's driver inputs (issue 21): one scatter, or the value inside every task.

Shared (the default), an input is scattered once (:func:`share`) and broadcast: every worker
the run uses gets one copy before any chunk runs (Dask workers are processes with memory of
their own), and each task names the scattered key among its arguments, found in its worker's
memory. ``put_s`` is the scatter and the broadcast; ``put_bytes`` counts the copies the workers
held when the stage ended. The broadcast is Dask's own worker-to-worker transfer, asked for with
one small task pinned to each worker that needs the key, not ``scatter(broadcast=True)``:
Dask 2026.8's ``replicate`` logs WorkerState objects to the scheduler's ``all`` event topic,
which this backend subscribes to for lost workers, and the unserialisable event drops the
client's connection. The input is refused first if it is larger than a worker's memory limit.
Releasing it releases the future: workers drop their copies.

Copied (``--transfer copy``), the value itself is each task's argument, as code that embeds a
large object in ``client.submit(f, array, i)`` or a graph does: the scheduler sends it inside
every task's message to its worker. Dask's warning about a large graph, which says exactly
this, is silenced, since the user asked for it.

Dask builds a received array over its message frame, at whatever byte offset it lies, often
misaligned; numpy sums a misaligned array differently in the last bits. So an input reaches
tasks through :func:`~cluster_runner.execution.inputs.read_only`, which copies a misaligned
array. Copied, each task's argument is the inline task ``read_only(value)``, run on the worker;
shared, the scattered object is a :class:`Held`, which rebuilds itself so whenever it arrives
(from the client or from another worker), once per worker, and each task's argument is the
inline task :func:`held_value` of the scattered key.
"""

from __future__ import annotations

import pickle
from typing import Any

from dask.sizeof import sizeof
from dask.task_spec import Task, TaskRef
from distributed import Client

from cluster_runner.errors import UsageError
from cluster_runner.execution.inputs import PlacedInput, read_only


class Held:
    """A shared input as a Dask worker holds it: read-only and aligned each time it arrives."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = read_only(value)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Held, (self.value,)


@sizeof.register(Held)
def _sizeof_held(held: Held) -> int:
    return sizeof(held.value)  # what Dask's memory accounting sees of the worker's copy


def _hold(held: Held) -> None:
    """A task pinned to a worker that fetches the input there (the broadcast), and nothing."""


def held_value(held: Held) -> Any:
    """A task's argument: the input its worker holds."""
    return held.value


def share(
    client: Client, workers: dict[str, dict[str, Any]], key: str, value: Any, nbytes: int
) -> PlacedInput:
    """Scatter ``value`` to ``workers`` (address -> Dask's worker info), once each."""
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    smallest = min((limit for limit in limits if limit), default=0)
    if smallest and nbytes > smallest:
        raise UsageError(
            f"input {key!r} ({nbytes / 2**30:.2f} GiB) is larger than a Dask worker's memory"
            f" limit ({smallest / 2**30:.2f} GiB); make the input smaller or give the workers"
            " more memory (--memory-limit)"
        )
    # In a list of one: scatter spreads a dict, list or tuple given bare, a future per item.
    (future,) = client.scatter([Held(value)], workers=list(workers), hash=False)
    fetched = [client.submit(_hold, future, workers=[w], pure=False) for w in workers]
    client.gather(fetched)  # every worker holds a copy now: the broadcast, timed in put_s
    for each in fetched:
        each.release()
    # Tasks name the key (a plain reference), not the future: a Future inside a task's
    # arguments would travel with the task, to a scheduler that cannot send it on.
    handle = Task(None, held_value, TaskRef(future.key))
    placed = PlacedInput("scatter", handle, len(pickle.dumps(handle)), nbytes)

    def release() -> None:
        try:  # the copies the workers ended up holding: what the scatter really moved
            holders = client.who_has([future]).get(future.key, ())
            placed.put_bytes = nbytes * max(1, len(holders))
        except Exception:
            pass
        future.release()

    placed.release = release
    return placed


class Box:
    """A copied input inside one task's message, emptied by the task that takes it (:func:`take`).

    A Dask worker keeps a task's spec, and so its arguments, for as long as it keeps the task,
    which a fan-out's chunk does until the reduce has its result: 64 chunks carrying a 1 GiB copy
    each held 11 GiB per worker and were killed for memory. Emptied, the spec holds nothing."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Box, (self.value,)


#: What a box holds once its task took the copy.
_TAKEN = ("taken",)


def take(box: Box) -> Any:
    """A task's argument: the copy its message carried, read-only; the box is left empty."""
    value, box.value = box.value, _TAKEN
    if value is _TAKEN:  # two tasks unpickled from one message would share one box
        raise RuntimeError("a copied input was taken twice: its task's message was shared")
    return read_only(value)


def copy(key: str, value: Any, nbytes: int) -> PlacedInput:
    """Embed ``value`` in every task (the scheduler sends it with each)."""
    return PlacedInput("inside every task", Task(None, take, Box(value)), wire_bytes=nbytes)
