"""The behaviour every cluster backend (Dask, Ray) must show, written once.

Two mixins, because a Ray driver holds one Ray instance at a time: the embedded engine's must
end before the runner connects to a real cluster by address.

:class:`EmbeddedClusterConformance` extends the backend suite (:class:`BackendConformance`)
with what an engine the runner starts itself must do: listen on 127.0.0.1 only, refuse a task
whose resource no worker offers, pin BLAS to one thread, and report busy workers before a
timing. :class:`ClusterDriverConformance` is the runner as a driver: through the CLI (results
equal to the local backend's, a Ctrl-C or SIGTERM that leaves nothing behind, an address where
nothing listens, a GPU job without a GPU) and by address, ``nodes=k`` on a two-worker cluster.

A binding sets the engine's words and writes a few small hooks::

    class TestDaskEmbedded(DaskEngine, EmbeddedClusterConformance):
        @pytest.fixture(scope="class")
        @classmethod
        def backend(cls):
            with create_backend("dask", BackendOptions(workers=2)) as started:
                yield started

The driver mixin also needs a ``cluster`` fixture: a :class:`clusters.RunningCluster` with two
workers (or nodes) whose workers can import ``tests/`` (:func:`clusters.workers_import_tests`).
"""

from __future__ import annotations

import contextlib
import operator
import signal
import time
from typing import Any, ClassVar

import psutil
import pytest

from cluster_runner.backends import Backend, BackendInfo, BackendOptions, create_backend
from cluster_runner.devices import gpu_info
from cluster_runner.errors import BackendUnavailableError
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph

from backend_conformance import BackendConformance, hold_until, meet_if_any, pack, registered
from clusters import (
    LOOPBACK,
    ROOT,
    assert_same_results,
    free_port,
    listening_addresses,
    records_in,
    submit_cli,
    survivors,
)

FULL_JOB = ROOT / "jobs" / "full.toml"


class ClusterEngine:
    """What a binding says about its engine: the words and hooks both mixins read."""

    #: ``--backend`` name.
    engine: ClassVar[str]
    #: The engine as error messages name it ("cannot connect to the Dask cluster").
    title: ClassVar[str]

    def address_at(self, port: int) -> str:
        """The ``--address`` form for a scheduler on 127.0.0.1 at ``port``."""
        raise NotImplementedError

    def lock(self) -> contextlib.AbstractContextManager:
        """Held around a run that starts the engine (Ray: :func:`clusters.ray_lock`)."""
        return contextlib.nullcontext()


class EmbeddedClusterConformance(ClusterEngine, BackendConformance):
    """Inherit with a :class:`ClusterEngine` binding and a class-scoped ``backend`` fixture
    yielding a started backend with two workers on one machine."""

    #: Words of the pre-flight problem that says a worker is busy with someone else's tasks.
    busy_words: ClassVar[str]

    def advertised(self, info: BackendInfo) -> dict[str, tuple[str, str]]:
        """Addresses the engine hands out (dashboard, GCS), each with the loopback prefix it
        must start with: ``{what: (address, prefix)}``."""
        return {}

    def submit_direct(self, backend: Backend, func: Any, *args: Any) -> Any:
        """Run ``func(*args)`` on the engine as another user of the cluster would; a handle."""
        raise NotImplementedError

    def wait_for(self, backend: Backend, handle: Any, timeout: float) -> Any:
        """The value of a :meth:`submit_direct` handle."""
        raise NotImplementedError

    def engine_sees_busy(self, backend: Backend) -> bool:
        """The engine's own view has caught up: a worker is running a task."""
        raise NotImplementedError

    def test_embedded_engine_listens_and_advertises_loopback_only(self, backend):
        procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
        assert listening_addresses(procs) <= {LOOPBACK}, listening_addresses(procs)
        for what, (address, prefix) in self.advertised(backend.info()).items():
            assert LOOPBACK in prefix and address.startswith(prefix), (what, address)

    def test_task_needing_a_resource_no_worker_has_is_refused_not_left_waiting(self, backend):
        graph = Graph()
        graph.add("u/x", operator.add, 1, 2, stage="u", resources={"unicorn": 1})
        with pytest.raises(BackendUnavailableError, match="unicorn"):
            execute(graph, backend, timeout=60)

    def test_workers_pin_blas_to_one_thread_and_info_counts_them(self, backend):
        assert backend.worker_blas_threads == 1
        info = backend.info()
        assert (info.workers, info.nodes, info.address) == (2, 1, None)

    def test_preflight_reports_a_worker_busy_with_another_users_task(self, backend, tmp_path):
        assert backend.preflight(2) == []
        release, started = tmp_path / "release", tmp_path / "started"
        busy = self.submit_direct(backend, hold_until, str(release), str(started))
        try:
            deadline = time.monotonic() + 60
            while not (started.exists() and self.engine_sees_busy(backend)):
                assert time.monotonic() < deadline, "the busy task did not start in 60 s"
                time.sleep(0.05)
            problems = backend.preflight(2)
            assert any(self.busy_words in p for p in problems), problems
        finally:
            release.touch()
        assert self.wait_for(backend, busy, timeout=60) is True
        assert backend.preflight(2) == []


