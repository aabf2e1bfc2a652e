"""The runner's own machinery against the plain tools, side by side in one run (issue 16).

Three comparisons, each measurement in a fresh process, the two sides interleaved round by round
(A B, then B A) so that a busy machine's drift hits both:

- **a million tasks**: ``runner submit --job noop --set tasks=1000000 --backend local
  --workers 2``, timed from outside (process start to exit), with the run's own time from its
  record and the driver's peak memory (its ``ru_maxrss``, from ``wait4``); beside it
  ``multiprocessing.Pool(2)`` (forkserver) mapping the same no-op over ``range(1000000)``, the
  map timed alone and the whole program too, with its driver's peak. Targets: at least 500,000
  tasks/s in the run, the whole command under 5 s, a driver peak under 300 MB.
- **start-up**: a plain ``ProcessPoolExecutor(2, forkserver)`` whose workers import numpy, from
  its creation until every worker has answered a probe, against the runner's local pool, as
  ``runner submit`` reports it (``up in``: start-up, the job's warm-up left out) for the no-op
  job and for the primes job, whose warm-up (loading the sieve's compiled kernels) is shown
  apart. Target: the runner's start-up within 2x the plain pool's.
- **report**: ``runner report`` over 100,000 runs (a results file made from the records of a
  small real sweep, repeated with jittered times: four points of 25,000 runs), timed from outside
  with its peak memory; beside it the floor of any reader, ``json.loads`` of every line. Targets:
  under 10 s and under 500 MB.

Usage::

    python scripts/bench_driver.py                      # all three, 3 rounds
    python scripts/bench_driver.py --only startup --rounds 7
    python scripts/bench_driver.py --tasks 1000000 --runs 100000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = str(Path(sys.executable).with_name("runner"))

TASKS_PER_S = 500_000
COMMAND_S = 5.0
DRIVER_BYTES = 300 * 10**6
STARTUP_RATIO = 2.0
REPORT_S = 10.0
REPORT_BYTES = 500 * 10**6


def timed(command: list[str], **kwargs) -> tuple[float, int, str]:
    """Run ``command`` from a fresh, small process: (wall seconds, its peak RSS bytes, stdout).

    The peak is the ``ru_maxrss`` that ``wait4`` reports for the command: the largest of it and
    the children it reaped (a runner driver is far larger than its pool's workers). It is read
    in a fresh interpreter because a child's ``ru_maxrss`` starts from its parent's resident
    size at the fork, and this script may be large by then (after Dask and Ray).
    """
    with tempfile.NamedTemporaryFile("w+b") as out:
        done = subprocess.run(
            [sys.executable, __file__, "--one", "timed", out.name, *command],
            capture_output=True, text=True, **kwargs,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
        wall, peak = done.stdout.split()[-2:]
        return float(wall), int(peak), out.read().decode()


def run_timed(out: str, *command: str) -> str:
    """In a fresh process: run ``command`` (its stdout to the file ``out``); ``wall peak``."""
    with open(out, "wb") as stdout, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        child = subprocess.Popen(command, stdout=stdout, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            sys.exit(err.read().decode()[-2000:])
    return f"{wall} {usage.ru_maxrss * 1024}"


def one_shot(kind: str, *args: str) -> str:
    """Run this script again, fresh, as ``--one KIND ARGS``: its last stdout line."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", kind, *args],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


# --- a million tasks ---------------------------------------------------------------------------


def nothing(index: int) -> int:
    return index


def pool_map(tasks: int, workers: int) -> str:
    """In a fresh process: Pool.map of a no-op; ``map seconds, whole seconds, peak bytes``."""
    import multiprocessing

    began = time.perf_counter()
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pool.map(nothing, range(workers))  # the workers are up
        start = time.perf_counter()
        total = sum(pool.map(nothing, range(tasks)))
        took = time.perf_counter() - start
    assert total == tasks * (tasks - 1) // 2
    return f"{took} {time.perf_counter() - began} {_own_peak()}"


