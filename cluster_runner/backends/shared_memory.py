"""The local pool's driver inputs in ``multiprocessing.shared_memory`` (issue 21).

The driver writes an input once into a named segment (``/dev/shm/cr-<pid>-<token>`` on Linux);
a task message carries a :class:`SharedHandle` of about a hundred bytes in its place. When a
worker unpickles the message, the handle becomes the value: the worker maps the segment
read-only (:func:`attach`; the first time only, then from its cache) and gets a numpy array
over the mapped pages, with no copy at all. The workers of a pool map the same pages.

Other picklable values are stored as a pickle (protocol 5) whose out-of-band buffers (numpy
arrays inside a dict, say) lie in the same segment and come back as views of it; the rest of
the object is built once per worker and kept.

Segments are kept in an :class:`Arena` while the pool lives, as Ray keeps its object store:
a fresh segment costs a page fault per 4 KiB page as it is first written (about 0.7 s a GiB
here, where copying into pages already there takes 0.1 s), so the next run's input of the same
size is written into the segment the last run released, rather than into a new one. Each
placing is a new *generation* of the segment; a worker rebuilds its view when the generation
changes. The arena unlinks every segment when the backend closes, however the command ends
(normal end, an error, Ctrl-C; a pool replaced after a worker died keeps them); a driver
killed outright leaves the unlinking to ``multiprocessing``'s resource tracker, which created
segments are registered with. Workers attach without registering (they would otherwise unlink
the driver's segment when they exit) and drop a mapping once its segment is gone.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import secrets
import shutil
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from cluster_runner.errors import UsageError
from cluster_runner.execution.inputs import PlacedInput, load_own, read_only

#: Every segment this runner makes starts with this, then the driver's pid.
PREFIX = "cr-"
#: Where POSIX shared memory lives on Linux (elsewhere the free space is not checked).
SHM_DIR = "/dev/shm"
_ALIGN = 64  # out-of-band buffers start on a cache line, as numpy would allocate them

#: This worker's mappings: segment name -> (generation, its pages, the value built over them).
_attached: dict[str, tuple[str, mmap.mmap, Any]] = {}


@dataclass(frozen=True)
class SharedHandle:
    """What a message carries instead of an input; unpickled, it is the input (see module)."""

    name: str
    size: int  # bytes of the segment
    generation: str  # which placing of the segment's contents (an arena reuses segments)
    dtype: str | None = None  # an array: its dtype and shape; None: a pickle and its buffers
    shape: tuple[int, ...] = ()
    stream: int = 0  # a pickle: the length of its stream, then (offset, length) of each buffer
    buffers: tuple[tuple[int, int], ...] = ()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        layout = (self.dtype, self.shape, self.stream, self.buffers)
        return attach, (self.name, self.size, self.generation, *layout)


def segment_names() -> list[str]:
    """This runner's segments present now (Linux: under ``/dev/shm``), for checks and tests."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX))
    except OSError:
        return []


class Arena:
    """The local pool's segments: reused run after run (see the module docstring), unlinked
    when the pool's backend closes. At most :attr:`KEEP` free segments are kept."""

    KEEP = 4

    def __init__(self) -> None:
        self.free: list[shared_memory.SharedMemory] = []
        self.used: list[shared_memory.SharedMemory] = []

    def take(self, key: str, size: int) -> shared_memory.SharedMemory:
        """A segment of ``size`` bytes: a free one of that size, else a new one."""
        for segment in self.free:
            if segment.size == size:
                self.free.remove(segment)
                self.used.append(segment)
                return segment
        while self.free and _room() < size:
            _unlink(self.free.pop(0))  # others' pages, given back before asking for more
        _check_room(key, size)
        segment = shared_memory.SharedMemory(
            name=f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}", create=True, size=size
        )
        self.used.append(segment)
        return segment

    def give(self, segment: shared_memory.SharedMemory) -> None:
        """A segment its stage no longer needs: kept for the next run, or unlinked."""
        if segment in self.used:
            self.used.remove(segment)
            self.free.append(segment)
        while len(self.free) > self.KEEP:
            _unlink(self.free.pop(0))

    def clear(self) -> None:
        """Unlink every segment (the backend is closing)."""
        segments, self.free, self.used = [*self.free, *self.used], [], []
        for segment in segments:
            _unlink(segment)


