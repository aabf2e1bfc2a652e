"""Slurm (issue 19): a real Slurm on 127.0.0.1, node sweeps of Dask and Ray on nodes asked of it,
a job cancelled mid-point, and nothing left after down, Ctrl-C or a driver killed.

One Slurm for the module (``runner cluster up --config local-slurm``, two nodes), in a state
folder of its own; every test that needs it is skipped, in one line, where Slurm's packages are
missing. The checks of the files and of bad input need no Slurm and always run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cluster_runner.clusters import slurm_local
from cluster_runner.clusters.slurm_conf import LocalSlurm, render_conf
from cluster_runner.clusters.slurm_ray import default_template, render
from cluster_runner.clusters.slurm_settings import load_slurm_jobs
from cluster_runner.errors import ClusterConfigError

from clusters import driver_env, listening_addresses, ray_lock
from conftest import ROOT, runner_command

needs_slurm = pytest.mark.skipif(
    not slurm_local.available(),
    reason="needs Slurm's daemons and munge: apt-get install slurm-wlm munge",
)


@dataclass(frozen=True)
class Slurm:
    env: dict[str, str]  # RUNNER_STATE_DIR and SLURM_CONF of the module's Slurm
    state: dict  # its state.json


def _runner(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*runner_command(), *args], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=timeout,
    )  # fmt: skip


def _slurm(*args: str, env: dict) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=60)
    return done.stdout


def _queue(slurm: Slurm) -> list[str]:
    return _slurm("squeue", "-h", "-o", "%i %T %N", env=slurm.env).splitlines()


def _wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def _nothing_left(slurm: Slurm) -> None:
    """No job queued or running, and no process of one on the machine (after 60 s at most)."""
    _wait_until(lambda: not _queue(slurm), 60, f"jobs left in squeue: {_queue(slurm)}")
    _wait_until(
        lambda: not slurm_local.job_processes(slurm.state), 30,
        f"job processes left: {slurm_local.job_processes(slurm.state)}",
    )  # fmt: skip


def _daemons(state: dict) -> list[psutil.Process]:
    from cluster_runner.clusters.processes import live_processes

    return live_processes(state)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Slurm:
    if not slurm_local.available():
        pytest.skip("needs Slurm's daemons and munge: apt-get install slurm-wlm munge")
    root = tmp_path_factory.mktemp("state")
    env = {**driver_env(), "RUNNER_STATE_DIR": str(root)}
    up = _runner("cluster", "up", "--config", "local-slurm", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((root / "local-slurm" / "state.json").read_text())
    yield Slurm({**env, "SLURM_CONF": state["conf"]}, state)
    down = _runner("cluster", "down", "--config", "local-slurm", env=env)
    assert down.returncode == 0, down.stderr
    assert not _daemons(state) and not slurm_local.job_processes(state)


# --- with the real Slurm -----------------------------------------------------------------------


@needs_slurm
def test_up_starts_two_idle_nodes_on_loopback_only(slurm):
    status = _runner("cluster", "status", "--config", "local-slurm", env=slurm.env)
    assert status.returncode == 0, status.stdout
    assert "nodes connected: 2 of 2" in status.stdout
    nodes = _slurm("sinfo", "-h", "-N", "-o", "%N %T", env=slurm.env).split("\n")
    assert sorted(n for n in nodes if n) == ["n1 idle", "n2 idle"]
    daemons = _daemons(slurm.state)
    assert {p.name() for p in daemons} >= {"munged", "slurmctld", "slurmd"}
    assert listening_addresses(daemons) == {"127.0.0.1"}


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for path in folder.glob("*.jsonl") for line in path.open()]


def _check_node_sweep(slurm: Slurm, records: list[dict], profile: str) -> dict[int, list]:
    """Every record carries its point's Slurm jobs and nodes; return size -> slurm fields."""
    by_size: dict[int, list] = {}
    for r in records:
        assert r["status"] == "verified", r["error"]
        assert r["backend"]["address"] == f"slurm:{slurm.state['cluster_name']}/{profile}"
        by_size.setdefault(r["labels"]["size"], []).append(r["slurm"])
    assert sorted(by_size) == [1, 2]
    assert all(len(s["nodes"]) == 1 and len(s["job_ids"]) == 1 for s in by_size[1])
    assert all(s["nodes"] == ["n1", "n2"] for s in by_size[2])
    assert all(s["cluster"] == slurm.state["cluster_name"] for s in by_size[1] + by_size[2])
    for job in {j for s in by_size[2] for j in s["job_ids"]}:  # Slurm's own jobs, named by us
        shown = _slurm("scontrol", "-o", "show", "job", job, env=slurm.env)
        assert "JobName=cr-" in shown, shown
    return by_size


