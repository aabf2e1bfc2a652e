"""Clusters: the multi-node ones the runner starts on this machine, and the files naming any.

Users outgrow one machine; the runner meets the engines where they already run, through the
engines' own launchers (``ray up``, ``dask ssh``/``SSHCluster``, dask-jobqueue), and only
*connects* to what they start. Two things live here:

- :mod:`.config`, :mod:`.dask_local`, :mod:`.ray_local`: ``runner cluster up|down|status``,
  a real multi-node cluster on 127.0.0.1 (Dask: ``dask scheduler`` + ``dask worker``
  processes; Ray: Ray's own ``cluster_utils.Cluster`` in a holder process, see
  :mod:`.ray_local` for why not ``ray start``), stopped by the pids it recorded
  (:mod:`.processes`);
- :mod:`.slurm_local`: a real Slurm on 127.0.0.1 (issue 19), and the ``slurm_*`` modules that
  ask a Slurm for a sweep's nodes (:mod:`.slurm_alloc`, :mod:`.slurm_sweep`);
- :mod:`.profile`: runner profiles, ``runner submit --cluster NAME``: a backend, an address or
  a ``runner cluster`` config, TLS files and option defaults.

Nothing here imports Dask or Ray until a cluster is started or asked about.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from cluster_runner.clusters.config import LocalClusterSpec
from cluster_runner.clusters.processes import live_processes, survivors, with_children
from cluster_runner.errors import BackendUnavailableError
from cluster_runner.limits import DASK_NODE_BYTES, RAY_NODE_BYTES, check_processes

#: A slurmd and its share of slurmctld and munged (the jobs' own needs are the jobs').
SLURM_NODE_BYTES = 50 * 10**6

#: Engine -> the module that starts and stops its local cluster.
LOCAL_CLUSTER_MODULES = {
    "dask": "cluster_runner.clusters.dask_local",
    "ray": "cluster_runner.clusters.ray_local",
    "slurm": "cluster_runner.clusters.slurm_local",  # Slurm's own daemons (issue 19)
}


def engine_module(engine: str) -> ModuleType:
    """The module with ``start``, ``stop``, ``status``, ``healthy``, ``connected_nodes`` and
    ``driver_env`` for ``engine``'s local cluster."""
    return importlib.import_module(LOCAL_CLUSTER_MODULES[engine])


#: Engine -> the package its local cluster needs, and the memory one of its nodes needs at least.
ENGINE_PACKAGES = {"dask": "distributed", "ray": "ray"}
NODE_BYTES = {"dask": DASK_NODE_BYTES, "ray": RAY_NODE_BYTES, "slurm": SLURM_NODE_BYTES}


def require_engine(engine: str) -> None:
    """Refuse, in one line naming the extra to install, an engine that is not installed.

    Checked before anything is made or started (no state folder is left behind), without
    importing the engine. An engine that is no Python package (Slurm) checks its programs.
    """
    if engine not in ENGINE_PACKAGES:
        engine_module(engine).require()
        return
    package = ENGINE_PACKAGES[engine]
    try:
        found = (
            sys.modules[package] is not None
            if package in sys.modules
            else importlib.util.find_spec(package) is not None
        )
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BackendUnavailableError(
            f"a {engine} cluster needs {package}, which is not installed:"
            f" pip install 'cluster-runner[{engine}]'"
        )


def check_size(spec: LocalClusterSpec, oversubscribe: bool = False) -> None:
    """Refuse a cluster this machine cannot hold (see :mod:`cluster_runner.limits`)."""
    check_processes(
        spec.nodes,
        "nodes",
        slots=spec.nodes * spec.per_node,
        bytes_each=NODE_BYTES[spec.engine],
        oversubscribe=oversubscribe,
    )


def up(spec: LocalClusterSpec, folder: Path, stop_hint: str) -> dict[str, Any]:
    """Start the cluster ``spec`` describes, keeping its state in ``folder``; return the state.

    The caller checks first that the engine is installed (:func:`require_engine`) and that the
    machine holds the cluster (:func:`check_size`).
    """
    module = engine_module(spec.engine)
    per_node: dict[str, Any] = (
        {"threads": spec.per_node, "dashboard": spec.dashboard}
        if spec.engine == "dask"
        else {"cpus": spec.per_node}  # ray, slurm
    )
    return module.start(
        folder, spec.nodes, port=spec.port, timeout=spec.timeout, stop_hint=stop_hint, **per_node
    )


def down(
    spec: LocalClusterSpec, folder: Path, grace: float = 30.0
) -> tuple[int, list[int], list[str]]:
    """Stop the cluster recorded in ``folder``: ``(processes ended, pids killed, survivors)``.

    The processes are those recorded and every child of theirs, seen before stopping; the
    survivors, described as ``PID COMMAND``, are those of them still running 30 s after the
    stop (there should be none).
    """
    module = engine_module(spec.engine)
    state = module.status(folder)
    if state is None:
        return 0, [], []
    procs = with_children(live_processes(state))
    killed = module.stop(folder, grace=grace)
    left = survivors(procs, timeout=30.0)
    return len(procs), killed, left


__all__ = [
    "LOCAL_CLUSTER_MODULES",
    "LocalClusterSpec",
    "check_size",
    "down",
    "engine_module",
    "require_engine",
    "up",
]
