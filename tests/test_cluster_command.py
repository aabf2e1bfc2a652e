"""``runner cluster up|status|down`` and ``--cluster PROFILE``, end to end, through the CLI.

The acceptance test, once per engine: ``runner cluster up --config
cluster_configs/local-ENGINE.yaml`` brings a real multi-node cluster up on 127.0.0.1, ``runner
submit --cluster cluster_configs/local-ENGINE`` runs the full job on it and its records show
tasks on more than one node, and ``runner cluster down`` leaves none of the recorded processes
(nor any child of one) running. Every cluster keeps its state in the test's own folder
(``RUNNER_STATE_DIR``), never in a user's.

Also: profile values fill in only the options the user did not give (ParameterSource), strict
profile and config errors as one line with exit 2, and a profile whose cluster is not up.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from cluster_runner.cli import main
from cluster_runner.clusters import engine_module
from cluster_runner.clusters.processes import read_state

from clusters import (
    ROOT,
    driver_env,
    listening_addresses,
    processes_of,
    ray_lock,
    short_tempdir,
    survivors,
)
from conftest import runner_command

#: A job of a few hundred milliseconds for the in-process tests.
TINY = """
[[stage]]
workload = "primes"
n = 200_000
chunks = 4
"""


def runner(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*runner_command(), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.open()]


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("runner: error: ")
    return lines[0]


# --- the acceptance test ---------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_cluster_up_submit_on_several_nodes_then_down_leaves_nothing(engine, tmp_path):
    state_root = short_tempdir("rcr-state-")
    env = driver_env(RUNNER_STATE_DIR=str(state_root))
    config = f"cluster_configs/local-{engine}.yaml"
    folder = state_root / f"local-{engine}"
    lock = ray_lock() if engine == "ray" else contextlib.nullcontext()
    with lock:
        up = runner("cluster", "up", "--config", config, env=env)
        state = read_state(folder)
        procs = processes_of([e["pid"] for e in state["processes"]]) if state else []
        try:
            assert up.returncode == 0, up.stderr
            assert f"is up at {state['address']}" in up.stdout
            assert f"runner submit --cluster cluster_configs/local-{engine}" in up.stdout
            assert len(procs) >= 3
            assert listening_addresses(procs) <= {"127.0.0.1"}

            again = runner("cluster", "up", "--config", config, env=env)
            assert again.returncode == 2
            assert "still running" in one_error_line(again.stderr)

            status = runner("cluster", "status", "--config", config, env=env)
            assert status.returncode == 0, status.stdout + status.stderr
            assert "nodes connected: 2 of 2" in status.stdout

            out = tmp_path / "results"
            submit = runner(
                "submit", "--cluster", f"cluster_configs/local-{engine}",
                "--job", "jobs/full.toml", "--out", str(out), env=env,
            )  # fmt: skip
            assert submit.returncode == 0, submit.stderr
            assert f"connected to {state['address']}" in submit.stdout
            (record,) = records(out)
            assert record["status"] == "verified"
            assert record["backend"]["address"] == state["address"]
            # Dask's nodes are its worker processes (one host); Ray's are Ray nodes.
            where = "workers_used" if engine == "dask" else "nodes_used"
            used = {name for stage in record["stages"] for name in stage[where]}
            assert len(used) == 2, used
            procs = processes_of([p.pid for p in procs])  # with the workers started since

            down = runner("cluster", "down", "--config", config, env=env)
            assert down.returncode == 0, down.stderr
            assert "none left" in down.stdout
            assert not survivors(procs, timeout=5.0)
            assert not (folder / "state.json").exists()

            after = runner("cluster", "status", "--config", config, env=env)
            assert after.returncode == 3 and "is not up" in after.stdout
            shutil.rmtree(state_root)  # kept, with the clusters' logs, when a check failed
        finally:
            if (folder / "state.json").exists():
                engine_module(engine).stop(folder, grace=10.0)
            for proc in procs:  # a last resort for a failed test: ours, by pid
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()


# --- profiles --------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A folder with a tiny job and a profile for the threads backend, as the cwd."""
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "threads.toml").write_text(
        'backend = "threads"\n[defaults]\nworkers = 2\nrepeat = 2\n'
    )
    monkeypatch.chdir(tmp_path)
    for name in ("RUNNER_SUBMIT_REPEAT", "RUNNER_SCALE_REPEAT", "RUNNER_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_profile_fills_in_the_options_not_given(workdir, capsys):
    assert main(["submit", "--cluster", "threads.toml", "--job", "tiny.toml", "--out", "a"]) == 0
    runs = records(workdir / "a")
    assert len(runs) == 2  # repeat = 2, from the profile
    assert {(r["backend"]["name"], r["backend"]["workers"]) for r in runs} == {("threads", 2)}


def test_flags_and_environment_win_over_the_profile(workdir, monkeypatch):
    args = ["submit", "--cluster", "threads", "--job", "tiny.toml"]
    monkeypatch.setenv("RUNNER_CLUSTER_CONFIGS", str(workdir))  # the profile, by name
    assert main([*args, "--repeat", "1", "--workers", "1", "--out", "b"]) == 0
    runs = records(workdir / "b")
    assert [r["backend"]["workers"] for r in runs] == [1]
    monkeypatch.setenv("RUNNER_SUBMIT_REPEAT", "3")
    assert main([*args, "--out", "c"]) == 0
    assert len(records(workdir / "c")) == 3


def test_scale_takes_the_profile_over_its_own_defaults(workdir):
    # scale's own defaults are 5 repeats and 1 warm-up; the profile says 2 repeats, 2 workers.
    assert main(["scale", "--cluster", "threads.toml", "--job", "tiny.toml", "--out", "d"]) == 0
    runs = records(workdir / "d")
    assert [(r["warmup"], r["backend"]["workers"]) for r in runs] == [(True, 2)] + [(False, 2)] * 2


def test_profile_of_a_cluster_that_is_not_up_says_how_to_start_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RUNNER_STATE_DIR", str(tmp_path))
    code = main(["submit", "--cluster", str(ROOT / "cluster_configs" / "local-dask.toml")])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "is not up" in line and "runner cluster up --config" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('backend = "dask"\naddres = "tcp://127.0.0.1:1"\n', "unknown key 'addres'"),
        ('backend = "dask"\n[defaults]\nworkers = "two"\n', "'defaults.workers' must be an int"),
        ('backend = "dask"\n[defaults]\nrepeat = true\n', "'defaults.repeat' must be an integer"),
        ('backend = "ray"\n[tls]\nca_file = "ca.pem"\n', "'tls' applies to backend dask only"),
        ('backend = "dask"\n[tls]\nca_file = "nope.pem"\n', "'tls.ca_file': no such file"),
        ('backend = "dask"\ncluster = "missing.yaml"\n', "'cluster': no such file"),
        ('backend = "nope"\n', "'backend' must be one of"),
        ('backend = "dask"\naddress = "x:1"\ncluster = "y"\n', "not both"),
        ("backend = \n", "not valid TOML"),
    ],
    ids=["unknown-key", "wrong-type", "bool-for-int", "tls-on-ray", "missing-file",
         "missing-cluster", "bad-backend", "address-and-cluster", "bad-toml"],
)  # fmt: skip
def test_malformed_profile_is_one_line_naming_file_and_key(text, expected, tmp_path, capsys):
    profile = tmp_path / "bad.toml"
    profile.write_text(text)
    assert main(["submit", "--cluster", str(profile)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert expected in line and str(profile) in line


def test_backend_flag_contradicting_the_profile_is_refused(tmp_path, capsys):
    profile = tmp_path / "remote.toml"
    profile.write_text('backend = "dask"\naddress = "tcp://127.0.0.1:1"\n')
    assert main(["submit", "--cluster", str(profile), "--backend", "ray"]) == 2
    assert "does not match the profile" in one_error_line(capsys.readouterr().err)


def test_tls_section_becomes_the_dask_backend_extra(tmp_path):
    from cluster_runner.clusters.profile import resolve

    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("")
    profile = tmp_path / "tls.toml"
    profile.write_text(
        'backend = "dask"\naddress = "tls://127.0.0.1:8786"\ninsecure = false\n'
        '[tls]\nca_file = "ca.pem"\ncert = "cert.pem"\nkey = "key.pem"\n'
    )
    from cluster_runner.clusters.profile import load_profile

    resolved = resolve(load_profile(profile))
    assert resolved.extra == {
        "tls_ca_file": str(tmp_path / "ca.pem"),
        "tls_cert": str(tmp_path / "cert.pem"),
        "tls_key": str(tmp_path / "key.pem"),
    }
    assert resolved.params["address"] == "tls://127.0.0.1:8786"
    profile.write_text('backend = "dask"\naddress = "tcp://127.0.0.1:8786"\ninsecure = true\n')
    assert resolve(load_profile(profile)).extra == {"insecure": True}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("engine: dask\nnodes: 2\nthreds: 1\n", "unknown key 'threds'"),
        ("engine: ray\nnodes: 0\n", "'nodes' must be an integer >= 1"),
        ("engine: ray\nthreads: 2\n", "unknown key 'threads' for engine ray"),
        ("engine: spark\n", "'engine' must be one of dask, ray"),
        ("engine: dask\nport: 70000\n", "'port' must be an integer from 0 to 65535"),
        ("engine: [dask\n", "not valid YAML"),
    ],
    ids=["unknown-key", "zero-nodes", "other-engines-key", "bad-engine", "bad-port", "bad-yaml"],
)
def test_malformed_cluster_config_is_one_line_naming_file_and_key(text, expected, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["cluster", "up", "--config", str(config), "--state-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert expected in line and str(config) in line


def test_unknown_config_name_says_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["cluster", "status", "--config", "nope"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no cluster config 'nope'" in line and "cluster_configs/nope.yaml" in line
