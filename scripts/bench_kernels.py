"""Throughput of each chunk kernel on one core, against a reference measured in the same run.

Issue 7's kernel half. Each kernel runs in this process, pinned to one CPU (``--cpu``, by
``os.sched_setaffinity``; elsewhere run it under ``taskset -c 0``) with BLAS and OpenMP pools
held to one thread (threadpoolctl), and is timed ``--repeat`` times after a warm-up call that
compiles or loads the numba code; the table shows medians.

==============  ===================================  ===========================================
kernel          throughput                           reference (same run, same core)
==============  ===================================  ===========================================
primes          primes counted per second, pi(n)     ``primesieve.count_primes(n)`` on 1 thread,
                over [0, n] in one call              when the ``primesieve`` package is
                                                     importable (``pip install primesieve``;
                                                     needs ``libprimesieve-dev``); else the
                                                     row says so.
array_means,    bytes generated and reduced per      numpy's own ``Generator.random(out=...)``
dot             second (8 per number; both vectors   fill of a preallocated array of the same
                for dot)                             size, and the memory bandwidth: a numpy
                                                     copy of that array (bytes copied per second)
==============  ===================================  ===========================================

Targets (issue 7): primes within 4x of primesieve (fraction >= 0.25); array kernels at least
70 % of numpy's fill (fraction >= 0.70). The memory-bandwidth fraction has no target: the
kernels generate their data in L2-sized blocks and never stream it from memory.

Usage::

    python scripts/bench_kernels.py                 # n = 1e9, 256 MiB of array data, 7 repeats
    python scripts/bench_kernels.py --n 1e10 --array-mib 1024 --repeat 9 --cpu 1
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

PRIMES_TARGET = 0.25  # within 4x of primesieve
ARRAYS_TARGET = 0.70  # 70 % of numpy's fill


@dataclass
class Row:
    kernel: str
    seconds: float
    rate: float
    unit: str
    reference: str
    ref_seconds: float | None = None
    ref_rate: float | None = None
    target: float | None = None

    @property
    def fraction(self) -> float | None:
        return None if self.ref_rate is None else self.rate / self.ref_rate


def median_time(func: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls (after one untimed call)."""
    func()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        func()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def pin(cpu: int | None) -> str:
    """Pin this process to one CPU; say where it runs."""
    if cpu is None:
        return "not pinned (--cpu -1)"
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned: no sched_setaffinity here (run under taskset -c 0)"
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def bench_primes(n: int, repeat: int) -> list[Row]:
    from cluster_runner.workloads.sieve import base_primes, count_primes_between

    primes = base_primes(math.isqrt(n))
    count = int(count_primes_between(0, n + 1, primes))
    seconds = median_time(lambda: count_primes_between(0, n + 1, primes), repeat)
    row = Row(f"primes pi({short(n)})", seconds, count / seconds, "primes/s", "")
    try:
        import primesieve
    except ImportError:
        row.reference = "primesieve not installed (pip install primesieve)"
        return [row]
    primesieve.set_num_threads(1)
    expected = primesieve.count_primes(n)
    if expected != count:
        raise SystemExit(f"pi({n}) disagrees: kernel {count}, primesieve {expected}")
    row.ref_seconds = median_time(lambda: primesieve.count_primes(n), repeat)
    row.ref_rate = count / row.ref_seconds
    version = primesieve.primesieve_version()
    version = version.decode() if isinstance(version, bytes) else version
    row.reference = f"primesieve {version}, 1 thread"
    row.target = PRIMES_TARGET
    return [row]


def reference_times(numbers: int, repeat: int) -> tuple[float, float]:
    """Median seconds of numpy's random fill of, and of a copy of, a preallocated array."""
    import numpy as np

    from cluster_runner.workloads.arrays import generator

    data, copy = np.empty(numbers), np.empty(numbers)
    rng = generator(0, 0)
    fill_s = median_time(lambda: rng.random(out=data), repeat)
    copy_s = median_time(lambda: np.copyto(copy, data), repeat)
    return fill_s, copy_s


def bench_arrays(mib: int, repeat: int) -> list[Row]:
    from cluster_runner.workloads.arrays import dot_chunk, row_means_chunk

    numbers = mib * 2**20 // 8
    fill_s, copy_s = reference_times(numbers, repeat)
    nbytes = numbers * 8
    fill_rate, copy_rate = nbytes / fill_s, nbytes / copy_s

    cols = 1000
    rows = numbers // cols
    means_s = median_time(lambda: row_means_chunk(0, 0, rows, cols), repeat)
    half = numbers // 2  # dot draws two vectors: the same number of bytes in all
    dot_s = median_time(lambda: dot_chunk(0, 0, half), repeat)

    out = []
    for name, seconds, nbytes in (
        (f"array_means {rows:,}x{cols}", means_s, rows * cols * 8),
        (f"dot 2x{half:,}", dot_s, 2 * half * 8),
    ):
        rate = nbytes / seconds
        fill = f"numpy random fill, {mib} MiB"
        out.append(Row(name, seconds, rate, "B/s", fill, fill_s, fill_rate, ARRAYS_TARGET))
        out.append(Row("", seconds, rate, "B/s", f"numpy copy, {mib} MiB", copy_s, copy_rate))
    return out


def short(n: int) -> str:
    """1000000000 as 1e9, other numbers with thousands separators."""
    k = round(math.log10(n))
    return f"1e{k}" if 10**k == n else f"{n:,}"


def human(rate: float, unit: str) -> str:
    if unit == "B/s":
        return f"{rate / 1e9:.2f} GB/s"
    return f"{rate:.3g} {unit}"


def print_table(rows: list[Row]) -> None:
    header = ("kernel", "time (s)", "throughput", "reference", "ref. time", "ref. throughput")
    header += ("fraction", "target")
    table = [header]
    for r in rows:
        fraction = "-" if r.fraction is None else f"{r.fraction:.2f}"
        verdict = ""
        if r.target is not None and r.fraction is not None:
            verdict = f">= {r.target:.2f} " + ("ok" if r.fraction >= r.target else "MISSED")
        table.append(
            (
                r.kernel,
                f"{r.seconds:.4f}" if r.kernel else "",
                human(r.rate, r.unit) if r.kernel else "",
                r.reference,
                "-" if r.ref_seconds is None else f"{r.ref_seconds:.4f}",
                "-" if r.ref_rate is None else human(r.ref_rate, r.unit),
                fraction,
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=float, default=1e9, help="count the primes <= n (1e9)")
    parser.add_argument("--array-mib", type=int, default=256, help="array data per kernel (MiB)")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per kernel (median)")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to; -1: do not pin")
    parser.add_argument("--only", choices=("primes", "arrays"), help="run one kernel family only")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.n < 2 or args.array_mib < 1:
        parser.error("--repeat and --array-mib must be >= 1, --n >= 2")

    where = pin(None if args.cpu < 0 else args.cpu)
    # Before numpy loads BLAS: its pools then start with one thread, and stay there.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    from cluster_runner.results import cpu_model

    print(f"{cpu_model()}; Python {platform.python_version()}, numpy {np.__version__},", end=" ")
    print(f"numba {numba.__version__}; {where}; medians of {args.repeat} calls\n")

    rows: list[Row] = []
    if args.only in (None, "primes"):
        rows += bench_primes(int(args.n), args.repeat)
    if args.only in (None, "arrays"):
        rows += bench_arrays(args.array_mib, args.repeat)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
