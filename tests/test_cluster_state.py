"""``runner cluster``'s state is never lost, and never trusted from someone else.

Concurrency: two ``up`` of one config at once start one cluster (the other is refused in one
line, by the state folder's lock); ``down`` while ``up`` is starting is refused, then works.
Interrupted starts: an ``up`` killed by SIGKILL halfway leaves a state file that ``status``
shows and ``down`` ends, every process of it (Dask and Ray, whose token file goes too); an
``up`` ended by SIGTERM stops what it started itself. A config whose engine is not installed
is refused before anything is made. Privacy: the state folder is made 0700, its files 0600,
and a folder or file that others can write, or that is not the user's, is refused by ``up``,
``status`` and ``down`` alike (a state file planted there would choose which processes
``down`` ends).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster_runner.cli import main

from clusters import ROOT, driver_env, ray_lock, short_tempdir, survivors
from conftest import runner_command


def _up(config: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*runner_command(), "cluster", "up", "--config", config], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _runner(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*runner_command(), *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("runner: error: ")
    return lines[0]


def _state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _descendants(proc: subprocess.Popen, seen: dict[int, psutil.Process]) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(proc.pid).children(recursive=True):
            seen.setdefault(child.pid, child)


def _wait_for(condition, proc: subprocess.Popen, seen: dict, timeout: float = 120.0) -> None:
    """Poll ``condition()`` while sampling ``proc``'s descendants; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        assert proc.poll() is None, proc.communicate()
        _descendants(proc, seen)
        time.sleep(0.05)
    _descendants(proc, seen)


def _kill_all(procs) -> None:
    for proc in procs:  # a failed check must not leak them: ours, by pid
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


@pytest.fixture
def state_root():
    root = short_tempdir("rcr-state-")
    yield root
    import shutil

    shutil.rmtree(root, ignore_errors=True)


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.cluster
def test_two_ups_at_once_start_one_cluster_and_the_other_is_refused(state_root):
    env = driver_env(RUNNER_STATE_DIR=str(state_root))
    folder = state_root / "local-dask"
    first, second = _up("local-dask", env), _up("local-dask", env)
    seen: dict[int, psutil.Process] = {}
    try:
        outcomes = []
        for proc in (first, second):
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                _descendants(proc, seen)
                time.sleep(0.05)
            out, err = proc.communicate(timeout=30)
            outcomes.append((proc.returncode, out, err))
        codes = sorted(code for code, _, _ in outcomes)
        assert codes == [0, 2], outcomes
        (refused,) = [err for code, _, err in outcomes if code == 2]
        assert "is using" in _one_line(refused) or "still running" in _one_line(refused)
        assert sum("is up at" in out for _, out, _ in outcomes) == 1
        state = _state(folder)
        assert state is not None and state["up"] is True
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / "state.json").stat().st_mode) == 0o600
        down = _runner("cluster", "down", "--config", "local-dask", env=env)
        assert down.returncode == 0 and "none left" in down.stdout, down.stderr
    finally:
        left = survivors(list(seen.values()), timeout=20.0)
        _kill_all(seen.values())
    assert not left, f"processes of the two ups outlived down: {left}"


@pytest.mark.cluster
def test_down_while_up_is_starting_is_refused_then_ends_the_cluster(state_root):
    env = driver_env(RUNNER_STATE_DIR=str(state_root))
    folder = state_root / "local-dask"
    up = _up("local-dask", env)
    seen: dict[int, psutil.Process] = {}
    try:
        _wait_for(lambda: (_state(folder) or {}).get("processes"), up, seen)
        early = _runner("cluster", "down", "--config", "local-dask", env=env)
        if up.poll() is None or early.returncode == 2:  # it may have finished meanwhile
            assert early.returncode == 2
            assert "is using" in _one_line(early.stderr)
        _out, err = up.communicate(timeout=120)
        assert up.returncode == 0, err
        down = _runner("cluster", "down", "--config", "local-dask", env=env)
        assert down.returncode == 0, down.stderr
    finally:
        left = survivors(list(seen.values()), timeout=20.0)
        _kill_all(seen.values())
    assert not left, left
    assert _state(folder) is None


# --- interrupted starts -----------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("engine", "started"),
    # When to kill: Dask once the scheduler and one node run; Ray once the holder has started
    # the GCS (before the nodes are up).
    [("dask", 2), ("ray", 2)],
)
def test_up_killed_halfway_is_found_by_status_and_ended_by_down(engine, started, state_root):
    env = driver_env(RUNNER_STATE_DIR=str(state_root))
    config = f"local-{engine}"
    folder = state_root / config
    lock = ray_lock() if engine == "ray" else contextlib.nullcontext()
    seen: dict[int, psutil.Process] = {}
    with lock:
        up = _up(config, env)
        try:
            _wait_for(lambda: len((_state(folder) or {}).get("processes", ())) >= started, up, seen)
            up.kill()
            up.communicate(timeout=30)
            state = _state(folder)
            assert state is not None and state["up"] is False
            status = _runner("cluster", "status", "--config", config, env=env)
            assert status.returncode == 1, status.stdout
            assert "is not up (its start stopped)" in status.stdout
            assert f"runner cluster down --config cluster_configs/{config}.yaml" in status.stdout
            again = _runner("cluster", "up", "--config", config, env=env)
            assert again.returncode == 2
            assert "still running" in _one_line(again.stderr)
            procs = list(seen.values())
            down = _runner("cluster", "down", "--config", config, "--grace", "5", env=env)
            assert down.returncode == 0, down.stderr
            assert "none left" in down.stdout
            left = survivors(procs, timeout=20.0)
        finally:
            _kill_all(seen.values())
    assert not left, f"processes of the killed up outlived down: {left}"
    assert _state(folder) is None
    assert not (folder / "auth_token").exists()  # Ray's token goes with its cluster
    if engine == "ray":
        assert not Path(state["ray_tmpdir"]).exists()


