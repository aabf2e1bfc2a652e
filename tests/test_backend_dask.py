"""The Dask backend: the shared suites (:mod:`backend_conformance`, :mod:`cluster_conformance`)
on an embedded LocalCluster and on a real scheduler with two ``dask worker`` processes on
127.0.0.1, then what only Dask has: repeats computed again, resource restrictions honoured,
distributed's sync() cancel race kept out of the log, the cluster script's status and stop.
"""

from __future__ import annotations

import sys
import time

import psutil
import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.devices import gpu_info
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph

from backend_conformance import meet, pack, registered
from cluster_conformance import (
    FULL_JOB,
    ClusterDriverConformance,
    ClusterEngine,
    EmbeddedClusterConformance,
)
from clusters import (
    ROOT,
    assert_same_results,
    dask_cluster,
    listening_addresses,
    load_script,
    processes_of,
    records_in,
    submit_cli,
    survivors,
    workers_import_tests,
)

pytestmark = pytest.mark.cluster


def stamp() -> int:
    return time.monotonic_ns()


class DaskEngine(ClusterEngine):
    engine = "dask"
    title = "Dask"

    def address_at(self, port):
        return f"tcp://127.0.0.1:{port}"


class TestDaskEmbedded(DaskEngine, EmbeddedClusterConformance):
    busy_words = "already running"

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        with create_backend("dask", BackendOptions(workers=2)) as started:
            yield started

    def advertised(self, info):
        return {"dashboard": (info.dashboard, "http://127.0.0.1:")}

    def submit_direct(self, backend, func, *args):
        return backend.client.submit(func, *args, pure=False)

    def wait_for(self, backend, handle, timeout):
        return handle.result(timeout=timeout)

    def engine_sees_busy(self, backend):
        return any(backend.client.processing().values())

    def test_repeats_are_computed_again_not_served_from_memory(self, backend):
        graph = Graph()
        graph.add("k/stamp", stamp, stage="k")
        first = execute(graph, backend, timeout=120).values["k/stamp"]
        second = execute(graph, backend, timeout=120).values["k/stamp"]
        assert first != second


@pytest.fixture(scope="module")
def cluster():
    with workers_import_tests(), dask_cluster(workers=2) as running:
        yield running


class TestDaskDriver(DaskEngine, ClusterDriverConformance):
    min_processes_seen = 2  # the worker processes
    stdout_mentions = ("dashboard: http://127.0.0.1:",)
    placed_by = "worker"
    cluster_size_key = "cluster_workers"

    def chosen(self, info):
        return set(info.extra["chosen_workers"].values())


@pytest.mark.skipif(gpu_info().problem is None, reason="this machine has a GPU")
def test_tasks_needing_a_resource_run_only_on_the_workers_that_offer_it(tmp_path):
    from distributed import Nanny, Scheduler, SpecCluster

    def worker(**resources):
        options = {"nthreads": 1, "host": "127.0.0.1", "resources": resources}
        return {"cls": Nanny, "options": options}

    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False}}
    specs = {"plain": worker(), "unicorn": worker(unicorn=1)}
    with SpecCluster(workers=specs, scheduler=scheduler, asynchronous=False) as cluster:
        options = BackendOptions(address=cluster.scheduler_address, connect_timeout=30)
        with create_backend("dask", options) as backend:
            # Both workers run tasks at the same time (a barrier of two), so the plain one was
            # free to take a unicorn task had the restriction not held.
            graph = Graph()
            parts = [
                graph.add(f"r/task-{i}", meet, str(tmp_path), 2, stage="r", resources=need)
                for i, need in enumerate([{"unicorn": 1}, {}] * 8)
            ]
            graph.add("r/ids", pack, *parts, stage="r")
            result = execute(graph, backend, timeout=120)
        unicorn = cluster.workers["unicorn"].worker_address
    where = {t.key: t.worker for t in result.traces}
    assert {where[f"r/task-{i}"] for i in range(0, 16, 2)} == {unicorn}
    assert len(set(result.values["r/ids"])) == len(registered(tmp_path)) == 2


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


def test_address_runs_on_both_workers_and_matches_local(cluster, local_reference, tmp_path):
    code, stdout, stderr, procs = submit_cli(
        "--job", str(FULL_JOB), "--backend", "dask", "--address", cluster.address,
        "--repeat", "2", "--out", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert f"connected to {cluster.address}" in stdout
    records = records_in(tmp_path)
    assert len(records) == 2
    for record in records:
        assert_same_results(record, local_reference)
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
