"""The behaviour every backend must show, written once (like dask's ``GetFunctionTestMixin``).

A backend's test module binds the suite in a few lines::

    class TestLocal(BackendConformance):
        @pytest.fixture(scope="class")
        @classmethod
        def backend(cls):
            with create_backend("local", BackendOptions(workers=2)) as started:
                yield started

The fixture yields a *started* backend with at least two workers; the suite runs graphs on it
and compares every result, bit for bit, with the serial reference. On a backend with worker
processes it also kills workers mid-graph (``--inject-fault kill-worker``, and a task that kills
every worker it runs on) and checks the recovery, and the error once the retries run out.

Spreading is proved with a barrier, not with sleeps: each task of :func:`meet` registers its
worker (a file created with ``O_EXCL`` in a folder every loopback worker sees) and waits,
bounded, until ``quorum`` distinct workers have registered. The run finishes only if that many
workers ran tasks at the same time; otherwise a task fails, saying how many came and which.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.errors import RunTimeoutError, TaskFailedError, WorkerLostError
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph
from cluster_runner.jobspec import parse_job
from cluster_runner.runs.faults import KILL_WORKER
from cluster_runner.runs.job import run_job

from conftest import SMALL_FULL


def fail_on_purpose(x: int) -> int:
    raise ValueError(f"boom {x}")


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


#: How long a barrier task waits for the others: far beyond any scheduler's hand-out delay.
MEET_TIMEOUT_S = 30.0


def worker_id() -> str:
    """This worker, as a file name: host, process and thread (a threads backend's workers share
    a process; every process-based worker runs its tasks on one thread)."""
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"


def _register(folder: str) -> str:
    me = worker_id()
    with contextlib.suppress(FileExistsError):  # it ran an earlier task of this barrier
        os.close(os.open(os.path.join(folder, me), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    return me


def registered(folder: str | Path) -> set[str]:
    """The workers that have reached the barrier in ``folder`` (dot files are markers)."""
    return {name for name in os.listdir(folder) if not name.startswith(".")}


def meet(folder: str, quorum: int, timeout: float = MEET_TIMEOUT_S) -> str:
    """A barrier task: register this worker, wait until ``quorum`` distinct workers have.

    Returns this worker's id. Raises, naming the workers that came, if fewer than ``quorum``
    ran a task at the same time within ``timeout`` seconds.
    """
    me = _register(folder)
    deadline = time.monotonic() + timeout
    while len(seen := registered(folder)) < quorum:
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"barrier: only {len(seen)} of {quorum} workers ran a task at the same time"
                f" within {timeout:g} s ({', '.join(sorted(seen))}): ready tasks were not"
                " spread over the workers"
            )
        time.sleep(0.01)
    return me


def meet_if_any(folder: str, quorum: int, patience: float) -> str:
    """A barrier that may not be met: wait at most ``patience`` seconds, once per ``folder``,
    for ``quorum`` workers; then let every task through. For tests that some worker must *not*
    get a task (``nodes=k``): had it been allowed, the idle worker would have taken one of the
    tasks queued behind the waiting one, and :func:`registered` names it."""
    me = _register(folder)
    gave_up = os.path.join(folder, ".gave-up")
    deadline = time.monotonic() + patience
    while len(registered(folder)) < quorum and not os.path.exists(gave_up):
        if time.monotonic() >= deadline:
            Path(gave_up).touch()
            break
        time.sleep(0.01)
    return me


def hold_until(release: str, started: str, timeout: float = 120.0) -> bool:
    """Keep a worker busy until the file ``release`` exists (at most ``timeout`` seconds);
    ``started`` is created first, so the test knows the task is running."""
    Path(started).touch()
    deadline = time.monotonic() + timeout
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.path.exists(release)


def add(*values: int) -> int:
    return sum(values)


def identity(x: int) -> int:
    return x


def pack(*values: object) -> tuple:
    return values


def _types(value: object) -> object:
    """The type tree of a value, for checks that ``==`` would pass ([1] == (1,) is False, but
    1 == 1.0 and {1: 0} == {1.0: 0} are True)."""
    if isinstance(value, (list, tuple)):
        return type(value), [_types(v) for v in value]
    if isinstance(value, dict):
        return dict, sorted((repr(_types(k)), repr(_types(v))) for k, v in value.items())
    return type(value)


def kill_my_worker(x: int) -> int:
    """A task that dies with its worker every time, as one that always runs out of memory."""
    os.kill(os.getpid(), signal.SIGKILL)
    return x


_REFERENCE: dict[str, list[str]] = {}


def reference_digests() -> list[str]:
    """Digests of the small job's stages on the serial backend: the bits every backend must give."""
    if "small" not in _REFERENCE:
        job = parse_job(SMALL_FULL, name="small")
        with create_backend("serial", BackendOptions()) as serial:
            (record,) = [r.to_json() for r in run_job(job, serial)]
        _REFERENCE["small"] = [s["digest"] for s in record["stages"]]
    return _REFERENCE["small"]


