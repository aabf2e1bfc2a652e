"""A multi-node Dask cluster on 127.0.0.1, started with Dask's own command-line tools.

:func:`start` runs one ``dask scheduler`` and ``nodes`` ``dask worker`` processes (each a
nanny and its worker process, ``threads`` threads), exactly what a user types on real
machines, with every one of them listening on 127.0.0.1 only and BLAS/OpenMP pinned to one
thread per worker. Each worker is its own node: its own process, name (``node-0``, ...) and
scratch folder. They run in a session of their own, so they outlive the command that started
them and ignore the terminal's Ctrl-C. Their pids (with start times), the scheduler's address
and the log files go to ``state.json`` in the state folder (:mod:`.processes`): written before
the first process starts and again as each one starts, under the folder's lock, so that a
start that is killed halfway leaves a cluster that ``status`` shows and ``stop`` ends.

:func:`stop` ends exactly those processes, and the children they started: SIGTERM to the
workers first, so they leave the scheduler in order, then to the scheduler, then SIGKILL to
anything still alive after ``grace`` seconds. It never looks for other Dask processes.

With ``tls`` (the PEM files of a CA, and of a certificate it signed and its key, good for
server and client use) every process speaks mutual TLS only, on ``tls://127.0.0.1:PORT``, and a
driver needs the same files (``--tls-ca-file``, ``--tls-cert``, ``--tls-key``).

``runner cluster up|down|status`` and ``scripts/dask_local_cluster.py`` both use these
functions.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cluster_runner.clusters.processes import (
    LOOPBACK,
    THREAD_ENV,
    launch,
    live_processes,
    private_folder,
    python_env,
    refuse_running,
    starting,
    state_lock,
    stop_recorded,
    terminate,
    with_children,
    write_state,
)
from cluster_runner.clusters.processes import recorded_status as status  # noqa: F401 - the module's
from cluster_runner.errors import ClusterStartError

ENGINE = "dask"


def dask_command() -> list[str]:
    """Dask's CLI: the ``dask`` script beside this interpreter, on PATH, or ``python -m dask``."""
    beside = Path(sys.executable).with_name("dask")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("dask")
    return [found] if found else [sys.executable, "-m", "dask"]


