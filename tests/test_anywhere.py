"""The runner used from any directory and read by programs (issue 17), in this checkout.

Job specs and cluster configs found by name from elsewhere, and overridden by local copies
(``runner init``); errors that say where the runner looked; output for pipes (no wrapping, no
trailing spaces, ``--json``, plurals); shell completion; the local pool's preloaded forkserver;
the Dask dashboard that answers. ``tests/test_installed.py`` does the same from a built wheel.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from cluster_runner.backends import REGISTRY
from cluster_runner.backends.base import BackendInfo
from cluster_runner.cli import COMMANDS, cli, main
from cluster_runner.clusters.config import find_file
from cluster_runner.commands.options import job_names, resolve_job
from cluster_runner.console import TrimmedLines, plural
from cluster_runner.paths import builtin_dir, kernel_cache_dir

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN_JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.toml"))


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180):
    """``runner ARGS`` in a real process, its output piped (not a terminal)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "cluster_runner", *args],
        cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# --- finding job specs and configs --------------------------------------------------------


def test_built_in_jobs_and_configs_are_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_JOBS_DIR", raising=False)
    monkeypatch.delenv("RUNNER_CLUSTER_CONFIGS", raising=False)
    assert resolve_job("primes") == builtin_dir("jobs") / "primes.toml"
    assert job_names() == BUILT_IN_JOBS
    profile = find_file("local-dask", ".toml", "runner profile")
    assert profile == builtin_dir("cluster_configs") / "local-dask.toml"
    assert find_file("local-ray.yaml", ".yaml", "cluster config").parent == profile.parent


def test_local_files_and_the_variable_override_the_built_in_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "primes.toml").write_text('[[stage]]\nworkload = "primes"\nn = 100\n')
    (tmp_path / "jobs" / "mine.toml").write_text('[[stage]]\nworkload = "noop"\ntasks = 3\n')
    first = tmp_path / "first"
    first.mkdir()
    (first / "dot.toml").write_text('[[stage]]\nworkload = "dot"\nn = 1000\nchunks = 2\n')
    monkeypatch.setenv("RUNNER_JOBS_DIR", os.pathsep.join([str(tmp_path / "absent"), str(first)]))
    assert resolve_job("primes") == Path("jobs/primes.toml")
    assert resolve_job("dot") == first / "dot.toml"
    assert resolve_job("array_means") == builtin_dir("jobs") / "array_means.toml"
    assert job_names() == sorted({*BUILT_IN_JOBS, "mine"})
    (tmp_path / "cluster_configs").mkdir()
    (tmp_path / "cluster_configs" / "local-dask.toml").write_text('backend = "dask"\n')
    assert find_file("local-dask", ".toml", "x") == Path("cluster_configs/local-dask.toml")


def test_runner_jobs_says_which_file_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_JOBS_DIR", raising=False)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "noop.toml").write_text('[[stage]]\nworkload = "noop"\ntasks = 3\n')
    assert main(["jobs", "--json"]) == 0
    listing = {job["name"]: job for job in json.loads(capsys.readouterr().out)}
    assert sorted(listing) == BUILT_IN_JOBS
    assert listing["noop"]["from"] == "./jobs" and listing["noop"]["overrides"] == ["built-in"]
    assert listing["noop"]["stages"][0]["params"]["tasks"] == 3
    assert listing["dot"]["from"] == "built-in" and listing["dot"]["overrides"] == []


