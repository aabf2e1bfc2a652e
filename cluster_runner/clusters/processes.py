"""A cluster's processes on disk: the state file, and stopping exactly what it records.

Both local clusters (:mod:`~cluster_runner.clusters.dask_local`,
:mod:`~cluster_runner.clusters.ray_local`) write ``state.json`` in their state folder: the
address, and every process started, each with its pid *and its start time*. A pid the
operating system has since given to another program therefore never matches, and stopping a
cluster ends the processes it started, and their children, and nothing else: never a search
by name (``pkill``), never ``ray stop`` (which ends every Ray process on the machine).

The state is never lost (issue 15):

- it is written before the first process starts and again as each one starts
  (:func:`launch`), with ``up: false`` until the cluster is up, so that a start killed halfway
  (SIGKILL, a closed terminal) leaves a cluster that ``status`` shows and ``stop`` ends;
- one command at a time works on a state folder (:func:`state_lock`, a ``flock`` the kernel
  releases when its holder dies): a second ``up`` of the same config is refused in one line,
  as is a ``down`` while an ``up`` is starting;
- the folder is private (:func:`private_folder` makes it 0700, its files are 0600) and is
  trusted only when it is (:func:`check_private`): a state file names the processes ``down``
  ends, so one that another user owns or can write is refused, never followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from cluster_runner.errors import ClusterConfigError, UsageError
from cluster_runner.execution.tasks import SINGLE_THREAD_ENV

LOOPBACK = "127.0.0.1"
#: Pinned to one thread in every worker, so that N workers use N cores.
THREAD_ENV = SINGLE_THREAD_ENV
#: Two processes started this close together are the same one (psutil rounds start times).
_SAME_START_S = 0.05


def read_state(folder: Path | str) -> dict[str, Any] | None:
    """The state recorded in ``folder``, or ``None`` if no cluster was started from it.

    The folder and the file must be this user's and writable by no one else
    (:func:`check_private`): a state file names the processes that ``down`` ends.
    """
    path = Path(folder) / "state.json"
    if not path.exists():
        return None
    check_private(Path(folder))
    check_private(path)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClusterConfigError(
            f"{path} is not a cluster state file written by cluster-runner ({exc})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("processes"), list):
        raise ClusterConfigError(f"{path} is not a cluster state file written by cluster-runner")
    return state


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``folder/state.json`` at once (readers never see half a file)."""
    tmp = folder / "state.json.tmp"
    write_private(tmp, json.dumps(state, indent=2) + "\n")
    tmp.replace(folder / "state.json")


def private_folder(folder: Path) -> Path:
    """``folder``, made if need be (mode 0700, and its parent too if that is new), and checked
    private (:func:`check_private`). Returns it."""
    parent = folder.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UsageError(
            f"cannot make the state folder {folder}: {exc.strerror}; choose another --state-dir"
        ) from None
    check_private(folder)
    return folder


def check_private(path: Path) -> None:
    """Refuse a state folder or file that is not this user's own, or that others can write.

    Whoever can write a cluster's state file chooses which processes ``down`` ends; whoever
    owns the folder above it can swap the folder. So: ``path`` is a folder or file owned by
    this user, writable by no one else, and not a symbolic link; its parent is owned by this
    user or by root, and is writable by others only if it is sticky (as ``/tmp`` is).
    """
    uid = os.getuid()
    try:
        info = path.lstat()
        above = path.parent.stat()
    except OSError as exc:
        raise UsageError(f"cannot inspect the cluster state at {path}: {exc.strerror}") from None
    what = "state folder" if stat.S_ISDIR(info.st_mode) else "state file"
    hint = "choose another --state-dir (or RUNNER_STATE_DIR)"
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"refusing the {what} {path}: it is a symbolic link; {hint}")
    if info.st_uid != uid:
        raise UsageError(
            f"refusing the {what} {path}: it belongs to uid {info.st_uid}, not to you"
            f" (uid {uid}); {hint}"
        )
    if info.st_mode & 0o022:
        raise UsageError(
            f"refusing the {what} {path}: others can write to it (mode"
            f" {stat.S_IMODE(info.st_mode):o}); make it private (chmod go-w {path}) or {hint}"
        )
    if above.st_uid not in (uid, 0) or (above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX):
        raise UsageError(
            f"refusing the {what} {path}: the folder above it, {path.parent}, is not yours"
            f" alone (owner uid {above.st_uid}, mode {stat.S_IMODE(above.st_mode):o}); {hint}"
        )


