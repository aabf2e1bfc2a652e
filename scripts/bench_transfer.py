"""Driver data on its way to the workers: the runner against the plain engine, side by side.

Issue 21. An array made in the driver (``--size-mb``, float64, 1024 columns) is cut into
``--chunks`` row blocks; each chunk task returns its rows' means, and the driver concatenates
them. Four ways are timed on each backend, on one engine instance with ``--workers`` workers, in
interleaved rounds (A B C D, then D C B A) so that a busy machine's drift hits every way alike:

- **runner share**: :func:`cluster_runner.execute` with ``transfer="share"`` (local: shared
  memory; Dask: one scatter; Ray: one ``ray.put``);
- **runner copy**: the same with ``transfer="copy"`` (the array in every task's message);
- **plain share** and **plain copy**: the same work written by hand on the same engine, as its
  documentation teaches: ``multiprocessing.shared_memory`` and ``executor.submit(f, name, ...)``
  against ``executor.submit(f, array, ...)``; ``client.scatter`` and ``client.submit(f, future,
  ...)`` against the array in every task of one graph; ``ray.put`` and ``f.remote(ref, ...)``
  against ``f.remote(array, ...)`` (at most two tasks a worker in flight, as the runner's Ray
  copy window, or the object store would hold every copy at once).

Every way's result is checked against the driver's ``mean(axis=1)``, bit for bit. Printed per
backend: the median seconds of each way, and the runner's bytes moved (from its ``transfer``
record). Targets: the runner's share within 1.25x of the plain share (the runner adds its
walk, its records and read-only views, not another copy); share faster than copy.

Usage::

    python scripts/bench_transfer.py                                  # 256 MB, local dask ray
    python scripts/bench_transfer.py --size-mb 1024 --chunks 64 --workers 2 --rounds 3
    python scripts/bench_transfer.py --backends local --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster_runner import BackendOptions, create_backend, execute
from cluster_runner.graph import Graph

COLUMNS = 1024
SHARE_RATIO = 1.25


def row_means(start: int, stop: int, array: np.ndarray) -> np.ndarray:
    return array[start:stop].mean(axis=1)


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts)


_mapped: dict[str, tuple[shared_memory.SharedMemory, np.ndarray]] = {}


def shm_row_means(name: str, shape: tuple[int, int], start: int, stop: int) -> np.ndarray:
    """The plain pool's task: attach the segment once per worker, as a hand-written pool does."""
    if name not in _mapped:
        segment = shared_memory.SharedMemory(name)
        _mapped[name] = (segment, np.ndarray(shape, np.float64, buffer=segment.buf))
    return _mapped[name][1][start:stop].mean(axis=1)


def blocks(rows: int, chunks: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, rows, chunks + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def graph_of(array: np.ndarray, chunks: int) -> Graph:
    graph = Graph()
    data = graph.put("bench/data", array, stage="bench")
    parts = graph.starmap(
        "bench/chunk", row_means, blocks(len(array), chunks), stage="bench", shared=(data,)
    )
    graph.add("bench/reduce", concat, parts, stage="bench")
    return graph


def plain_local(backend, array, chunks, share):
    executor = backend.executor
    if not share:
        futures = [executor.submit(row_means, a, b, array) for a, b in blocks(len(array), chunks)]
        return np.concatenate([f.result() for f in futures])
    segment = shared_memory.SharedMemory(create=True, size=array.nbytes)
    try:
        np.ndarray(array.shape, array.dtype, buffer=segment.buf)[...] = array
        futures = [
            executor.submit(shm_row_means, segment.name, array.shape, a, b)
            for a, b in blocks(len(array), chunks)
        ]
        return np.concatenate([f.result() for f in futures])
    finally:
        segment.close()
        segment.unlink()


def plain_dask(backend, array, chunks, share):
    from dask.task_spec import Task, TaskRef

    client = backend.client
    if share:
        future = client.scatter(array, hash=False)
        futures = [client.submit(row_means, a, b, future) for a, b in blocks(len(array), chunks)]
        out = np.concatenate(client.gather(futures))
        future.release()
        return out
    graph = {
        f"plain-{i}": Task(f"plain-{i}", row_means, a, b, array)
        for i, (a, b) in enumerate(blocks(len(array), chunks))
    }
    graph["plain-sum"] = Task("plain-sum", concat, *(TaskRef(k) for k in list(graph)))
    with warnings.catch_warnings():  # "Sending large graph": the point of this way
        warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
        return client.get(graph, "plain-sum")


def plain_ray(backend, array, chunks, share):
    import ray

    remote = ray.remote(row_means)
    if share:
        ref = ray.put(array)
        return np.concatenate(
            ray.get([remote.remote(a, b, ref) for a, b in blocks(len(array), chunks)])
        )
    window, refs, pending = 2 * backend.info().workers, [], []
    for a, b in blocks(len(array), chunks):
        while len(pending) >= window:
            _, pending = ray.wait(pending, num_returns=1, fetch_local=False)
        refs.append(remote.remote(a, b, array))
        pending.append(refs[-1])
    return np.concatenate(ray.get(refs))


PLAIN = {"local": plain_local, "dask": plain_dask, "ray": plain_ray}


def bench(name: str, array: np.ndarray, chunks: int, workers: int, rounds: int) -> None:
    expected = array.mean(axis=1)
    graph = graph_of(array, chunks)
    times: dict[str, list[float]] = {}
    moved: dict[str, int] = {}
    ways = ["runner share", "runner copy", "plain share", "plain copy"]
    with create_backend(name, BackendOptions(workers=workers)) as backend:
        for round_ in range(rounds):
            for way in ways if round_ % 2 == 0 else ways[::-1]:
                began = time.perf_counter()
                if way.startswith("runner"):
                    result = execute(graph, backend, transfer=way.split()[1])
                    value = result.values["bench/reduce"]
                    moved[way] = result.transfer.moved_bytes
                else:
                    value = PLAIN[name](backend, array, chunks, way.endswith("share"))
                took = time.perf_counter() - began
                if not np.array_equal(value, expected):
                    raise SystemExit(f"{name} {way}: wrong result")
                times.setdefault(way, []).append(took)
    median = {way: statistics.median(t) for way, t in times.items()}
    for way in ways:
        extra = f"  moved {moved[way] / 2**30:6.2f} GiB" if way in moved else ""
        runs = ", ".join(f"{t:.2f}" for t in times[way])
        print(f"{name:6} {way:13} {median[way]:8.3f} s  (runs: {runs}){extra}")
    ratio = median["runner share"] / median["plain share"]
    print(
        f"{name:6} runner share / plain share = {ratio:.2f}x (target <= {SHARE_RATIO}x)"
        f" {'ok' if ratio <= SHARE_RATIO else 'MISSED'};"
        f" copy / share = {median['runner copy'] / median['runner share']:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="local,dask,ray")
    args = parser.parse_args()
    rows = args.size_mb * 2**20 // (8 * COLUMNS)
    array = np.random.default_rng(0).random((rows, COLUMNS))
    print(
        f"input: {array.nbytes / 2**30:.2f} GiB ({rows} x {COLUMNS} float64), {args.chunks}"
        f" chunk tasks, {args.workers} workers, {args.rounds} rounds (median)"
    )
    for name in args.backends.split(","):
        bench(name, array, args.chunks, args.workers, args.rounds)


if __name__ == "__main__":
    main()
