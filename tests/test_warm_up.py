"""Issue 16: the job's warm-up is the workload's, runs before the first timed run, and is
recorded apart from the engine's start-up; the local pool's workers import only what the
job's workloads need."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.jobspec import parse_job
from cluster_runner.runs.job import run_job

NOOP = parse_job('[[stage]]\nworkload = "noop"\ntasks = 10\n', name="noop")
HOOK_S = 0.4


def slow_hook() -> None:
    """A warm-up hook that takes :data:`HOOK_S` seconds wherever it runs."""
    time.sleep(HOOK_S)


@pytest.mark.parametrize("backend", ["serial", "threads", "local"])
def test_warm_up_is_recorded_apart_from_start_up(backend):
    options = BackendOptions(workers=2, warm_up=(slow_hook,))
    with create_backend(backend, options) as engine:
        (record,) = run_job(NOOP, engine)
    assert record.backend.warmup_s >= HOOK_S  # the hook's time, where it ran
    assert record.backend.startup_s is not None and record.backend.startup_s >= 0
    assert record.to_json()["backend"]["warmup_s"] == record.backend.warmup_s


@pytest.mark.parametrize("backend", ["serial", "local"])
def test_a_job_without_hooks_has_no_warm_up(backend):
    with create_backend(backend, BackendOptions(workers=2, warm_up=NOOP.warm_ups())) as engine:
        info = engine.info()
    assert NOOP.warm_ups() == ()
    assert info.warmup_s == 0.0 and info.startup_s > 0


def test_the_primes_workload_owns_its_warm_up():
    primes = parse_job('[[stage]]\nworkload = "primes"\nn = 1000\n', name="p")
    assert [h.__name__ for h in primes.warm_ups()] == ["warm_up_sieve"]


def test_local_workers_of_a_job_without_kernels_do_not_import_numba(tmp_path):
    # In a fresh interpreter: the forkserver is started once per process, by the first pool.
    script = tmp_path / "probe.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys

            def modules():
                import sys
                return sorted(m for m in ("numba", "numpy", "llvmlite") if m in sys.modules)

            if __name__ == "__main__":
                sys.path.insert(0, sys.argv[1])
                from cluster_runner.backends import BackendOptions, create_backend
                from cluster_runner.jobspec import parse_job
                import probe

                job = parse_job('[[stage]]\\nworkload = "noop"\\ntasks = 10\\n', name="noop")
                options = BackendOptions(workers=2, warm_up=job.warm_ups())
                with create_backend("local", options) as backend:
                    print(json.dumps(backend.executor.submit(probe.modules).result()))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["numpy"]
