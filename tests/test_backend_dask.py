"""The Dask backend: the conformance suite on an embedded LocalCluster, then the runner against
a real scheduler with two ``dask worker`` processes on 127.0.0.1, through the CLI.

Also: results equal to the local backend's bit for bit for every workload, an address where
nothing listens, Dask not installed, and no process left behind by a run, a Ctrl-C or a
cluster's stop.
"""

from __future__ import annotations

import operator
import signal
import sys
import time

import psutil
import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.devices import gpu_info
from cluster_runner.errors import BackendUnavailableError
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph

from backend_conformance import BackendConformance, add, sleep_for
from clusters import (
    ROOT,
    dask_cluster,
    free_port,
    listening_addresses,
    load_script,
    processes_of,
    survivors,
)
from clusters import (
    assert_same_results as _same_results,
)
from clusters import (
    records_in as _records,
)
from clusters import (
    submit_cli as _submit,
)

pytestmark = pytest.mark.cluster

FULL_JOB = ROOT / "jobs" / "full.toml"


def stamp() -> int:
    return time.monotonic_ns()


class TestDask(BackendConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        with create_backend("dask", BackendOptions(workers=2)) as started:
            yield started

    def test_embedded_cluster_listens_on_loopback_only(self, backend):
        procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
        assert listening_addresses(procs) <= {"127.0.0.1"}, listening_addresses(procs)
        assert backend.info().dashboard.startswith("http://127.0.0.1:")

    def test_task_needing_a_resource_no_worker_has_is_refused_not_left_waiting(self, backend):
        graph = Graph()
        graph.add("u/x", operator.add, 1, 2, stage="u", resources={"unicorn": 1})
        with pytest.raises(BackendUnavailableError, match="unicorn"):
            execute(graph, backend, timeout=60)

    def test_workers_pin_blas_to_one_thread(self, backend):
        assert backend.worker_blas_threads == 1

    def test_repeats_are_computed_again_not_served_from_memory(self, backend):
        graph = Graph()
        graph.add("k/stamp", stamp, stage="k")
        first = execute(graph, backend, timeout=120).values["k/stamp"]
        second = execute(graph, backend, timeout=120).values["k/stamp"]
        assert first != second

    def test_nodes_restricts_tasks_to_k_workers_and_preflight_checks(self, backend):
        address = backend.cluster.scheduler_address
        options = BackendOptions(address=address, nodes=1, connect_timeout=30)
        with create_backend("dask", options) as one:
            graph = Graph()
            parts = [graph.add(f"n/sleep-{i}", sleep_for, 0.05, stage="n") for i in range(6)]
            graph.add("n/sum", add, *parts, stage="n")
            result = execute(graph, one, timeout=120)
            info = one.info()
            assert {t.worker for t in result.traces} == set(info.extra["chosen_workers"].values())
            assert (info.workers, info.extra["cluster_workers"]) == (1, 2)
            assert one.preflight(1) == []
            assert "2 expected" in one.preflight(2)[0]

    def test_preflight_reports_tasks_already_running(self, backend):
        busy = backend.client.submit(sleep_for, 30.0, pure=False)
        try:
            deadline = time.monotonic() + 30
            while not any(backend.client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            problems = backend.preflight(2)
            assert any("already running" in p for p in problems), problems
        finally:
            backend._abort([busy])  # restarts the worker running it
        assert backend.preflight(2) == []


@pytest.mark.skipif(gpu_info().problem is None, reason="this machine has a GPU")
def test_tasks_needing_a_resource_run_only_on_the_workers_that_offer_it():
    from distributed import Nanny, Scheduler, SpecCluster

    def worker(**resources):
        options = {"nthreads": 1, "host": "127.0.0.1", "resources": resources}
        return {"cls": Nanny, "options": options}

    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False}}
    specs = {"plain": worker(), "unicorn": worker(unicorn=1)}
    with SpecCluster(workers=specs, scheduler=scheduler, asynchronous=False) as cluster:
        options = BackendOptions(address=cluster.scheduler_address, connect_timeout=30)
        with create_backend("dask", options) as backend:
            graph = Graph()
            parts = [
                graph.add(f"r/task-{i}", sleep_for, 0.05, stage="r", resources=need)
                for i, need in enumerate([{"unicorn": 1}, {}] * 8)
            ]
            graph.add("r/sum", add, *parts, stage="r")
            result = execute(graph, backend, timeout=120)
        unicorn = cluster.workers["unicorn"].worker_address
    where = {t.key: t.worker for t in result.traces}
    assert {where[f"r/task-{i}"] for i in range(0, 16, 2)} == {unicorn}
    assert result.values["r/sum"] == pytest.approx(0.05 * 16)


