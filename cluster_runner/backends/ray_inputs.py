"""Ray's driver inputs (issue 21): one ``ray.put``, or the value passed with every task.

Shared (the default), an input is put once into the object store (:func:`share`); each task
gets its ``ObjectRef`` as a top-level argument, which Ray resolves on the worker into the value,
a numpy array as a zero-copy, read-only view of the store's shared memory. Workers on other
nodes fetch it once per node. :func:`share` refuses an input larger than the object store
memory free on the cluster, before any task; releasing it frees the object at once
by dropping the driver's last reference to it (Ray frees an object its owner no longer
refers to and no task needs; Ray 2.60 has no public ``free``).

Copied (``--transfer copy``), the value itself is each task's argument (:class:`RayCopy`), as
code that calls ``f.remote(array, i)`` passes it: Ray serialises it for every call and puts it
into the store for every task (Ray's documented anti-pattern, measured here on purpose). Since
the store would hold every copy of a graph submitted at once, :class:`CopyWindow` lets only a
few tasks carrying copies be in flight: two per worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

from cluster_runner.errors import UsageError
from cluster_runner.execution.inputs import PlacedInput


@dataclass(frozen=True)
class RayInput:
    """A shared input in a task's arguments: its ObjectRef, passed to Ray at top level."""

    ref: ray.ObjectRef


@dataclass(frozen=True)
class RayCopy:
    """A copied input in a task's arguments: the value, passed to Ray at top level."""

    value: Any


def share(key: str, value: Any, nbytes: int) -> PlacedInput:
    """Put ``value`` once into the object store; refuse it first if it cannot fit."""
    free = ray.available_resources().get("object_store_memory")
    if free is not None and nbytes > free:
        raise UsageError(
            f"input {key!r} ({nbytes / 2**30:.2f} GiB) is larger than the Ray object store"
            f" memory free ({free / 2**30:.2f} GiB); make the input smaller or give Ray more"
            " (ray start --object-store-memory)"
        )
    holder = [ray.put(value)]
    ref_bytes = len(holder[0].binary())

    def release() -> None:
        holder.clear()  # the last reference: Ray frees the object (no public free() in 2.60)

    handle = RayInput(holder[0])
    return PlacedInput("ray.put (object store)", handle, ref_bytes, nbytes, release)


def copy(key: str, value: Any, nbytes: int) -> PlacedInput:
    """Pass ``value`` with every task (Ray puts it into the store once per task)."""
    return PlacedInput("passed with every task", RayCopy(value), wire_bytes=nbytes)


def top_level(args: list[Any]) -> tuple[list[Any], bool, bool]:
    """``args`` with inputs unwrapped for Ray; whether any was an input, and any a copy."""
    found = copies = False
    for i, arg in enumerate(args):
        if isinstance(arg, RayInput):
            args[i], found = arg.ref, True
        elif isinstance(arg, RayCopy):
            args[i], found, copies = arg.value, True, True
    return args, found, copies


class CopyWindow:
    """At most ``size`` tasks that carry copied inputs in flight (see the module docstring)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.pending: list[ray.ObjectRef] = []

    def admit(self) -> None:
        """Wait until one more task carrying a copy may be submitted."""
        while len(self.pending) >= self.size:
            _, self.pending = ray.wait(self.pending, num_returns=1, fetch_local=False)

    def add(self, ref: ray.ObjectRef) -> None:
        self.pending.append(ref)

    def clear(self) -> None:
        self.pending = []


def not_ready(refs: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
    """The refs among ``refs`` whose tasks have not finished."""
    if not refs:
        return []
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
    return pending
