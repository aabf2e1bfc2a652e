"""A ``runner scale`` sweep on nodes asked of Slurm: the allocation around the sweep, and the
sweep's :class:`~cluster_runner.sweeps.loop.SweepProvider`.

``runner scale --cluster slurm-dask --nodes 1,2`` (a profile naming a Slurm jobs file, see
:mod:`.slurm_settings`) plans the sweep first, against a stand-in address, so that every bad
option is refused before Slurm is asked for anything; then :func:`slurm_sweep` asks for the
largest size (:mod:`.slurm_alloc`), and :class:`SlurmProvider` gives each size the address the
allocation has, makes the allocation whole again before each size and before a run whose nodes
were lost is retried, and writes the jobs and nodes into every record.

The records' ``backend.address`` names the Slurm cluster and the jobs file
(``slurm:CLUSTER/slurm-dask``) rather than the scheduler's port of the day: two sweeps on
nodes of one Slurm, asked for by one jobs file, are one cluster to a report (and a sweep
resumed on a new allocation stays one experiment); the engine's own address is kept in
``backend.extra.engine_address``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from cluster_runner.clusters.processes import modified_environ
from cluster_runner.clusters.slurm_alloc import Allocation, open_allocation, watching
from cluster_runner.clusters.slurm_settings import load_slurm_jobs
from cluster_runner.errors import ExecutionError, NodesLostError, UsageError
from cluster_runner.results import RunRecord
from cluster_runner.sweeps.loop import SweepProvider
from cluster_runner.sweeps.plan import Step

#: An address of the right form for each engine, for planning before Slurm is asked.
STAND_IN = {"dask": "tcp://127.0.0.1:1", "ray": "127.0.0.1:1"}


def check_request(jobs_file: Path, backends: Sequence[str], nodes: Sequence[int], address) -> str:
    """Refuse, in one line, what a sweep on Slurm's nodes cannot do; return the stand-in address."""
    name = jobs_file.name
    if address:
        raise UsageError(
            f"the profile asks Slurm for the nodes ({name}): give no --address with it"
        )
    if not nodes:
        raise UsageError(
            f"the profile asks Slurm for nodes ({name}): give the node counts to time,"
            " e.g. --nodes 1,2"
        )
    if len(backends) != 1:
        raise UsageError(f"nodes asked of Slurm ({name}) run one backend: drop --backend")
    return STAND_IN[backends[0]]


class SlurmProvider(SweepProvider):
    """The allocation as a sweep sees it (see the module docstring)."""

    def __init__(self, allocation: Allocation) -> None:
        self.allocation = allocation
        self.identity = f"slurm:{allocation.cluster_name or 'slurm'}/{allocation.jobs.path.stem}"

    def prepare(self, step: Step) -> Step:
        self.allocation.prepare()
        address = self.allocation.address
        return replace(
            step,
            engines=tuple(
                replace(e, options=replace(e.options, address=address)) for e in step.engines
            ),
        )

    def check(self) -> None:
        found = self.allocation.lost()
        if found is not None:
            raise NodesLostError(found[1])

    def lost(self, error: ExecutionError) -> bool:
        return isinstance(error, NodesLostError) or self.allocation.lost() is not None

    def stamp(self, record: RunRecord) -> RunRecord:
        """The record with its Slurm jobs and nodes, the Slurm identity as its address, and,
        for a run that failed because a job ended, Slurm's words in its error."""
        record = self.allocation.stamp(record)
        backend = record.backend
        extra = {**backend.extra, "engine_address": backend.address}
        record = replace(record, backend=replace(backend, address=self.identity, extra=extra))
        if record.status == "failed" and "Slurm job" not in (record.error or ""):
            found = self.allocation.lost()
            if found is not None:
                record = replace(record, error=f"{record.error} ({found[1]})")
        return record


@contextlib.contextmanager
def slurm_sweep(
    jobs_file: Path, nodes: int, say: Callable[[str], None], state_root=None
) -> Iterator[SlurmProvider]:
    """Ask Slurm for ``nodes`` nodes as ``jobs_file`` says, for the ``with`` block: yield the
    sweep's provider; give every job back on the way out (Ctrl-C included)."""
    allocation = open_allocation(load_slurm_jobs(jobs_file), state_root, say)
    with allocation, watching(allocation):
        allocation.acquire(nodes)
        env: dict[str, str | None] = dict(allocation.driver_env)
        if "RAY_AUTH_TOKEN_PATH" in env:
            env["RAY_AUTH_TOKEN"] = None  # Ray would read a token in the environment first
        with modified_environ(env):
            yield SlurmProvider(allocation)
