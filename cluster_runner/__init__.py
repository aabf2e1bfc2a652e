"""cluster-runner: run one verified workload graph on interchangeable backends and measure scaling.

The public API is small and imported lazily (a module ``__getattr__``, as
``concurrent.futures`` does for its pools), so ``import cluster_runner`` stays cheap::

    from cluster_runner import BackendOptions, create_backend, load_job, run_job

    job = load_job("jobs/primes.toml", overrides=["n=1000000"])
    with create_backend("local", BackendOptions(workers=2)) as backend:
        records = run_job(job, backend, repeat=3)

Your own code is a workload through the same API (see :mod:`cluster_runner.workloads.api`)::

    from cluster_runner import workload

    @workload(split=split, reduce=sum)
    def chunk(seed, index, size): ...
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Graph": "cluster_runner.graph",
    "Ref": "cluster_runner.graph",
    "DataRef": "cluster_runner.graph",
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
    # the public workload API (cluster_runner.workloads.api: versioned, see its docstring)
    "workload": "cluster_runner.workloads.api",
    "MapReduce": "cluster_runner.workloads.api",
    "Workload": "cluster_runner.workloads.api",
    "Param": "cluster_runner.workloads.api",
    "Verification": "cluster_runner.workloads.api",
    "ResultSummary": "cluster_runner.workloads.api",
    "summarize_value": "cluster_runner.workloads.api",
    "WORKLOAD_API_VERSION": "cluster_runner.workloads.api",
    "ENTRY_POINT_GROUP": "cluster_runner.workloads.api",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cluster_runner' has no attribute {name!r}")