def test_a_missing_job_says_where_the_runner_looked(tmp_path):
    done = run("submit", "--job", "nosuchjob", "--out", str(tmp_path / "out"), cwd=tmp_path,
               env={"RUNNER_JOBS_DIR": str(tmp_path / "mine")})  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "no job named 'nosuchjob'" in line
    for place in (f"{tmp_path / 'mine'} (from $RUNNER_JOBS_DIR) (missing)", "./jobs (missing)",
                  f"the built-in ones ({builtin_dir('jobs')})"):  # fmt: skip
        assert place in line
    assert not (tmp_path / "out").exists()
    wrong = run("submit", "--job", "jobs/primes.toml", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "did you mean --job primes" in wrong.stderr


def test_help_says_where_names_are_looked_up(capsys):
    assert main(["submit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "$RUNNER_JOBS_DIR, then ./jobs, then the built-in ones" in text
    assert "$RUNNER_CLUSTER_CONFIGS, then ./cluster_configs, then the built-in ones" in text


# --- runner init --------------------------------------------------------------------------


def test_init_copies_everything_and_never_overwrites_an_edit(tmp_path):
    project = tmp_path / "project"
    done = run("init", str(project), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.stem for p in (project / "jobs").glob("*.toml")) == BUILT_IN_JOBS
    shipped = {p.name for p in builtin_dir("cluster_configs").iterdir() if p.is_file()}
    assert {p.name for p in (project / "cluster_configs").iterdir()} == shipped
    edited = project / "jobs" / "primes.toml"
    edited.write_text(edited.read_text().replace("chunks = 64", "chunks = 8"))
    again = run("init", cwd=project)
    assert again.returncode == 0 and "copied nothing" in again.stdout
    assert "chunks = 8" in edited.read_text()
    forced = run("init", "--force", cwd=project)
    assert forced.returncode == 0 and "chunks = 64" in edited.read_text()
    # A copy's profile still finds its cluster config beside it.
    profile = (project / "cluster_configs" / "local-dask.toml").read_text()
    assert "local-dask.yaml" in profile


def test_init_into_a_file_is_refused_and_writes_nothing(tmp_path):
    (tmp_path / "taken").write_text("")
    done = run("init", str(tmp_path / "taken" / "sub"), cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "is a file" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# --- output for pipes, files and scripts ---------------------------------------------------


def test_trimmed_lines_drop_trailing_spaces_even_across_flushes():
    sink = io.StringIO()
    stream = TrimmedLines(sink)
    for piece in ("title   ", "", "  more  ", "\nnext \t", "\n", "last  "):
        stream.write(piece)
        stream.flush()
    assert sink.getvalue() == "title     more\nnext\nlast"


def test_piped_output_has_no_wrapping_and_no_trailing_spaces(tmp_path):
    long_dir = tmp_path / ("a-folder-name-long-enough-to-wrap-any-terminal-" * 3)
    long_dir.mkdir()
    done = run("submit", "--job", "noop", "--set", "tasks=5", "--backend", "serial",
               "--out", str(long_dir), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(line == line.rstrip() for line in lines)
    results = [line for line in lines if line.startswith("results: ")]
    assert len(results) == 1 and results[0].endswith(".jsonl")
    assert (long_dir / results[0].split("/")[-1]).is_file()
    assert "\x1b[" not in done.stdout  # no colour codes in a file
    # Counts agree with their nouns: a serial backend has one worker, one run was made.
    assert "1 worker " in done.stdout and "1 workers" not in done.stdout
    assert lines[-1].endswith("over 1 run")


def test_submit_json_is_one_document_with_every_run(tmp_path):
    done = run("submit", "--job", "noop", "--set", "tasks=5", "--backend", "serial", "--repeat",
               "2", "--warmup", "1", "--out", str(tmp_path), "--json", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] is True and data["backend"]["name"] == "serial"
    assert [r["warmup"] for r in data["runs"]] == [True, False, False]
    written = [json.loads(line) for line in Path(data["results_file"]).read_text().splitlines()]
    assert [r["run_id"] for r in written] == [r["run_id"] for r in data["runs"]]


def test_backends_json_lists_every_backend(capsys):
    assert main(["backends", "--json"]) == 0
    names = [entry["name"] for entry in json.loads(capsys.readouterr().out)]
    assert names == [*REGISTRY, "gpu"]


@pytest.mark.parametrize("group", [[], ["cluster"]])
def test_help_shows_whole_summaries(group, capsys):
    assert main([*group, "--help"]) == 0
    text = capsys.readouterr().out.split("Commands:")[1]
    assert "..." not in text
    squashed = " ".join(text.split())
    parent = cli.get_command(None, group[0]) if group else cli
    names = parent.list_commands(None) if group else COMMANDS
    for name in names:
        command = parent.get_command(None, name)
        assert command.get_short_help_str(limit=10_000) in squashed


def test_plural():
    assert [plural(n, "worker") for n in (0, 1, 2)] == ["0 workers", "1 worker", "2 workers"]
    assert plural(3, "process", "processes") == "3 processes"


def test_auto_address_line_shows_the_address_it_resolved_to():
    from cluster_runner.commands.submit import _backend_line

    info = BackendInfo("ray", "2.60", workers=1, address="auto", extra={"gcs": "127.0.0.1:6399"})
    line = _backend_line(info)
    assert "connected to 127.0.0.1:6399, from --address auto" in line and "1 worker " in line
    same = BackendInfo(
        "dask", "x", 2, address="tcp://127.0.0.1:1", extra={"scheduler": "tcp://127.0.0.1:1"}
    )
    assert "(connected to tcp://127.0.0.1:1)" in _backend_line(same)


def test_scale_without_its_engine_names_the_extra_and_writes_nothing(tmp_path):
    code = (
        "import sys; sys.modules['distributed'] = None;"
        "from cluster_runner.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", code, "scale", "--job", "primes", "--backend", "local,dask",
         "--workers", "1", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "pip install 'cluster-runner[dask]'" in line
    assert not out.exists() and not done.stdout


# --- shell completion -----------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_each_shell(shell, capsys):
    assert main(["completion", shell]) == 0
    assert "_RUNNER_COMPLETE" in capsys.readouterr().out


def test_job_names_complete_after_job(tmp_path):
    env = {"_RUNNER_COMPLETE": "bash_complete", "COMP_WORDS": "runner submit --job ",
           "COMP_CWORD": "3"}  # fmt: skip
    done = run(cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    offered = [line.split(",", 1) for line in done.stdout.splitlines()]
    assert [value for kind, value in offered if kind == "plain"] == BUILT_IN_JOBS
    env["COMP_WORDS"] = "runner scale --job p"
    done = run(cwd=tmp_path, env=env)
    assert [v for k, v in (line.split(",", 1) for line in done.stdout.splitlines())
            if k == "plain"] == [n for n in BUILT_IN_JOBS if n.startswith("p")]  # fmt: skip


# --- start-up: kernels cached per user, loaded once by the pool's forkserver -------------------


def test_kernel_cache_is_per_user_and_honours_numba_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert kernel_cache_dir() == tmp_path / "xdg" / "cluster-runner" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert kernel_cache_dir() == tmp_path / "mine"


PRELOAD_PROBE = """
import json, sys
from multiprocessing import forkserver
from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.workloads import sieve
from cluster_runner.workloads.primes import warm_up_sieve

def loaded():
    return "numba" in sys.modules, len(sieve.count_primes_between.overloads)

if __name__ == "__main__":
    with create_backend("local", BackendOptions(workers=2, warm_up=(warm_up_sieve,))) as pool:
        server = forkserver._forkserver._forkserver_pid
        with open(f"/proc/{server}/maps") as maps:
            server_has_llvm = "llvmlite" in maps.read()
        worker = pool.executor.submit(loaded).result()
    print(json.dumps({"server": server_has_llvm, "worker": worker,
                      "driver": len(sieve.count_primes_between.overloads)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver, /proc")
def test_pool_workers_are_forked_with_the_kernels_loaded(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PRELOAD_PROBE)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["server"], "the forkserver did not load the compiled kernels"
    assert seen["worker"] == [True, 1]
    assert seen["driver"] == 0, "the driver loaded kernels it never runs"


# --- the Dask dashboard ---------------------------------------------------------------------


@pytest.mark.cluster
def test_dask_dashboard_link_answers():
    pytest.importorskip("bokeh", reason="the dask extra brings bokeh")
    from cluster_runner.backends import BackendOptions, create_backend

    with create_backend("dask", BackendOptions(workers=1)) as backend:
        link = backend.info().dashboard
        assert link and link.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(link, timeout=30) as page:
            assert page.status == 200


def test_scale_json_and_the_cpu_column_of_a_remote_cluster(tmp_path):
    done = run("scale", "--job", "noop", "--set", "tasks=5", "--backend", "serial", "--workers",
               "1", "--repeat", "2", "--warmup", "0", "--out", str(tmp_path), "--json",
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    records = [json.loads(line) for line in Path(data["results_file"]).read_text().splitlines()]
    assert data["ok"] is True and data["records"] == len(records) == 2
    assert data["report"]["job"] == "noop"
    # The same runs, as if their workers had been on a cluster the runner connected to.
    for record in records:
        record["usage"]["scope"] = "driver only (workers are remote)"
    remote = tmp_path / "remote.jsonl"
    remote.write_text("".join(json.dumps(record) + "\n" for record in records))
    here = run("report", data["results_file"], cwd=tmp_path)
    there = run("report", str(remote), cwd=tmp_path)
    assert here.returncode == there.returncode == 0, there.stderr
    assert "(driver)" not in here.stdout
    row = next(line for line in there.stdout.splitlines() if line.strip().startswith("serial"))
    assert "% (driver)" in row
    assert "CPU counts only the driver's processes" in there.stdout