class BackendConformance:
    """Inherit, and provide a class-scoped ``backend`` fixture yielding a started backend."""

    def test_every_workload_verifies_and_matches_serial_bit_for_bit(self, backend):
        job = parse_job(SMALL_FULL, name="small")
        records = [r.to_json() for r in run_job(job, backend, repeat=2)]
        for record in records:
            assert record["status"] == "verified", record["stages"]
            assert [s["digest"] for s in record["stages"]] == reference_digests()

    def test_trace_names_every_task_once(self, backend):
        job = parse_job(SMALL_FULL, name="small")
        graph = job.build_graph().stage("primes")
        result = execute(graph, backend, timeout=120)
        assert sorted(t.key for t in result.traces) == sorted(task.key for task in graph)
        assert all(t.end >= t.start for t in result.traces)

    def test_ready_tasks_run_on_two_workers_at_the_same_time(self, backend, tmp_path):
        graph = Graph()
        parts = [graph.add(f"s/meet-{i}", meet, str(tmp_path), 2, stage="s") for i in range(8)]
        graph.add("s/ids", pack, *parts, stage="s")
        result = execute(graph, backend, timeout=120)
        assert len(registered(tmp_path)) >= 2
        workers = {t.worker for t in result.traces if t.key.startswith("s/meet")}
        assert len(workers) >= 2, workers
        assert set(result.values["s/ids"]) == registered(tmp_path)

    def test_diamond_dependencies_pass_values_downstream(self, backend):
        graph = Graph()
        root = graph.add("d/root", identity, 5, stage="d")
        left = graph.add("d/left", add, root, 1, stage="d")
        right = graph.add("d/right", add, root, 2, stage="d")
        graph.add("d/join", add, left, right, root, stage="d")
        result = execute(graph, backend, timeout=120)
        assert result.values == {"d/join": (5 + 1) + (5 + 2) + 5}

    def test_a_map_feeds_its_users_in_index_order_whatever_finishes_first(self, backend):
        # Issue 16: a map's tasks go out in slices; its ref, spread, gives the reduce every
        # result in index order; one task of it is a ref of its own; shared refs reach each.
        graph = Graph()
        base = graph.add("m/base", identity, 100, stage="m")
        parts = graph.starmap("m/part", add, [(i, i) for i in range(37)], shared=(base,), stage="m")
        graph.add("m/all", pack, parts, stage="m")
        graph.add("m/one", add, parts[5], parts[-1], stage="m")
        squares = graph.map("m/sq", identity, range(40, 0, -1), stage="m")
        graph.add("m/sq-all", pack, squares, 0, stage="m")
        result = execute(graph, backend, timeout=120)
        assert result.values["m/all"] == tuple(2 * i + 100 for i in range(37))
        assert result.values["m/one"] == (10 + 100) + (72 + 100)
        assert result.values["m/sq-all"] == (*range(40, 0, -1), 0)
        assert sorted(t.key for t in result.traces) == sorted(t.key for t in graph)
        assert len(result.traces) == len(graph) == 1 + 37 + 2 + 40 + 1

    def test_literal_arguments_shaped_like_task_outputs_reach_the_task_unchanged(self, backend):
        # A backend wraps each task's value with its trace on the wire; a literal argument of
        # the same shape (a value and a tuple of tuples) must not be taken for one and unwrapped.
        # Nor may the wire format change a literal's type (a list for a tuple, a string key for
        # an integer one).
        lookalike = (7, (("k", "w", "n", 0.0, 1.0, None, None, 0),))
        listlike = [7, [["k", "w", "n", 0.0, 1.0, None, None, 0]]]
        mixed = {1: (2, [3]), "x": b"bytes", (4, 5): {6.5}}
        graph = Graph()
        root = graph.add("l/root", identity, 5, stage="l")
        alone = graph.add("l/alone", pack, lookalike, listlike, mixed, stage="l")
        graph.add("l/join", pack, lookalike, root, alone, listlike, mixed, (), [], stage="l")
        result = execute(graph, backend, timeout=120)
        expected = (lookalike, 5, (lookalike, listlike, mixed), listlike, mixed, (), [])
        assert result.values == {"l/join": expected}
        assert _types(result.values["l/join"]) == _types(expected)

    def test_task_error_names_the_task(self, backend):
        graph = Graph()
        bad = graph.add("e/bad", fail_on_purpose, 7, stage="e")
        graph.add("e/after", identity, bad, stage="e")
        with pytest.raises(TaskFailedError, match=r"e/bad.*ValueError.*boom 7"):
            execute(graph, backend, timeout=120)

    #: How long the "hung" task sleeps: a backend that can end running tasks is given one
    #: that would outlast the test run; one that cannot (threads) a short one.
    hang_seconds = 600.0

    def test_hung_task_times_out_and_backend_stays_usable(self, backend):
        graph = Graph()
        graph.add("t/slow", sleep_for, self.hang_seconds, stage="t")
        began = time.monotonic()
        with pytest.raises(RunTimeoutError, match="timed out"):
            execute(graph, backend, timeout=1.0)
        assert time.monotonic() - began < 60
        graph = Graph()
        parts = [graph.add(f"t/ok-{i}", add, i, 1, stage="t") for i in range(4)]
        graph.add("t/sum", add, *parts, stage="t")
        assert execute(graph, backend, timeout=120).values == {"t/sum": 10}

    def test_backend_still_works_after_a_failed_run(self, backend):
        graph = Graph()
        graph.add("r/bad", fail_on_purpose, 1, stage="r")
        with pytest.raises(TaskFailedError):
            execute(graph, backend, timeout=120)
        graph = Graph()
        graph.add("r/ok", add, 2, 3, stage="r")
        assert execute(graph, backend, timeout=120).values == {"r/ok": 5}

    # --- worker loss (backends whose tasks run in worker processes) --------------------------

    def test_a_worker_killed_mid_graph_is_replaced_and_the_run_still_verifies(self, backend):
        if not backend.worker_processes:
            pytest.skip(f"{backend.name} runs tasks in the driver: no worker to kill")
        job = parse_job(SMALL_FULL, name="small")
        faulty, clean = (
            run_job(job, backend, fault=KILL_WORKER)[0].to_json(),
            run_job(job, backend)[0].to_json(),
        )
        for record in (faulty, clean):
            assert record["status"] == "verified", record["stages"]
            assert [s["digest"] for s in record["stages"]] == reference_digests()
        assert faulty["fault"] == KILL_WORKER and faulty["stages"][0]["retried"] >= 1
        assert faulty["retried"] == sum(s["retried"] for s in faulty["stages"])
        assert clean["fault"] is None and clean["retried"] == 0

    def test_a_task_that_kills_every_worker_exhausts_the_retries_in_one_line(self, backend):
        if not backend.worker_processes:
            pytest.skip(f"{backend.name} runs tasks in the driver: no worker to kill")
        graph = Graph()
        parts = [graph.add(f"k/ok-{i}", add, i, 1, stage="k") for i in range(3)]
        doomed = graph.add("k/doomed", kill_my_worker, 1, stage="k")
        graph.add("k/sum", add, *parts, doomed, stage="k")
        retries = backend.options.retries
        began = time.monotonic()
        with pytest.raises(WorkerLostError, match=f"--retries {retries}") as caught:
            execute(graph, backend, timeout=240, retries=retries)
        assert "\n" not in str(caught.value)
        assert time.monotonic() - began < 180
        graph = Graph()  # and the backend still works
        graph.add("k/after", add, 2, 3, stage="k")
        assert execute(graph, backend, timeout=120).values == {"k/after": 5}

    def test_info_reports_engine_and_workers(self, backend):
        info = backend.info()
        assert info.name == backend.name
        assert info.version
        assert info.workers >= 2
