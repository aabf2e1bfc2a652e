"""The examples of ``examples/``, each run on every backend: verified, and the same answer bit for
bit everywhere (issue 13).

Each example's job file is loaded as a user would name it (its workload is a file next to it),
with small parameters, and run in this process on a backend started once for all of them:
serial, threads, the local pool, an embedded Dask cluster and an embedded Ray instance. The
workers import the examples' files as they would a user's: the pool's and Dask's from the
driver's folder, Ray's shipped in the job's runtime environment. The pure-Python and the numpy
Monte Carlo, the HTTP fetch (its server started by the workload's setup, in this process),
the map-shuffle-reduce word count and the column statistics of an array the driver holds (given
to the workers as each backend shares it, issue 21) each verify (the numpy Monte Carlo against
its serial reference), and give the digest the serial backend gives.
"""

from __future__ import annotations

import contextlib

import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.jobspec import load_job
from cluster_runner.runs.job import run_job
from cluster_runner.runs.reference import ReferenceStore

from clusters import ray_lock
from conftest import ROOT

#: Each example, and the --set overrides that make it small.
EXAMPLES = {
    "montecarlo_pi": ["samples=20000", "chunks=4"],
    "montecarlo_pi_numpy": ["samples=200000", "chunks=4"],
    "http_fetch": ["requests=24", "chunks=4", "latency_ms=2"],
    "wordcount": ["documents=6", "words=500", "partitions=3"],
    "column_stats": ["rows=3000", "cols=8", "chunks=4"],
}

BACKENDS = [
    "serial",
    "threads",
    "local",
    pytest.param("dask", marks=pytest.mark.cluster),
    pytest.param("ray", marks=pytest.mark.cluster),
]


@pytest.fixture(scope="module")
def jobs():
    return {
        name: load_job(ROOT / "examples" / f"{name}.toml", overrides)
        for name, overrides in EXAMPLES.items()
    }


@pytest.fixture(scope="module")
def serial_digests(jobs) -> dict[str, str]:
    """Each example's digest on serial, the bits every other backend must give."""
    digests = {}
    with create_backend("serial", BackendOptions()) as engine:
        for name, job in jobs.items():
            (record,) = run_job(job, engine, references=ReferenceStore())
            assert record.status == "verified", record.stages[0].result.verification
            digests[name] = record.stages[0].result.digest
    return digests


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request, jobs):
    """One backend of two workers, for every example (their code among its warm-ups)."""
    warm_up = tuple(dict.fromkeys(hook for job in jobs.values() for hook in job.warm_ups()))
    lock = ray_lock() if request.param == "ray" else contextlib.nullcontext()
    with lock, create_backend(request.param, BackendOptions(workers=2, warm_up=warm_up)) as made:
        yield made


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_example_verifies_with_the_serial_digest_on_every_backend(
    engine, example, jobs, serial_digests
):
    (record,) = run_job(jobs[example], engine, references=ReferenceStore())
    (stage,) = record.stages
    assert record.status == "verified", stage.result.verification
    assert stage.result.digest == serial_digests[example]
    assert sum(stage.placement.workers_used.values()) == stage.tasks
    if example == "montecarlo_pi_numpy":  # no verify of its own: the serial reference decided
        assert stage.result.verification.startswith("bit for bit equal to")
    else:
        assert stage.result.reference is None