def share(key: str, value: Any, nbytes: int, arena: Arena) -> PlacedInput:
    """Write ``value`` into a segment of ``arena``; the handle tasks carry, and its release."""
    array = value if isinstance(value, np.ndarray) and not value.dtype.hasobject else None
    if array is not None:
        size = array.nbytes
        layout: dict[str, Any] = {"dtype": array.dtype.str, "shape": tuple(array.shape)}
    else:
        buffers: list[pickle.PickleBuffer] = []
        stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        spans, offset = [], _aligned(len(stream))
        for buffer in buffers:
            length = buffer.raw().nbytes
            spans.append((offset, length))
            offset = _aligned(offset + length)
        size = offset
        layout = {"stream": len(stream), "buffers": tuple(spans)}
    segment = arena.take(key, max(size, 1))
    try:
        view = segment.buf
        if array is not None:
            np.ndarray(array.shape, array.dtype, buffer=view)[...] = array
        else:
            view[: len(stream)] = stream
            for buffer, (start, length) in zip(buffers, spans, strict=True):
                view[start : start + length] = buffer.raw()
        del view
    except BaseException:
        arena.give(segment)
        raise
    handle = SharedHandle(segment.name, segment.size, secrets.token_hex(4), **layout)
    return PlacedInput(
        "shared memory", handle, len(pickle.dumps(handle)), size, lambda: arena.give(segment)
    )


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _room() -> float:
    """Bytes of shared memory free now (infinite where there is no /dev/shm to look at)."""
    try:
        return shutil.disk_usage(SHM_DIR).free
    except OSError:
        return float("inf")  # macOS: the segment's creation will say


def _check_room(key: str, size: int) -> None:
    """Refuse an input larger than the shared memory free to hold it, in one line."""
    free = _room()
    if size > free:
        raise UsageError(
            f"input {key!r} ({size / 2**30:.2f} GiB) is larger than the shared memory free"
            f" for the local pool's workers to map ({SHM_DIR}: {free / 2**30:.2f} GiB free);"
            " free some, make the input smaller, or use --transfer copy"
        )


def _unlink(segment: shared_memory.SharedMemory) -> None:
    try:
        segment.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()  # also tells the resource tracker the segment is gone


def attach(
    name: str,
    size: int,
    generation: str,
    dtype: str | None,
    shape: tuple[int, ...],
    stream: int,
    buffers: tuple[tuple[int, int], ...],
) -> Any:
    """The input a :class:`SharedHandle` stands for, in a worker: mapped read-only, cached."""
    found = _attached.get(name)
    if found is not None and found[0] == generation:
        return found[2]
    if found is not None and len(found[1]) == size:
        pages = found[1]  # the segment, written again: its mapping sees the new contents
    else:
        _forget_unlinked()
        pages = _map(name, size)
    if dtype is not None:
        count = int(np.prod(shape, dtype=np.int64))
        value: Any = np.frombuffer(pages, np.dtype(dtype), count).reshape(shape)
    else:
        view = memoryview(pages)
        oob = [view[start : start + length] for start, length in buffers]
        value = read_only(load_own(view[:stream], oob))
    _attached[name] = (generation, pages, value)
    return value


def _map(name: str, size: int) -> mmap.mmap:
    from _posixshmem import shm_open  # what SharedMemory uses; opening here skips its tracker

    fd = shm_open("/" + name, os.O_RDONLY, 0)
    try:
        return mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def _forget_unlinked() -> None:
    """Drop this worker's mappings of segments the driver has unlinked (earlier stages): the
    pages are freed once no task holds a view of them."""
    from _posixshmem import shm_open

    for name in list(_attached):
        try:
            os.close(shm_open("/" + name, os.O_RDONLY, 0))
        except FileNotFoundError:
            del _attached[name]
