"""The workloads: the built-in ones, each a module with a ``WORKLOAD`` object imported only when
asked for, and the user's own, named by module, file or entry point (:mod:`.naming`).

The public workload API (what a user's code imports) is :mod:`.api`.
"""

from __future__ import annotations

from cluster_runner.workloads.base import Workload

#: Built-in workload name -> module that defines ``WORKLOAD``.
REGISTRY = {
    "primes": "cluster_runner.workloads.primes",
    "array_means": "cluster_runner.workloads.array_means",
    "dot": "cluster_runner.workloads.dot",
    "noop": "cluster_runner.workloads.noop",
    "driver_rows": "cluster_runner.workloads.driver_rows",
}


def get_workload(name: str) -> Workload:
    """The workload ``name`` names: a built-in name, an entry point, ``module:NAME`` or
    ``/path/file.py:NAME`` (see :mod:`.naming`); a one-line :class:`JobSpecError` otherwise."""
    from cluster_runner.workloads.naming import find_workload

    return find_workload(name).workload


__all__ = ["REGISTRY", "Workload", "get_workload"]
