"""One Ray node of a Slurm allocation: what ``ray start --block`` does, on the address given.

Ray's documented pattern for Slurm runs ``ray start --head --block`` on the allocation's first
node and ``ray start --address HEAD --block`` on the others (``srun``), each staying in the
foreground until Slurm ends the job. The sbatch template (``cluster_configs/ray-slurm.sbatch``)
follows that pattern, but runs this module instead of ``ray start``: on Linux, Ray 2.60's
``ray start`` rewrites 127.0.0.1, given as ``--node-ip-address`` or in ``--address``, to the
machine's outward IP, and its GCS then listens on every interface (see
:mod:`cluster_runner.clusters.ray_local`). So, as the local Ray cluster's holder does, this
process starts the node with Ray's own machinery, ``ray._private.node.Node`` (what
``ray.cluster_utils.Cluster`` and ``ray start`` both use), with exactly the IP it is given:
127.0.0.1 on one machine, the node's own address (``--ip auto``) on a real cluster.

Token authentication as the local Ray cluster: ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH`` (a file only the user can read, made by the driver for this allocation)
are in the job's environment. Each node labels itself with its Slurm node and job
(``slurm-node``, ``slurm-job``) and writes ``nodes/NODE_ID.json`` in the allocation's folder,
so that the driver knows which Slurm node each Ray node is; the head also writes
``head-JOBID.json`` with the GCS address. The process blocks until SIGTERM (``scancel``, the
time limit, the end of the job) and then ends its node's processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any


def node_ip(value: str) -> str:
    """``auto``: this machine's address by its host name (as ``hostname --ip-address``)."""
    if value != "auto":
        return value
    return socket.gethostbyname(socket.gethostname())


def _params(args: argparse.Namespace, ip: str) -> Any:
    from ray._private.parameter import RayParams

    labels = {
        "slurm-node": os.environ.get("SLURMD_NODENAME", socket.gethostname()),
        "slurm-job": os.environ.get("SLURM_JOB_ID", "none"),
    }
    params = RayParams(
        node_ip_address=ip,
        num_cpus=args.cpus,
        num_gpus=0,
        object_store_memory=args.object_store_mb * 2**20,
        labels=labels,
        min_worker_port=0,
        max_worker_port=0,
    )
    if args.head:
        params.gcs_server_port = args.port
        params.include_dashboard = False
    else:
        params.gcs_address = args.address
        params.node_manager_port = 0
        params.dashboard_agent_listen_port = None
        # One log monitor per machine: on one machine the head's already follows the logs.
        params.include_log_monitor = not ip.startswith("127.")
    return params


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def serve(args: argparse.Namespace) -> int:
    """Start the node, say so in the allocation's folder, and keep it until SIGTERM."""
    from ray._private.node import Node

    ip = node_ip(args.ip)
    stopping: list[int] = []
    node = Node(_params(args, ip), head=args.head, shutdown_at_exit=True, spawn_reaper=True)
    try:
        folder = Path(args.folder)
        (folder / "nodes").mkdir(mode=0o700, exist_ok=True)
        record = {
            "node_id": node.node_id,
            "node": os.environ.get("SLURMD_NODENAME", socket.gethostname()),
            "job": os.environ.get("SLURM_JOB_ID", ""),
            "ip": ip,
            "head": args.head,
        }
        _write(folder / "nodes" / f"{node.node_id}.json", record)
        if args.head:
            _write(folder / f"head-{record['job']}.json", {**record, "address": node.gcs_address})
        print(f"ray {'head' if args.head else 'node'} {node.node_id} on {ip}", flush=True)
        # After the node: its processes install handlers of their own.
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        while not stopping:
            time.sleep(0.2)
    finally:
        node.kill_all_processes(check_alive=False, allow_graceful=True)
        print("ray node stopped", flush=True)
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One Ray node of a Slurm allocation.")
    parser.add_argument("--folder", required=True, help="the allocation's shared folder")
    parser.add_argument("--ip", default="127.0.0.1", help="this node's address, or auto")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--object-store-mb", type=int, default=200)
    parser.add_argument("--head", action="store_true")
    parser.add_argument("--port", type=int, default=6379, help="the head's GCS port")
    parser.add_argument("--address", help="HEAD_IP:PORT of the GCS (the other nodes)")
    args = parser.parse_args(argv)
    if not args.head and not args.address:
        parser.error("a node other than the head needs --address")
    return serve(args)


if __name__ == "__main__":
    sys.exit(_main())
