#!/usr/bin/env python
"""Start, inspect and stop a multi-node Ray cluster on 127.0.0.1, to try ``runner --address``.

    python scripts/ray_local_cluster.py start --nodes 2      # a head and 1 more node
    export RAY_AUTH_TOKEN_PATH=...                           # printed by start
    runner submit --job jobs/full.toml --backend ray --address 127.0.0.1:PORT
    python scripts/ray_local_cluster.py status
    python scripts/ray_local_cluster.py stop

A thin command line over :mod:`cluster_runner.clusters.ray_local`, the same implementation
``runner cluster up|status|down --config cluster_configs/local-ray.yaml`` uses: real Ray nodes
on 127.0.0.1 with token authentication, started by Ray's own ``ray.cluster_utils.Cluster`` in
a holder process (that module's docstring says why not ``ray start``: Ray 2.60 rewrites
127.0.0.1 to the machine's outward IP), and stopped by the pids recorded in
``--dir``/state.json, never with ``ray stop``. :func:`start`, :func:`stop`, :func:`status`,
:func:`read_state` and :func:`driver_env` are that module's, for Python callers (the test
suite's ``tests/clusters.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from cluster_runner.clusters import ray_local
from cluster_runner.clusters.processes import process_table, read_state, stop_and_report
from cluster_runner.clusters.ray_local import driver_env, status, stop
from cluster_runner.errors import RunnerError

DEFAULT_DIR = Path(tempfile.gettempdir()) / f"cluster-runner-{os.getuid()}" / "ray"


def start(folder: Path | str = DEFAULT_DIR, nodes: int = 2, **kwargs):
    """:func:`cluster_runner.clusters.ray_local.start`, saying how to stop with this script."""
    hint = f"{Path(__file__).name} stop --dir {folder}"
    return ray_local.start(folder, nodes, stop_hint=hint, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A multi-node Ray cluster on 127.0.0.1 with token authentication,"
        " stopped by pid (never 'ray stop')."
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"state, token and logs [{DEFAULT_DIR}]"
    )
    parser.add_argument("--nodes", type=int, default=2, help="nodes, the head included [2]")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per node [1]")
    parser.add_argument("--port", type=int, default=0, help="GCS port [0: a free one]")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to come up [180]")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to stop [30]")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            if args.nodes < 1 or args.cpus < 1:
                parser.error("--nodes and --cpus must be at least 1")
            state = start(
                args.dir, args.nodes, cpus=args.cpus, port=args.port, timeout=args.timeout
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
            print(stop_and_report(stop, args.dir, args.grace))
        else:
            state = status(args.dir)
            if state is None:
                print(f"no cluster recorded in {args.dir}")
                return 3
            print(f"ray cluster at {state['address']} (token: {state['token_file']})")
            print(process_table(state, width=24))
            # Ray starts and ends worker processes as it needs them: the holder, the GCS and
            # the raylets are what count.
            return 0 if ray_local.healthy(state) else 1
    except RunnerError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["DEFAULT_DIR", "driver_env", "main", "read_state", "start", "status", "stop"]

if __name__ == "__main__":
    sys.exit(main())
