"""Fault injection: make one worker process die partway through a run, on any backend.

``--inject-fault kill-worker`` exercises the recovery path that a long sweep on a shared
cluster relies on, on every backend alike: one task in the middle of the run's first stage is
wrapped in :func:`die_once`, which SIGKILLs the process running it, exactly as the kernel's OOM
killer would. The engine must notice the lost worker and rerun the lost tasks (the local pool
is replaced; Dask and Ray reschedule), and the run must still verify.

"Once" is kept by a marker file created with ``O_EXCL``: the first attempt creates it and dies,
the retry finds it and runs the task. On a multi-node cluster whose nodes do not share the
driver's temporary folder, the task dies once per node it is retried on, still a bounded number.

A fault is applied per run (:func:`inject`), so each run of a sweep loses a worker and recovers;
the record of such a run says which fault it had (``fault``) and how many tasks were rerun.
Backends whose tasks run in the driver's own process (serial, threads) refuse it: the "worker"
killed would be the driver (:func:`check_supported`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cluster_runner.errors import UsageError
from cluster_runner.graph import Graph

KILL_WORKER = "kill-worker"
#: The faults a user can inject, for click's choices.
FAULTS = (KILL_WORKER,)


def die_once(marker: str, func: Callable[..., Any], *args: Any) -> Any:
    """Task wrapper: the first call SIGKILLs its own process; the retry runs ``func(*args)``."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return func(*args)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: SIGKILL cannot be caught")


def victim(graph: Graph) -> str:
    """The task to kill: the middle one of those that feed another, so others finish first."""
    count = sum(1 for _ in graph.fed_keys())
    if not count:  # no task feeds another (a graph of one task): the middle task
        return graph.key_of(len(graph) // 2)
    return next(itertools.islice(graph.fed_keys(), count // 2, None))


def with_kill_worker(graph: Graph) -> tuple[Graph, Path]:
    """A copy of ``graph`` whose :func:`victim` kills its worker once; and the marker's path.

    The copy shares every other task (and a map's arguments) with ``graph``: only the victim's
    function is wrapped in :func:`die_once` (a task of a map runs alone, see
    :meth:`~cluster_runner.graph.Graph.with_wrapped`).
    """
    marker = Path(tempfile.gettempdir()) / f"cluster-runner-fault-{os.getpid()}-{id(graph)}"
    marker.unlink(missing_ok=True)
    return graph.with_wrapped(victim(graph), die_once, str(marker)), marker


def check_supported(fault: str | None, backend: str, worker_processes: bool) -> None:
    """Refuse, in one line, a fault this runner does not know or a backend cannot survive."""
    if fault is None:
        return
    if fault not in FAULTS:
        raise UsageError(f"unknown fault {fault!r} (choose from {', '.join(FAULTS)})")
    if not worker_processes:
        raise UsageError(
            f"--inject-fault {fault}: the {backend} backend runs tasks in the driver's own"
            " process, so there is no worker to kill (use local, dask or ray)"
        )


@contextlib.contextmanager
def inject(fault: str | None, graph: Graph) -> Iterator[Graph]:
    """``graph`` with ``fault`` applied (unchanged for ``None``); its marker removed on exit."""
    if fault is None:
        yield graph
        return
    faulty, marker = with_kill_worker(graph)
    try:
        yield faulty
    finally:
        marker.unlink(missing_ok=True)