@contextlib.contextmanager
def state_lock(folder: Path, action: str) -> Iterator[None]:
    """Hold ``folder``'s lock while ``action`` (``up``, ``down``) runs; refuse if another holds it.

    A ``flock`` on ``folder/lock``: the kernel releases it when its holder exits, however it
    exits, so a killed ``up`` never leaves the folder locked. The holder's pid is written in
    the file, for the refusal's words.
    """
    path = folder / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise UsageError(
                f"another 'runner cluster' command{who} is using {folder} right now;"
                f" wait for it to finish, then try {action} again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (it may hold or name a token)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def refuse_running(folder: Path, stop_hint: str) -> None:
    """Raise a :class:`UsageError` if a cluster recorded in ``folder`` still runs (or is
    still starting: a state file is written before its first process starts)."""
    state = read_state(folder) if folder.exists() else None
    if state is not None and live_processes(state):
        where = state.get("address") or "not up yet: its start was interrupted"
        raise UsageError(
            f"a cluster started from {folder} is still running ({where});"
            f" stop it first: {stop_hint}"
        )


def launch(
    state: dict[str, Any], role: str, command: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen:
    """Start ``command`` in a session of its own, logging to ``log``, and record it.

    A session of its own: it outlives the command that started it and ignores the terminal's
    Ctrl-C.
    """
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        state["processes"].append(entry(proc.pid, role, log))
    except psutil.NoSuchProcess:  # gone already: recorded by pid, for the start's own check
        state["processes"].append({"pid": proc.pid, "create_time": 0.0, "role": role,
                                   "log": str(log)})  # fmt: skip
    write_state(Path(state["folder"]), state)  # known at once, should this command be killed
    return proc


def entry(pid: int, role: str, log: Path | None = None) -> dict[str, Any]:
    """A process as the state file records it."""
    proc = psutil.Process(pid)
    return {
        "pid": pid,
        "create_time": proc.create_time(),
        "role": role,
        "log": str(log) if log else None,
    }


@contextlib.contextmanager
def starting(
    folder: Path,
    state: dict[str, Any],
    rollback: Callable[[], object],
    role: Any = None,
) -> Iterator[dict[str, Any]]:
    """The start of a cluster recorded in ``folder``: up, or stopped again, and recorded.

    The block starts the processes (each recorded in ``state`` as it starts). When it ends,
    their children are recorded too and the cluster is marked ``up``; when it raises
    (a timeout, Ctrl-C), ``rollback`` stops what did start, after the state is written, so
    that a later ``stop`` still finds anything rollback could not end. Either way the state
    file holds the last word.
    """
    try:
        yield state
        record_children(state, role=role)
        state["up"] = True
    except BaseException:
        write_state(folder, state)
        rollback()
        raise
    write_state(folder, state)


def recorded_status(folder: Path | str) -> dict[str, Any] | None:
    """The state recorded in ``folder``, each process marked ``alive`` or not; ``None`` if
    none was started (every engine's ``status``)."""
    state = read_state(Path(folder).resolve())
    return None if state is None else mark_alive(state)


def stop_recorded(
    folder: Path | str, stop: Callable[[Path, dict[str, Any]], list[int]]
) -> list[int]:
    """``stop(folder, state)`` on the cluster recorded in ``folder``, under its lock; the pids
    it had to kill ([] when nothing is recorded). Refused, in one line, while another command
    (a ``start`` under way) holds the folder."""
    folder = Path(folder).resolve()
    if read_state(folder) is None:
        return []
    with state_lock(folder, "down"):
        state = read_state(folder)
        return stop(folder, state) if state is not None else []


def record_children(state: dict[str, Any], role: Any = None) -> None:
    """Add the processes the recorded ones started, so that stopping knows them too.

    ``role(child, parent_entry)`` names each child; by default ``PARENT/child``.
    """
    known = {e["pid"] for e in state["processes"]}
    for parent in list(state["processes"]):
        try:
            children = psutil.Process(parent["pid"]).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            if child.pid in known:
                continue
            try:
                name = role(child, parent) if role else f"{parent['role']}/child"
                state["processes"].append(entry(child.pid, name))
            except psutil.NoSuchProcess:
                continue
            known.add(child.pid)


def live_processes(state: dict[str, Any]) -> list[psutil.Process]:
    """The recorded processes still running, matched by pid *and* start time."""
    live = []
    for item in state.get("processes", []):
        try:
            proc = psutil.Process(item["pid"])
            if abs(proc.create_time() - item["create_time"]) < _SAME_START_S and (
                proc.status() != psutil.STATUS_ZOMBIE
            ):
                live.append(proc)
        except psutil.NoSuchProcess:
            continue
    return live


def with_children(procs: list[psutil.Process]) -> list[psutil.Process]:
    """``procs`` and every process they have started since (Ray starts workers on demand)."""
    found = list(procs)
    for proc in procs:
        try:
            found.extend(c for c in proc.children(recursive=True) if c not in found)
        except psutil.NoSuchProcess:
            continue
    return found


def mark_alive(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with each process marked ``alive`` (True or False)."""
    live = {p.pid for p in live_processes(state)}
    for item in state["processes"]:
        item["alive"] = item["pid"] in live
    return state


def terminate(
    procs: list[psutil.Process], order: Sequence[list[psutil.Process]], grace: float
) -> list[int]:
    """End ``procs``: SIGTERM to each group of ``order`` in turn, then SIGKILL to the rest.

    Each group gets ``grace`` seconds to exit after its SIGTERM (workers leave a scheduler in
    order before it stops; a holder shuts its nodes down); whatever of ``procs`` is still
    running five seconds after the last group is killed. Returns the pids that were killed.
    """
    for group in order:
        for proc in group:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(group, timeout=grace)
    _gone, alive = psutil.wait_procs(procs, timeout=5.0)
    killed = []
    for proc in alive:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=10.0)
    return killed


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (zombies waiting for their parent do not count)."""
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            continue
    return left


def survivors(procs: list[psutil.Process], timeout: float) -> list[str]:
    """Wait up to ``timeout`` s for ``procs`` to end; describe those still running (``PID CMD``)."""
    deadline = time.monotonic() + timeout
    left = running(procs)
    while left and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.5)
        left = running(left)
    out = []
    for proc in left:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            continue
    return out


def python_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment plus ``extra``, with this package importable in every child.

    Engine workers unpickle the runner's task functions, so they must import
    ``cluster_runner`` whether or not it is installed where they run.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def modified_environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, unset) environment variables for a while, then restore them."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stop_and_report(stop: Any, folder: Path | str, grace: float) -> str:
    """Run an engine's ``stop(folder, grace)`` and say in one line what it did (the scripts)."""
    if read_state(Path(folder).resolve()) is None:
        return f"no cluster recorded in {folder}"
    killed = stop(folder, grace=grace)
    return "stopped" + (f" (killed {len(killed)} that did not stop in time)" if killed else "")


def process_table(state: dict[str, Any], width: int) -> str:
    """A cluster's recorded processes, one line each: role, pid, alive or gone (the scripts)."""
    return "\n".join(
        f"  {entry['role']:<{width}} pid {entry['pid']:<8} {'alive' if entry['alive'] else 'gone'}"
        for entry in state["processes"]
    )
