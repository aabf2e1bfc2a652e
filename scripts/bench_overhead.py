"""What the runner costs on top of each engine: the same graph, by the runner and by hand.

For each backend, two graphs run two ways on the *same* started engine (the runner's pool, its
Dask client, its Ray instance), interleaved A B A B so that drift on a busy machine hits both:

- **runner**: ``run_job`` on the backend, timed as the stage's wall time (first submit to the
  reduced value in the driver), exactly what ``runner submit`` reports;
- **raw**: a short program that uses the engine's own API the way its documentation shows,
  timed from the first call to the reduced value in the driver:

  ======== ====================================================== ==========================
  backend  realistic graph (primes to n in chunks)                 no-op graph (N tasks)
  ======== ====================================================== ==========================
  local    ``executor.map(count, lo, hi, base)``, sum              ``executor.map(chunksize=N/8)``
  dask     ``client.map`` with a base-primes future, ``submit(sum)`` ``client.map``, gather, sum
  ray      ``f.remote(lo, hi, base_ref)`` for all, one ``ray.get`` one ``.remote`` a task, one get
  ======== ====================================================== ==========================

It prints, per backend and graph, the median of each (21 rounds on the primes graph, 7 on the
no-op graph, by default), the ratio runner/raw (the median of the rounds' ratios, with its
quartiles), the cost per task of the no-op graph, and the targets: ratio <= 1.03 on the
realistic graph for every backend; on the no-op graph <= 5 us a task on the local backend
(issue 16; 30 us before) and a ratio <= 1.10 for Dask and Ray. Then, from
``scripts/bench_driver.py``, the runner's own machinery against the plain tools, side by side:
a million no-op tasks against ``multiprocessing.Pool.map``, the local pool's start-up against a
plain ``ProcessPoolExecutor`` whose workers import numpy, and ``runner report`` over 100,000
runs against ``json.loads`` of every line (``--driver none`` leaves them out).

Usage::

    python scripts/bench_overhead.py                          # local,dask,ray; 2 workers
    python scripts/bench_overhead.py --backends local --repeat 31 --noop-repeat 9
    python scripts/bench_overhead.py --n 1e10 --chunks 64 --tasks 10000
    python scripts/bench_overhead.py --backends dask,ray --driver none
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable
from itertools import repeat

from cluster_runner import BackendOptions, create_backend, parse_job, run_job
from cluster_runner.workloads.noop import nothing
from cluster_runner.workloads.primes import count_chunk
from cluster_runner.workloads.sieve import base_primes

REALISTIC_RATIO = 1.03
NOOP_RATIO = 1.10
LOCAL_NOOP_US = 5.0


def primes_job(n: int, chunks: int):
    return parse_job(f'[[stage]]\nworkload = "primes"\nn = {n}\nchunks = {chunks}\n', "primes")


def noop_job(tasks: int):
    return parse_job(f'[[stage]]\nworkload = "noop"\ntasks = {tasks}\n', "noop")


def bounds(n: int, chunks: int) -> tuple[list[int], list[int]]:
    from cluster_runner.workloads.base import split

    pieces = split(n + 1, chunks)
    return [lo for lo, _ in pieces], [hi for _, hi in pieces]


# --- raw programs, one pair per engine: (realistic, no-op) -----------------------------------


def raw_local(backend, n: int, chunks: int, tasks: int, workers: int):
    executor = backend.executor
    los, his = bounds(n, chunks)

    def realistic() -> int:
        base = base_primes(math.isqrt(n))
        return sum(executor.map(count_chunk, los, his, repeat(base, chunks)))

    def noop() -> int:
        size = max(1, math.ceil(tasks / (4 * workers)))  # Pool.map's own default chunk size
        return sum(executor.map(nothing, range(tasks), chunksize=size))

    return realistic, noop


def raw_dask(backend, n: int, chunks: int, tasks: int, workers: int):
    client = backend.client
    los, his = bounds(n, chunks)

    def realistic() -> int:
        base = client.submit(base_primes, math.isqrt(n), pure=False)
        counts = client.map(count_chunk, los, his, [base] * chunks, pure=False)
        return client.submit(sum, counts, pure=False).result()

    def noop() -> int:
        return sum(client.gather(client.map(nothing, range(tasks), pure=False)))

    return realistic, noop


def raw_ray(backend, n: int, chunks: int, tasks: int, workers: int):
    import ray

    count = ray.remote(num_cpus=1)(count_chunk)
    base_task = ray.remote(num_cpus=1)(base_primes)
    add = ray.remote(num_cpus=1)(lambda *xs: sum(xs))
    nil = ray.remote(num_cpus=1)(nothing)
    los, his = bounds(n, chunks)

    def realistic() -> int:
        base = base_task.remote(math.isqrt(n))
        counts = [count.remote(lo, hi, base) for lo, hi in zip(los, his, strict=True)]
        return ray.get(add.remote(*counts))

    def noop() -> int:
        return sum(ray.get([nil.remote(i) for i in range(tasks)]))

    return realistic, noop


RAW = {"local": raw_local, "dask": raw_dask, "ray": raw_ray}


# --- timing ----------------------------------------------------------------------------------


def runner_timer(job, backend) -> Callable[[], float]:
    def run() -> float:
        (record,) = run_job(job, backend)
        if record.status != "verified":
            raise SystemExit(f"runner result did not verify: {record.stages}")
        return record.wall_s

    return run


def raw_timer(program: Callable[[], int], expected: int) -> Callable[[], float]:
    def run() -> float:
        began = time.perf_counter()
        value = program()
        took = time.perf_counter() - began
        if value != expected:
            raise SystemExit(f"raw program gave {value}, expected {expected}")
        return took

    return run


def interleave(a: Callable[[], float], b: Callable[[], float], warmup: int, repeat_: int):
    """``warmup`` rounds dropped, then ``repeat_`` timed rounds of one A and one B each.

    Rounds alternate the order (A B, B A, ...), so that neither side always runs right after
    the other one's clean-up. Returns the two medians and the median of the rounds' ratios
    A/B with its quartiles: each round's two runs saw the same state of a busy machine, so the
    ratio of a round is steadier than a ratio of medians.
    """
    times_a, times_b = [], []
    for i in range(warmup + repeat_):
        gc.collect()
        if i % 2:
            tb, ta = b(), a()
        else:
            ta, tb = a(), b()
        if i >= warmup:
            times_a.append(ta)
            times_b.append(tb)
    ratios = [ta / tb for ta, tb in zip(times_a, times_b, strict=True)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(times_a), statistics.median(times_b), quartiles


def bench_backend(name: str, args) -> list[tuple]:
    from cluster_runner.workloads.primes import prime_count_oracle

    rows = []
    with create_backend(name, BackendOptions(workers=args.workers)) as backend:
        realistic, noop = RAW[name](backend, args.n, args.chunks, args.tasks, args.workers)
        cases = [
            ("primes", primes_job(args.n, args.chunks), realistic, prime_count_oracle(args.n),
             args.chunks + 2),
            ("noop", noop_job(args.tasks), noop, args.tasks * (args.tasks - 1) // 2,
             args.tasks + 1),
        ]  # fmt: skip
        for graph, job, program, expected, ntasks in cases:
            runner_t, raw_t, (q1, ratio, q3) = interleave(
                runner_timer(job, backend),
                raw_timer(program, expected),
                args.warmup,
                args.repeat if graph == "primes" else args.noop_repeat,
            )
            rows.append((name, graph, ntasks, runner_t, raw_t, ratio, q1, q3))
            print(
                f"  {name:6} {graph:7} runner {runner_t * 1e3:9.2f} ms   raw {raw_t * 1e3:9.2f} ms"
                f"   ratio {ratio:5.2f} ({q1:.2f}-{q3:.2f})",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="local,dask,ray")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n", type=float, default=1e9, help="primes up to n")
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks")
    parser.add_argument(
        "--driver", default="million,startup,report", help="bench_driver.py's comparisons, or none"
    )
    parser.add_argument("--big", type=int, default=1_000_000, help="tasks of the driver test")
    parser.add_argument("--runs", type=int, default=100_000, help="runs of the report test")
    parser.add_argument("--repeat", type=int, default=21, help="timed rounds, primes graph")
    parser.add_argument("--noop-repeat", type=int, default=7, help="timed rounds, no-op graph")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    args.n = int(args.n)
    print(
        f"runner vs raw, {args.workers} workers, interleaved rounds: {args.repeat} (primes),"
        f" {args.noop_repeat} (no-op)"
    )
    rows = []
    for name in args.backends.split(","):
        rows += bench_backend(name.strip(), args)
    print()
    print(f"{'backend':8} {'graph':8} {'tasks':>7} {'runner ms':>10} {'raw ms':>10} "
          f"{'ratio':>6} {'quartiles':>10} {'us/task':>8}  target")  # fmt: skip
    ok = True
    for name, graph, ntasks, runner_t, raw_t, ratio, q1, q3 in rows:
        per_task = runner_t / ntasks * 1e6
        if graph == "primes":
            target, met = f"ratio <= {REALISTIC_RATIO}", ratio <= REALISTIC_RATIO
        elif name == "local":
            target, met = f"<= {LOCAL_NOOP_US:g} us/task", per_task <= LOCAL_NOOP_US
        else:
            target, met = f"ratio <= {NOOP_RATIO}", ratio <= NOOP_RATIO
        ok &= met
        print(f"{name:8} {graph:8} {ntasks:7d} {runner_t * 1e3:10.2f} {raw_t * 1e3:10.2f} "
              f"{ratio:6.2f} {q1:5.2f}-{q3:4.2f} {per_task:8.1f}"
              f"  {target}: {'met' if met else 'MISSED'}")  # fmt: skip
    if args.driver != "none":
        import bench_driver  # beside this script

        print()
        only = [name.strip() for name in args.driver.split(",")]
        ok &= bench_driver.run(only, args.workers, args.big, args.runs, rounds=3)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
