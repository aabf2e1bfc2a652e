"""Dask workers as Slurm jobs, through dask-jobqueue's ``SLURMCluster``: one job a node.

dask-jobqueue is how Dask users get workers from Slurm: a ``SLURMCluster`` runs the scheduler in
the driver's process and submits one ``sbatch`` job per worker, each running ``dask worker``
pointed at it. :class:`DaskAllocation` makes one with the jobs file's ``jobqueue`` keywords
(queue, cores, memory, walltime, interface, ...), and sets three of its own: ``job_name`` (the
allocation's name, which the reaper cancels by), ``log_directory`` (the allocation's folder)
and ``processes: 1``: a node of the sweep is one worker, restricted to or left out whole, so a
job runs one worker (with ``cores`` threads). The sweep then connects to the scheduler like to
any Dask cluster (``--address``), and chooses k of the workers for each point.

Each worker is asked (``client.run``) for its ``SLURM_JOB_ID`` and ``SLURMD_NODENAME``, which
the records carry. Two workers that landed on one Slurm node are said at once: on a cluster
whose nodes have more cores than one job asks, add ``--exclusive`` to ``job_extra_directives``
(or ask for the node's cores), else "2 nodes" means two jobs on one machine.

A lost job (cancelled, past its time limit) is given back to dask-jobqueue by taking its worker
out of the cluster's spec, and a new one is asked for under a new name
(:meth:`DaskAllocation._replace`).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from cluster_runner.clusters.slurm_alloc import Allocation, Member
from cluster_runner.clusters.slurm_conf import ENDED, job_states
from cluster_runner.errors import BackendUnavailableError, ClusterConfigError, ClusterStartError
from cluster_runner.results import RunRecord


class DaskAllocation(Allocation):
    """Dask workers in Slurm jobs, one a node (see the module docstring)."""

    engine = "dask"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster: Any = None  # the SLURMCluster
        self.client: Any = None
        self._given_up: set[str] = set()  # jobs that ended and were replaced

    def _options(self) -> dict[str, Any]:
        options = dict(self.jobs.settings.get("jobqueue", {}))
        if options.get("processes", 1) != 1:
            raise ClusterConfigError(
                f"{self.jobs.path}: jobqueue.processes must be 1: a node of the sweep is one"
                " Dask worker (give it more threads with cores)"
            )
        options.setdefault("cores", 1)
        options.setdefault("memory", "1GB")
        options.update(processes=1, job_name=self.name, log_directory=str(self.folder / "logs"))
        return options

    def _submit(self, nodes: int) -> None:
        # dask-jobqueue 0.9's runner module installs, when imported, a SIGINT handler that
        # calls sys.exit() (dask_jobqueue/runner.py): Ctrl-C would then end the sweep with
        # exit status 0, as if it had finished. Keep the runner's own handling of Ctrl-C.
        handler = signal.getsignal(signal.SIGINT)
        try:
            from dask_jobqueue import SLURMCluster
            from distributed import Client
        except ImportError:
            raise BackendUnavailableError(
                "Dask on Slurm needs dask-jobqueue: pip install 'cluster-runner[slurm]'"
            ) from None
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)
        options = self._options()
        try:
            self.cluster = SLURMCluster(**options)
        except (TypeError, ValueError) as exc:  # a keyword SLURMCluster does not take
            raise ClusterConfigError(f"{self.jobs.path}: jobqueue: {exc}") from None
        # Its scheduler, in this process, hooks a callback into every garbage collection
        # (distributed.gc, which only logs long pauses): a Ctrl-C that lands inside a gc
        # callback is swallowed by Python ("Exception ignored in ...") and the sweep runs on.
        from distributed.gc import disable_gc_diagnosis

        disable_gc_diagnosis()
        self.client = Client(self.cluster, set_as_default=False)
        self.cluster.scale(jobs=nodes)

    def _wait_until_up(self, deadline: float) -> None:
        while True:
            joined = len(self.client.scheduler_info(n_workers=-1)["workers"])
            if joined >= self.nodes:
                break
            failed = self._failed_jobs()
            if failed:
                raise ClusterStartError(
                    f"Slurm job(s) of the Dask workers ended before joining: {failed}; see the"
                    f" logs in {self.folder / 'logs'}"
                )
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{joined} of {self.nodes} Dask worker(s) joined within"
                    f" {self.jobs.wait:g} s; Slurm says: {self.pending_words()}"
                )
            time.sleep(0.5)
        self.address = self.cluster.scheduler_address
        self.members = self._where()
        self._note_shared_nodes()

    def _where(self) -> dict[str, Member]:
        """Each worker's Slurm job and node, as the worker itself sees them."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        jobs = self.client.run(os.getenv, "SLURM_JOB_ID")
        nodes = self.client.run(os.getenv, "SLURMD_NODENAME")
        return {
            str(w["name"]): Member(str(jobs.get(a) or "?"), str(nodes.get(a) or "?"))
            for a, w in info.items()
        }

    def _note_shared_nodes(self) -> None:
        seen: dict[str, int] = {}
        for member in self.members.values():
            seen[member.node] = seen.get(member.node, 0) + 1
        shared = [f"{node} ({n} workers)" for node, n in seen.items() if n > 1]
        if shared:
            self.say(
                f"slurm: note: workers share a node: {', '.join(shared)}; for one node each add"
                " --exclusive to jobqueue.job_extra_directives"
            )

    def _failed_jobs(self) -> str:
        states = job_states(self.job_ids(), env=self.env)
        ended = [f"{j} {s}" for j, (s, _) in states.items() if s in ENDED]
        return ", ".join(ended)

    def job_ids(self) -> list[str]:
        if self.cluster is None:
            return []
        ids = [str(w.job_id) for w in list(self.cluster.workers.values()) if w.job_id]
        return [j for j in ids if j not in self._given_up]

    def _replace(self, lost: list[str]) -> None:
        self._given_up.update(lost)
        cluster = self.cluster
        gone = [name for name, w in list(cluster.workers.items()) if str(w.job_id) in lost]
        for name in gone:
            self.members.pop(str(name), None)

        def renew() -> None:
            # Forgotten outright, not closed: closing first retires the worker through the
            # scheduler, which can wait minutes on a worker that is being killed, and only then
            # would the new job be submitted. The ended job needs no scancel (release() cancels
            # every job of the allocation's name anyway).
            for name in gone:
                cluster.worker_spec.pop(name, None)
                cluster.workers.pop(name, None)
            cluster.scale(jobs=self.nodes)  # new names: a new job for each one lost

        cluster.loop.add_callback(renew)  # the cluster's state belongs to its event loop

    def _close(self) -> None:
        client, self.client = self.client, None
        cluster, self.cluster = self.cluster, None
        if client is not None:
            client.close(timeout=10)
        if cluster is not None:
            cluster.close(timeout=30)  # scancels each job; release() makes sure by name

    def _used(self, record: RunRecord) -> list[str]:
        chosen = record.backend.extra.get("chosen_workers") or {}
        return [str(name) for name in chosen]
