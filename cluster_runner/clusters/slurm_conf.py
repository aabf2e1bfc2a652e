"""Slurm's programs and files: where they are, a ``slurm.conf`` for one machine, and the client
commands (``squeue``, ``scancel``, ``sinfo``, ``scontrol``) as Python calls.

The local Slurm (:mod:`.slurm_local`) is Slurm's own daemons, from the system packages
(Debian: ``apt-get install slurm-wlm munge``, Slurm 22.05), configured by :func:`render_conf` for
this machine only: every daemon on 127.0.0.1, on ports of its own, with its state, spool, pid
and log files in the cluster's state folder, and plugins that need neither cgroups nor a
database, so that it runs in a container (``proctrack/linuxproc``: a job's processes are found
by their parent; ``task/none``; no accounting). Several nodes share the machine through
Slurm's multiple-slurmd support (``slurmd -N NAME``, one ``NodeName`` a node, each on its own
port); Debian's build has it. Each node offers ``cpus`` of the machine's CPUs
(``SlurmdParameters=config_overrides``: the configuration, not the hardware, says what a node
has), so that two nodes on a two-core machine share its cores out rather than both claim them.

Every client command runs with ``SLURM_CONF`` naming the cluster's file (or the caller's own
environment, on a real cluster) and a bounded timeout: a controller that does not answer is a
one-line error, never a hang.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster_runner.errors import BackendUnavailableError, ExecutionError

#: The daemons a local Slurm runs, and the client commands the runner calls.
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "munge", "unmunge")
#: Where Debian puts the daemons (not on a plain user's PATH).
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
#: Seconds a client command may take before the controller counts as not answering.
CLIENT_TIMEOUT_S = 30.0
INSTALL_HINT = "apt-get install slurm-wlm munge (Debian, Ubuntu)"


def find_program(name: str) -> str | None:
    """The path of Slurm's or munge's program ``name``: on PATH, or in the sbin folders."""
    found = shutil.which(name)
    if found:
        return found
    for folder in _SBIN:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_programs(names: Sequence[str] = DAEMONS + CLIENTS) -> list[str]:
    """Those of ``names`` that are not installed."""
    return [name for name in names if find_program(name) is None]


def require_programs(names: Sequence[str], what: str) -> None:
    """Refuse, in one line naming the packages, when one of ``names`` is not installed."""
    missing = missing_programs(names)
    if missing:
        raise BackendUnavailableError(
            f"{what} needs Slurm's {', '.join(missing)}, not installed here: {INSTALL_HINT}"
        )


def version() -> str | None:
    """Slurm's version, e.g. ``22.05.8`` (``sinfo -V``); None when it is not installed."""
    program = find_program("sinfo")
    if program is None:
        return None
    try:
        out = subprocess.run(
            [program, "-V"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.split()[-1] if out.split() else None


@dataclass(frozen=True)
class LocalSlurm:
    """What :func:`render_conf` writes into a ``slurm.conf``; one comment a field."""

    folder: Path  # the state folder: state, spool, pid and log files live under it
    cluster_name: str  # unique per start: marks the jobs' processes (SLURM_CLUSTER_NAME)
    nodes: tuple[str, ...]  # node names, n1, n2, ...
    node_ports: tuple[int, ...]  # the slurmd port of each node, on 127.0.0.1
    cpus: int  # CPUs each node offers
    memory_mb: int  # memory each node offers (RealMemory)
    controller_port: int  # slurmctld's port on 127.0.0.1
    munge_socket: Path  # the private munged's socket
    user: str  # SlurmUser: root, or the user who started it
    partition: str = "debug"


def render_conf(spec: LocalSlurm) -> str:
    """The ``slurm.conf`` of a Slurm on this machine only (see the module docstring)."""
    folder = spec.folder
    lines = [
        "# Written by cluster-runner (runner cluster up): a Slurm on 127.0.0.1 only.",
        f"ClusterName={spec.cluster_name}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={spec.controller_port}",
        f"SlurmdPort={spec.node_ports[0]}",
        f"SlurmUser={spec.user}",
        f"SlurmdUser={spec.user}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={spec.munge_socket}",
        # No cgroups in a container: processes tracked by parent, no task binding.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",  # CPUs are what jobs share out; memory is not counted
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        # Listen on the configured address (127.0.0.1), not on every interface.
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",  # the nodes have what this file says
        "InactiveLimit=0",
        "KillWait=5",  # seconds from a cancelled job's SIGTERM to its SIGKILL
        "MinJobAge=60",  # an ended job stays visible (scontrol show job) this long
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        f"StateSaveLocation={folder / 'ctld'}",
        f"SlurmdSpoolDir={folder / 'spool' / '%n'}",
        f"SlurmctldPidFile={folder / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'run' / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={folder / 'logs' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'logs' / 'slurmd-%n.log'}",
    ]
    for name, port in zip(spec.nodes, spec.node_ports, strict=True):
        lines.append(
            f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port}"
            f" CPUs={spec.cpus} RealMemory={spec.memory_mb} State=UNKNOWN"
        )
    lines.append(
        f"PartitionName={spec.partition} Nodes={','.join(spec.nodes)} Default=YES"
        " MaxTime=INFINITE State=UP"
    )
    return "\n".join(lines) + "\n"


def current_user() -> str:
    """The name of the user running this process (Slurm's ``SlurmUser``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


# --- client commands ---------------------------------------------------------------------------


def client(
    args: Sequence[str], env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run Slurm client command ``args`` (``["squeue", "-h"]``) with ``env`` added to this
    environment; a controller that does not answer within :data:`CLIENT_TIMEOUT_S` seconds, or a
    command that fails (with ``check``), is one :class:`ExecutionError` line."""
    program = find_program(args[0])
    if program is None:
        require_programs([args[0]], "this")
    try:
        done = subprocess.run(
            [program, *args[1:]],
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_S,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ExecutionError(
            f"{' '.join(args[:2])} did not answer within {CLIENT_TIMEOUT_S:g} s: is slurmctld up?"
        ) from None
    if check and done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise ExecutionError(
            f"{' '.join(args[:2])} failed (exit {done.returncode}): {why[-1] if why else '?'}"
        )
    return done


def job_states(
    job_ids: Sequence[str], env: Mapping[str, str] | None = None
) -> dict[str, tuple[str, str]]:
    """``job id -> (state, node list)`` of the jobs still known to the controller.

    Jobs that ended are asked one by one with ``scontrol show job`` (the controller remembers
    them for ``MinJobAge`` seconds), so that a cancelled job reads ``CANCELLED`` and one past its
    time limit ``TIMEOUT``; a job it has forgotten is absent.
    """
    if not job_ids:
        return {}
    done = client(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T %N"], env=env, check=False)
    _answered(done, "squeue")
    states: dict[str, tuple[str, str]] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    for job in job_ids:
        if job in states:
            continue
        done = client(["scontrol", "-o", "show", "job", job], env=env, check=False)
        _answered(done, "scontrol show job")
        shown = done.stdout
        fields = dict(f.split("=", 1) for f in shown.split() if "=" in f)
        if "JobState" in fields:
            nodes = fields.get("NodeList", "")
            states[job] = (fields["JobState"], "" if nodes == "(null)" else nodes)
    return states


def _answered(done: subprocess.CompletedProcess, what: str) -> None:
    """Raise :class:`ExecutionError` unless the controller answered (an unknown job id is an
    answer: the job is long gone)."""
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise ExecutionError(f"{what}: {why[-1] if why else f'exit {done.returncode}'}")


def jobs_named(name: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The ids of this user's jobs called ``name`` that are queued or running."""
    done = client(["squeue", "-h", "-u", current_user(), "-n", name, "-o", "%i"], env=env)
    return done.stdout.split()


def cancel(job_ids: Sequence[str] = (), name: str | None = None, env=None) -> None:
    """``scancel`` the jobs ``job_ids``, and this user's jobs called ``name``; quietly, as a job
    that has ended already is no error here."""
    if job_ids:
        client(["scancel", *job_ids], env=env, check=False)
    if name:
        client(["scancel", "-u", current_user(), "-n", name], env=env, check=False)


def hostnames(nodelist: str, env: Mapping[str, str] | None = None) -> list[str]:
    """``n[1-2]`` -> ``["n1", "n2"]`` (``scontrol show hostnames``)."""
    if not nodelist:
        return []
    return client(["scontrol", "show", "hostnames", nodelist], env=env).stdout.split()


#: Job states after which a job's processes are gone or going.
ENDED = frozenset(
    {"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE", "OUT_OF_MEMORY", "COMPLETING"}
)  # fmt: skip