@pytest.mark.cluster
def test_up_ended_by_sigterm_stops_what_it_started(state_root):
    env = driver_env(RUNNER_STATE_DIR=str(state_root))
    folder = state_root / "local-dask"
    up = _up("local-dask", env)
    seen: dict[int, psutil.Process] = {}
    try:
        _wait_for(lambda: len((_state(folder) or {}).get("processes", ())) >= 2, up, seen)
        up.send_signal(signal.SIGTERM)
        _out, err = up.communicate(timeout=60)
        left = survivors(list(seen.values()), timeout=20.0)
    finally:
        _kill_all(seen.values())
    assert up.returncode == 143, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not left, left
    assert _state(folder) is None


@pytest.mark.parametrize(("engine", "package"), [("dask", "distributed"), ("ray", "ray")])
def test_up_without_the_engine_names_the_extra_and_makes_nothing(engine, package, state_root):
    code = (
        f"import sys; sys.modules[{package!r}] = None;"
        "from cluster_runner.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "cluster", "up", "--config", f"local-{engine}",
         "--state-dir", str(state_root / "state")],
        cwd=ROOT, env=driver_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    line = _one_line(run.stderr)
    assert f"needs {package}, which is not installed: pip install 'cluster-runner[{engine}]'" in (
        line
    )
    assert not (state_root / "state").exists()


# --- privacy ----------------------------------------------------------------------------------


@pytest.fixture
def sleeper():
    """A process of ours that a planted state file names, which nothing may end."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait(timeout=30)


def _plant(folder: Path, pid: int, mode: int = 0o600) -> None:
    """A state file in ``folder`` that names ``pid`` as a cluster's scheduler."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "engine": "dask", "folder": str(folder), "address": "tcp://127.0.0.1:1", "nodes": 1,
        "up": True,
        "processes": [{"pid": pid, "create_time": psutil.Process(pid).create_time(),
                       "role": "scheduler", "log": None}],
    }  # fmt: skip
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "state.json").chmod(mode)


COMMANDS = ["up", "status", "down"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_state_folder_others_can_write_is_refused(command, sleeper, state_root, capsys):
    folder = state_root / "local-dask"
    _plant(folder, sleeper.pid)
    folder.chmod(0o777)
    args = ["cluster", command, "--config", "local-dask", "--state-dir", str(state_root)]
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"refusing the state folder {folder}: others can write to it (mode 777)" in line
    assert sleeper.poll() is None, "down ended a process named by a planted state file"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_state_file_others_can_write_is_refused(command, sleeper, state_root, capsys):
    folder = state_root / "local-dask"
    _plant(folder, sleeper.pid, mode=0o666)
    folder.chmod(0o700)
    args = ["cluster", command, "--config", "local-dask", "--state-dir", str(state_root)]
    assert main(args) == 2
    assert "refusing the state file" in _one_line(capsys.readouterr().err)
    assert sleeper.poll() is None


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a folder to another user")
@pytest.mark.parametrize("command", COMMANDS)
def test_a_state_folder_of_another_user_is_refused(command, sleeper, state_root, capsys):
    folder = state_root / "local-dask"
    _plant(folder, sleeper.pid)
    folder.chmod(0o700)
    os.chown(folder, 65534, 65534)
    args = ["cluster", command, "--config", "local-dask", "--state-dir", str(state_root)]
    assert main(args) == 2
    assert "it belongs to uid 65534, not to you" in _one_line(capsys.readouterr().err)
    assert sleeper.poll() is None


def test_a_state_root_others_can_write_is_refused(sleeper, state_root, capsys):
    folder = state_root / "local-dask"
    _plant(folder, sleeper.pid)
    folder.chmod(0o700)
    state_root.chmod(0o777)  # writable by all, and not sticky: the folder could be swapped
    args = ["cluster", "down", "--config", "local-dask", "--state-dir", str(state_root)]
    assert main(args) == 2
    assert "the folder above it" in _one_line(capsys.readouterr().err)
    assert sleeper.poll() is None


def test_a_state_folder_linked_to_one_others_can_write_is_refused(sleeper, state_root, capsys):
    shared = state_root / "shared"
    _plant(shared, sleeper.pid)
    shared.chmod(0o777)
    (state_root / "local-dask").symlink_to(shared)
    args = ["cluster", "down", "--config", "local-dask", "--state-dir", str(state_root)]
    assert main(args) == 2
    assert "others can write to it" in _one_line(capsys.readouterr().err)
    assert sleeper.poll() is None


def test_a_new_state_folder_is_private(state_root):
    from cluster_runner.clusters.processes import private_folder

    folder = private_folder(state_root / "new" / "local-dask")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700


def test_two_commands_writing_into_one_out_folder_keep_their_records_apart(tmp_path):
    """Each command has its own file (a fresh name), written one whole record at a time."""
    from cluster_runner.results import read_records

    out = tmp_path / "out"
    job = ["--job", str(ROOT / "jobs" / "noop.toml"), "--set", "tasks=8"]
    both = [
        subprocess.Popen(
            [
                *runner_command(),
                "submit",
                *job,
                "--backend",
                backend,
                "--workers",
                "1",
                "--repeat",
                "5",
                "--out",
                str(out),
            ],
            cwd=tmp_path,
            env=driver_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for backend in ("serial", "threads")
    ]
    for proc in both:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    files = sorted(out.glob("*.jsonl"))
    assert len(files) == 2
    for path in files:
        records = list(read_records([path]))
        assert len(records) == 5 and len({r.backend.name for r in records}) == 1