@needs_slurm
def test_dask_node_sweep_on_slurm_jobs_records_their_ids(slurm, tmp_path):
    done = _runner(
        "scale", "--cluster", "slurm-dask", "--nodes", "1,2", "--job", "primes", "--set",
        "n=20000000", "--repeat", "2", "--warmup", "1", "--out", str(tmp_path), env=slurm.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "slurm: 2 node(s) up in" in done.stdout
    by_size = _check_node_sweep(slurm, _records(tmp_path), "slurm-dask")
    jobs = {j for s in by_size[2] for j in s["job_ids"]}
    assert len(jobs) == 2  # dask-jobqueue: one job a node
    assert {s["job_ids"][0] for s in by_size[1]} < jobs  # the 1-node point: one of the two
    _nothing_left(slurm)
    (path,) = tmp_path.glob("*.jsonl")
    report = _runner("report", str(path), env=slurm.env)
    assert report.returncode == 0 and "strong scaling over nodes" in report.stdout


@needs_slurm
def test_ray_node_sweep_in_one_allocation_records_its_job(slurm, tmp_path):
    with ray_lock():
        done = _runner(
            "scale", "--cluster", "slurm-ray", "--nodes", "1,2", "--job", "primes", "--set",
            "n=20000000", "--repeat", "2", "--warmup", "1", "--out", str(tmp_path),
            env=slurm.env,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    records = _records(tmp_path)
    by_size = _check_node_sweep(slurm, records, "slurm-ray")
    assert len({j for s in by_size[1] + by_size[2] for j in s["job_ids"]}) == 1  # one allocation
    assert {r["backend"]["extra"]["auth_mode"] for r in records} == {"token"}
    _nothing_left(slurm)


def _sweep(slurm: Slurm, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*runner_command(), "scale", "--cluster", "slurm-dask", "--job", "primes",
         "--out", str(out), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=slurm.env, cwd=ROOT,
    )  # fmt: skip


def _read_until(proc: subprocess.Popen, text: str, seen: list[str]) -> None:
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"never printed {text!r}: {''.join(seen)}")


@needs_slurm
def test_a_job_cancelled_mid_point_fails_that_run_and_the_sweep_goes_on(slurm, tmp_path):
    seen: list[str] = []
    proc = _sweep(slurm, tmp_path, "--nodes", "2", "--set", "n=30000000000", "--repeat", "2",
                  "--warmup", "1")  # fmt: skip
    try:
        _read_until(proc, "dask 2 nodes warm-up", seen)
        time.sleep(0.5)  # into the first timed run
        (cancelled,) = [line.split()[0] for line in _queue(slurm) if line.endswith(" n2")]
        subprocess.run(["scancel", cancelled], env=slurm.env, check=True, timeout=60)
        seen += proc.stdout.readlines()
        assert proc.wait(timeout=600) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen)
    assert f"Slurm job {cancelled} on n2 ended: CANCELLED" in out
    records = [r for r in _records(tmp_path) if not r["warmup"]]
    failed = [r for r in records if r["status"] == "failed"]
    for r in failed:  # the run the job was cancelled under (when it was not between two runs)
        assert f"Slurm job {cancelled} on n2 ended: CANCELLED" in r["error"]
    timed = [r for r in records if r["status"] == "verified"]
    assert sorted(r["labels"]["round"] for r in timed) == [0, 1]  # retried: no round lost
    for r in timed:
        assert r["slurm"]["nodes"] == ["n1", "n2"] and cancelled not in r["slurm"]["job_ids"]
    _nothing_left(slurm)


