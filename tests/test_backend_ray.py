"""The Ray backend: the conformance suite on an embedded instance, then the runner against a
real two-node Ray cluster on 127.0.0.1 with token authentication, through the CLI.

Also: results equal to the local backend's bit for bit for every workload, an address where
nothing listens, a driver without the cluster's token, Ray not installed, and no process left
behind by a run, a Ctrl-C or a cluster's stop. One Ray instance at a time (``ray_lock``): the
embedded instance ends with its class, before the cluster of the module-level tests starts.
"""

from __future__ import annotations

import operator
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.devices import gpu_info
from cluster_runner.errors import BackendUnavailableError
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph

from backend_conformance import BackendConformance, sleep_for
from clusters import (
    ROOT,
    driver_env,
    free_port,
    listening_addresses,
    processes_of,
    ray_cluster,
    ray_lock,
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


class TestRay(BackendConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        # Ray's workers do not inherit the test's sys.path: the suite's task functions live in
        # tests/, so put it on the workers' PYTHONPATH (the runner's own tasks need nothing).
        with pytest.MonkeyPatch.context() as patch, ray_lock():
            patch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
            with create_backend("ray", BackendOptions(workers=2)) as started:
                yield started

    def test_embedded_instance_listens_on_loopback_only(self, backend):
        procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
        assert listening_addresses(procs) <= {"127.0.0.1"}, listening_addresses(procs)

    def test_token_authentication_stays_on_without_a_token_file(self, backend):
        info = backend.info()
        assert info.extra["auth_mode"] == "token"
        assert os.environ["RAY_AUTH_MODE"] == "token"
        assert os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")

    def test_task_needing_a_resource_no_worker_has_is_refused_not_left_waiting(self, backend):
        graph = Graph()
        graph.add("u/x", operator.add, 1, 2, stage="u", resources={"unicorn": 1})
        with pytest.raises(BackendUnavailableError, match="unicorn"):
            execute(graph, backend, timeout=60)

    def test_workers_pin_blas_to_one_thread_and_info_is_complete(self, backend):
        assert backend.worker_blas_threads == 1
        info = backend.info()
        assert (info.workers, info.nodes, info.address) == (2, 1, None)
        assert info.extra["gcs"].startswith("127.0.0.1:")

    def test_preflight_reports_busy_cpus(self, backend):
        import ray

        assert backend.preflight(2) == []
        busy = ray.remote(sleep_for).remote(30.0)
        try:
            deadline = time.monotonic() + 30
            while ray.available_resources().get("CPU", 0) >= 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            problems = backend.preflight(2, settle=0.0)
            assert any("busy" in p for p in problems), problems
        finally:
            ray.cancel(busy, force=True)


def test_embedded_instance_restores_the_environment_and_writes_no_token_file():
    token_file = Path.home() / ".ray" / "auth_token"
    had_file = token_file.exists()
    with ray_lock():
        before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        with create_backend("ray", BackendOptions(workers=1)) as backend:
            assert os.environ.get("RAY_AUTH_MODE") == "token"
            graph = Graph()
            graph.add("e/ok", operator.add, 2, 3, stage="e")  # a builtin: workers import it
            assert execute(graph, backend, timeout=120).values == {"e/ok": 5}
        assert {k: os.environ.get(k) for k in before} == before
    assert token_file.exists() == had_file


@pytest.mark.skipif(gpu_info().problem is None, reason="this machine has a GPU")
def test_gpu_job_without_a_gpu_is_refused_in_one_line():
    backend = create_backend("ray", BackendOptions(workers=1, gpu=True))
    with pytest.raises(BackendUnavailableError, match="GPU stage"):
        backend.start()
    backend.close()


def test_full_job_on_embedded_ray_equals_local_bit_for_bit(local_reference, tmp_path):
    with ray_lock():
        code, stdout, stderr, procs = _submit(
            "--job", str(FULL_JOB), "--backend", "ray", "--workers", "2", "--out", str(tmp_path),
            cwd=tmp_path,
        )  # fmt: skip
        left = survivors(procs)
    assert code == 0, stderr
    assert "all stages verified" in stdout
    (record,) = _records(tmp_path)
    _same_results(record, local_reference)
    backend = record["backend"]
    assert (backend["name"], backend["workers"], backend["address"]) == ("ray", 2, None)
    assert backend["version"]
    assert not left, f"the run left Ray processes behind: {left}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_shuts_the_embedded_instance_down(signum, tmp_path):
    with ray_lock():
        code, _stdout, stderr, procs = _submit(
            "--job", str(FULL_JOB), "--backend", "ray", "--workers", "2",
            "--set", "primes.n=1000000000000", "--set", "primes.chunks=400",
            "--out", str(tmp_path), cwd=tmp_path, signal_after="results:", signum=signum,
        )  # fmt: skip
        left = survivors(procs)
    assert code == (130 if signum == signal.SIGINT else 143), stderr
    assert len(procs) >= 3  # GCS, raylet and workers were seen running
    assert "Traceback" not in stderr, stderr
    assert not left, f"processes outlived the interrupted run: {left}"


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(nodes=2) as running:
        yield running


def test_address_runs_on_both_nodes_and_matches_local(cluster, local_reference, tmp_path):
    code, stdout, stderr, procs = _submit(
        "--job", str(FULL_JOB), "--backend", "ray", "--address", cluster.address,
        "--warmup", "1", "--repeat", "2", "--out", str(tmp_path), env=driver_env(cluster),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert f"2 workers on 2 nodes (connected to {cluster.address}" in stdout
    records = _records(tmp_path)
    assert len(records) == 3
    for record in records:
        _same_results(record, local_reference)
        backend = record["backend"]
        assert (backend["address"], backend["workers"], backend["nodes"]) == (
            cluster.address,
            2,
            2,
        )
        assert set(backend["extra"]["node_ids"]) == set(cluster.state["node_ids"])
    # The work was spread over both nodes. Ray keeps a task on the driver's node while that
    # node has room, and these tasks take milliseconds, so one short run on a loaded machine
    # may stay on one node: the three runs together must not.
    nodes = {n for r in records for stage in r["stages"] for n in stage["nodes_used"]}
    assert nodes == set(cluster.state["node_ids"])
    assert not survivors(procs)  # the driver started nothing it left running
    assert all(psutil.pid_exists(pid) for pid in cluster.pids[:2])  # nor stopped the cluster


def test_auto_address_with_ray_address_set(cluster, tmp_path):
    env = driver_env(cluster, RAY_ADDRESS=cluster.address)
    code, stdout, stderr, _ = _submit(
        "--job", str(FULL_JOB), "--backend", "ray", "--address", "auto", "--out", str(tmp_path),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert "on 2 nodes" in stdout


@pytest.fixture
def token_in_env(cluster):
    """The cluster's token for a driver in this process, and Ray's cached config reset after.

    Ray reads its auth mode when imported and caches it: left in token mode with no token,
    a later in-process Ray (another test's) would abort the whole test process.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster.env.items():
            patch.setenv(name, value)
        yield
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def test_nodes_restricts_tasks_to_k_nodes_and_preflight_checks(cluster, token_in_env):
    options = BackendOptions(address=cluster.address, nodes=1, connect_timeout=60)
    with create_backend("ray", options) as one:
        graph = Graph()  # builtins only: the cluster's workers cannot import tests/
        parts = [graph.add(f"n/part-{i}", operator.add, i, 1, stage="n") for i in range(8)]
        graph.add("n/max", max, *parts, stage="n")
        result = execute(graph, one, timeout=120)
        assert result.values == {"n/max": 8}
        info = one.info()
        assert {t.node for t in result.traces} == set(info.extra["chosen_nodes"])
        assert (info.nodes, info.workers, info.extra["cluster_nodes"]) == (1, 1, 2)
        assert one.preflight(1) == []
        assert any("2 expected" in p for p in one.preflight(2))


def test_driver_without_the_token_gets_one_line(cluster, tmp_path):
    env = driver_env(None, HOME=str(tmp_path))  # no token anywhere, not even ~/.ray
    began = time.monotonic()
    code, _, stderr, procs = _submit(
        "--job", str(FULL_JOB), "--backend", "ray", "--address", cluster.address,
        "--connect-timeout", "20", "--out", str(tmp_path), env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "token" in lines[0] and "RAY_AUTH_TOKEN" in lines[0]
    assert time.monotonic() - began < 20 + 30
    assert not survivors(procs)


def test_script_cluster_is_loopback_only_with_two_nodes(cluster):
    # Its clean stop, by pid, is checked when the fixture ends (clusters.ray_cluster).
    procs = processes_of(cluster.pids)
    assert len(procs) >= 5  # holder, GCS and a raylet per node, at least
    assert sum(p.name() == "raylet" for p in procs) == 2
    assert listening_addresses(procs) <= {"127.0.0.1"}, listening_addresses(procs)


def test_unreachable_address_is_one_line_within_the_connect_timeout(tmp_path):
    port = free_port()  # nothing listens there
    began = time.monotonic()
    code, _, stderr, procs = _submit(
        "--job", str(FULL_JOB), "--backend", "ray", "--address", f"127.0.0.1:{port}",
        "--connect-timeout", "3", "--out", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.monotonic() - began
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("runner: error: cannot connect to the Ray cluster")
    assert f"127.0.0.1:{port}" in lines[0]
    assert elapsed < 3 + 30  # the timeout, plus the interpreter's start on a busy machine
    assert not survivors(procs)
