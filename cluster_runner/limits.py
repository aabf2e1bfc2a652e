"""Bounds known before anything starts: what this machine can hold, and what the driver can.

A request the machine cannot meet does not fail cleanly later: ``--workers 100000`` on the
local backend gets the driver killed by the kernel's OOM killer, with no message and some
hundred workers left behind for seconds; Dask and Ray hang quietly while they try to start the
workers; ``nodes: 100000`` in a cluster config runs out of processes; an ``array_means`` stage of
2e9 rows returns 16 GB of row means to a driver that has less. Each is refused here instead, in
one line, from what is known in advance (the machine's CPUs and available memory, the size of a
stage's result), before a process is started or a results file begun.

The policy (:func:`check_processes`):

- **on the machine**: at most :data:`PER_CPU` worker slots per CPU (modest oversubscription,
  such as 4 workers on 2 cores, stays allowed: timing a backend beyond its cores is a fair
  experiment), and no more processes than the available memory holds at the per-process size
  the caller gives (:data:`WORKER_BYTES` for a worker process, more for a Ray node).
  ``--oversubscribe`` lifts this bound: the user insists;
- **a sane maximum**: never more than :data:`MAX_PROCESSES` processes (or worker slots) on one
  machine, ``--oversubscribe`` or not: beyond that the runner would measure the kernel's
  scheduler, and the process table or the file descriptors run out first.

A stage's result (:func:`check_result`) must fit twice in the driver's available memory: the
value itself, and the copy made while it is gathered (a pool's chunk outputs before the reduce
joins them; a cluster's serialised result before it is read). Workloads estimate their result's
size (:meth:`~cluster_runner.workloads.base.Workload.result_bytes`); one that cannot says
nothing and is not checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cluster_runner.errors import UsageError

if TYPE_CHECKING:
    from cluster_runner.jobspec import JobSpec

#: Worker slots per CPU allowed without ``--oversubscribe``.
PER_CPU = 4
#: Memory a worker process needs at least (an interpreter with numpy loaded: 60-100 MB).
WORKER_BYTES = 100 * 10**6
#: Memory a thread of the threads backend needs at least (its stack, touched lazily).
THREAD_BYTES = 8 * 2**20
#: Memory one node of a local Ray cluster needs at least (raylet, object store, a worker).
RAY_NODE_BYTES = 500 * 10**6
#: Memory one node of a local Dask cluster needs at least (a nanny and its worker process).
DASK_NODE_BYTES = 200 * 10**6
#: Processes (or worker slots) never started on one machine, whatever the flags.
MAX_PROCESSES = 1024
#: How many copies of a stage's result the driver holds at once, at most (see the module doc).
RESULT_COPIES = 2
#: Longest wait for an address to answer, in seconds (a day: beyond it, a typo of the user's).
MAX_CONNECT_S = 86400.0
#: Most reruns of a task lost with its worker (an engine keeps the budget in a small integer).
MAX_RETRIES = 1000


@dataclass(frozen=True)
class Machine:
    """This machine, as far as the bounds are concerned."""

    cpus: int
    available_bytes: int  # memory that can be given to new processes without swapping

    @classmethod
    def here(cls) -> Machine:
        import psutil

        return cls(os.cpu_count() or 1, int(psutil.virtual_memory().available))

    def describe(self) -> str:
        """``2 CPUs and 21.9 GiB available``."""
        cpus = f"{self.cpus} CPU{'s' * (self.cpus != 1)}"
        return f"{cpus} and {gib(self.available_bytes)} of memory available"


def gib(size: float) -> str:
    """Bytes as GiB (or MiB below one GiB), for messages."""
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 2**20:.0f} MiB"


def check_processes(
    asked: int,
    noun: str,
    *,
    slots: int | None = None,
    bytes_each: int = WORKER_BYTES,
    oversubscribe: bool = False,
    machine: Machine | None = None,
) -> None:
    """Refuse ``asked`` processes (``noun``: ``workers``, ``nodes``) this machine cannot hold.

    ``slots`` is the worker slots they offer, if not one each (a node of several CPUs);
    ``bytes_each`` the least memory one of them needs. Raises a one-line :class:`UsageError`
    (see the module docstring for the policy).
    """
    slots = asked if slots is None else slots
    machine = machine or Machine.here()
    by_cpu = PER_CPU * machine.cpus
    by_memory = machine.available_bytes // bytes_each
    fits = slots <= by_cpu and asked <= by_memory
    if max(asked, slots) <= MAX_PROCESSES and (fits or oversubscribe):
        return
    what = f"{asked} {noun}" + (f" ({slots} worker slots)" if slots != asked else "")
    room = min(by_cpu // max(1, slots // max(1, asked)), by_memory)
    why = f"room for {room} ({PER_CPU} worker slots per CPU, {bytes_each / 10**6:.0f} MB each)"
    if max(asked, slots) > MAX_PROCESSES:
        raise UsageError(
            f"asked for {what}; this machine has {machine.describe()}: {why}, and the runner"
            f" starts at most {MAX_PROCESSES} on one machine, even with --oversubscribe"
        )
    raise UsageError(
        f"asked for {what}; this machine has {machine.describe()}: {why}; use --oversubscribe"
        " to insist"
    )


def check_result(job: JobSpec, machine: Machine | None = None) -> None:
    """Refuse a job whose stage result would not fit in the driver's memory (module doc)."""
    from cluster_runner.workloads import get_workload

    machine = machine or Machine.here()
    for stage in job.stages:
        size = get_workload(stage.workload).result_bytes(stage.params)
        if size is None or size * RESULT_COPIES <= machine.available_bytes:
            continue
        raise UsageError(
            f"stage {stage.name!r} of job {job.name!r} returns about {size / 1e9:.3g} GB to the"
            f" driver, which holds it {RESULT_COPIES} times while it is gathered"
            f" ({size * RESULT_COPIES / 1e9:.3g} GB); this machine has"
            f" {gib(machine.available_bytes)} available: use a smaller size or fewer rows"
        )


def check_results(jobs: Iterable[JobSpec], machine: Machine | None = None) -> None:
    """:func:`check_result` for each of ``jobs`` (a sweep's points), the machine asked once."""
    machine = machine or Machine.here()
    for job in jobs:
        check_result(job, machine)
