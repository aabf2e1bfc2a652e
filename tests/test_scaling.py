"""Sweeps: the plan of points, the A B A B order, pre-flight, failures, Ctrl-C and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from cluster_runner.backends import BackendOptions
from cluster_runner.errors import JobSpecError, RunTimeoutError, UsageError
from cluster_runner.jobspec import parse_job
from cluster_runner.results import ResultsWriter, read_records
from cluster_runner.sweeps.loop import run_sweep
from cluster_runner.sweeps.plan import (
    Engine,
    Point,
    Step,
    SweepPlan,
    plan_sweep,
    run_order,
)

from clusters import driver_env, listening_addresses, ray_lock, survivors
from conftest import ROOT, runner_command

TINY = """
[[stage]]
workload = "primes"
n = 200_000
chunks = 4
"""

#: Long enough per run (tens of ms) that a timeout of 1 ms always fires.
DOT = """
[[stage]]
workload = "dot"
n = 4_000_000
chunks = 4
seed = 1
"""


@pytest.fixture
def tiny():
    return parse_job(TINY, name="tiny")


# --- the plan ------------------------------------------------------------------------------


def test_strong_plan_has_one_step_per_size_and_serial_only_at_one(tiny):
    plan = plan_sweep(tiny, ["serial", "threads"], workers=[4, 1, 2])
    assert [s.size for s in plan.steps] == [1, 2, 4]
    assert [[e.backend for e in s.engines] for s in plan.steps] == [
        ["serial", "threads"],
        ["threads"],
        ["threads"],
    ]
    assert any("serial" in note for note in plan.notes)
    engine = plan.steps[2].engines[0]
    assert engine.options.workers == 4 and engine.expected_workers == 4
    assert all(p.job == tiny and p.factor == 1 for p in engine.points)
    assert plan.runs(warmup=1, repeat=3) == 4 * 4


def test_weak_plan_grows_the_weak_parameter_with_the_size(tiny):
    plan = plan_sweep(tiny, ["threads"], workers=[1, 4], mode="weak")
    (small,), (large,) = (s.engines[0].points for s in plan.steps)
    assert small.job.stages[0].params["n"] == 200_000
    assert large.job.stages[0].params["n"] == 800_000
    assert large.factor == 4
    assert large.job.digest != tiny.digest


def test_several_chunk_counts_make_a_granularity_sweep(tiny):
    plan = plan_sweep(tiny, ["threads"], workers=[2], chunks=[2, 8])
    assert plan.axis == "chunks"
    points = plan.steps[0].engines[0].points
    assert [p.job.stages[0].params["chunks"] for p in points] == [2, 8]
    assert [p.label for p in points] == ["threads x2 c2", "threads x2 c8"]


def test_node_sweep_restricts_an_existing_cluster_without_sizing_it(tiny):
    plan = plan_sweep(tiny, ["dask"], workers=[2], nodes=[2, 1], address="tcp://127.0.0.1:8786")
    assert plan.axis == "nodes"
    engines = [s.engines[0] for s in plan.steps]
    assert [e.options.nodes for e in engines] == [1, 2]
    assert [e.options.workers for e in engines] == [None, None]
    assert [e.expected_workers for e in engines] == [2, 4]  # 2 per node
    assert all(e.options.address == "tcp://127.0.0.1:8786" for e in engines)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": [1, 2]}, "give its --address"),
        ({"address": "tcp://127.0.0.1:1"}, "sweep the node count with --nodes"),
        ({"mode": "sideways"}, "unknown mode"),
    ],
)
def test_impossible_sweeps_are_one_line_usage_errors(tiny, kwargs, message):
    with pytest.raises(UsageError, match=message) as caught:
        plan_sweep(tiny, ["threads"], workers=[1, 2], **kwargs)
    assert "\n" not in str(caught.value)


def test_one_cluster_address_for_several_backends_is_refused(tiny):
    with pytest.raises(UsageError, match="one --backend at a time"):
        plan_sweep(tiny, ["dask", "ray"], workers=[1], nodes=[1], address="127.0.0.1:6379")


def test_a_bad_variant_fails_before_anything_runs(tiny):
    # 200,001 chunks of a 200,000-number range cannot be built: caught at plan time.
    with pytest.raises(JobSpecError):
        plan_sweep(tiny, ["threads"], workers=[1], chunks=[4, 10_000_000])


# --- the order -----------------------------------------------------------------------------


def test_runs_alternate_between_backends_after_the_warmups(tiny):
    step = plan_sweep(tiny, ["serial", "threads"], workers=[1]).steps[0]
    order = run_order(step, warmup=1, repeat=3)
    names = [(r.point.backend, r.warmup) for r in order]
    assert names == [
        ("serial", True),
        ("threads", True),
        *[("serial", False), ("threads", False)] * 3,
    ]
    assert [r.index for r in order if r.point.backend == "threads"] == [0, 1, 2, 3]


def test_chunk_counts_alternate_too(tiny):
    step = plan_sweep(tiny, ["threads"], workers=[2], chunks=[2, 8]).steps[0]
    timed = [r.point.chunks for r in run_order(step, warmup=0, repeat=2)]
    assert timed == [2, 8, 2, 8]


# --- sweeping for real (serial and threads: no processes to leak) ---------------------------


def test_sweep_writes_labelled_verified_records_in_interleaved_order(tiny, tmp_path):
    plan = plan_sweep(tiny, ["serial", "threads"], workers=[1, 2])
    path = tmp_path / "sweep.jsonl"
    with ResultsWriter(path) as writer:
        outcome = run_sweep(plan, warmup=1, repeat=2, on_record=writer.append)
    assert outcome.ok
    records = [r.to_json() for r in read_records([path])]
    assert outcome.records == len(records) == (2 + 1) * 3  # serial@1, threads@1, threads@2
    assert all(r["status"] == "verified" for r in records)
    assert len({r["session"] for r in records}) == 1
    timed_at_1 = [r["backend"]["name"] for r in records if r["labels"]["size"] == 1]
    assert timed_at_1 == ["serial", "threads"] * 3  # warm-ups, then two rounds, alternating
    last = records[-1]
    assert 0.0 <= last["labels"]["other_load"] <= 100.0
    assert last["labels"] | {"round": None, "other_load": None} == {
        "mode": "strong",
        "axis": "workers",
        "size": 2,
        "workers": 2,
        "nodes": None,
        "chunks": None,
        "factor": 1,
        "device": "cpu",
        "base_digest": tiny.digest,
        "round": None,
        "point": "threads x2",
        "other_load": None,
    }
    assert last["labels"]["round"] == 1 and last["repeat"] == 2
    assert last["backend"]["startup_s"] is not None
    usage = last["usage"]
    assert usage["cpu_s"] >= 0 and usage["peak_rss_bytes"] > 0 and usage["processes"] >= 1


def test_a_backend_whose_workers_are_missing_is_not_timed(tiny, tmp_path):
    # Pre-flight expects three workers of a two-thread pool: threads is skipped, serial runs.
    point = Point("threads", 3, 3, None, None, 1, tiny)
    serial = Point("serial", 3, 1, None, None, 1, tiny)
    step = Step(
        3,
        (
            Engine("serial", BackendOptions(), 1, (serial,)),
            Engine("threads", BackendOptions(workers=2), 3, (point,)),
        ),
    )
    plan = SweepPlan(tiny, "strong", "workers", (step,))
    records = []
    outcome = run_sweep(plan, warmup=0, repeat=2, on_record=lambda r: records.append(r.to_json()))
    assert outcome.skipped_points == ["threads x3"]
    assert not outcome.ok
    skipped = [r for r in records if r["backend"]["name"] == "threads"]
    assert [r["status"] for r in skipped] == ["skipped"]
    assert "2 worker(s) up, 3 expected" in skipped[0]["error"]
    assert skipped[0]["stages"] == [] and skipped[0]["wall_s"] is None
    assert [r["status"] for r in records if r["backend"]["name"] == "serial"] == ["verified"] * 2


def test_a_failing_point_is_recorded_and_with_keep_going_the_sweep_goes_on():
    job = parse_job(DOT, name="dot")
    plan = plan_sweep(job, ["threads"], workers=[1, 2])
    records = []
    outcome = run_sweep(
        plan,
        warmup=0,
        repeat=3,
        timeout=0.001,
        on_record=lambda r: records.append(r.to_json()),
        keep_going=True,
    )
    # Every run times out: each point fails on its first run, is not run again, and the
    # sweep still goes on to the next size.
    assert outcome.failed_points == ["threads x1", "threads x2"]
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert all("timed out" in r["error"] for r in records)


def test_without_keep_going_the_sweep_stops_at_the_first_failed_run():
    job = parse_job(DOT, name="dot")
    plan = plan_sweep(job, ["threads"], workers=[1, 2])
    records = []
    with pytest.raises(RunTimeoutError, match=r"^threads x1: .*timed out.*--keep-going"):
        run_sweep(
            plan, warmup=0, repeat=3, timeout=0.001, on_record=lambda r: records.append(r.to_json())
        )
    assert [r["status"] for r in records] == ["failed"]  # written before it stopped


# --- Ctrl-C and SIGTERM -------------------------------------------------------------------------

#: Every backend, one worker each, in one sweep: their runs alternate, so an interrupt lands
#: while each of them has finished runs and one of them is running.
EVERY_BACKEND = "serial,threads,local,dask,ray"


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_an_interrupted_sweep_of_every_backend_keeps_its_runs_and_leaves_no_process(
    signum, code, tmp_path
):
    """Ctrl-C (to the whole process group, as a terminal sends it) or SIGTERM (to the driver
    alone, as ``kill`` or a job scheduler sends it) in the middle of a sweep of every backend:
    the sweep stops within seconds with 130 or 143 and one line, every process it started has
    ended, and every finished run is in the results file, which ``runner report`` reads. While
    it ran, its whole process tree listened on loopback only."""
    out = tmp_path / "results"
    command = [
        *runner_command(), "scale", "--job", str(ROOT / "jobs" / "dot.toml"),
        "--set", "n=8000000", "--set", "chunks=8", "--backend", EVERY_BACKEND, "--workers", "1",
        "--repeat", "50", "--warmup", "0", "--out", str(out),
    ]  # fmt: skip
    with ray_lock():
        proc = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=driver_env(), start_new_session=True,
        )  # fmt: skip
        seen: dict[int, psutil.Process] = {}
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
                files = list(out.glob("*.jsonl")) if out.exists() else []
                if files and len(files[0].read_text().splitlines()) >= 7:  # into round two
                    break
                time.sleep(0.1)
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            listening = listening_addresses(tree)
            seen.update((p.pid, p) for p in tree[1:])
            if signum == signal.SIGINT:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signum)
            began = time.monotonic()
            _, stderr = proc.communicate(timeout=120)
            stopped = time.monotonic() - began
            left = survivors(list(seen.values()))
        finally:
            if proc.poll() is None:  # ours: stop it before failing
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("runner: interrupted" if code == 130 else "runner: terminated"), stderr
    assert stopped < 60, f"took {stopped:.0f} s to stop"
    assert not left, f"processes outlived the interrupted sweep: {left}"
    assert listening <= {"127.0.0.1"}, listening
    (path,) = out.glob("*.jsonl")
    records = [r.to_json() for r in read_records([path])]
    assert {r["backend"]["name"] for r in records} == set(EVERY_BACKEND.split(","))
    assert all(r["status"] == "verified" for r in records)
    report = subprocess.run(
        [*runner_command(), "report", str(path), "--format", "csv"],
        capture_output=True, text=True, timeout=120, env=driver_env(),
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("job,mode,axis,backend")