def start(
    folder: Path | str,
    nodes: int = 2,
    *,
    threads: int = 1,
    port: int = 0,
    dashboard: bool = False,
    timeout: float = 120.0,
    stop_hint: str = "runner cluster down",
    tls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start a scheduler and ``nodes`` workers on 127.0.0.1; return the state written to disk.

    ``tls`` (``ca_file``, ``cert``, ``key``: PEM paths) makes every process speak TLS only.

    ``port`` 0 lets the scheduler pick a free port (read back from its scheduler file), so
    that parallel callers never race for one. Everything started is stopped again if the
    cluster does not come up within ``timeout`` seconds.
    """
    folder = private_folder(Path(folder).resolve())
    with state_lock(folder, "up"):
        refuse_running(folder, stop_hint)
        return _start(folder, nodes, threads, port, dashboard, timeout, tls)


def _start(
    folder: Path,
    nodes: int,
    threads: int,
    port: int,
    dashboard: bool,
    timeout: float,
    tls: dict[str, str] | None,
) -> dict[str, Any]:
    scheduler_file = folder / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    env = python_env(THREAD_ENV)
    state: dict[str, Any] = {
        "engine": ENGINE,
        "folder": str(folder),
        "address": None,
        "dashboard": None,
        "nodes": nodes,
        "processes": [],
        "started": time.time(),
        "up": False,  # True once every node has joined
        "tls": dict(tls) if tls else None,
    }
    write_state(folder, state)  # before the first process: a killed start is still found
    # Each process serves HTTP (health, metrics; the dashboard with --dashboard) on
    # --dashboard-address, all interfaces port 8787 unless told: keep it on loopback.
    dashboard_args = ["--dashboard-address", f"{LOOPBACK}:0"]
    if not dashboard:
        dashboard_args.append("--no-dashboard")
    tls_args = (
        ["--protocol", "tls", "--tls-ca-file", tls["ca_file"], "--tls-cert", tls["cert"],
         "--tls-key", tls["key"]]
        if tls
        else []
    )  # fmt: skip
    logs = folder / "logs"
    with starting(folder, state, rollback=lambda: _stop(folder, state, grace=5.0)):
        launch(
            state,
            "scheduler",
            [
                *dask_command(), "scheduler", "--host", LOOPBACK, "--port", str(port),
                "--scheduler-file", str(scheduler_file), *dashboard_args, *tls_args,
            ],
            env,
            logs / "scheduler.log",
        )  # fmt: skip
        info = _wait_for_file(scheduler_file, state, timeout)
        state["address"] = info["address"]
        if dashboard and "dashboard" in info.get("services", {}):
            state["dashboard"] = f"http://{LOOPBACK}:{info['services']['dashboard']}/status"
        for i in range(nodes):
            launch(
                state,
                f"node-{i}",
                [
                    *dask_command(), "worker", state["address"], "--host", LOOPBACK,
                    "--nworkers", "1", "--nthreads", str(threads), "--name", f"node-{i}",
                    "--local-directory", str(folder / f"node-{i}"), "--death-timeout", "60",
                    *dashboard_args, *tls_args,
                ],
                env,
                logs / f"node-{i}.log",
            )  # fmt: skip
        _wait_for_workers(state, nodes, timeout)
    return state


def stop(folder: Path | str, grace: float = 15.0) -> list[int]:
    """End the processes recorded in ``folder`` and their children; return the pids killed.

    Asks each to stop (SIGTERM, workers before the scheduler), then kills what is left after
    ``grace`` seconds. Processes whose pid now belongs to another program are left alone.
    Refused, in one line, while another command (a ``start`` under way) holds the folder.
    """
    return stop_recorded(folder, lambda where, state: _stop(where, state, grace))


def _stop(folder: Path, state: dict[str, Any], grace: float) -> list[int]:
    procs = with_children(live_processes(state))
    scheduler = {e["pid"] for e in state["processes"] if e["role"] == "scheduler"}
    order = [[p for p in procs if p.pid not in scheduler], [p for p in procs if p.pid in scheduler]]
    killed = terminate(procs, order, grace)
    (folder / "state.json").unlink(missing_ok=True)
    (folder / "scheduler.json").unlink(missing_ok=True)
    return killed


def healthy(state: dict[str, Any]) -> bool:
    """The cluster came up, and every recorded process (scheduler, nannies, workers) is alive."""
    return state.get("up", True) and all(e.get("alive") for e in state["processes"])


def connected_nodes(state: dict[str, Any], timeout: float = 10.0) -> list[str]:
    """The workers the scheduler knows now, as ``NAME ADDRESS``, asked within ``timeout`` s."""
    from distributed import Client

    with Client(
        state["address"], timeout=timeout, set_as_default=False, security=security(state)
    ) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(f"{w['name']} {address}" for address, w in workers.items())


def security(state: dict[str, Any]) -> Any:
    """A client's TLS settings for the cluster of ``state``; ``None`` for plain TCP."""
    tls = state.get("tls")
    if not tls:
        return None
    from distributed.security import Security

    return Security(
        require_encryption=True,
        tls_ca_file=tls["ca_file"],
        tls_client_cert=tls["cert"],
        tls_client_key=tls["key"],
    )


def driver_env(state: dict[str, Any]) -> dict[str, str]:
    """Environment a driver needs to use the cluster: nothing beyond its address."""
    return {}


# --- helpers --------------------------------------------------------------------------------


def _check_alive(state: dict[str, Any]) -> None:
    live = {p.pid for p in live_processes(state)}
    for item in state["processes"]:
        if item["pid"] not in live:
            raise ClusterStartError(f"the dask {item['role']} exited at start; see {item['log']}")


def _wait_for_file(path: Path, state: dict[str, Any], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(state)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.2)
    raise ClusterStartError(f"the dask scheduler did not write {path} within {timeout:g} s")


def _wait_for_workers(state: dict[str, Any], nodes: int, timeout: float) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    with Client(
        state["address"], timeout=timeout, set_as_default=False, security=security(state)
    ) as client:
        while time.monotonic() < deadline:
            _check_alive(state)
            if len(client.scheduler_info(n_workers=-1)["workers"]) >= nodes:
                return
            time.sleep(0.25)
    raise ClusterStartError(
        f"{nodes} dask worker(s) did not join within {timeout:g} s; see {state['folder']}/logs"
    )
