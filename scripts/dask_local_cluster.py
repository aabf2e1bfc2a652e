#!/usr/bin/env python
"""Start, inspect and stop a Dask cluster on 127.0.0.1, to try ``runner --address`` on one machine.

    python scripts/dask_local_cluster.py start --nodes 2     # a scheduler and 2 workers
    runner submit --job jobs/full.toml --backend dask --address tcp://127.0.0.1:PORT
    python scripts/dask_local_cluster.py status
    python scripts/dask_local_cluster.py stop

``start`` runs Dask's own command-line tools: one ``dask scheduler`` and ``--nodes`` ``dask
worker`` processes (each a nanny and its worker process, ``--threads`` threads), every one of
them listening on 127.0.0.1 only, with BLAS/OpenMP pinned to one thread per worker. They run in
a session of their own, so they outlive this script and ignore the terminal's Ctrl-C. Their
pids (with their start times, so a pid the OS has since reused is never touched), ports and log
files are written to ``state.json`` in ``--dir``.

``stop`` ends exactly those processes, and the children they started: SIGTERM first, so
workers leave the scheduler in order, then SIGKILL for any still alive after ``--grace``
seconds. It never looks for other Dask processes on the machine.

The functions :func:`start`, :func:`stop` and :func:`status` are the same steps for Python
callers (the test suite's ``tests/clusters.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

DEFAULT_DIR = Path(tempfile.gettempdir()) / f"cluster-runner-{os.getuid()}" / "dask"
LOOPBACK = "127.0.0.1"
#: Pinned to one thread in every worker, so that N workers use N cores.
THREAD_ENV = dict.fromkeys(
    ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"), "1"
)


class ClusterError(RuntimeError):
    """The cluster could not be started, or the state folder is not usable."""


def dask_command() -> list[str]:
    """Dask's CLI: the ``dask`` script beside this interpreter, on PATH, or ``python -m dask``."""
    beside = Path(sys.executable).with_name("dask")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("dask")
    return [found] if found else [sys.executable, "-m", "dask"]