class ClusterDriverConformance(ClusterEngine):
    """Inherit with a :class:`ClusterEngine` binding and a ``cluster`` fixture (two workers)."""

    #: Processes a CLI run of the embedded engine is seen to start, at least.
    min_processes_seen: ClassVar[int]
    #: What the summary of an embedded run prints besides "all stages verified".
    stdout_mentions: ClassVar[tuple[str, ...]] = ()
    #: Where a :class:`TaskTrace` says it ran, for ``nodes=k``: "worker" or "node".
    placed_by: ClassVar[str]
    #: ``BackendInfo.extra`` key of the cluster's size, all workers or nodes counted.
    cluster_size_key: ClassVar[str]

    def chosen(self, info: BackendInfo) -> set[str]:
        """The workers or nodes a ``nodes=k`` backend chose, as its traces name them."""
        raise NotImplementedError

    def driver_env(self, cluster) -> contextlib.AbstractContextManager:
        """This process's environment while it drives ``cluster`` (Ray: its token)."""
        return contextlib.nullcontext()

    @pytest.mark.skipif(gpu_info().problem is None, reason="this machine has a GPU")
    def test_gpu_job_without_a_gpu_is_refused_in_one_line(self):
        backend = create_backend(self.engine, BackendOptions(workers=1, gpu=True))
        with pytest.raises(BackendUnavailableError, match="GPU stage"):
            backend.start()
        backend.close()

    def test_full_job_on_the_embedded_engine_equals_local_bit_for_bit(
        self, local_reference, tmp_path
    ):
        with self.lock():
            code, stdout, stderr, procs = submit_cli(
                "--job", str(FULL_JOB), "--backend", self.engine, "--workers", "2",
                "--out", str(tmp_path), cwd=tmp_path,
            )  # fmt: skip
            left = survivors(procs)
        assert code == 0, stderr
        assert "all stages verified" in stdout
        for mention in self.stdout_mentions:
            assert mention in stdout, stdout
        (record,) = records_in(tmp_path)
        assert_same_results(record, local_reference)
        backend = record["backend"]
        assert (backend["name"], backend["workers"], backend["address"]) == (self.engine, 2, None)
        assert backend["version"]
        assert not left, f"the run left processes behind: {left}"

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
    def test_interrupted_run_shuts_the_embedded_engine_down(self, signum, tmp_path):
        with self.lock():
            code, _stdout, stderr, procs = submit_cli(
                "--job", str(FULL_JOB), "--backend", self.engine, "--workers", "2",
                "--set", "primes.n=1000000000000", "--set", "primes.chunks=400",
                "--out", str(tmp_path), cwd=tmp_path, signal_after="results:", signum=signum,
            )  # fmt: skip
            left = survivors(procs)
        assert code == (130 if signum == signal.SIGINT else 143), stderr
        assert len(procs) >= self.min_processes_seen  # the engine's processes were seen running
        assert "Traceback" not in stderr, stderr
        assert not left, f"processes outlived the interrupted run: {left}"

    def test_unreachable_address_is_one_line_within_the_connect_timeout(self, tmp_path):
        port = free_port()  # nothing listens there
        began = time.monotonic()
        code, _stdout, stderr, procs = submit_cli(
            "--job", str(FULL_JOB), "--backend", self.engine, "--address", self.address_at(port),
            "--connect-timeout", "3", "--out", str(tmp_path), cwd=tmp_path,
        )  # fmt: skip
        elapsed = time.monotonic() - began
        assert code == 2
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith(f"runner: error: cannot connect to the {self.title} cluster")
        assert f"{LOOPBACK}:{port}" in lines[0] and "3 s" in lines[0]
        assert elapsed < 3 + 30  # the timeout, plus the interpreter's start on a busy machine
        assert not survivors(procs)

    # Last: on Ray, the cluster (module-scoped) starts here, after the embedded runs above.
    def test_nodes_k_runs_every_task_on_the_k_chosen_and_preflight_counts_them(
        self, cluster, tmp_path
    ):
        assert cluster.workers == 2
        options = BackendOptions(address=cluster.address, nodes=1, connect_timeout=60)
        folder = str(tmp_path)
        with self.driver_env(cluster), create_backend(self.engine, options) as one:
            # Each task waits (5 s at most, once) for a second worker to take a task at the
            # same time: one would, had the restriction let tasks reach the idle worker.
            graph = Graph()
            parts = [
                graph.add(f"n/part-{i}", meet_if_any, folder, 2, 5.0, stage="n") for i in range(6)
            ]
            graph.add("n/ids", pack, *parts, stage="n")
            sums = [graph.add(f"n/sum-{i}", operator.add, i, 1, stage="n") for i in range(8)]
            graph.add("n/max", max, *sums, stage="n")
            result = execute(graph, one, timeout=120)
            assert result.values["n/max"] == 8
            info = one.info()
            assert len(registered(folder)) == 1, registered(folder)
            assert set(result.values["n/ids"]) == registered(folder)
            placed = {self._place(t) for t in result.traces}
            assert placed == self.chosen(info)
            assert (info.nodes, info.workers, info.extra[self.cluster_size_key]) == (1, 1, 2)
            assert one.preflight(1) == []
            assert "2 expected" in one.preflight(2)[0]

    def _place(self, trace: Any) -> str:
        return getattr(trace, self.placed_by)
