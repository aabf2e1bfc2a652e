"""The workloads: each a module with a ``WORKLOAD`` object, imported only when asked for."""

from __future__ import annotations

import importlib

from cluster_runner.errors import JobSpecError
from cluster_runner.workloads.base import Workload

#: Workload name -> module that defines ``WORKLOAD``.
REGISTRY = {
    "primes": "cluster_runner.workloads.primes",
    "array_means": "cluster_runner.workloads.array_means",
    "dot": "cluster_runner.workloads.dot",
    "noop": "cluster_runner.workloads.noop",
}


def get_workload(name: str) -> Workload:
    """The workload called ``name``; a :class:`JobSpecError` naming the known ones otherwise."""
    if name not in REGISTRY:
        raise JobSpecError(f"unknown workload {name!r} (known: {', '.join(REGISTRY)})")
    return importlib.import_module(REGISTRY[name]).WORKLOAD


__all__ = ["REGISTRY", "Workload", "get_workload"]
