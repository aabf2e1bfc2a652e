"""The built-in backends (serial, threads, local) pass the shared conformance suite."""

from __future__ import annotations

import multiprocessing

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


class LocalConformance(BackendConformance):
    """The local pool, bound once per start method it offers (as CPython's executor tests are
    generated per start method); a method this platform lacks is skipped, not dropped."""

    start_method: str

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        if cls.start_method not in multiprocessing.get_all_start_methods():
            pytest.skip(f"no {cls.start_method} start method on this platform")
        options = BackendOptions(workers=2, start_method=cls.start_method)
        with create_backend("local", options) as started:
            assert started.info().start_method == cls.start_method
            yield started


class TestLocalFork(LocalConformance):
    start_method = "fork"


class TestLocalForkserver(LocalConformance):
    start_method = "forkserver"


class TestLocalSpawn(LocalConformance):
    start_method = "spawn"


@pytest.mark.parametrize(
    ("name", "workers"), [("threads", 1), ("threads", 3), ("local", 1), ("local", 3)]
)
def test_results_are_bit_identical_at_any_worker_count(name, workers, small_job):
    with create_backend(name, BackendOptions(workers=workers)) as backend:
        (record,) = [r.to_json() for r in run_job(small_job, backend)]
    assert record["status"] == "verified"
    assert [s["digest"] for s in record["stages"]] == reference_digests()
    used = set().union(*(s["workers_used"] for s in record["stages"]))
    assert len(used) <= workers


def test_local_pool_is_reused_across_repeats_and_pinned_to_one_blas_thread(small_job):
    with create_backend("local", BackendOptions(workers=2)) as backend:
        pids = set(backend.worker_pids)
        records = [r.to_json() for r in run_job(small_job, backend, repeat=3)]
        assert backend.worker_blas_threads == 1
    used = set().union(*(s["workers_used"] for r in records for s in r["stages"]))
    assert used <= {f"pid-{pid}" for pid in pids}
    assert len(pids) == 2
