"""The built-in backends (serial, threads, local) pass the shared conformance suite."""

from __future__ import annotations

import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.runs.job import run_job

from backend_conformance import BackendConformance, reference_digests


class TestThreads(BackendConformance):
    hang_seconds = 3.0  # a thread cannot be stopped: its "hung" task must end by itself

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        with create_backend("threads", BackendOptions(workers=2)) as started:
            yield started


class TestLocalForkserver(BackendConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        with create_backend("local", BackendOptions(workers=2, start_method="forkserver")) as b:
            yield b


class TestLocalSpawn(BackendConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        with create_backend("local", BackendOptions(workers=2, start_method="spawn")) as b:
            yield b


@pytest.mark.parametrize(
    ("name", "workers"), [("threads", 1), ("threads", 3), ("local", 1), ("local", 3)]
)
def test_results_are_bit_identical_at_any_worker_count(name, workers, small_job):
    with create_backend(name, BackendOptions(workers=workers)) as backend:
        (record,) = run_job(small_job, backend)
    assert record["status"] == "verified"
    assert [s["digest"] for s in record["stages"]] == reference_digests()
    used = set().union(*(s["workers_used"] for s in record["stages"]))
    assert len(used) <= workers


def test_local_pool_is_reused_across_repeats_and_pinned_to_one_blas_thread(small_job):
    with create_backend("local", BackendOptions(workers=2)) as backend:
        pids = set(backend.worker_pids)
        records = run_job(small_job, backend, repeat=3)
        assert backend.worker_blas_threads == 1
    used = set().union(*(s["workers_used"] for r in records for s in r["stages"]))
    assert used <= {f"pid-{pid}" for pid in pids}
    assert len(pids) == 2
