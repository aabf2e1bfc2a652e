"""A real Slurm on this machine, on 127.0.0.1 only: ``munged``, ``slurmctld`` and one ``slurmd``
a node, started and stopped by the pids they had when they started.

Slurm's own daemons from the system packages, configured by
:func:`~cluster_runner.clusters.slurm_conf.render_conf` (why each setting, there). What
:func:`start` does, in order, under the state folder's lock (:mod:`.processes`):

1. a private ``munged`` (Slurm's authentication), with a key made for this cluster and its
   socket in a folder of its own under ``/tmp``: munged requires every folder above its socket
   to be searchable by all (mode 0711), which the private state folder is not; it runs as the
   caller, root or not, so none of the system's munge files is touched;
2. ``slurmctld -D`` (the controller) and ``slurmd -D -N nK`` for each node, in the foreground,
   each in a session of its own, their pids (with start times) recorded as each starts;
3. waits, within ``timeout``, until ``sinfo`` shows every node idle.

:func:`stop` first cancels every job of this Slurm and waits for them to end (a ``slurmd``
that stops leaves its jobs' ``slurmstepd`` processes running: they are children of init, not
of the daemon), then stops the nodes, the controller and munged, in that order, killing what
is left after ``grace`` seconds. A job's processes that outlived all that are found by the
environment Slurm gave them, which names this cluster's ``slurm.conf`` (a file of this state
folder, so of no other Slurm): they are killed too, and never a process by its name.

``SLURM_CONF`` is what a client needs (:func:`driver_env`): ``sbatch``, ``squeue``,
``srun`` then talk to this Slurm, and dask-jobqueue and the Ray template submit to it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from cluster_runner.clusters.processes import (
    LOOPBACK,
    launch,
    live_processes,
    private_folder,
    refuse_running,
    starting,
    state_lock,
    stop_recorded,
    terminate,
    with_children,
    write_state,
)
from cluster_runner.clusters.processes import recorded_status as status  # noqa: F401 - the module's
from cluster_runner.clusters.ray_local import free_port
from cluster_runner.clusters.slurm_conf import (
    DAEMONS,
    LocalSlurm,
    client,
    current_user,
    find_program,
    missing_programs,
    render_conf,
    require_programs,
)
from cluster_runner.errors import ClusterStartError, ExecutionError

ENGINE = "slurm"
#: Memory a node offers at most, MiB: a share of the machine's, never all of it.
_MEMORY_SHARE = 0.8


def require() -> None:
    """Refuse, in one line naming the packages, when Slurm's daemons or munge are missing."""
    require_programs((*DAEMONS, "sinfo", "squeue", "scancel", "munge"), "a local Slurm")


def available() -> bool:
    """Whether a local Slurm can be started here (every program installed)."""
    return not missing_programs((*DAEMONS, "sinfo", "squeue", "scancel", "sbatch", "munge"))


def start(
    folder: Path | str,
    nodes: int = 2,
    *,
    cpus: int = 1,
    port: int = 0,
    timeout: float = 60.0,
    stop_hint: str = "runner cluster down",
) -> dict[str, Any]:
    """Start munged, slurmctld and ``nodes`` slurmd on 127.0.0.1; return the state on disk.

    ``port`` is slurmctld's (0: a free one); each node offers ``cpus`` CPUs. Everything started
    is stopped again if the nodes are not idle within ``timeout`` seconds.
    """
    require()
    folder = private_folder(Path(folder).resolve())
    with state_lock(folder, "up"):
        refuse_running(folder, stop_hint)
        return _start(folder, nodes, cpus, port, timeout)


