"""A multi-node Ray cluster on 127.0.0.1, with token authentication, stopped by pid.

Every node is a real Ray node (its own raylet, object store and workers); the head also runs
the GCS. All of them listen on 127.0.0.1 only, require a token made for this cluster (token
authentication, Ray's default), and pin BLAS/OpenMP to one thread per worker.

Why not Ray's own CLI, ``ray start --head`` and ``ray start --address``: on Linux, Ray 2.60's
``ray start`` rewrites 127.0.0.1, whether given as ``--node-ip-address`` or in ``--address``,
to the machine's outward IP (``ray._private.services.resolve_ip_for_localhost``). A head
started with ``--node-ip-address 127.0.0.1`` then runs on that IP and its GCS listens on every
interface, so a "loopback" test cluster would be reachable from the network; turning the
rewrite off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) makes ``ray start --address`` refuse to
add nodes. So one small Python process, the *holder*, starts the nodes with Ray's own
``ray.cluster_utils.Cluster``, the engine's own machinery for a multi-node cluster on one
machine (what Ray's test suite uses), each node with IP 127.0.0.1; it keeps them, and shuts
them down on SIGTERM. The processes are the same ones ``ray start`` would run (``gcs_server``,
``raylet``, workers); only the launcher differs. On real machines use Ray's cluster launcher
(``ray up``, see ``cluster_configs/ray-*.yaml``).

The holder runs in a session of its own (it outlives the command that started it and ignores
the terminal's Ctrl-C). ``state.json`` records the pids of the holder and of every Ray process
(with start times, so a reused pid is never touched), the GCS address, the token file and the
logs. It is written, under the state folder's lock, before the token and the first process
exist, and again as Ray's processes appear, so that a start killed halfway is still found and
ended. The token file and Ray's session folder are private (0600, 0700) and removed by
:func:`stop`. :func:`stop` asks the holder to shut the cluster down, then kills whatever recorded
process (or child of one) is still alive after ``grace`` seconds. It never uses ``ray stop``,
which ends every Ray process on the machine, a colleague's included.

``runner cluster up|down|status`` and ``scripts/ray_local_cluster.py`` both use these
functions; ``python -m cluster_runner.clusters.ray_local`` is the holder.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cluster_runner.clusters.processes import (
    LOOPBACK,
    THREAD_ENV,
    entry,
    live_processes,
    modified_environ,
    private_folder,
    python_env,
    record_children,
    refuse_running,
    starting,
    state_lock,
    stop_recorded,
    terminate,
    with_children,
    write_private,
    write_state,
)
from cluster_runner.clusters.processes import recorded_status as status  # noqa: F401 - the module's
from cluster_runner.errors import ClusterStartError

ENGINE = "ray"
#: Object store per node: small, since only chunk results travel between nodes.
OBJECT_STORE_BYTES = 200 * 2**20


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def start(
    folder: Path | str,
    nodes: int = 2,
    *,
    cpus: int = 1,
    port: int = 0,
    timeout: float = 180.0,
    stop_hint: str = "runner cluster down",
) -> dict[str, Any]:
    """Start a head and ``nodes - 1`` more nodes on 127.0.0.1; return the state written to disk.

    ``port`` is the GCS port (0: a free one). Everything started is stopped again if the
    cluster does not come up within ``timeout`` seconds.
    """
    folder = private_folder(Path(folder).resolve())
    with state_lock(folder, "up"):
        refuse_running(folder, stop_hint)
        return _start(folder, nodes, cpus, port, timeout)


def _start(folder: Path, nodes: int, cpus: int, port: int, timeout: float) -> dict[str, Any]:
    (folder / "logs").mkdir(mode=0o700, exist_ok=True)
    (folder / "ready.json").unlink(missing_ok=True)
    token_file = folder / "auth_token"
    # Ray's session folders hold Unix sockets, whose paths must stay under 108 bytes; mkdtemp
    # makes the folder private (0700).
    ray_tmp = tempfile.mkdtemp(prefix="rcr-", dir="/tmp" if os.path.isdir("/tmp") else None)
    port = port or free_port()
    state: dict[str, Any] = {
        "engine": ENGINE,
        "folder": str(folder),
        "address": f"{LOOPBACK}:{port}",
        "token_file": str(token_file),
        "ray_tmpdir": ray_tmp,
        "nodes": nodes,
        "node_ids": [],
        "processes": [],
        "started": time.time(),
        "up": False,  # True once every node is up
    }
    # On failure, Ray's logs say why: kept.
    rollback = lambda: _stop(folder, state, grace=10.0, keep_logs=True)  # noqa: E731
    with starting(folder, state, rollback, role=_role):
        # Recorded before the token and the first process exist: a killed start is still found,
        # and its token removed, by stop().
        write_state(folder, state)
        write_private(token_file, secrets.token_hex(32))
        env = python_env(
            {
                **THREAD_ENV,
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 (see the docstring)
                "RAY_TMPDIR": ray_tmp,
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(token_file),
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # stop at once: nothing to drain
            }
        )
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
            env.pop(name, None)
        log = folder / "logs" / "holder.log"
        with open(log, "ab") as out:
            holder = subprocess.Popen(
                [
                    sys.executable, "-m", __name__, "--dir", str(folder), "--nodes", str(nodes),
                    "--cpus", str(cpus), "--port", str(port), "--timeout", str(timeout),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlive the caller, and ignore the terminal's Ctrl-C
            )  # fmt: skip
        state["processes"].append(entry(holder.pid, "holder", log))
        write_state(folder, state)
        ready = _wait_until_ready(folder, holder, log, state, timeout)
        state["node_ids"] = ready["node_ids"]
    return state


def stop(folder: Path | str, grace: float = 30.0, keep_logs: bool = False) -> list[int]:
    """Stop the cluster recorded in ``folder``; return the pids that had to be killed.

    SIGTERM to the holder, which shuts every node down; after ``grace`` seconds, SIGKILL to
    any recorded process, or child of one, still alive. Reused pids are left alone. The token
    file goes, and Ray's session folder (its sockets and logs) too, unless ``keep_logs``; the
    holder's log stays in ``folder/logs``. Refused, in one line, while another command (a
    ``start`` under way) holds the folder.
    """
    return stop_recorded(folder, lambda where, state: _stop(where, state, grace, keep_logs))


def _stop(folder: Path, state: dict[str, Any], grace: float, keep_logs: bool = False) -> list[int]:
    procs = with_children(live_processes(state))
    holder = {e["pid"] for e in state["processes"] if e["role"] == "holder"}
    killed = terminate(procs, [[p for p in procs if p.pid in holder]], grace)
    (folder / "state.json").unlink(missing_ok=True)
    (folder / "ready.json").unlink(missing_ok=True)
    (folder / "auth_token").unlink(missing_ok=True)  # the token of a cluster that is gone
    if not keep_logs and state.get("ray_tmpdir"):
        shutil.rmtree(state["ray_tmpdir"], ignore_errors=True)
    return killed


def healthy(state: dict[str, Any]) -> bool:
    """The cluster came up, and the holder, the GCS and every raylet are alive.

    Ray starts and ends worker processes as it needs them, so a recorded worker that is gone
    is no sign of trouble.
    """
    vital = [e for e in state["processes"] if e["role"] in ("holder", "gcs_server", "raylet")]
    return state.get("up", True) and bool(vital) and all(e.get("alive") for e in vital)


def connected_nodes(state: dict[str, Any], timeout: float = 10.0) -> list[str]:
    """The nodes alive in the GCS now, as ``NODE_ID IP``, asked within ``timeout`` seconds.

    Asks the GCS directly (no driver joins the cluster), with the cluster's token.
    """
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    from cluster_runner.backends.ray_connection import reread_auth_config

    changes: dict[str, str | None] = {"RAY_AUTH_TOKEN": None, **driver_env(state)}
    try:
        with modified_environ(changes):
            reread_auth_config()
            client = GcsClient(address=state["address"])
            infos = client.get_all_node_info(
                timeout=timeout, state_filter=GcsNodeInfo.GcsNodeState.ALIVE
            ).values()
            return sorted(f"{info.node_id.hex()} {info.node_manager_address}" for info in infos)
    finally:
        reread_auth_config()  # Ray caches it: let it see the environment as it is again


def driver_env(state: dict[str, Any]) -> dict[str, str]:
    """Environment a driver (``runner``) needs to join: the cluster's token, in token mode."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["token_file"]}


