"""What the Dask backend does about a lost scheduler: watch a connected one, and close an
embedded cluster whose scheduler stopped.

A connected scheduler that is gone fails the run's futures at once (the client's connection
closes). One that froze (stopped, swapping) or dropped off the network keeps the connection
open and never answers: the client would wait forever, so the backend waits in steps of
:data:`WATCH_S` seconds and asks between them (:func:`scheduler_heartbeat`); after
:data:`SCHEDULER_LOST_S` seconds without an answer the run fails, recorded, in one line.

The embedded cluster's scheduler runs in the driver's process. Should it stop mid-run (a crash
of its own), ``LocalCluster.close`` would ask each worker to leave through it, wait out its
30 s timeout and raise ``TimeoutError``: :func:`close_cluster` ends the worker processes by
pid instead.
"""

from __future__ import annotations

import contextlib
from typing import Any

from distributed import Client, LocalCluster

from cluster_runner.backends.cluster import Heartbeat
from cluster_runner.errors import ExecutionError

#: Seconds between the checks of a run that waits (see ``DaskBackend._wait``).
WATCH_S = 1.0
#: Seconds a connected scheduler may not answer before a run waiting on it fails.
SCHEDULER_LOST_S = 20.0


def scheduler_heartbeat(client: Client, target: Any, watch: bool = True) -> Heartbeat:
    """A :class:`~cluster_runner.backends.cluster.Heartbeat` on ``client``'s scheduler (at
    ``target``, for the message): it asks for the scheduler's identity within
    :data:`WATCH_S` seconds. With ``watch`` false (the embedded scheduler) it always answers.
    """

    def ping() -> bool:
        if not watch:
            return True
        try:
            client.sync(client.scheduler.identity, callback_timeout=WATCH_S)
            return True
        except Exception:  # a timeout, a closed comm: it did not answer
            return False

    def lost() -> Exception:
        return ExecutionError(
            f"lost the Dask scheduler at {target}: it has not answered for"
            f" {SCHEDULER_LOST_S:g} s (stopped, frozen, or cut off from this machine);"
            " the run cannot finish"
        )

    return Heartbeat(ping, lost, SCHEDULER_LOST_S)


def close_cluster(cluster: LocalCluster) -> None:
    """Close the embedded cluster; if its scheduler is gone (stopped or crashed mid-run), end
    its worker processes by pid instead of waiting for them to leave it in order.

    ``LocalCluster.close`` asks each worker through the scheduler, and with no scheduler
    waits out its timeout, then raises ``TimeoutError``: the run's one-line error would come
    30 s late, followed by a traceback.
    """
    import psutil
    from distributed.core import Status

    lost = cluster.scheduler.status in (Status.closing, Status.closed, Status.failed)
    procs = []
    for nanny in list(cluster.workers.values()):
        pid = getattr(getattr(nanny, "process", None), "pid", None)
        if not isinstance(pid, int) or pid <= 0:  # psutil.Process(None) is this process
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    try:
        cluster.close(timeout=5 if lost else 30)
    except (TimeoutError, OSError, RuntimeError):
        lost = True  # its workers did not leave in order: ended below
    if not lost:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()  # only those still running: a process that exited raises here
    psutil.wait_procs(procs, timeout=10)
