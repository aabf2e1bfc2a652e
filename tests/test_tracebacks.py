"""Errors that keep their cause: a task that raises shows its worker's traceback on request.

A workload task raising ``ValueError`` is run through the real ``runner`` command on every
backend. By default stderr is the one ``runner: error:`` line; with ``--traceback`` (or
``RUNNER_TRACEBACK=1``) the worker's own traceback follows it, naming the frame that raised;
and the failed run's record keeps that traceback under ``error_traceback`` either way.

The command runs in a fresh interpreter with ``tests/`` on ``PYTHONPATH``, so that every
worker (a pool process, a Dask or Ray worker) imports the raising task by name, as it would a
real workload's; the interpreter registers the workload before handing over to ``main``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

TESTS = Path(__file__).resolve().parent

#: Registers the raising workload, then runs the real CLI with the given arguments.
_RUN = (
    "import sys; from cluster_runner import workloads;"
    " workloads.REGISTRY['raising'] = 'raising_workload';"
    " from cluster_runner.cli import main; sys.exit(main(sys.argv[1:]))"
)

BACKENDS = [
    pytest.param("serial", [], id="serial"),
    pytest.param("threads", ["--workers", "2"], id="threads"),
    pytest.param("local", ["--workers", "2"], id="local"),
    pytest.param("dask", ["--workers", "2"], id="dask", marks=pytest.mark.cluster),
    pytest.param("ray", ["--workers", "2"], id="ray", marks=pytest.mark.cluster),
]


def _submit(
    tmp_path: Path,
    backend: str,
    extra: list[str],
    *,
    before: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    job = tmp_path / "raising.toml"
    job.write_text('[[stage]]\nworkload = "raising"\nn = 10000\nchunks = 4\n')
    out = tmp_path / "out"
    environ = {k: v for k, v in os.environ.items() if k != "RUNNER_TRACEBACK"}
    path = os.pathsep.join(filter(None, [str(TESTS), str(ROOT), environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", _RUN, *before, "submit", "--job", str(job), "--backend", backend,
         *extra, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**environ, "PYTHONPATH": path, **(env or {})},
    )  # fmt: skip


def _failed_record(tmp_path: Path) -> dict:
    (path,) = (tmp_path / "out").glob("*.jsonl")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["status"] == "failed"
    return record


def _shows_the_worker_traceback(text: str) -> None:
    from raising_workload import MESSAGE

    assert "Traceback (most recent call last)" in text
    assert "in explode" in text  # the frame that raised, on the worker
    assert f"ValueError: {MESSAGE}" in text


@pytest.mark.parametrize(("backend", "extra"), BACKENDS)
def test_a_raising_task_is_one_line_by_default_and_its_traceback_is_recorded(
    tmp_path, backend, extra
):
    done = _submit(tmp_path, backend, extra)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("runner: error: ") and "ValueError" in lines[0]
    record = _failed_record(tmp_path)
    assert "ValueError" in record["error"]
    _shows_the_worker_traceback(record["error_traceback"] or "")


@pytest.mark.parametrize(("backend", "extra"), BACKENDS)
def test_traceback_flag_shows_the_workers_traceback_after_the_one_line(tmp_path, backend, extra):
    done = _submit(tmp_path, backend, extra, before=("--traceback",))
    assert done.returncode == 1, done.stderr[-2000:]
    first, *rest = done.stderr.strip().splitlines()
    assert first.startswith("runner: error: ") and "ValueError" in first
    _shows_the_worker_traceback("\n".join(rest))


def test_the_environment_switch_does_what_the_flag_does(tmp_path):
    done = _submit(tmp_path, "serial", [], env={"RUNNER_TRACEBACK": "1"})
    assert done.returncode == 1, done.stderr[-2000:]
    first, *rest = done.stderr.strip().splitlines()
    assert first.startswith("runner: error: ") and "ValueError" in first
    _shows_the_worker_traceback("\n".join(rest))