# --- the holder -------------------------------------------------------------------------------


def serve(folder: Path, nodes: int, cpus: int, port: int, timeout: float) -> int:
    """Run the nodes until SIGTERM or SIGINT: the holder process that :func:`start` launches."""
    from ray.cluster_utils import Cluster

    node_args = {
        "node_ip_address": LOOPBACK,
        "num_cpus": cpus,
        "num_gpus": 0,
        "object_store_memory": OBJECT_STORE_BYTES,
    }
    head_args = {**node_args, "gcs_server_port": port, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    stopping = []
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes(timeout=timeout)
        ready = {
            "address": cluster.address,
            "node_ids": [node.node_id for node in cluster.list_all_nodes()],
        }
        (folder / "ready.json.tmp").write_text(json.dumps(ready))
        (folder / "ready.json.tmp").replace(folder / "ready.json")
        print(f"ray cluster at {cluster.address} with {nodes} node(s)", flush=True)
        # After the nodes: each Node installs a SIGTERM handler of its own (drain, then exit).
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
        while not stopping:
            time.sleep(0.2)
    finally:
        cluster.shutdown()
        print("ray cluster shut down", flush=True)
    return 0


def _role(child: Any, parent: dict[str, Any]) -> str:
    """A Ray process's role: its name (``raylet``), or its script's for Python ones."""
    name = child.name()
    if name.startswith("python"):
        script = next((a for a in child.cmdline()[1:] if a.endswith(".py")), None)
        return Path(script).stem if script else name
    return name


def _wait_until_ready(
    folder: Path, holder: subprocess.Popen, log: Path, state: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Wait for the holder's ``ready.json``, recording Ray's processes as they appear."""
    tmp = state["ray_tmpdir"]
    deadline = time.monotonic() + timeout
    known = len(state["processes"])
    while time.monotonic() < deadline:
        if holder.poll() is not None:
            raise ClusterStartError(
                f"the Ray nodes did not start; see {log} and the logs under {tmp}"
            )
        try:
            return json.loads((folder / "ready.json").read_text())
        except (OSError, ValueError):
            record_children(state, role=_role)
            if len(state["processes"]) != known:
                known = len(state["processes"])
                write_state(folder, state)
            time.sleep(0.2)
    raise ClusterStartError(
        f"the Ray nodes did not come up within {timeout:g} s; see {log} and the logs under {tmp}"
    )


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The holder of a local Ray cluster.")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--cpus", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args(argv)
    return serve(args.dir.resolve(), args.nodes, args.cpus, args.port, args.timeout)


if __name__ == "__main__":
    sys.exit(_main())
