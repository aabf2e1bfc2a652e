"""cluster-runner: run one verified workload graph on interchangeable backends and measure scaling.

The public API is small and imported lazily (a module ``__getattr__``, as
``concurrent.futures`` does for its pools), so ``import cluster_runner`` stays cheap::

    from cluster_runner import BackendOptions, create_backend, load_job, run_job

    job = load_job("jobs/primes.toml", overrides=["n=1000000"])
    with create_backend("local", BackendOptions(workers=2)) as backend:
        records = run_job(job, backend, repeat=3)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Graph": "cluster_runner.graph",
    "Ref": "cluster_runner.graph",
    "Task": "cluster_runner.graph",
    "JobSpec": "cluster_runner.jobspec",
    "load_job": "cluster_runner.jobspec",
    "parse_job": "cluster_runner.jobspec",
    "BackendOptions": "cluster_runner.backends",
    "create_backend": "cluster_runner.backends",
    "execute": "cluster_runner.execution.walk",
    "run_job": "cluster_runner.runs.job",
    "read_records": "cluster_runner.results",
    "RunnerError": "cluster_runner.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cluster_runner' has no attribute {name!r}")
