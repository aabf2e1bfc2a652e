"""The ``runner`` command: help everywhere, one-line errors with exit 2, results on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_runner import cli
from cluster_runner.cli import main
from cluster_runner.results import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "primes.n=100000", "--set", "rows=400", "--set", "dot.n=20000"]


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cluster_runner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help_with_an_example(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out
    assert f"runner {command}" in out


def test_top_level_help_imports_no_engine():
    code = (
        "import sys; from cluster_runner.cli import main; main(['--help']);"
        "print([m for m in ('ray', 'dask', 'distributed', 'cupy', 'numba') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("[]"), out.stdout[-200:]


def test_version_is_printed(capsys):
    assert main(["--version"]) == 0
    assert "0." in capsys.readouterr().out


def test_submit_prints_every_stage_verified_and_writes_the_record(tmp_path):
    done = run_cli(
        "submit",
        "--job",
        "jobs/full.toml",
        "--backend",
        "local",
        "--workers",
        "2",
        "--repeat",
        "2",
        "--out",
        str(tmp_path),
        *TINY,
    )
    assert done.returncode == 0, done.stderr
    for stage in ("primes", "array_means", "dot"):
        assert stage in done.stdout
    assert "all stages verified" in done.stdout
    (path,) = tmp_path.glob("full-local-*.jsonl")
    assert str(path) in done.stdout.replace("\n", "")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["schema_version"] == SCHEMA_VERSION
        assert record["status"] == "verified"
        assert record["job"]["name"] == "full"
        assert record["job"]["stages"][0]["params"]["n"] == 100_000
        assert record["backend"]["name"] == "local"
        assert record["backend"]["workers"] == 2
        assert record["backend"]["start_method"] in ("forkserver", "spawn")
        assert record["backend"]["extra"]["worker_blas_threads"] == 1
        assert [s["name"] for s in record["stages"]] == ["primes", "array_means", "dot"]
        primes = record["stages"][0]
        assert primes["result"] == 9592 and primes["verified"]
        assert primes["tasks"] == 1 + 64 + 1
        assert sum(primes["workers_used"].values()) == primes["tasks"]
        assert all(s["wall_s"] > 0 for s in record["stages"])
        assert record["wall_s"] == pytest.approx(sum(s["wall_s"] for s in record["stages"]))
        env = record["environment"]
        for key in ("python", "packages", "cpu_model", "cpu_logical", "hostname", "blas"):
            assert key in env
        assert env["packages"]["numpy"]
    assert records[0]["session"] == records[1]["session"]
    assert records[0]["run_id"] != records[1]["run_id"]


def test_job_can_be_named_instead_of_a_path(tmp_path):
    done = run_cli(
        "submit",
        "--job",
        "primes",
        "--set",
        "n=1000",
        "--backend",
        "serial",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "pi(1,000) = 168" in done.stdout


def test_jobs_lists_every_shipped_job(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["jobs"]) == 0
    out = capsys.readouterr().out
    for name in ("primes", "array_means", "dot", "full"):
        assert f"jobs/{name}.toml" in out


def test_backends_table_lists_every_backend(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("serial", "threads", "local", "dask", "ray", "cupy"):
        assert name in out


# The table of malformed inputs (flags, job specs, addresses, results files) is in
# test_bad_input.py.


def test_malformed_job_file_is_one_line_from_a_real_process(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stage]]\nworkload = "primes"\nn = "lots"\n')
    done = run_cli("submit", "--job", str(bad))
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"runner: error: {bad}: stage 'primes': n must be an integer,"
        " got 'lots'"
    )
    assert "Traceback" not in done.stderr


def test_a_result_that_fails_verification_exits_1(tmp_path, monkeypatch, capsys):
    from cluster_runner import workloads

    monkeypatch.setitem(workloads.REGISTRY, "off_by_one", "broken_workload")
    job = tmp_path / "wrong.toml"
    job.write_text('[[stage]]\nworkload = "off_by_one"\nn = 1000\nchunks = 4\n')
    assert main(["submit", "--job", str(job), "--backend", "serial", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "verification FAILED" in out
    (path,) = tmp_path.glob("*.jsonl")
    record = json.loads(path.read_text())
    assert record["status"] == "unverified"
    assert record["stages"][0]["result"] == 169
    assert record["stages"][0]["expected"] == 168