def _own_peak() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def runner_million(tasks: int, workers: int, out: str) -> tuple[float, float, int]:
    """``runner submit`` of the no-op job: (command wall s, run wall s, driver peak bytes)."""
    command = [RUNNER, "submit", "--job", "noop", "--set", f"tasks={tasks}", "--backend",
               "local", "--workers", str(workers), "--out", out, "--json"]  # fmt: skip
    wall, peak, stdout = timed(command, cwd=out)
    record = json.loads(stdout[stdout.index("{") :])["runs"][0]
    assert record["status"] == "verified", record
    return wall, record["wall_s"], peak


def bench_million(tasks: int, workers: int, rounds: int) -> bool:
    runner, pool = [], []

    def plain() -> None:
        pool.append(tuple(map(float, one_shot("pool", str(tasks), str(workers)).split())))

    with tempfile.TemporaryDirectory() as out:
        for i in range(rounds):
            pair = [lambda: runner.append(runner_million(tasks, workers, out)), plain]
            for step in pair if i % 2 == 0 else pair[::-1]:
                step()
    command = statistics.median(r[0] for r in runner)
    run = statistics.median(r[1] for r in runner)
    peak = max(r[2] for r in runner)
    mapped = statistics.median(p[0] for p in pool)
    whole = statistics.median(p[1] for p in pool)
    pool_peak = max(p[2] for p in pool)
    rate = tasks / run
    ok = rate >= TASKS_PER_S and command < COMMAND_S and peak < DRIVER_BYTES
    print(f"{tasks:,} no-op tasks, {workers} workers, {rounds} interleaved rounds (median)")
    print(f"  runner submit --job noop --set tasks={tasks} --backend local --workers {workers}")
    print(f"    command {command:.2f} s, run {run:.3f} s = {rate:,.0f} tasks/s,"
          f" driver peak {peak / 1e6:.0f} MB")  # fmt: skip
    print(f"  multiprocessing Pool({workers}, forkserver).map(no-op, range({tasks}))")
    print(f"    program {whole:.2f} s, map {mapped:.3f} s = {tasks / mapped:,.0f} tasks/s,"
          f" driver peak {pool_peak / 1e6:.0f} MB")  # fmt: skip
    print(f"  run/map {run / mapped:.1f}x; targets >= {TASKS_PER_S:,} tasks/s, command"
          f" < {COMMAND_S:g} s, driver < {DRIVER_BYTES / 1e6:.0f} MB: {_met(ok)}")  # fmt: skip
    return ok


# --- start-up ----------------------------------------------------------------------------------


def _probe(hold: float) -> int:
    import numpy  # noqa: F401  (what a plain pool's workers import for numeric work)

    time.sleep(hold)
    return os.getpid()


def plain_start(workers: int) -> str:
    """In a fresh process: a plain pool whose workers import numpy, up and probed."""
    import concurrent.futures as cf
    import multiprocessing

    began = time.perf_counter()
    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
    seen: set[int] = set()
    hold = 0.05  # the runner's probe holds as long, so that probes reach distinct workers
    while len(seen) < workers:
        seen |= {f.result() for f in [pool.submit(_probe, hold) for _ in range(workers)]}
        hold *= 2
    took = time.perf_counter() - began
    pool.shutdown()
    return f"{took} 0"


def runner_start(workers: int, job: str) -> str:
    """In a fresh process: the runner's local pool for ``job``: ``start-up warm-up`` seconds."""
    from cluster_runner.backends import BackendOptions, create_backend
    from cluster_runner.jobspec import load_job

    spec = load_job(ROOT / "jobs" / f"{job}.toml")
    backend = create_backend("local", BackendOptions(workers=workers, warm_up=spec.warm_ups()))
    with backend:
        return f"{backend.startup_s} {backend.warmup_s}"


def bench_startup(workers: int, rounds: int) -> bool:
    kinds = {"plain": ("plain",), "noop": ("runner", "noop"), "primes": ("runner", "primes")}
    one_shot("runner", str(workers), "primes")  # a warm kernel cache, as after the first run
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for i in range(rounds):
        for kind in kinds if i % 2 == 0 else list(kinds)[::-1]:
            what, *job = kinds[kind]
            times[kind].append(tuple(map(float, one_shot(what, str(workers), *job).split())))
    med = {k: statistics.median(t for t, _ in v) for k, v in times.items()}
    warm = {k: statistics.median(w for _, w in v) for k, v in times.items()}
    ratio = max(med["noop"], med["primes"]) / med["plain"]
    ok = ratio <= STARTUP_RATIO
    print(f"\npool start-up, {workers} workers, forkserver, {rounds} interleaved rounds (median)")
    print(f"  plain ProcessPoolExecutor, workers import numpy: {med['plain']:.3f} s")
    print(f"  runner, noop job:   up in {med['noop']:.3f} s (warm-up {warm['noop']:.3f} s)")
    print(f"  runner, primes job: up in {med['primes']:.3f} s (+ warm-up {warm['primes']:.3f} s:"
          " the sieve's compiled kernels, apart)")  # fmt: skip
    print(f"  runner/plain {ratio:.2f}x (the larger); target <= {STARTUP_RATIO:g}x: {_met(ok)}")
    return ok


