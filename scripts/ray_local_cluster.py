#!/usr/bin/env python
"""Start, inspect and stop a multi-node Ray cluster on 127.0.0.1, to try ``runner --address``.

    python scripts/ray_local_cluster.py start --nodes 2      # a head and 1 more node
    export RAY_AUTH_TOKEN_PATH=...                           # printed by start
    runner submit --job jobs/full.toml --backend ray --address 127.0.0.1:PORT
    python scripts/ray_local_cluster.py status
    python scripts/ray_local_cluster.py stop

Every node is a real Ray node (its own raylet, object store and workers); the head also runs
the GCS. All of them listen on 127.0.0.1 only, require a token made for this cluster (token
authentication, Ray's default), and pin BLAS/OpenMP to one thread per worker.

Why not ``ray start --head`` and ``ray start --address``: on Linux, ``ray start`` rewrites
127.0.0.1, whether given as ``--node-ip-address`` or in ``--address``, to the machine's
outward IP (``ray._private.services.resolve_ip_for_localhost``). A head started with
``--node-ip-address 127.0.0.1`` then runs on that IP and its GCS listens on every interface;
turning the rewrite off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) makes ``ray start
--address`` refuse to add nodes. So one small Python process, the *holder*, starts the nodes
with Ray's own ``ray.cluster_utils.Cluster`` (what Ray's tests use for a multi-node cluster on
one machine), each with node IP 127.0.0.1, keeps them, and shuts them down on SIGTERM.

The holder runs in a session of its own (it outlives this script and ignores the terminal's
Ctrl-C). ``state.json`` in ``--dir`` records the pids of the holder and of every Ray process
(with start times, so a reused pid is never touched), the ports, the token file and the logs.
``stop`` asks the holder to shut the cluster down, then kills whatever recorded process (or
child of one) is still alive after ``--grace`` seconds. It never uses ``ray stop``, which ends
every Ray process on the machine.
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

import psutil

DEFAULT_DIR = Path(tempfile.gettempdir()) / f"cluster-runner-{os.getuid()}" / "ray"
LOOPBACK = "127.0.0.1"
#: Pinned to one thread in every worker, so that N CPUs use N cores.
THREAD_ENV = dict.fromkeys(
    ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"), "1"
)
#: Object store per node: small, since only chunk results travel between nodes.
OBJECT_STORE_BYTES = 200 * 2**20


class ClusterError(RuntimeError):
    """The cluster could not be started, or the state folder is not usable."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def start(
    folder: Path | str = DEFAULT_DIR,
    nodes: int = 2,
    *,
    cpus: int = 1,
    port: int = 0,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Start a head and ``nodes - 1`` more nodes on 127.0.0.1; return the state written to disk.

    ``port`` is the GCS port (0: a free one). Everything started is stopped again if the
    cluster does not come up within ``timeout`` seconds.
    """
    folder = Path(folder).resolve()
    _refuse_running(folder)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "ready.json").unlink(missing_ok=True)
    token_file = folder / "auth_token"
    _write_private(token_file, secrets.token_hex(32))
    # Ray's session folders hold Unix sockets, whose paths must stay under 108 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="rcr-", dir="/tmp" if os.path.isdir("/tmp") else None)
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(
        THREAD_ENV,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # keep 127.0.0.1 (see the module docstring)
        RAY_TMPDIR=ray_tmp,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # stop at once: nothing here to drain
    )
    state: dict[str, Any] = {
        "engine": "ray",
        "folder": str(folder),
        "address": f"{LOOPBACK}:{port}",
        "token_file": str(token_file),
        "ray_tmpdir": ray_tmp,
        "nodes": nodes,
        "node_ids": [],
        "processes": [],
        "started": time.time(),
    }
    log = folder / "logs" / "holder.log"
    try:
        with open(log, "ab") as out:
            holder = subprocess.Popen(
                [
                    sys.executable, str(Path(__file__).resolve()), "_serve", "--dir", str(folder),
                    "--nodes", str(nodes), "--cpus", str(cpus), "--port", str(port),
                    "--timeout", str(timeout),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlive this script, and ignore the terminal's Ctrl-C
            )  # fmt: skip
        state["processes"].append(_entry(holder.pid, "holder", log))
        ready = _wait_until_ready(folder, holder, log, ray_tmp, timeout)
        state["node_ids"] = ready["node_ids"]
        _record_children(state)
    except BaseException:
        _write_state(folder, state)
        stop(folder, grace=10.0, keep_logs=True)  # Ray's logs say why
        raise
    _write_state(folder, state)
    return state


def stop(
    folder: Path | str = DEFAULT_DIR, grace: float = 30.0, keep_logs: bool = False
) -> list[int]:
    """Stop the cluster recorded in ``folder``; return the pids that had to be killed.

    SIGTERM to the holder, which shuts every node down; after ``grace`` seconds, SIGKILL to
    any recorded process, or child of one, still alive. Reused pids are left alone. Ray's
    session folder (its sockets and logs) goes too, unless ``keep_logs``; the holder's log
    stays in ``folder/logs``.
    """
    folder = Path(folder).resolve()
    state = read_state(folder)
    if state is None:
        return []
    procs = _live_processes(state)
    for proc in list(procs):  # and the workers the raylets started since
        try:
            procs.extend(c for c in proc.children(recursive=True) if c not in procs)
        except psutil.NoSuchProcess:
            continue
    holders = [p for p in procs if _role(state, p.pid) == "holder"]
    for proc in holders:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(holders, timeout=grace)
    _gone, alive = psutil.wait_procs(procs, timeout=5.0)
    killed = []
    for proc in alive:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=10.0)
    (folder / "state.json").unlink(missing_ok=True)
    (folder / "ready.json").unlink(missing_ok=True)
    if not keep_logs and state.get("ray_tmpdir"):
        shutil.rmtree(state["ray_tmpdir"], ignore_errors=True)
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


def driver_env(state: dict[str, Any]) -> dict[str, str]:
    """Environment a driver (``runner``) needs to join: the token, in token mode."""
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


# --- helpers --------------------------------------------------------------------------------


def _refuse_running(folder: Path) -> None:
    state = read_state(folder) if folder.exists() else None
    if state is not None and _live_processes(state):
        raise ClusterError(
            f"a cluster started from {folder} is still running ({state.get('address')});"
            f" stop it first: {Path(__file__).name} stop --dir {folder}"
        )


def _wait_until_ready(
    folder: Path, holder: subprocess.Popen, log: Path, tmp: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if holder.poll() is not None:
            raise ClusterError(f"the Ray nodes did not start; see {log} and the logs under {tmp}")
        try:
            return json.loads((folder / "ready.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.2)
    raise ClusterError(
        f"the Ray nodes did not come up within {timeout:g} s; see {log} and the logs under {tmp}"
    )


def _entry(pid: int, role: str, log: Path | None = None) -> dict[str, Any]:
    proc = psutil.Process(pid)
    return {
        "pid": pid,
        "create_time": proc.create_time(),
        "role": role,
        "log": str(log) if log else None,
    }


def _record_children(state: dict[str, Any]) -> None:
    """Add every process the holder started (GCS, raylets, agents), so stop knows them too."""
    known = {e["pid"] for e in state["processes"]}
    for entry in list(state["processes"]):
        try:
            children = psutil.Process(entry["pid"]).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            if child.pid not in known:
                known.add(child.pid)
                try:
                    state["processes"].append(_entry(child.pid, child.name()))
                except psutil.NoSuchProcess:
                    continue


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


def _role(state: dict[str, Any], pid: int) -> str | None:
    return next((e["role"] for e in state["processes"] if e["pid"] == pid), None)


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.json.tmp"
    _write_private(tmp, json.dumps(state, indent=2) + "\n")
    tmp.replace(folder / "state.json")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (it may hold or name the token)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A multi-node Ray cluster on 127.0.0.1 with token authentication,"
        " stopped by pid (never 'ray stop')."
    )
    parser.add_argument("command", choices=["start", "stop", "status", "_serve"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"state, token and logs [{DEFAULT_DIR}]"
    )
    parser.add_argument("--nodes", type=int, default=2, help="nodes, the head included [2]")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per node [1]")
    parser.add_argument("--port", type=int, default=0, help="GCS port [0: a free one]")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to come up [180]")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to stop [30]")
    args = parser.parse_args(argv)
    if args.command == "_serve":
        return serve(args.dir.resolve(), args.nodes, args.cpus, args.port, args.timeout)
    try:
        if args.command == "start":
            if args.nodes < 1 or args.cpus < 1:
                parser.error("--nodes and --cpus must be at least 1")
            state = start(
                args.dir,
                args.nodes,
                cpus=args.cpus,
                port=args.port,
                timeout=args.timeout,
            )
            print(f"ray cluster at {state['address']}: {args.nodes} node(s) x {args.cpus} CPU(s)")
            print(f"token: {state['token_file']}")
            print(f"try:  export RAY_AUTH_TOKEN_PATH={state['token_file']}")
            print(
                f"      runner submit --job jobs/full.toml --backend ray"
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
            print(f"ray cluster at {state['address']} (token: {state['token_file']})")
            for entry in state["processes"]:
                mark = "alive" if entry["alive"] else "gone"
                print(f"  {entry['role']:<24} pid {entry['pid']:<8} {mark}")
            # Ray starts and ends worker processes as it needs them: the holder is what counts.
            return 0 if state["processes"][0]["alive"] else 1
    except ClusterError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