def test_only_the_known_sync_cancel_race_of_distributed_is_kept_out_of_the_log():
    import functools
    import logging

    from cluster_runner.backends.dask import _SYNC_CANCEL_RACE

    def record(error: BaseException, callback_name: str) -> logging.LogRecord:
        def callback() -> None: ...

        callback.__qualname__ = callback_name
        try:
            raise error
        except BaseException:
            info = sys.exc_info()
        args = (functools.partial(callback),)
        return logging.LogRecord("tornado.application", logging.ERROR, __file__, 1,
                                 "Exception in callback %r", args, info)  # fmt: skip

    race = NameError("cannot access free variable 'future'")
    assert not _SYNC_CANCEL_RACE.filter(record(race, "sync.<locals>.cancel"))
    assert _SYNC_CANCEL_RACE.filter(record(race, "Client._handle_report"))
    assert _SYNC_CANCEL_RACE.filter(record(ValueError("real"), "sync.<locals>.cancel"))


def test_gpu_job_without_a_gpu_is_refused_in_one_line():
    backend = create_backend("dask", BackendOptions(workers=1, gpu=True))
    with pytest.raises(BackendUnavailableError, match="GPU stage"):
        backend.start()
    backend.close()


def test_full_job_on_embedded_dask_equals_local_bit_for_bit(local_reference, tmp_path):
    code, stdout, stderr, procs = _submit(
        "--job", str(FULL_JOB), "--backend", "dask", "--workers", "2", "--out", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert "all stages verified" in stdout and "dashboard: http://127.0.0.1:" in stdout
    (record,) = _records(tmp_path)
    _same_results(record, local_reference)
    assert record["backend"]["name"] == "dask" and record["backend"]["workers"] == 2
    assert record["backend"]["version"] and record["backend"]["address"] is None
    left = survivors(procs)
    assert not left, f"the run left processes behind: {left}"


@pytest.fixture(scope="module")
def cluster():
    with dask_cluster(workers=2) as running:
        yield running


def test_address_runs_on_both_workers_and_matches_local(cluster, local_reference, tmp_path):
    code, stdout, stderr, procs = _submit(
        "--job", str(FULL_JOB), "--backend", "dask", "--address", cluster.address,
        "--repeat", "2", "--out", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert f"connected to {cluster.address}" in stdout
    records = _records(tmp_path)
    assert len(records) == 2
    for record in records:
        _same_results(record, local_reference)
        backend = record["backend"]
        assert (backend["name"], backend["address"], backend["workers"]) == (
            "dask",
            cluster.address,
            2,
        )
        workers = {w for stage in record["stages"] for w in stage["workers_used"]}
        assert len(workers) == 2, workers  # the work was spread over both worker processes
    assert not survivors(procs)  # the driver started nothing it left running
    assert all(psutil.pid_exists(pid) for pid in cluster.pids)  # nor stopped the cluster


def test_script_status_lists_the_running_cluster(cluster):
    import subprocess

    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dask_local_cluster.py"), "status", "--dir",
         str(cluster.folder)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert cluster.address in out.stdout
    assert "node-0" in out.stdout and "node-1" in out.stdout


def test_cluster_from_the_script_stops_cleanly_by_pid():
    module = load_script("dask_local_cluster")
    with dask_cluster(workers=2) as running:
        procs = processes_of(running.pids)
        assert len(procs) >= 3  # a scheduler and two workers, with their children
        assert listening_addresses(procs) <= {"127.0.0.1"}
    # dask_cluster() has stopped it and checked; check again, independently.
    assert not survivors(procs, timeout=1.0)
    assert module.read_state(running.folder) is None


def test_unreachable_address_is_one_line_within_the_connect_timeout(tmp_path):
    port = free_port()  # nothing listens there
    began = time.monotonic()
    code, _stdout, stderr, procs = _submit(
        "--job", str(FULL_JOB), "--backend", "dask", "--address", f"tcp://127.0.0.1:{port}",
        "--connect-timeout", "3", "--out", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.monotonic() - began
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("runner: error: cannot connect to the Dask cluster")
    assert f"127.0.0.1:{port}" in lines[0] and "3 s" in lines[0]
    assert elapsed < 3 + 30  # the timeout, plus the interpreter's start on a busy machine
    assert not survivors(procs)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_shuts_the_embedded_cluster_down(signum, tmp_path):
    code, _stdout, stderr, procs = _submit(
        "--job", str(FULL_JOB), "--backend", "dask", "--workers", "2",
        "--set", "primes.n=1000000000000", "--set", "primes.chunks=400", "--out", str(tmp_path),
        cwd=tmp_path, signal_after="results:", signum=signum,
    )  # fmt: skip
    assert code == (130 if signum == signal.SIGINT else 143), stderr
    assert len(procs) >= 2  # the worker processes were seen running
    assert "Traceback" not in stderr, stderr
    left = survivors(procs)
    assert not left, f"processes outlived the interrupted run: {left}"
