#!/usr/bin/env python
"""Start, inspect and stop a Dask cluster on 127.0.0.1, to try ``runner --address`` on one machine.

    python scripts/dask_local_cluster.py start --nodes 2     # a scheduler and 2 workers
    runner submit --job jobs/full.toml --backend dask --address tcp://127.0.0.1:PORT
    python scripts/dask_local_cluster.py status
    python scripts/dask_local_cluster.py stop

With ``--tls-ca-file CA --tls-cert CERT --tls-key KEY`` (PEM files: a CA, and a certificate it
signed, good for server and client use, with its key) every process speaks mutual TLS only, on
``tls://127.0.0.1:PORT``, and ``runner`` needs the same three options to connect.

A thin command line over :mod:`cluster_runner.clusters.dask_local`, the same implementation
``runner cluster up|status|down --config cluster_configs/local-dask.yaml`` uses: one ``dask
scheduler`` and ``--nodes`` ``dask worker`` processes, all on 127.0.0.1, stopped by the pids
recorded in ``--dir``/state.json (never a search by name). :func:`start`, :func:`stop`,
:func:`status`, :func:`read_state` and :func:`driver_env` are that module's, for Python
callers (the test suite's ``tests/clusters.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from cluster_runner.clusters import dask_local
from cluster_runner.clusters.dask_local import driver_env, status, stop
from cluster_runner.clusters.processes import process_table, read_state, stop_and_report
from cluster_runner.errors import RunnerError

DEFAULT_DIR = Path(tempfile.gettempdir()) / f"cluster-runner-{os.getuid()}" / "dask"


def start(folder: Path | str = DEFAULT_DIR, nodes: int = 2, **kwargs):
    """:func:`cluster_runner.clusters.dask_local.start`, saying how to stop with this script."""
    hint = f"{Path(__file__).name} stop --dir {folder}"
    return dask_local.start(folder, nodes, stop_hint=hint, **kwargs)


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
    parser.add_argument("--tls-ca-file", type=Path, help="TLS only: the CA certificate (PEM)")
    parser.add_argument("--tls-cert", type=Path, help="TLS only: a certificate it signed (PEM)")
    parser.add_argument("--tls-key", type=Path, help="TLS only: that certificate's key (PEM)")
    args = parser.parse_args(argv)
    files = {"ca_file": args.tls_ca_file, "cert": args.tls_cert, "key": args.tls_key}
    if any(files.values()) and not all(files.values()):
        parser.error("TLS needs --tls-ca-file, --tls-cert and --tls-key together")
    for name, path in files.items():
        if path is not None and not path.is_file():
            parser.error(f"--tls-{name.replace('_', '-')} {path}: no such file")
    tls = None
    if all(files.values()):
        tls = {name: str(path.resolve()) for name, path in files.items()}
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
                tls=tls,
            )
            print(f"dask scheduler at {state['address']} with {args.nodes} worker(s)")
            if state["dashboard"]:
                print(f"dashboard: {state['dashboard']}")
            flags = (
                f" --tls-ca-file {tls['ca_file']} --tls-cert {tls['cert']} --tls-key {tls['key']}"
                if tls
                else ""
            )
            print(
                f"try:  runner submit --job jobs/full.toml --backend dask"
                f" --address {state['address']}{flags}"
            )
            print(f"stop: python {sys.argv[0]} stop --dir {args.dir}")
        elif args.command == "stop":
            print(stop_and_report(stop, args.dir, args.grace))
        else:
            state = status(args.dir)
            if state is None:
                print(f"no cluster recorded in {args.dir}")
                return 3
            print(f"dask scheduler at {state['address']}")
            print(process_table(state, width=16))
            return 0 if dask_local.healthy(state) else 1
    except RunnerError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["DEFAULT_DIR", "driver_env", "main", "read_state", "start", "status", "stop"]

if __name__ == "__main__":
    sys.exit(main())
