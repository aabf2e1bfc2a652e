"""Shared fixtures: small jobs, a process-leak check at teardown, the GPU marker's skip."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster_runner.jobspec import JobSpec, parse_job

ROOT = Path(__file__).resolve().parent.parent

#: One stage of each workload, small enough to run in well under a second anywhere.
SMALL_FULL = """
description = "tiny: all three workloads"

[[stage]]
workload = "primes"
n = 2_000_003
chunks = 7

[[stage]]
workload = "array_means"
rows = 1_001
cols = 97
chunks = 6
seed = 11

[[stage]]
workload = "dot"
n = 300_007
chunks = 5
seed = 12
"""


@pytest.fixture
def small_job() -> JobSpec:
    return parse_job(SMALL_FULL, name="small")


def runner_command() -> list[str]:
    """The ``runner`` console script of the interpreter running the tests."""
    return [sys.executable, "-m", "cluster_runner"]


_MP_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def _children() -> set[int]:
    """Our descendant processes, less multiprocessing's per-interpreter helpers (see below)."""
    me = os.getpid()
    found = set()
    for child in psutil.Process(me).children(recursive=True):
        try:
            # The forkserver server and the resource tracker are started once per interpreter
            # and live, by design, until it exits (they end when their parent does). Pool
            # workers the forkserver forks are its children, so they are still counted.
            line = " ".join(child.cmdline())
            if child.ppid() == me and any(helper in line for helper in _MP_HELPERS):
                continue
        except psutil.NoSuchProcess:
            continue
        found.add(child.pid)
    return found


@pytest.fixture(autouse=True, scope="module")
def no_leaked_processes():
    """Every test module must end every process it started: fail if a new child survives it.

    Module scope, so that class- and module-scoped fixtures (a pool, a cluster) may keep their
    processes from test to test, and may replace them, as long as they end them all.
    """
    before = _children()
    yield
    leaked = _children() - before
    deadline = time.monotonic() + 30.0
    while leaked and time.monotonic() < deadline:
        _gone, alive = psutil.wait_procs(
            [psutil.Process(p) for p in leaked if psutil.pid_exists(p)], timeout=1.0
        )
        leaked = {p.pid for p in alive}
    names = []
    for pid in leaked:
        try:
            proc = psutil.Process(pid)
            names.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
            proc.kill()  # ours: a descendant of this test process
        except psutil.NoSuchProcess:
            continue
    if names:
        pytest.fail("processes outlived the test module: " + "; ".join(names))


def pytest_collection_modifyitems(config, items):
    try:
        from cluster_runner.backends.installed import gpu_status

        has_gpu = "device(s)" in gpu_status().note
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> dict:
    """``runner submit --job jobs/full.toml --backend local --workers 2``: its record, the bits
    every other backend must reproduce."""
    from cluster_runner.workloads import REGISTRY

    from clusters import records_in, submit_cli, survivors

    out = tmp_path_factory.mktemp("local")
    code, _, stderr, procs = submit_cli(
        "--job", str(ROOT / "jobs" / "full.toml"), "--backend", "local", "--workers", "2",
        "--out", str(out), cwd=out,
    )  # fmt: skip
    assert code == 0, stderr
    assert not survivors(procs)
    (record,) = records_in(out)
    # every workload that draws its own data and computes something (noop only measures
    # overhead; driver_rows, whose data the driver holds, has tests of its own: test_workloads)
    assert {s["workload"] for s in record["stages"]} == set(REGISTRY) - {"noop", "driver_rows"}
    return record