def _start(folder: Path, nodes: int, cpus: int, port: int, timeout: float) -> dict[str, Any]:
    for sub in ("ctld", "spool"):  # a fresh Slurm: no jobs or spool of an earlier one
        shutil.rmtree(folder / sub, ignore_errors=True)
    for sub in ("ctld", "run", "logs", "spool"):
        (folder / sub).mkdir(mode=0o700, exist_ok=True)
    names = tuple(f"n{i + 1}" for i in range(nodes))
    for name in names:
        (folder / "spool" / name).mkdir(mode=0o700, exist_ok=True)
    # munged wants every folder above its socket searchable by all: a folder of its own.
    munge_dir = Path(tempfile.mkdtemp(prefix="crm-", dir="/tmp" if os.path.isdir("/tmp") else None))
    munge_dir.chmod(0o711)
    memory = int(psutil.virtual_memory().total / 2**20 * _MEMORY_SHARE / nodes)
    spec = LocalSlurm(
        folder=folder,
        cluster_name=f"cr{secrets.token_hex(4)}",
        nodes=names,
        node_ports=tuple(free_port() for _ in names),
        cpus=cpus,
        memory_mb=max(memory, 256),
        controller_port=port or free_port(),
        munge_socket=munge_dir / "munge.socket",
        user=current_user(),
    )
    conf = folder / "slurm.conf"
    state: dict[str, Any] = {
        "engine": ENGINE,
        "folder": str(folder),
        "address": f"{LOOPBACK}:{spec.controller_port}",
        "conf": str(conf),
        "cluster_name": spec.cluster_name,
        "partition": spec.partition,
        "nodes": nodes,
        "node_names": list(names),
        "cpus": cpus,
        "munge_dir": str(munge_dir),
        "processes": [],
        "started": time.time(),
        "up": False,  # True once every node is idle
    }
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = folder / "logs"
    with starting(folder, state, rollback=lambda: _stop(folder, state, grace=5.0)):
        write_state(folder, state)  # before the first process: a killed start is still found
        _write_key(folder / "munge.key")
        conf.write_text(render_conf(spec))
        conf.chmod(0o644)  # read by the job's own commands (srun inside an sbatch script)
        launch(
            state,
            "munged",
            [
                _program("munged"), "--foreground", f"--socket={spec.munge_socket}",
                f"--key-file={folder / 'munge.key'}", f"--log-file={logs / 'munged.log'}",
                f"--pid-file={munge_dir / 'munged.pid'}", f"--seed-file={folder / 'munged.seed'}",
            ],
            env,
            logs / "munged.out",
        )  # fmt: skip
        _wait(lambda: _munge_answers(spec.munge_socket), state, timeout, "munged did not answer")
        launch(state, "slurmctld", [_program("slurmctld"), "-D", "-c", "-i", "-f", str(conf)],
               env, logs / "slurmctld.out")  # fmt: skip
        for name in names:
            launch(state, f"slurmd-{name}", [_program("slurmd"), "-D", "-f", str(conf), "-N",
                   name], env, logs / f"slurmd-{name}.out")  # fmt: skip
        _wait(lambda: _all_idle(state), state, timeout, f"the {nodes} Slurm node(s) are not idle")
    return state


def stop(folder: Path | str, grace: float = 30.0) -> list[int]:
    """Cancel every job, stop the daemons; return the pids that had to be killed.

    Refused, in one line, while another command (a ``start`` under way) holds the folder.
    """
    return stop_recorded(folder, lambda where, state: _stop(where, state, grace))


def _stop(folder: Path, state: dict[str, Any], grace: float) -> list[int]:
    daemons = live_processes(state)
    roles = {e["pid"]: e["role"] for e in state["processes"]}
    if any(roles.get(p.pid) == "slurmctld" for p in daemons):
        _cancel_all(state, wait=min(grace, 30.0))
    jobs = job_processes(state)
    procs = with_children(daemons) + [p for p in jobs if p not in daemons]
    nodes = [p for p in procs if roles.get(p.pid, "").startswith("slurmd-")]
    controller = [p for p in procs if roles.get(p.pid) == "slurmctld"]
    munge = [p for p in procs if roles.get(p.pid) == "munged"]
    killed = terminate(procs, [jobs, nodes, controller, munge], grace)
    killed += [p.pid for p in job_processes(state) if _kill(p)]  # started while we stopped
    if state.get("munge_dir"):
        shutil.rmtree(state["munge_dir"], ignore_errors=True)
    (folder / "state.json").unlink(missing_ok=True)
    return killed


def healthy(state: dict[str, Any]) -> bool:
    """The Slurm came up, and munged, slurmctld and every slurmd are alive."""
    vital = [e for e in state["processes"] if e["role"].split("-")[0] in DAEMONS]
    return state.get("up", True) and bool(vital) and all(e.get("alive") for e in vital)