def start(
    folder: Path | str = DEFAULT_DIR,
    nodes: int = 2,
    *,
    threads: int = 1,
    port: int = 0,
    dashboard: bool = False,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Start a scheduler and ``nodes`` workers on 127.0.0.1; return the state written to disk.

    ``port`` 0 lets the scheduler pick a free port (read back from its scheduler file), so
    that parallel callers never race for one. Everything started is stopped again if the
    cluster does not come up within ``timeout`` seconds.
    """
    folder = Path(folder).resolve()
    _refuse_running(folder)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    env = {**os.environ, **THREAD_ENV}
    state: dict[str, Any] = {
        "engine": "dask",
        "folder": str(folder),
        "address": None,
        "dashboard": None,
        "processes": [],
        "started": time.time(),
    }
    # Each process serves HTTP (health, metrics; the dashboard with --dashboard) on
    # --dashboard-address, all interfaces port 8787 unless told: keep it on loopback.
    dashboard_args = ["--dashboard-address", f"{LOOPBACK}:0"]
    if not dashboard:
        dashboard_args.append("--no-dashboard")
    try:
        _launch(
            state,
            "scheduler",
            [
                *dask_command(), "scheduler", "--host", LOOPBACK, "--port", str(port),
                "--scheduler-file", str(scheduler_file), *dashboard_args,
            ],
            env,
        )  # fmt: skip
        info = _wait_for_file(scheduler_file, state, timeout)
        state["address"] = info["address"]
        if dashboard and "dashboard" in info.get("services", {}):
            state["dashboard"] = f"http://{LOOPBACK}:{info['services']['dashboard']}/status"
        for i in range(nodes):
            _launch(
                state,
                f"node-{i}",
                [
                    *dask_command(), "worker", state["address"], "--host", LOOPBACK,
                    "--nworkers", "1", "--nthreads", str(threads), "--name", f"node-{i}",
                    "--local-directory", str(folder / f"node-{i}"), "--death-timeout", "60",
                    *dashboard_args,
                ],
                env,
            )  # fmt: skip
        _wait_for_workers(state, nodes, timeout)
        _record_children(state)
    except BaseException:
        _write_state(folder, state)
        stop(folder, grace=5.0)
        raise
    _write_state(folder, state)
    return state


def stop(folder: Path | str = DEFAULT_DIR, grace: float = 15.0) -> list[int]:
    """End the processes recorded in ``folder`` and their children; return the pids killed.

    Asks each to stop (SIGTERM, workers before the scheduler), then kills what is left after
    ``grace`` seconds. Processes whose pid now belongs to another program are left alone.
    """
    folder = Path(folder).resolve()
    state = read_state(folder)
    if state is None:
        return []
    procs = _live_processes(state)
    for proc in list(procs):  # and any children started since they were recorded
        try:
            procs.extend(c for c in proc.children(recursive=True) if c not in procs)
        except psutil.NoSuchProcess:
            continue
    workers = [p for p in procs if not _is_scheduler(state, p.pid)]
    scheduler = [p for p in procs if _is_scheduler(state, p.pid)]
    alive = []
    for group in (workers, scheduler):  # workers leave the scheduler in order, then it stops
        for proc in group:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                continue
        alive += psutil.wait_procs(group, timeout=grace)[1]
    killed = []
    for proc in alive:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=10.0)
    (folder / "state.json").unlink(missing_ok=True)
    return killed


def status(folder: Path | str = DEFAULT_DIR) -> dict[str, Any] | None:
    """The recorded state, each process marked ``alive`` or not; ``None`` if none was started."""
    state = read_state(Path(folder).resolve())
    if state is None:
        return None
    live = {p.pid for p in _live_processes(state)}
    for entry in state["processes"]:
        entry["alive"] = entry["pid"] in live
    return state


def read_state(folder: Path) -> dict[str, Any] | None:
    path = folder / "state.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"{path} is not a state file written by this script ({exc})") from None


# --- helpers --------------------------------------------------------------------------------


def _refuse_running(folder: Path) -> None:
    state = read_state(folder) if folder.exists() else None
    if state is not None and _live_processes(state):
        raise ClusterError(
            f"a cluster started from {folder} is still running ({state.get('address')});"
            f" stop it first: {Path(__file__).name} stop --dir {folder}"
        )


def _launch(state: dict[str, Any], role: str, command: list[str], env: dict[str, str]) -> None:
    log = Path(state["folder"]) / "logs" / f"{role}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # outlive this script, and ignore the terminal's Ctrl-C
        )
    state["processes"].append(_entry(proc.pid, role, log))


def _entry(pid: int, role: str, log: Path | None = None) -> dict[str, Any]:
    proc = psutil.Process(pid)
    return {
        "pid": pid,
        "create_time": proc.create_time(),
        "role": role,
        "log": str(log) if log else None,
    }


def _record_children(state: dict[str, Any]) -> None:
    """Add the processes the recorded ones started (a nanny's worker), so stop knows them too."""
    known = {e["pid"] for e in state["processes"]}
    for entry in list(state["processes"]):
        try:
            children = psutil.Process(entry["pid"]).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            if child.pid not in known:
                known.add(child.pid)
                state["processes"].append(_entry(child.pid, f"{entry['role']}/child"))


def _live_processes(state: dict[str, Any]) -> list[psutil.Process]:
    """The recorded processes still running, matched by pid *and* start time."""
    live = []
    for entry in state.get("processes", []):
        try:
            proc = psutil.Process(entry["pid"])
            if abs(proc.create_time() - entry["create_time"]) < 0.05 and (
                proc.status() != psutil.STATUS_ZOMBIE
            ):
                live.append(proc)
        except psutil.NoSuchProcess:
            continue
    return live


def _is_scheduler(state: dict[str, Any], pid: int) -> bool:
    return any(e["pid"] == pid and e["role"] == "scheduler" for e in state["processes"])


def _check_alive(state: dict[str, Any]) -> None:
    for entry in state["processes"]:
        try:
            proc = psutil.Process(entry["pid"])
            if proc.status() != psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            pass
        raise ClusterError(f"the {entry['role']} exited at start; see {entry['log']}")


def _wait_for_file(path: Path, state: dict[str, Any], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(state)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.2)
    raise ClusterError(f"the scheduler did not write {path} within {timeout:g} s")


def _wait_for_workers(state: dict[str, Any], nodes: int, timeout: float) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    with Client(state["address"], timeout=timeout, set_as_default=False) as client:
        while time.monotonic() < deadline:
            _check_alive(state)
            if len(client.scheduler_info(n_workers=-1)["workers"]) >= nodes:
                return
            time.sleep(0.25)
    raise ClusterError(f"{nodes} worker(s) did not join within {timeout:g} s")


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(folder / "state.json")


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A Dask cluster on 127.0.0.1: a scheduler and N workers, started with"
        " Dask's own CLI and stopped by pid."
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"state and logs [{DEFAULT_DIR}]"
    )
    parser.add_argument("--nodes", type=int, default=2, help="worker processes [2]")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker [1]")
    parser.add_argument("--port", type=int, default=0, help="scheduler port [0: a free one]")
    parser.add_argument("--dashboard", action="store_true", help="serve the dashboard")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to come up [120]")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds to stop [15]")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            if args.nodes < 1 or args.threads < 1:
                parser.error("--nodes and --threads must be at least 1")
            state = start(
                args.dir,
                args.nodes,
                threads=args.threads,
                port=args.port,
                dashboard=args.dashboard,
                timeout=args.timeout,
            )
            print(f"dask scheduler at {state['address']} with {args.nodes} worker(s)")
            if state["dashboard"]:
                print(f"dashboard: {state['dashboard']}")
            print(
                f"try:  runner submit --job jobs/full.toml --backend dask"
                f" --address {state['address']}"
            )
            print(f"stop: python {sys.argv[0]} stop --dir {args.dir}")
        elif args.command == "stop":
            if read_state(args.dir.resolve()) is None:
                print(f"no cluster recorded in {args.dir}")
                return 0
            killed = stop(args.dir, grace=args.grace)
            print(
                "stopped" + (f" (killed {len(killed)} that did not stop in time)" if killed else "")
            )
        else:
            state = status(args.dir)
            if state is None:
                print(f"no cluster recorded in {args.dir}")
                return 3
            print(f"dask scheduler at {state['address']}")
            for entry in state["processes"]:
                mark = "alive" if entry["alive"] else "gone"
                print(f"  {entry['role']:<16} pid {entry['pid']:<8} {mark}")
            return 0 if all(e["alive"] for e in state["processes"]) else 1
    except ClusterError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
