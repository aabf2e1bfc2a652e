"""How long the runner takes to start a local pool, against a plain ProcessPoolExecutor's, and
how long the README's first command takes on a cold and on a warm kernel cache.

Pool start-up (issue 17), each measurement in a fresh Python process, A B C interleaved:

- **plain**: ``ProcessPoolExecutor(N, forkserver)`` whose workers import numpy, timed from its
  creation until every worker has answered a probe (the probe the runner uses: each worker
  holds briefly, so that N probes reach N workers);
- **runner**: ``LocalBackend.start()`` for the primes job (its warm-up hook loads the sieve's
  compiled kernels), as ``runner submit`` times it (``up in``);
- **unloaded**: the same, as the runner started a pool before issue 17: no preloaded
  forkserver; the driver loads the kernels, then every worker imports numba and loads them;
- **kernels**: importing numba and the sieve and loading its compiled kernels from the cache in
  a fresh process, the part of the runner's start-up that a plain pool does not do.

Command (``--command``): ``runner submit --job jobs/full.toml --backend local``, the README's
first command, timed from outside (process start to exit), ``--rounds`` times with an empty
kernel cache (a fresh ``NUMBA_CACHE_DIR`` each time: the first run after installing) and as
many with a warm one; it also prints the ``up in`` the runner reports.

Usage::

    python scripts/bench_startup.py                  # pool start-up, 2 workers, 11 rounds
    python scripts/bench_startup.py --workers 4 --rounds 21
    python scripts/bench_startup.py --command --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _probe(hold: float) -> int:
    import numpy  # noqa: F401  (what a plain pool's workers would import for numeric work)

    time.sleep(hold)
    return os.getpid()


def plain(workers: int) -> float:
    import concurrent.futures as cf
    import multiprocessing

    began = time.perf_counter()
    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
    seen: set[int] = set()
    hold = 0.05
    while len(seen) < workers:
        seen |= {f.result() for f in [pool.submit(_probe, hold) for _ in range(workers)]}
        hold *= 2
    elapsed = time.perf_counter() - began
    pool.shutdown()
    return elapsed


def runner(workers: int) -> float:
    from cluster_runner.backends import BackendOptions, create_backend
    from cluster_runner.workloads.primes import warm_up_sieve

    backend = create_backend("local", BackendOptions(workers=workers, warm_up=(warm_up_sieve,)))
    began = time.perf_counter()
    backend.start()
    elapsed = time.perf_counter() - began
    backend.close()
    return elapsed


def unloaded(workers: int) -> float:
    """``runner`` as before issue 17: no preloaded forkserver, the driver warms up first and then
    every worker imports numba and loads the kernels itself."""
    import cluster_runner.backends.local as local

    local._preloaded_forkserver = lambda *args: (False, False)
    return runner(workers)


def kernels(workers: int) -> float:
    began = time.perf_counter()
    from cluster_runner.workloads.primes import warm_up_sieve

    warm_up_sieve()
    return time.perf_counter() - began


def one(kind: str, workers: int) -> float:
    """Time ``kind`` in a fresh interpreter (this script, run again)."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", kind, "--workers", str(workers)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(out.stdout.strip().splitlines()[-1])


def bench_pool(workers: int, rounds: int) -> None:
    kinds = ("plain", "runner", "unloaded", "kernels")
    one("kernels", workers)  # a warm kernel cache, as after the first run
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(rounds):
        order = kinds if i % 2 == 0 else kinds[::-1]
        for kind in order:
            times[kind].append(one(kind, workers))
    print(f"pool start-up, {workers} workers, forkserver, {rounds} rounds (median, quartiles)")
    for kind in kinds:
        q = statistics.quantiles(times[kind], n=4) if rounds > 1 else [times[kind][0]] * 3
        print(f"  {kind:<8} {statistics.median(times[kind]):.3f} s  ({q[0]:.3f}-{q[2]:.3f})")
    gap = statistics.median(r - p for r, p in zip(times["runner"], times["plain"], strict=True))
    print(f"  runner - plain: {gap:.3f} s (median of the rounds' differences)")


def bench_command(rounds: int) -> None:
    runner_exe = Path(sys.executable).with_name("runner")
    command = [str(runner_exe), "submit", "--job", "jobs/full.toml", "--backend", "local"]
    warm_dir = tempfile.mkdtemp(prefix="numba-warm-")
    results: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "NUMBA_CACHE_DIR": warm_dir}
        subprocess.run([*command, "--out", out], env=env, capture_output=True, check=True, cwd=ROOT)
        for _ in range(rounds):
            for kind in ("cold", "warm"):
                cache = tempfile.mkdtemp(prefix="numba-cold-") if kind == "cold" else warm_dir
                env = {**os.environ, "NUMBA_CACHE_DIR": cache}
                began = time.perf_counter()
                done = subprocess.run(
                    [*command, "--out", out], env=env, capture_output=True, text=True, cwd=ROOT
                )
                wall = time.perf_counter() - began
                if done.returncode != 0:
                    sys.exit(f"{' '.join(command)} failed: {done.stderr.strip()}")
                up = re.search(r"up in ([0-9.]+) s", done.stdout)
                results[kind].append((wall, float(up.group(1)) if up else float("nan")))
    print(f"{' '.join(command)}: {rounds} rounds (median, min-max)")
    for kind, runs in results.items():
        walls, ups = [w for w, _ in runs], [u for _, u in runs]
        print(
            f"  {kind} kernel cache: command {statistics.median(walls):.2f} s"
            f" ({min(walls):.2f}-{max(walls):.2f}), pool up in {statistics.median(ups):.2f} s"
            f" ({min(ups):.2f}-{max(ups):.2f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--command", action="store_true", help="time the README's first command")
    parser.add_argument(
        "--one", choices=("plain", "runner", "unloaded", "kernels"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.one:
        print(f"{globals()[args.one](args.workers):.6f}")
    elif args.command:
        bench_command(args.rounds)
    else:
        bench_pool(args.workers, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
