"""Strong-scaling check of issue 7: pi(1e9) on the ``local`` backend at 1 and 2 workers.

Runs ``jobs/primes.toml`` (n and chunks overridable) through the package API, as ``runner
submit`` would, on one started pool per worker count. The time of a run is its stage's wall
time: first submit to the reduced value in the driver, scheduling and transfers included. The
speedup at w workers is median(1 worker) / median(w workers); the issue's target is >= 1.9 at
2 workers on a machine with 2 real cores.

For comparison it also times the kernel alone: the same chunks dealt round-robin to w plain
processes, one call each (no graph, no task per chunk). That is what the hardware allows; the
gap between the two speedups is what the backend's per-task and per-run costs take.

All pools are started first, then the runs are interleaved (1 worker, 2 workers, 1 worker,
...), so that a burst of load from other processes on a shared machine hits every worker count
alike instead of one of them. ``--warmup`` rounds are dropped.

The machine's core topology (lscpu: threads per core, cores per socket) is printed first: two
hyperthreads of one core share its execution units and cannot reach a speedup of 1.9 on this
kernel, so the figure means something only with 2 physical cores. In a VM, lscpu reports the
topology the hypervisor presents, which cannot prove the vCPUs are not siblings on the host;
the kernel-alone speedup is the empirical check.

Usage::

    python scripts/bench_speedup.py                  # n = 1e9, 1 and 2 workers, 9 runs each
    python scripts/bench_speedup.py --chunks 16 --repeat 15
    python scripts/bench_speedup.py --n 1e10 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.9  # issue 7: speedup at 2 workers


def topology() -> str:
    """lscpu's core and thread lines, or what os and psutil know where lscpu is missing."""
    keys = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)")
    keys += ("Hypervisor vendor", "L2 cache")
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        lines = [line.strip() for line in out.splitlines() if line.split(":")[0].strip() in keys]
        return "\n".join(lines)
    import psutil

    return f"CPU(s): {os.cpu_count()}  physical cores (psutil): {psutil.cpu_count(logical=False)}"


class OtherLoad:
    """How much CPU other processes than this one and its children use from now on."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.began = time.monotonic()
        self.busy, self.ours = self._busy(), self._ours()

    def _busy(self) -> float:
        t = self.psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    def _ours(self) -> float:
        me = self.psutil.Process()
        total = 0.0
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(self.psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def fraction(self) -> float:
        """Others' CPU seconds over the machine's since creation (children must still live)."""
        busy, ours = self._busy() - self.busy, self._ours() - self.ours
        elapsed = (time.monotonic() - self.began) * (os.cpu_count() or 1)
        return max(0.0, busy - ours) / elapsed


def count_chunks(bounds: list[tuple[int, int]], n: int) -> int:
    """Worker of the kernel-alone baseline: the primes of several chunks, one call each."""
    from cluster_runner.workloads.sieve import base_primes, count_primes_between

    primes = base_primes(math.isqrt(n))
    return sum(int(count_primes_between(lo, hi, primes)) for lo, hi in bounds)


class KernelAlone:
    """A plain process pool that counts the job's chunks, dealt round-robin to its workers."""

    def __init__(self, n: int, chunks: int, workers: int) -> None:
        from cluster_runner.workloads.base import split

        bounds = split(n + 1, chunks)
        self.shares = [bounds[i::workers] for i in range(workers)]
        self.n = n
        context = multiprocessing.get_context("spawn")
        self.pool = cf.ProcessPoolExecutor(workers, mp_context=context)
        # Start every worker and load the kernel: tasks that each hold a worker a moment.
        list(self.pool.map(time.sleep, [0.2] * workers))
        list(self.pool.map(count_chunks, [[(0, 100)]] * workers, [100] * workers))

    def run(self) -> float:
        began = time.perf_counter()
        list(self.pool.map(count_chunks, self.shares, [self.n] * len(self.shares)))
        return time.perf_counter() - began

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=float, default=1e9, help="count the primes <= n (1e9)")
    parser.add_argument("--chunks", type=int, help="chunk tasks (default: the job file's)")
    parser.add_argument("--job", default=str(ROOT / "jobs" / "primes.toml"), help="job file")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per worker count")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or 1 not in args.workers:
        parser.error("--repeat must be >= 1, --warmup >= 0, and --workers must include 1")

    from cluster_runner import BackendOptions, create_backend, load_job, run_job

    overrides = [f"n={int(args.n)}"] + ([f"chunks={args.chunks}"] if args.chunks else [])
    job = load_job(args.job, overrides=overrides)
    (stage,) = job.stages
    n, chunks = stage.params["n"], stage.params["chunks"]
    counts = sorted(set(args.workers))
    print(topology())
    print(f"\njob {job.name}: {stage.workload} n={n:,} chunks={chunks}; {args.warmup} warm-up")
    print(f"+ {args.repeat} timed runs per worker count, interleaved\n")

    times: dict[tuple[str, int], list[float]] = {}
    with contextlib.ExitStack() as stack:
        backends = {
            w: stack.enter_context(
                create_backend("local", BackendOptions(workers=w, warm_up=job.warm_ups()))
            )
            for w in counts
        }
        alone = {w: KernelAlone(n, chunks, w) for w in counts}
        for pool in alone.values():
            stack.callback(pool.close)
        meter = OtherLoad()
        for round_ in range(args.warmup + args.repeat):
            for w in counts:
                (record,) = run_job(job, backends[w])
                if record.status != "verified":
                    print(f"{w} workers: the run did not verify", file=sys.stderr)
                    return 1
                seconds = alone[w].run()
                if round_ >= args.warmup:
                    times.setdefault(("local backend", w), []).append(record.stages[0].wall_s)
                    times.setdefault(("kernel alone", w), []).append(seconds)
        others = meter.fraction()

    print(f"CPU used by other processes meanwhile: {others:.0%} of the machine", end="")
    print(" (our runs are disturbed if this is more than a few %)\n")
    print(f"{'':14}  {'workers':>7}  {'median (s)':>10}  {'min (s)':>8}  {'max (s)':>8}  speedup")
    medians = {key: statistics.median(values) for key, values in times.items()}
    for label in ("local backend", "kernel alone"):
        for w in counts:
            runs = times[(label, w)]
            speedup = medians[(label, 1)] / medians[(label, w)]
            print(
                f"{label:14}  {w:>7}  {medians[(label, w)]:>10.4f}  {min(runs):>8.4f}"
                f"  {max(runs):>8.4f}  {speedup:>7.2f}"
            )
    if 2 in counts:
        backend = medians[("local backend", 1)] / medians[("local backend", 2)]
        kernel = medians[("kernel alone", 1)] / medians[("kernel alone", 2)]
        verdict = "meets" if backend >= TARGET else "misses"
        print(f"\nspeedup at 2 workers, local backend: {backend:.2f} ({verdict} >= {TARGET})")
        print(f"speedup at 2 workers, kernel alone:  {kernel:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
