"""Shared fixtures: small jobs, a process-leak check at teardown, the GPU marker's skip."""

from __future__ import annotations

import sys
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


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Every test must end every process it started: fail it if a new child survives it."""
    before = _children()
    yield
    deadline_left = 30.0
    leaked = _children() - before
    while leaked and deadline_left > 0:
        _gone, alive = psutil.wait_procs(
            [psutil.Process(p) for p in leaked if psutil.pid_exists(p)], timeout=1.0
        )
        leaked = {p.pid for p in alive}
        deadline_left -= 1.0
    if leaked:
        names = []
        for pid in leaked:
            try:
                proc = psutil.Process(pid)
                names.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
                proc.kill()  # ours: a child of this test process
            except psutil.NoSuchProcess:
                continue
        if names:
            pytest.fail("processes outlived the test: " + "; ".join(names))


def pytest_collection_modifyitems(config, items):
    try:
        from cluster_runner.engines import gpu_status

        has_gpu = "device(s)" in gpu_status().note
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
