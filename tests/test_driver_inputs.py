"""Data that starts in the driver (issue 21's acceptance), on every backend, real engines.

A graph declares an input with :meth:`~cluster_runner.graph.Graph.put` (a numpy array of a few
MB, or a dict holding one and a string: the local pool stores that as a pickle-5 stream with
its buffers beside it); :func:`~cluster_runner.execution.walk.execute` places it (``share``) or
sends it with every task (``copy``). On serial, threads, the local pool, an embedded Dask
cluster and an embedded Ray instance (each started once for the module), these tests pin down:

- results bit-identical shared, copied and computed in the driver;
- what moved: shared, the bytes a message carries do not grow with the input (1 MB vs 8 MB);
  copied, every task's message carries the whole input; ``put_bytes`` is the input once (Dask:
  once per worker that held it; serial and threads place nothing);
- an input arrives read-only (an array, or one inside a dict): a task that writes into it
  fails the run with its own error, and the driver's array is untouched;
- cleanup: no ``/dev/shm`` segment of ours once the pool closes after a normal end or a task
  that raises (its arena reuses segments until then), after Ctrl-C on ``runner submit`` and a
  SIGKILLed worker; a worker drops its mapping of an unlinked segment;
  no Ray object of ours in the object store and no data on a Dask worker after a run, failed
  or not;
- bad input (an input that cannot be pickled, one larger than the shared memory or object
  store free): one line, exit 2, before any task runs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from cluster_runner.backends import BackendOptions, create_backend, shared_memory
from cluster_runner.cli import main
from cluster_runner.errors import TaskFailedError, UsageError
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph

from clusters import driver_env, ray_lock, records_in, survivors, workers_import_tests
from conftest import runner_command

BACKENDS = [
    "serial",
    "threads",
    "local",
    pytest.param("dask", marks=pytest.mark.cluster),
    pytest.param("ray", marks=pytest.mark.cluster),
]
CHUNKS = 6
MB = 2**20


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    """Each backend started once, with two workers (the tests of one backend run together)."""
    with contextlib.ExitStack() as stack:
        if request.param == "ray":  # its workers unpickle this module's task functions
            stack.enter_context(workers_import_tests())
            stack.enter_context(ray_lock())
        yield stack.enter_context(create_backend(request.param, BackendOptions(workers=2)))


# --- task functions (top level: they pickle by reference) -----------------------------------


def rows_of(data):
    return data if isinstance(data, np.ndarray) else data["rows"]


def chunk_sum(i, n, data):
    """One chunk's sum, and the input's type and string (a dict's must arrive whole)."""
    label = data["label"] if isinstance(data, dict) else type(data).__name__
    return label, rows_of(data)[i::n].sum()


def write_into(i, n, data):
    rows_of(data)[i] = -1.0
    return i


def fail_at(i, n, data):
    if i == n // 2:
        raise ValueError(f"chunk {i} fails on purpose in {os.getpid()}")
    return float(rows_of(data)[i])


def seen_segments(i, n, data):
    """This worker, the segments of ours in /dev/shm, and those it has mapped right now."""
    time.sleep(0.05)  # long enough for the other worker to take a share of the tasks
    with open("/proc/self/maps") as maps:
        mapped = {line.split("/dev/shm/")[1].split()[0] for line in maps if "/dev/shm/cr-" in line}
    return os.getpid(), shared_memory.segment_names(), sorted(mapped)


def collect(*values):
    return values


def input_graph(value, func=chunk_sum, chunks=CHUNKS):
    """``func(i, chunks, data)`` for each chunk, the input shared by all; their tuple."""
    graph = Graph()
    data = graph.put("s/data", value, stage="s")
    args = [(i, chunks) for i in range(chunks)]
    parts = graph.starmap("s/chunk", func, args, shared=(data,), stage="s")
    graph.add("s/all", collect, parts, stage="s")
    return graph


def array(mb, seed=5):
    return np.random.default_rng(seed).random(int(mb * MB) // 8)


def ours(pid=None):
    """The segments a driver (this process by default) has in /dev/shm now."""
    prefix = f"{shared_memory.PREFIX}{pid or os.getpid()}-"
    return [name for name in shared_memory.segment_names() if name.startswith(prefix)]


def eventually(check, timeout=30.0):
    """``check()`` once it is true, or its last value after ``timeout`` s (engines free
    asynchronously)."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


# --- every backend ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["array", "dict"])
def test_results_are_bit_identical_shared_copied_and_in_the_driver(backend, kind):
    """Also on Dask, whose received arrays may be misaligned (numpy then sums differently)."""
    rows = array(2)
    value = rows if kind == "array" else {"rows": rows, "label": "driver's table"}
    expected = [chunk_sum(i, CHUNKS, value) for i in range(CHUNKS)]
    for mode in ("share", "copy"):
        result = execute(input_graph(value), backend, timeout=120, transfer=mode)
        got = result.values["s/all"]
        assert [label for label, _ in got] == [label for label, _ in expected], mode
        assert (
            np.array([s for _, s in got]).tobytes() == np.array([s for _, s in expected]).tobytes()
        )
        assert result.transfer.mode == mode and result.transfer.inputs == 1


def test_shared_bytes_per_task_do_not_grow_with_the_input_copied_ones_do(backend):
    per_message, records = {}, {}
    for mb in (1, 8):
        for mode in ("share", "copy"):
            graph = input_graph(array(mb))
            moved = records[mb, mode] = execute(graph, backend, timeout=120, transfer=mode).transfer
            assert moved.input_bytes >= mb * MB and moved.messages >= 1, moved
            per_message[mb, mode] = moved.sent_bytes / moved.messages
    for mb in (1, 8):
        shared, copied = records[mb, "share"], records[mb, "copy"]
        # copied: each task in a message of its own, carrying the whole input
        assert copied.messages == CHUNKS and per_message[mb, "copy"] == copied.input_bytes
        assert copied.put_bytes == 0
        if backend.name in ("serial", "threads"):  # the driver's own object: nothing placed
            assert shared.put_bytes == 0
        elif backend.name == "dask":  # once per worker that held the scattered input
            assert shared.put_bytes in (shared.input_bytes, 2 * shared.input_bytes), shared
        else:  # one segment (local: the array's bytes), one object (Ray)
            assert abs(shared.put_bytes - shared.input_bytes) < 1024, shared
        assert shared.messages <= CHUNKS
    assert per_message[1, "share"] == per_message[8, "share"] < 1024, per_message
    assert per_message[8, "copy"] > 7 * per_message[1, "copy"], per_message


@pytest.mark.parametrize("kind", ["array", "dict"])
@pytest.mark.parametrize("mode", ["share", "copy"])
def test_an_input_arrives_read_only_and_a_task_writing_into_it_fails_the_run(backend, mode, kind):
    rows = array(0.25)
    before = rows.copy()
    value = rows if kind == "array" else {"rows": rows, "label": "x"}
    with pytest.raises(TaskFailedError, match=r"s/chunk-\d+.*read-only"):
        execute(input_graph(value, write_into), backend, timeout=120, transfer=mode)
    assert rows.flags.writeable and np.array_equal(rows, before)  # the driver's, untouched


# --- cleanup: the local pool's shared memory ------------------------------------------------


def test_local_segments_are_reused_run_after_run_and_gone_when_the_pool_closes():
    """The pool's arena keeps a released segment for the next run's input of the same size
    (written again, not faulted in again), and the workers see the new contents; closing the
    backend unlinks every segment, after a failed stage too."""
    with create_backend("local", BackendOptions(workers=2)) as backend:
        assert not ours()
        result = execute(input_graph(array(1), seen_segments), backend, timeout=120)
        during = {name for _, names, _ in result.values["s/all"] for name in names}
        assert any(name.startswith(f"cr-{os.getpid()}-") for name in during), during
        kept = ours()
        assert len(kept) == 1, "the arena keeps the released segment for the next run"
        for seed in (8, 9):  # another array of the same size: the same segment, new contents
            value = array(1, seed)
            got = execute(input_graph(value), backend, timeout=120).values["s/all"]
            assert [s for _, s in got] == [s for _, s in (chunk_sum(i, CHUNKS, value)
                                                          for i in range(CHUNKS))]  # fmt: skip
            assert ours() == kept
        with pytest.raises(TaskFailedError, match="fails on purpose"):
            execute(input_graph({"rows": array(1), "label": "x"}, fail_at), backend, timeout=120)
        assert len(ours()) <= 2  # the dict's pickle is another size: one more segment at most
    assert not ours(), "a segment outlived the backend that made it"


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_a_worker_drops_its_mapping_of_a_segment_once_it_is_unlinked(backend):
    """Also the worker whose task failed: a pool worker keeps its last error, which must not
    hold the frames, and through them the failed stage's input, mapped."""
    backend.arena.clear()  # the earlier tests' segments unlinked: no worker may keep them
    execute(input_graph(array(0.5, 1), seen_segments), backend, timeout=120)
    with pytest.raises(TaskFailedError, match=r"fails on purpose in \d+") as failed:
        execute(input_graph(array(0.5, 2), fail_at), backend, timeout=120)
    failed_in = int(str(failed.value).rpartition(" in ")[2])
    later = [execute(input_graph(array(0.5, seed), seen_segments), backend) for seed in (3, 4)]
    for result in later:
        tasks = result.values["s/all"]
        # each task's worker maps this stage's input only, not an earlier stage's
        assert all(len(mapped) == 1 for _, _, mapped in tasks), tasks
        assert len({mapped[0] for _, _, mapped in tasks}) == 1, tasks
    assert failed_in in {pid for stage in later for pid, _, _ in stage.values["s/all"]}
    assert len(ours()) <= shared_memory.Arena.KEEP  # kept for the next run, none more


#: A user's workload whose chunks share an array the driver makes (``data=``). ``marker``:
#: each chunk touches ``marker-<i>`` as it starts; ``nap``: then sleeps; ``bad``: the input
#: also holds what cannot be pickled.
WORKLOAD = '''
"""Column sums of an array the driver makes, given once to every chunk."""
import threading
import time
from pathlib import Path

import numpy as np

from cluster_runner import workload


def split(chunks: int = 4, nap: float = 0.0, marker: str = ""):
    return [(i, chunks, nap, marker) for i in range(chunks)]


def load(size_kb: int = 256, seed: int = 7, bad: str = ""):
    unpicklable = {"lambda": lambda: 0, "lock": threading.Lock()}
    return {"rows": rows(size_kb, seed), "extra": unpicklable.get(bad, "plain")}


def rows(size_kb, seed):
    return np.random.default_rng(seed).random(size_kb * 128)


def sums(values):
    return list(values)


def check(value, size_kb, chunks, seed):
    data = rows(size_kb, seed)
    return value == [float(data[i::chunks].sum()) for i in range(chunks)]


@workload(split=split, reduce=sums, verify=check, data=load)
def part(i, chunks, nap, marker, data):
    if marker:
        Path(f"{marker}-{i}").touch()
    time.sleep(nap)
    return float(data["rows"][i::chunks].sum())
'''


@pytest.fixture(scope="module")
def user_job(tmp_path_factory) -> Path:
    """The workload above in a file of its own, and a job that runs it."""
    folder = tmp_path_factory.mktemp("own-data")
    (folder / "driver_inputs_work.py").write_text(WORKLOAD)
    job = folder / "own-data.toml"
    job.write_text('[[stage]]\nworkload = "driver_inputs_work.py:part"\n')
    return job


def submit(job: Path, out: Path, *args: str) -> int:
    """``runner submit`` in this process: its exit status."""
    return main(["submit", "--job", str(job), "--out", str(out), "--repeat", "1",
                 "--warmup", "0", *args])  # fmt: skip


def test_a_killed_worker_is_replaced_the_run_verifies_and_no_segment_is_left(user_job, tmp_path):
    out = tmp_path / "results"
    code = submit(user_job, out, "--backend", "local", "--workers", "2",
                  "--inject-fault", "kill-worker")  # fmt: skip
    assert code == 0
    (record,) = records_in(out)
    assert record["status"] == "verified" and record["retried"] >= 1, record
    assert record["stages"][0]["transfer"]["method"] == "shared memory"
    assert not ours()


def test_ctrl_c_on_submit_stops_the_run_and_leaves_no_segment(user_job, tmp_path):
    marker = tmp_path / "started"
    command = [*runner_command(), "submit", "--job", str(user_job), "--backend", "local",
               "--workers", "2", "--set", "nap=120", "--set", f"marker={marker}",
               "--out", str(tmp_path / "results")]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=driver_env(), start_new_session=True,
    )  # fmt: skip
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("started-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            with contextlib.suppress(psutil.NoSuchProcess):
                seen.update((c.pid, c) for c in psutil.Process(proc.pid).children(recursive=True))
            time.sleep(0.05)
        assert list(tmp_path.glob("started-*")), "no chunk started within 120 s"
        assert ours(proc.pid), "the input is not in shared memory while its chunks run"
        seen.update((c.pid, c) for c in psutil.Process(proc.pid).children(recursive=True))
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # ours: stop it before failing
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    # 130; or CPython ends itself by SIGINT after main() returned 130 (see tests/test_slurm.py)
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert "Traceback" not in stderr, stderr
    assert not survivors(list(seen.values())), "workers outlived the interrupted run"
    assert not ours(proc.pid), "Ctrl-C left a segment in /dev/shm"


# --- bad input: one line, exit 2, before any task --------------------------------------------


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("runner: error: "), err
    return err


@pytest.mark.parametrize("bad", ["lambda", "lock"])
def test_an_input_that_cannot_be_pickled_is_one_line_and_exit_2(user_job, tmp_path, capsys, bad):
    marker = tmp_path / "started"
    code = submit(user_job, tmp_path / "results", "--backend", "serial",
                  "--set", f"bad={bad}", "--set", f"marker={marker}")  # fmt: skip
    assert code == 2
    assert "cannot be sent to workers" in one_line_error(capsys)
    assert not list(tmp_path.glob("started-*")), "a chunk ran"
    assert not list(tmp_path.glob("results/*.jsonl"))


def test_an_input_larger_than_the_shared_memory_free_is_one_line_and_exit_2(
    user_job, tmp_path, capsys, monkeypatch
):
    real = shutil.disk_usage

    def little_free(path):  # /dev/shm with 64 KiB free; the input is 256 KiB
        usage = real(path)
        if os.fspath(path) != shared_memory.SHM_DIR:
            return usage
        return type(usage)(usage.total, usage.total - 64 * 1024, 64 * 1024)

    monkeypatch.setattr(shutil, "disk_usage", little_free)
    marker = tmp_path / "started"
    code = submit(user_job, tmp_path / "results", "--backend", "local", "--workers", "2",
                  "--set", f"marker={marker}")  # fmt: skip
    assert code == 2
    assert "larger than the shared memory free" in one_line_error(capsys)
    assert not list(tmp_path.glob("started-*")), "a chunk ran"
    assert not ours()


# --- cleanup: Ray's object store, Dask's workers ---------------------------------------------


def _ray_store(backend, monkeypatch):
    """The ids of the inputs the Ray backend puts, and checks of the driver's references and
    of the object store."""
    import ray

    from cluster_runner.backends import ray as ray_backend

    ids: list[bytes] = []
    put = ray_backend.share

    def spy(key, value, nbytes):
        placed = put(key, value, nbytes)
        ids.append(placed.handle.ref.binary())
        return placed

    monkeypatch.setattr(ray_backend, "share", spy)
    worker = ray._private.worker.global_worker.core_worker

    def held() -> set[bytes]:  # references the driver owns or borrows
        return set(worker.get_all_reference_counts())

    def stored(object_id: bytes) -> bool:  # in the object store (a ref made without counting)
        return worker.object_exists(ray.ObjectRef(object_id, skip_adding_local_ref=True))

    return ids, held, stored


@pytest.mark.parametrize("backend", ["ray"], indirect=True)
@pytest.mark.parametrize("mode", ["share", "copy"])
def test_no_ray_object_of_ours_is_left_after_a_run_or_a_failure(backend, monkeypatch, mode):
    """The driver's reference table back to where it was, the input gone from the store."""
    ids, held, stored = _ray_store(backend, monkeypatch)
    before = held()
    result = execute(input_graph(array(1)), backend, timeout=120, transfer=mode)
    assert len(result.values["s/all"]) == CHUNKS
    assert eventually(lambda: held() <= before), held() - before
    with pytest.raises(TaskFailedError, match="fails on purpose") as failed:
        execute(input_graph(array(1), fail_at), backend, timeout=120, transfer=mode)
    if mode == "share":
        assert len(ids) == 2 and stored(ids[0]) is False
        # freed while the error (and the task refs its traceback holds) is still alive
        assert eventually(lambda: not stored(ids[1]) and ids[1] not in held())
    del failed
    gc.collect()
    assert eventually(lambda: held() <= before), held() - before


@pytest.mark.parametrize("backend", ["dask"], indirect=True)
@pytest.mark.parametrize("mode", ["share", "copy"])
def test_dask_workers_hold_no_data_after_a_run_or_a_failure(backend, mode):
    """The first check also sees what the failed runs of the tests before left behind."""

    def held():
        return backend.client.run(lambda dask_worker: sorted(map(str, dask_worker.data)))

    result = execute(input_graph(array(1)), backend, timeout=120, transfer=mode)
    assert len(result.values["s/all"]) == CHUNKS
    assert eventually(lambda: not any(held().values())), held()
    with pytest.raises(TaskFailedError, match="fails on purpose") as failed:
        execute(input_graph(array(1), fail_at), backend, timeout=120, transfer=mode)
    del failed
    gc.collect()
    assert eventually(lambda: not any(held().values())), held()


@pytest.mark.parametrize("backend", ["ray"], indirect=True)
def test_an_input_larger_than_the_object_store_free_is_refused_before_any_task(
    backend, monkeypatch
):
    import ray

    monkeypatch.setattr(ray, "available_resources", lambda: {"object_store_memory": 1e5})
    with pytest.raises(UsageError, match="larger than the Ray object store memory free"):
        execute(input_graph(array(1), fail_at), backend, timeout=120)
