"""The Ray backend: the shared suites (:mod:`backend_conformance`, :mod:`cluster_conformance`)
on an embedded instance and on a real two-node Ray cluster on 127.0.0.1 with token
authentication, then what only Ray has: token authentication (on without a token file, the
environment restored, a driver without the token refused in one line), ``--address auto``.

One Ray instance at a time (``ray_lock``): the embedded instance ends with its class, before
the cluster of the later tests starts (module-scoped, first asked for by the last driver test).
"""

from __future__ import annotations

import contextlib
import operator
import os
import time
from pathlib import Path

import psutil
import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph

from cluster_conformance import (
    FULL_JOB,
    ClusterDriverConformance,
    ClusterEngine,
    EmbeddedClusterConformance,
)
from clusters import (
    assert_same_results,
    driver_env,
    listening_addresses,
    processes_of,
    ray_cluster,
    ray_lock,
    records_in,
    submit_cli,
    survivors,
    workers_import_tests,
)

pytestmark = pytest.mark.cluster


class RayEngine(ClusterEngine):
    engine = "ray"
    title = "Ray"

    def address_at(self, port):
        return f"127.0.0.1:{port}"

    def lock(self):
        return ray_lock()


class TestRayEmbedded(RayEngine, EmbeddedClusterConformance):
    busy_words = "busy"

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        # Ray's workers do not inherit the test's sys.path: the suite's task functions live in
        # tests/, so put it on the workers' PYTHONPATH (the runner's own tasks need nothing).
        with (
            workers_import_tests(),
            ray_lock(),
            create_backend("ray", BackendOptions(workers=2)) as started,
        ):
            yield started

    def advertised(self, info):
        return {"gcs": (info.extra["gcs"], "127.0.0.1:")}

    def submit_direct(self, backend, func, *args):
        import ray

        return ray.remote(func).remote(*args)

    def wait_for(self, backend, handle, timeout):
        import ray

        return ray.get(handle, timeout=timeout)

    def engine_sees_busy(self, backend):
        import ray

        return ray.available_resources().get("CPU", 0) < 2

    def test_token_authentication_stays_on_without_a_token_file(self, backend):
        info = backend.info()
        assert info.extra["auth_mode"] == "token"
        assert os.environ["RAY_AUTH_MODE"] == "token"
        assert os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")


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


@pytest.fixture(scope="module")
def cluster():
    with workers_import_tests(), ray_cluster(nodes=2) as running:
        yield running


class TestRayDriver(RayEngine, ClusterDriverConformance):
    min_processes_seen = 3  # GCS, raylet and workers
    placed_by = "node"
    cluster_size_key = "cluster_nodes"

    def chosen(self, info):
        return set(info.extra["chosen_nodes"])

    @contextlib.contextmanager
    def driver_env(self, cluster):
        """The cluster's token for a driver in this process, and Ray's cached config reset
        after: left in token mode with no token, a later in-process Ray (another test's)
        would abort the whole test process."""
        with pytest.MonkeyPatch.context() as patch:
            for name, value in cluster.env.items():
                patch.setenv(name, value)
            yield
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def test_address_runs_on_both_nodes_and_matches_local(cluster, local_reference, tmp_path):
    code, stdout, stderr, procs = submit_cli(
        "--job", str(FULL_JOB), "--backend", "ray", "--address", cluster.address,
        "--warmup", "1", "--repeat", "2", "--out", str(tmp_path), env=driver_env(cluster),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert f"2 workers on 2 nodes (connected to {cluster.address}" in stdout
    records = records_in(tmp_path)
    assert len(records) == 3
    for record in records:
        assert_same_results(record, local_reference)
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
    code, stdout, stderr, _ = submit_cli(
        "--job", str(FULL_JOB), "--backend", "ray", "--address", "auto", "--out", str(tmp_path),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert "on 2 nodes" in stdout


def test_driver_without_the_token_gets_one_line(cluster, tmp_path):
    env = driver_env(None, HOME=str(tmp_path))  # no token anywhere, not even ~/.ray
    began = time.monotonic()
    code, _, stderr, procs = submit_cli(
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
