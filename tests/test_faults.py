"""Faults a long sweep must survive or report in one line, through the real ``runner`` command.

The recovery from a worker killed mid-graph, and the error once the retries run out, are in the
shared conformance suite (``backend_conformance.py``), so every backend with worker processes
runs them. Here: ``--inject-fault`` on the command line and its refusal where there is no worker
to kill; a driver killed by SIGKILL leaving no process behind (local, Dask, Ray); a hung run
ended by ``--timeout``; and ``--keep-going`` against a sweep that stops at its first failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.cli import main
from cluster_runner.errors import ExecutionError, UsageError
from cluster_runner.jobspec import parse_job
from cluster_runner.results import read_records
from cluster_runner.runs.faults import KILL_WORKER
from cluster_runner.runs.job import run_job

from clusters import ROOT, driver_env, ray_lock, run_watched, survivors
from conftest import SMALL_FULL, runner_command

FULL_JOB = str(ROOT / "jobs" / "full.toml")
#: A job that keeps every worker busy for minutes: only a signal or a timeout ends it.
LONG = ["--job", FULL_JOB, "--set", "primes.n=1000000000000", "--set", "primes.chunks=400"]
#: The full job made small enough to take a fraction of a second.
TINY = ["--set", "primes.n=100000", "--set", "rows=400", "--set", "dot.n=20000"]


def _records(folder: Path) -> list[dict]:
    return [r.to_json() for r in read_records(sorted(folder.glob("*.jsonl")))]


@pytest.mark.parametrize("backend", ["serial", "threads"])
def test_a_fault_is_refused_where_tasks_run_in_the_driver(backend):
    job = parse_job(SMALL_FULL, name="small")
    started = create_backend(backend, BackendOptions(workers=1))
    with started, pytest.raises(UsageError, match="no worker to kill"):
        run_job(job, started, fault=KILL_WORKER)


def test_submit_with_an_injected_fault_verifies_and_says_how_many_tasks_were_rerun(tmp_path):
    code, stdout, stderr, procs = run_watched(
        [*runner_command(), "submit", "--job", FULL_JOB, *TINY, "--backend", "local",
         "--workers", "2", "--inject-fault", KILL_WORKER, "--out", str(tmp_path)],
        env=driver_env(), cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert "all stages verified" in stdout and re.search(r"\b\d+ tasks? retried", stdout)
    (record,) = _records(tmp_path)
    assert record["status"] == "verified" and record["fault"] == KILL_WORKER
    assert record["stages"][0]["retried"] >= 1 and record["retried"] >= 1
    assert not survivors(procs)


def _start_driver(backend: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*runner_command(), "submit", *LONG, "--backend", backend, "--workers", "2",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=driver_env(),
        cwd=out, start_new_session=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("backend", "least"),
    # What must be seen running before the kill: the local pool's two workers and its
    # forkserver; Dask's two worker processes; Ray's GCS, raylet, agents and workers.
    [("local", 3), ("dask", 2), ("ray", 5)],
)
def test_a_driver_killed_by_sigkill_leaves_no_process_behind(backend, least, tmp_path):
    lock = ray_lock() if backend == "ray" else contextlib.nullcontext()
    with lock:
        driver = _start_driver(backend, tmp_path)
        procs: list[psutil.Process] = []
        try:
            for line in driver.stdout:  # "results: ..." comes once the backend is up
                if line.startswith("results:"):
                    break
            # The first run is under way: wait, bounded, until the engine's processes exist.
            deadline = time.monotonic() + 30.0
            procs = psutil.Process(driver.pid).children(recursive=True)
            while len(procs) < least and time.monotonic() < deadline:
                time.sleep(0.1)
                procs = psutil.Process(driver.pid).children(recursive=True)
            assert len(procs) >= least, [p.name() for p in procs]
            sessions = _session_folders(procs)  # Ray's private session folder (issue 15)
            driver.kill()
            driver.wait(timeout=30)
            began = time.monotonic()
            left = survivors(procs, timeout=20.0)
            took = time.monotonic() - began
        finally:
            if driver.poll() is None:
                driver.kill()
            for proc in procs:  # ours: a failed check must not leak them
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            driver.wait(timeout=30)
            driver.stdout.close()
    assert not left, f"processes outlived the killed driver: {left}"
    assert took < 15.0, f"the last process took {took:.1f} s to end"
    if backend == "ray":
        assert sessions, "Ray's session is not in a private folder of the runner's"
        deadline = time.monotonic() + 20.0
        while any(path.exists() for path in sessions) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(path.exists() for path in sessions), "the reaper left the session"


def _session_folders(procs: list[psutil.Process]) -> set[Path]:
    """The private folders (``/tmp/rcr-ray-*``) that Ray's processes keep their session in."""
    import re

    found = set()
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            for match in re.finditer(r"(/\S*?/rcr-ray-[^/\s]+)/", " ".join(proc.cmdline())):
                found.add(Path(match.group(1)))
    return found