def connected_nodes(state: dict[str, Any], timeout: float = 10.0) -> list[str]:
    """The nodes slurmctld hears from now, as ``NAME STATE`` (``n1 idle``), from ``sinfo``."""
    done = client(["sinfo", "-h", "-N", "-o", "%N %T"], env=driver_env(state), check=False)
    found = []
    for line in done.stdout.splitlines():
        name, _, node_state = line.partition(" ")
        if node_state and not node_state.endswith("*") and not node_state.startswith("down"):
            found.append(f"{name} {node_state}")
    return sorted(set(found))


def driver_env(state: dict[str, Any]) -> dict[str, str]:
    """What a Slurm client needs to use this Slurm: ``SLURM_CONF``."""
    return {"SLURM_CONF": state["conf"]}


def next_commands(state: dict[str, Any], config: Path) -> list[str]:
    """What ``runner cluster up`` suggests next for this Slurm."""
    return [
        f"export SLURM_CONF={state['conf']}   # then sinfo, squeue, sbatch use it",
        "runner scale --cluster slurm-dask --nodes 1,2 --job primes",
        "runner scale --cluster slurm-ray --nodes 1,2 --job primes",
    ]


def job_processes(state: dict[str, Any]) -> list[psutil.Process]:
    """The processes of this Slurm's jobs: ``slurmstepd`` and what it runs, started since the
    Slurm started, whose environment names this cluster's ``slurm.conf``.

    Never this process or one above it (a shell may export ``SLURM_CONF``), and never a process
    without a job: a client that only exported ``SLURM_CONF`` is no job's.
    """
    conf = state.get("conf")
    if not conf:
        return []
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "name", "create_time"]):
        if proc.pid in mine or (proc.info["create_time"] or 0) < state["started"] - 1:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        in_job = "SLURM_JOB_ID" in env or (proc.info["name"] or "").startswith("slurmstepd")
        if env.get("SLURM_CONF") == conf and in_job:
            found.append(proc)
    return found


# --- helpers --------------------------------------------------------------------------------


def _program(name: str) -> str:
    found = find_program(name)
    if found is None:
        require()
    return str(found)


def _write_key(path: Path) -> None:
    """A munge key made for this cluster: 1024 random bits, readable by its owner only."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(128))


def _munge_answers(socket: Path) -> bool:
    if not socket.exists():
        return False
    done = client(["munge", "-n", "-S", str(socket)], check=False)
    return done.returncode == 0


def _all_idle(state: dict[str, Any]) -> bool:
    try:
        nodes = connected_nodes(state)
    except ExecutionError:
        return False
    idle = [n for n in nodes if n.split()[1] in ("idle", "mixed", "allocated")]
    return len(idle) == state["nodes"]


def _wait(ready, state: dict[str, Any], timeout: float, what: str) -> None:
    """Wait up to ``timeout`` s for ``ready()``; fail at once if a daemon has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {p.pid for p in live_processes(state)}
        for item in state["processes"]:
            if item["pid"] not in live:
                raise ClusterStartError(
                    f"the Slurm {item['role']} exited at start; see {item['log']} and the logs"
                    f" in {state['folder']}/logs"
                )
        if ready():
            return
        time.sleep(0.25)
    raise ClusterStartError(f"{what} within {timeout:g} s; see the logs in {state['folder']}/logs")


def _cancel_all(state: dict[str, Any], wait: float) -> None:
    """Cancel every job this Slurm knows of and wait up to ``wait`` s for the queue to empty."""
    env = driver_env(state)
    try:
        jobs = client(["squeue", "-h", "-o", "%i"], env=env, check=False).stdout.split()
        if jobs:
            client(["scancel", *jobs], env=env, check=False)
        deadline = time.monotonic() + wait
        while jobs and time.monotonic() < deadline:
            time.sleep(0.5)
            jobs = client(["squeue", "-h", "-o", "%i"], env=env, check=False).stdout.split()
    except ExecutionError:
        pass  # a controller that does not answer: its jobs' processes are ended below


def _kill(proc: psutil.Process) -> bool:
    try:
        proc.kill()
        return True
    except psutil.NoSuchProcess:
        return False
