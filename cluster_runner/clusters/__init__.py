"""Clusters: the multi-node ones the runner starts on this machine, and the files naming any.

Users outgrow one machine; the runner meets the engines where they already run, through the
engines' own launchers (``ray up``, ``dask ssh``/``SSHCluster``, dask-jobqueue), and only
*connects* to what they start. Two things live here:

- :mod:`.config`, :mod:`.dask_local`, :mod:`.ray_local`: ``runner cluster up|down|status``,
  a real multi-node cluster on 127.0.0.1 (Dask: ``dask scheduler`` + ``dask worker``
  processes; Ray: Ray's own ``cluster_utils.Cluster`` in a holder process, see
  :mod:`.ray_local` for why not ``ray start``), stopped by the pids it recorded
  (:mod:`.processes`);
- :mod:`.profile`: runner profiles, ``runner submit --cluster NAME``: a backend, an address or
  a ``runner cluster`` config, TLS files and option defaults.

Nothing here imports Dask or Ray until a cluster is started or asked about.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from cluster_runner.clusters.config import LocalClusterSpec
from cluster_runner.clusters.processes import live_processes, survivors, with_children

#: Engine -> the module that starts and stops its local cluster.
LOCAL_CLUSTER_MODULES = {
    "dask": "cluster_runner.clusters.dask_local",
    "ray": "cluster_runner.clusters.ray_local",
}


def engine_module(engine: str) -> ModuleType:
    """The module with ``start``, ``stop``, ``status``, ``healthy``, ``connected_nodes`` and
    ``driver_env`` for ``engine``'s local cluster."""
    return importlib.import_module(LOCAL_CLUSTER_MODULES[engine])


def up(spec: LocalClusterSpec, folder: Path, stop_hint: str) -> dict[str, Any]:
    """Start the cluster ``spec`` describes, keeping its state in ``folder``; return the state."""
    module = engine_module(spec.engine)
    per_node: dict[str, Any] = (
        {"threads": spec.per_node, "dashboard": spec.dashboard}
        if spec.engine == "dask"
        else {"cpus": spec.per_node}
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


__all__ = ["LOCAL_CLUSTER_MODULES", "LocalClusterSpec", "down", "engine_module", "up"]