def test_a_hung_run_ends_at_its_timeout_with_one_line_and_a_failed_record(tmp_path):
    began = time.monotonic()
    code, _stdout, stderr, procs = run_watched(
        [*runner_command(), "submit", *LONG, "--backend", "local", "--workers", "2",
         "--timeout", "2", "--out", str(tmp_path)],
        env=driver_env(), cwd=tmp_path,
    )  # fmt: skip
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runner: error: run timed out"), stderr
    assert time.monotonic() - began < 60
    (record,) = _records(tmp_path)
    assert record["status"] == "failed" and "timed out" in record["error"]
    assert not survivors(procs)


SWEEP = [
    "scale", "--job", FULL_JOB, *TINY, "--backend", "local", "--workers", "1,2", "--repeat", "2",
    "--warmup", "0", "--inject-fault", KILL_WORKER, "--retries", "0",
]  # fmt: skip


def test_a_sweep_stops_at_its_first_failed_run_with_one_line(tmp_path, capsys):
    assert main([*SWEEP, "--out", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("runner: error: local x1: task ") and "--keep-going" in lines[0]
    (record,) = _records(tmp_path)  # written before the sweep stopped
    assert record["status"] == "failed" and record["fault"] == KILL_WORKER
    assert "--retries 0" in record["error"]


def test_keep_going_records_failed_runs_and_goes_on_to_every_point(tmp_path, capsys):
    assert main([*SWEEP, "--keep-going", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    records = _records(tmp_path)
    # Each point fails on its first run and is not run again; the sweep reaches both sizes.
    assert [(r["labels"]["point"], r["status"]) for r in records] == [
        ("local x1", "failed"),
        ("local x2", "failed"),
    ]
    assert "not every point verified" in captured.out


def test_a_sweep_with_an_injected_fault_verifies_every_run(tmp_path, capsys):
    args = SWEEP[:-2]  # the default --retries
    assert main([*args, "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    records = _records(tmp_path)
    assert len(records) == 4 and all(r["status"] == "verified" for r in records)
    assert all(r["fault"] == KILL_WORKER and r["retried"] >= 1 for r in records)
    report = subprocess.run(
        [*runner_command(), "report", str(next(tmp_path.glob("*.jsonl"))), "--format", "json"],
        capture_output=True, text=True, timeout=120, env=driver_env(),
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["series"], report.stdout[:200]


def test_the_marker_files_of_injected_faults_are_removed(tmp_path):
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob(f"cluster-runner-fault-{os.getpid()}-*"))
    job = parse_job(SMALL_FULL, name="small")
    with create_backend("local", BackendOptions(workers=2)) as backend:
        (record,) = [r.to_json() for r in run_job(job, backend, fault=KILL_WORKER)]
    assert record["status"] == "verified"
    after = set(Path(tempfile.gettempdir()).glob(f"cluster-runner-fault-{os.getpid()}-*"))
    assert after <= before


# --- issue 15: a full disk, a lost GCS or scheduler ---------------------------------------------

#: A job of a few milliseconds that writes no compiled-kernel cache (a file size limit would
#: reach the cache too).
NOOP = ["--job", str(ROOT / "jobs" / "noop.toml"), "--set", "tasks=8"]


def _limited(limit: int):
    """A ``preexec_fn`` that caps the size of every file the child writes (``RLIMIT_FSIZE``).

    Past it a write fails with ``EFBIG``, as on a full disk (Python ignores ``SIGXFSZ``).
    """
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _run_limited(args: list[str], limit: int | None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*runner_command(), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
        env=driver_env(), preexec_fn=_limited(limit) if limit else None,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["serial", "threads", "local"])
def test_a_full_disk_is_one_line_and_keeps_every_finished_record(backend, tmp_path):
    submit = ["submit", *NOOP, "--backend", backend, "--workers", "1", "--repeat", "5"]
    # One record's size on this machine, measured by a run without a limit.
    probe = _run_limited([*submit[:-1], "1", "--out", str(tmp_path / "probe")], None, tmp_path)
    assert probe.returncode == 0, probe.stderr
    (first,) = (tmp_path / "probe").glob("*.jsonl")
    size = first.stat().st_size
    out = tmp_path / "full"
    run = _run_limited([*submit, "--out", str(out)], size * 5 // 2, tmp_path)  # 2 of 5 fit
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith("runner: error: cannot write results to ")
    assert "File too large" in lines[0] and "the 2 record(s) written before are kept" in lines[0]
    (path,) = out.glob("*.jsonl")
    assert path.read_bytes().endswith(b"\n")  # ends with a whole record, nothing half-written
    kept = _records(out)
    assert [(r["status"], r["repeat"]) for r in kept] == [("verified", 0), ("verified", 1)]


def test_a_full_disk_at_the_first_record_leaves_no_results_file(tmp_path):
    run = _run_limited(["submit", *NOOP, "--backend", "serial", "--out", str(tmp_path / "o")],
                       200, tmp_path)  # fmt: skip
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0], run.stderr
    assert "this run's record is lost" in lines[0]
    assert list((tmp_path / "o").glob("*")) == []


def test_a_sweep_on_a_full_disk_stops_in_one_line_and_its_file_still_reports(tmp_path):
    sweep = ["scale", *NOOP, "--backend", "threads", "--workers", "1,2", "--repeat", "3",
             "--warmup", "0"]  # fmt: skip
    probe = _run_limited([*sweep[:-4], "--repeat", "1", "--workers", "1", "--warmup", "0",
                          "--out", str(tmp_path / "probe")], None, tmp_path)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    size = next((tmp_path / "probe").glob("*.jsonl")).stat().st_size
    out = tmp_path / "sweep"
    run = _run_limited([*sweep, "--out", str(out)], size * 9 // 2, tmp_path)  # 4 of 6 fit
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "the 4 record(s) written before are kept" in lines[0], run.stderr
    (path,) = out.glob("*.jsonl")
    report = subprocess.run(
        [*runner_command(), "report", str(path), "--format", "json"],
        capture_output=True, text=True, timeout=120, env=driver_env(),
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "NaN" not in report.stdout
    assert {p["size"] for s in json.loads(report.stdout)["series"] for p in s["points"]} == {1, 2}


def _kill_mid_run(
    command: list[str], victims, *, env: dict[str, str], cwd: Path
) -> tuple[int, str, float, list[psutil.Process]]:
    """Start ``command`` (a long run); once it is timing, SIGKILL what ``victims(driver)``
    names; return ``(exit code, stderr, seconds from the kill to the exit, its processes)``."""
    driver = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
        start_new_session=True,
    )  # fmt: skip
    seen: list[psutil.Process] = []
    try:
        for line in driver.stdout:
            if line.startswith("results:"):
                break
        time.sleep(1.0)  # the first run is under way
        seen = psutil.Process(driver.pid).children(recursive=True)
        targets = victims(driver)
        assert targets, "nothing to kill"
        for proc in targets:
            proc.kill()
        killed = time.monotonic()
        _out, err = driver.communicate(timeout=180)
        took = time.monotonic() - killed
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, 9)
            driver.communicate(timeout=30)
    return driver.returncode, err, took, seen


def _engine_processes(driver: subprocess.Popen, name: str) -> list[psutil.Process]:
    return [p for p in psutil.Process(driver.pid).children(recursive=True) if p.name() == name]


def _one_failed_record(folder: Path, error: str) -> None:
    (record,) = _records(folder)
    assert record["status"] == "failed" and error in record["error"]


def test_a_lost_gcs_of_the_embedded_ray_ends_the_run_in_one_line_with_a_record(tmp_path):
    with ray_lock():
        code, stderr, took, procs = _kill_mid_run(
            [*runner_command(), "submit", *LONG, "--backend", "ray", "--workers", "2",
             "--out", str(tmp_path)],
            lambda driver: _engine_processes(driver, "gcs_server"), env=driver_env(), cwd=tmp_path,
        )  # fmt: skip
        left = survivors(procs, timeout=20.0)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runner: error: lost the Ray cluster's GCS"), (
        stderr
    )
    assert took < 45.0, f"{took:.0f} s from the kill to the exit (Ray alone would take 60)"
    _one_failed_record(tmp_path, "lost the Ray cluster's GCS")
    assert not left, left


def test_a_lost_gcs_of_a_connected_ray_cluster_ends_the_run_in_one_line(tmp_path):
    from clusters import load_script, processes_of, short_tempdir

    module = load_script("ray_local_cluster")
    folder = short_tempdir("rcr-ray-")
    with ray_lock():
        state = module.start(folder, 2, cpus=1, timeout=180)
        procs = processes_of([e["pid"] for e in state["processes"]])
        try:
            env = driver_env(**module.driver_env(state))
            code, stderr, took, _ = _kill_mid_run(
                [*runner_command(), "submit", *LONG, "--backend", "ray", "--address",
                 state["address"], "--out", str(tmp_path)],
                lambda _: [p for p in procs if p.name() == "gcs_server"], env=env, cwd=tmp_path,
            )  # fmt: skip
        finally:
            module.stop(folder, grace=10.0)  # what the dead GCS left: some must be killed
            left = survivors(processes_of([p.pid for p in procs]), timeout=20.0)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "lost the Ray cluster's GCS at 127.0.0.1:" in lines[0], stderr
    assert took < 45.0
    _one_failed_record(tmp_path, "lost the Ray cluster's GCS")
    assert not left, left
    assert not (folder / "auth_token").exists()


def test_a_lost_scheduler_of_a_connected_dask_cluster_ends_the_run_in_one_line(tmp_path):
    from clusters import load_script, processes_of, short_tempdir

    module = load_script("dask_local_cluster")
    folder = short_tempdir("rcr-dask-")
    state = module.start(folder, 2, timeout=120)
    procs = processes_of([e["pid"] for e in state["processes"]])
    scheduler = [p for p in procs if p.pid == state["processes"][0]["pid"]]
    try:
        code, stderr, took, _ = _kill_mid_run(
            [*runner_command(), "submit", *LONG, "--backend", "dask", "--address",
             state["address"], "--out", str(tmp_path)],
            lambda _: scheduler, env=driver_env(), cwd=tmp_path,
        )  # fmt: skip
    finally:
        module.stop(folder, grace=10.0)
        left = survivors(processes_of([p.pid for p in procs]), timeout=20.0)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "lost the connection to the Dask scheduler" in lines[0], stderr
    assert took < 45.0
    _one_failed_record(tmp_path, "lost the connection to the Dask scheduler")
    assert not left, left


def test_a_lost_scheduler_of_the_embedded_dask_cluster_fails_the_run_and_closes(tmp_path):
    """The embedded scheduler runs in the driver: here it stops mid-run (as a crash would).
    The run is recorded as failed, and closing ends the workers at once, not after 30 s."""
    import threading

    job = parse_job('[[stage]]\nworkload = "primes"\nn = 1_000_000_000_000\nchunks = 400\n')
    backend = create_backend("dask", BackendOptions(workers=2))
    records: list = []
    with backend:
        workers = [psutil.Process(n.process.pid) for n in backend.cluster.workers.values()]

        def lose_scheduler() -> None:
            time.sleep(2.0)
            backend.cluster.sync(backend.cluster.scheduler.close)

        threading.Thread(target=lose_scheduler, daemon=True).start()
        with pytest.raises(ExecutionError, match="lost the connection to the Dask scheduler"):
            run_job(job, backend, on_record=records.append)
        began = time.monotonic()
    took = time.monotonic() - began
    assert [r.status for r in records] == ["failed"]
    assert took < 20.0, f"closing took {took:.0f} s"
    assert not survivors(workers, timeout=10.0)


def test_a_frozen_scheduler_of_a_connected_dask_cluster_ends_the_run_in_one_line(tmp_path):
    """SIGSTOP: the scheduler's port still accepts connections, but nothing answers; the
    client alone would wait forever."""
    from cluster_runner.backends.dask_watch import SCHEDULER_LOST_S

    from clusters import load_script, processes_of, short_tempdir

    module = load_script("dask_local_cluster")
    folder = short_tempdir("rcr-dask-")
    state = module.start(folder, 2, timeout=120)
    procs = processes_of([e["pid"] for e in state["processes"]])
    scheduler = psutil.Process(state["processes"][0]["pid"])
    try:
        driver = subprocess.Popen(
            [*runner_command(), "submit", *LONG, "--backend", "dask", "--address",
             state["address"], "--out", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=driver_env(),
            cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
        try:
            for line in driver.stdout:
                if line.startswith("results:"):
                    break
            time.sleep(1.0)
            scheduler.suspend()
            frozen = time.monotonic()
            _out, stderr = driver.communicate(timeout=180)
            took = time.monotonic() - frozen
        finally:
            scheduler.resume()
            if driver.poll() is None:
                os.killpg(driver.pid, 9)
                driver.communicate(timeout=30)
    finally:
        module.stop(folder, grace=10.0)
        left = survivors(processes_of([p.pid for p in procs]), timeout=20.0)
    assert driver.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "lost the Dask scheduler at tcp://127.0.0.1:" in lines[0], stderr
    assert SCHEDULER_LOST_S <= took < SCHEDULER_LOST_S + 25.0
    _one_failed_record(tmp_path, "has not answered for")
    assert not left, left