# --- report ------------------------------------------------------------------------------------


def make_results(path: Path, runs: int, scratch: str) -> None:
    """``runs`` records from a small real sweep's, repeated with jittered times."""
    subprocess.run(
        [RUNNER, "scale", "--job", "primes", "--set", "n=1000000", "--backend", "serial,local",
         "--workers", "1,2", "--repeat", "3", "--out", scratch],
        capture_output=True, check=True, cwd=scratch,
    )  # fmt: skip
    (sweep,) = Path(scratch).glob("*.jsonl")
    template = [json.loads(line) for line in sweep.read_text().splitlines()]
    template = [r for r in template if not r["warmup"]]
    rnd = random.Random(0)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(runs):
            record = json.loads(json.dumps(template[i % len(template)]))
            record["run_id"] = f"{i:012x}"
            record["labels"]["round"] = i // len(template)
            record["wall_s"] *= 0.9 + 0.2 * rnd.random()
            if i >= len(template):
                record.pop("cold", None)
            out.write(json.dumps(record, sort_keys=True) + "\n")


def json_floor(path: str) -> str:
    """In a fresh process: ``json.loads`` of every line, the least any reader does."""
    began = time.perf_counter()
    with open(path, encoding="utf-8") as lines:
        count = sum(1 for line in lines if json.loads(line))
    return f"{time.perf_counter() - began} {count}"


def bench_report(runs: int, rounds: int) -> bool:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "runs.jsonl"
        make_results(path, runs, tempfile.mkdtemp(dir=scratch))
        size = path.stat().st_size
        report, floor = [], []
        command = [RUNNER, "report", str(path), "--format", "json"]

        def reader() -> None:
            floor.append(float(one_shot("json", str(path)).split()[0]))

        for i in range(rounds):
            pair = [lambda: report.append(timed(command)), reader]
            for step in pair if i % 2 == 0 else pair[::-1]:
                step()
    wall = statistics.median(r[0] for r in report)
    peak = max(r[1] for r in report)
    ok = wall < REPORT_S and peak < REPORT_BYTES
    print(f"\nrunner report over {runs:,} runs ({size / 1e6:.0f} MB of records), {rounds} rounds")
    print(f"  runner report FILE --format json: {wall:.2f} s, peak {peak / 1e6:.0f} MB")
    print(f"  json.loads of every line (the floor of any reader): {statistics.median(floor):.2f} s")
    print(f"  targets < {REPORT_S:g} s and < {REPORT_BYTES / 1e6:.0f} MB: {_met(ok)}")
    return ok


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


ONE = {
    "pool": lambda tasks, workers: pool_map(int(tasks), int(workers)),
    "plain": lambda workers: plain_start(int(workers)),
    "runner": lambda workers, job: runner_start(int(workers), job),
    "json": json_floor,
    "timed": run_timed,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("million", "startup", "report"), action="append")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(ONE[args.one[0]](*args.one[1:]))
        return 0
    return 0 if run(args.only, args.workers, args.tasks, args.runs, args.rounds) else 1


def run(only, workers: int, tasks: int, runs: int, rounds: int) -> bool:
    """The comparisons asked for (all when ``only`` is empty); True when every target is met."""
    ok = True
    if not only or "million" in only:
        ok &= bench_million(tasks, workers, rounds)
    if not only or "startup" in only:
        ok &= bench_startup(workers, 2 * rounds + 1)
    if not only or "report" in only:
        ok &= bench_report(runs, rounds)
    return ok


if __name__ == "__main__":
    sys.exit(main())