@needs_slurm
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_a_killed_or_interrupted_driver_leaves_no_job(slurm, tmp_path, signum):
    seen: list[str] = []
    proc = _sweep(slurm, tmp_path, "--nodes", "1,2", "--set", "n=10000000000", "--repeat", "5")
    try:
        _read_until(proc, "dask 1 node warm-up", seen)  # mid-sweep: a timed run under way
        assert len(_queue(slurm)) == 2
        proc.send_signal(signum)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:  # 130; or, rarely, Python ends itself by SIGINT after main() returned 130 (when the
        # KeyboardInterrupt passed through code a C extension ran with PyRun_*, CPython keeps
        # a flag that makes it re-raise SIGINT at exit): a shell sees 130 both ways
        assert code in (130, -signal.SIGINT)
    _nothing_left(slurm)


@needs_slurm
def test_a_sweep_submitted_with_sbatch_continues_when_submitted_again(slurm, tmp_path):
    results = tmp_path / "scale.jsonl"
    env = {**slurm.env, "RUNNER": f"{runner_command()[0]} -m cluster_runner",
           "RESULTS": str(results)}  # fmt: skip
    sweep = ["--job", "primes", "--set", "n=200000", "--backend", "serial,threads",
             "--workers", "1", "--repeat", "2"]  # fmt: skip
    for _ in range(2):  # the second submission finds the sweep complete: it adds nothing
        submitted = subprocess.run(
            ["sbatch", "--parsable", "--wait", "--chdir", str(ROOT), "--output",
             str(tmp_path / "job-%j.out"), str(ROOT / "scripts" / "scale.sbatch"), *sweep],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr + "".join(
            p.read_text() for p in tmp_path.glob("job-*.out")
        )
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("job-*.out")))
    assert "not there yet, the whole sweep goes there" in logs
    assert "2 point(s) complete there, 0 to time" in logs
    timed = [json.loads(line) for line in results.open() if '"warmup": false' in line]
    assert sorted((r["backend"]["name"], r["labels"]["round"]) for r in timed) == [
        ("serial", 0), ("serial", 1), ("threads", 0), ("threads", 1),
    ]  # fmt: skip
    report = _runner("report", str(results), env=slurm.env)
    assert report.returncode == 0 and "serial" in report.stdout


@needs_slurm
def test_down_cancels_running_jobs_and_leaves_nothing(slurm):
    subprocess.run(["sbatch", "-N", "2", "-o", os.devnull, "--wrap", "srun sleep 300"],
                   env=slurm.env, check=True, capture_output=True, timeout=60)  # fmt: skip
    _wait_until(lambda: any(" RUNNING " in f" {q} " for q in _queue(slurm)), 60, "never ran")
    _wait_until(lambda: len(slurm_local.job_processes(slurm.state)) >= 3, 30, "no job processes")
    jobs = slurm_local.job_processes(slurm.state)
    daemons = _daemons(slurm.state)
    down = _runner("cluster", "down", "--config", "local-slurm", env=slurm.env)
    assert down.returncode == 0, down.stderr
    assert "none left" in down.stdout
    assert not [p for p in jobs + daemons if p.is_running() and p.status() != "zombie"]
    assert not slurm_local.job_processes(slurm.state)


# --- without Slurm -------------------------------------------------------------------------


