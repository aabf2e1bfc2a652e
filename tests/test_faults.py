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
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.cli import main
from cluster_runner.errors import UsageError
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
    assert "all stages verified" in stdout and "task(s) retried" in stdout
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