def test_slurm_conf_keeps_every_daemon_on_loopback_without_cgroups(tmp_path):
    spec = LocalSlurm(
        folder=tmp_path, cluster_name="crtest", nodes=("n1", "n2"), node_ports=(7001, 7002),
        cpus=1, memory_mb=1000, controller_port=7000, munge_socket=tmp_path / "m.sock",
        user="someone",
    )  # fmt: skip
    conf = render_conf(spec)
    lines = conf.splitlines()
    for line in (
        "SlurmctldHost=localhost(127.0.0.1)", "SlurmctldPort=7000", "SlurmUser=someone",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny", f"AuthInfo=socket={tmp_path}/m.sock",
        "NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=7002 CPUs=1"
        " RealMemory=1000 State=UNKNOWN",
    ):  # fmt: skip
        assert line in lines, line
    assert all(str(tmp_path) in line for line in lines if "Location=" in line or "File=" in line)
    assert "cgroup" not in conf


def test_the_sbatch_template_fills_every_field_and_is_valid_bash(tmp_path):
    values = {
        "job_name": "cr-1234abcd", "nodes": 2, "cpus": 1, "walltime": "00:10:00",
        "directives": "#SBATCH --partition=debug", "prologue": "", "folder": tmp_path,
        "token_file": tmp_path / "auth_token", "temp_dir": "/tmp/rcr-x", "python": "python3",
        "pythonpath": ROOT, "node_ip": "127.0.0.1", "port": 6379, "object_store_mb": 200,
    }  # fmt: skip
    script = render(default_template().read_text(), values)
    assert "{{" not in script and "#SBATCH --nodes=2" in script
    assert "RAY_AUTH_MODE=token" in script and "--head" in script and "srun" in script
    path = tmp_path / "ray.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    with pytest.raises(ClusterConfigError, match="unknown field"):
        render("{{ nope }}", values)


def test_slurm_jobs_files_are_checked_in_one_line(tmp_path):
    jobs = load_slurm_jobs(ROOT / "cluster_configs" / "slurm-dask.yaml")
    assert (jobs.engine, jobs.slurm.name) == ("dask", "local-slurm.yaml")
    for text, words in [
        ("engine: dask\njobqueue: {job_name: x}\n", "jobqueue.job_name is set by the runner"),
        ("engine: ray\nwaltime: 1\n", "unknown key 'waltime' for engine ray"),
        ("engine: ray\nwalltime: soon\n", "is not a Slurm time limit"),
        ("engine: ray\nslurm: none.yaml\n", "'slurm': no such file"),
        ("engine: pbs\n", "engine"),
    ]:
        path = tmp_path / "jobs.yaml"
        path.write_text(text)
        with pytest.raises(ClusterConfigError, match=words) as caught:
            load_slurm_jobs(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_slurm_profiles_refuse_what_they_cannot_do(tmp_path):
    env = {**driver_env(), "RUNNER_STATE_DIR": str(tmp_path / "state")}
    cases = [
        (["submit", "--cluster", "slurm-dask"], "which runner scale does"),
        (["scale", "--cluster", "slurm-dask", "--job", "primes"], "give the node counts"),
        (["scale", "--cluster", "slurm-ray", "--nodes", "1,2", "--address", "127.0.0.1:1"],
         "give no --address"),
        # Its Slurm is not up (a fresh state folder): said before anything is asked of it.
        (["scale", "--cluster", "slurm-dask", "--nodes", "1,2", "--job", "primes"],
         "is not up; start it with: runner cluster up --config"),
    ]  # fmt: skip
    for args, words in cases:
        done = _runner(*args, "--out", str(tmp_path / "out"), env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("runner: error: ") and words in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
    profile = tmp_path / "p.toml"
    profile.write_text('backend = "ray"\nslurm = "../x.yaml"\naddress = "127.0.0.1:1"\n')
    done = _runner("scale", "--cluster", str(profile), "--nodes", "1", env=env)
    assert done.returncode == 2 and "give no 'address' or 'cluster' with it" in done.stderr
