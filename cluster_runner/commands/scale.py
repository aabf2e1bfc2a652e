"""``runner scale``: time a job over worker counts, node counts or task counts, and report."""

from __future__ import annotations

import os

import click

from cluster_runner.commands.options import (
    MAX_RUNS,
    Bounded,
    Finite,
    IntList,
    RunOptions,
    backend_options,
    job_options,
    pass_run_options,
    run_options,
    security_options,
)
from cluster_runner.commands.provenance import provenance_options
from cluster_runner.commands.sweep_options import sweep_options


def _default_workers() -> list[int]:
    """Powers of two up to this machine's CPU count, and the CPU count itself."""
    cpus = os.cpu_count() or 1
    sizes = [2**i for i in range(cpus.bit_length()) if 2**i <= cpus]
    return sorted({*sizes, cpus})


@click.command(context_settings={"default_map": {"repeat": 5, "warmup": 1}})
@pass_run_options
@job_options
@lambda func: backend_options(func, multiple=True)
@security_options
@click.option(
    "--workers",
    type=IntList(),
    default=None,
    help="Worker counts to time, e.g. 1,2,4 [default: powers of 2 up to the CPU count];"
    " with --nodes, the workers expected on each node.",
)
@click.option(
    "--nodes",
    type=IntList(),
    default=None,
    help="On an existing cluster (--address): node counts to time, e.g. 1,2; the cluster is"
    " not restarted, the graph is restricted to that many nodes.",
)
@click.option(
    "--mode",
    type=click.Choice(["strong", "weak", "throughput"]),
    default="strong",
    show_default=True,
    help="strong: fixed problem; weak: the problem grows with the size (each stage's weak"
    " parameter times the worker or node count); throughput: the problem grows (one --vary)"
    " at fixed resources (one --workers or --nodes).",
)
@click.option(
    "--chunks",
    type=IntList(),
    default=None,
    help="Task counts to sweep (granularity), e.g. 8,32,128,512: sets chunks= in every stage.",
)
@click.option(
    "--gpu",
    is_flag=True,
    help="Also time every point with the array stages on GPUs: CPU and GPU series in one report.",
)
@click.option(
    "--keep-going",
    is_flag=True,
    help="When a run fails (a timeout, workers lost beyond --retries), record it and go on"
    " to the next point; without it the sweep stops there, with an error.",
)
@click.option(
    "--baseline",
    default=None,
    metavar="serial|BACKEND@N|own",
    help="The speedup's reference, timed too if the sweep would not: serial (serial at 1"
    " worker), BACKEND@N, e.g. local@1 (that backend at N workers, or N nodes), or own (each"
    " backend's smallest size) [default: serial when swept, else own].",
)
@click.option(
    "--precision",
    type=Finite(0.01, 100.0, unit="percent"),
    default=None,
    metavar="P",
    help="Repeat each point until its median's 95% interval is within P percent of the"
    " median (and reaches 95%: at least 6 runs), up to --max-repeats; e.g. --precision 2.",
)
@click.option(
    "--max-repeats",
    type=Bounded(1, MAX_RUNS),
    default=None,
    metavar="M",
    help="With --precision: the most timed runs a point gets.  [default: 30]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the results file and the report (as 'runner report --format json') as one"
    " JSON document on stdout, for scripts; the lines for people go to stderr.",
)
@sweep_options
@provenance_options
@run_options
def scale(
    run: RunOptions,
    workers: list[int] | None,
    nodes: list[int] | None,
    mode: str,
    chunks: list[int] | None,
    gpu: bool,
    keep_going: bool,
    baseline: str | None,
    precision: float | None,
    max_repeats: int | None,
    as_json: bool = False,
    tags: tuple[str, ...] = (),
    profile: bool = False,
    vary: tuple[str, ...] = (),
    zip_lists: bool = False,
    resume: str | None = None,
) -> int:
    """Time a job at several sizes on one or more backends; exit 0 if every run verified.

    Backends of one size are started together (start-up timed apart) and their timed runs
    alternate, A B A B, so that drift on a busy machine hits all alike. Each run is appended
    to a JSON Lines file under --out the moment it ends: Ctrl-C keeps every finished run.

    \b
    Examples:
      runner scale --job primes --backend local,dask,ray --workers 1,2 --repeat 3
      runner scale --job dot --mode weak --workers 1,2,4
      runner scale --job array_means --workers 1,2 --gpu
      runner scale --job primes --backend local --workers 2 --chunks 8,32,128,512
      runner scale --job primes --backend dask --address tls://10.0.0.5:8786 --nodes 1,2,4 \\
        --tls-ca-file ca.pem --tls-cert me.pem --tls-key me.key
      runner scale --job primes --cluster local-ray --nodes 1,2
      runner scale --job primes --backend local,dask --workers 1,2 --inject-fault kill-worker
      runner scale --job primes --backend local --workers 2,4 --baseline serial --precision 2
      runner scale --job primes --backend local,dask,ray --workers 1,2 --tag variant=new --profile
      runner scale --job primes --workers 1,2 --vary n=1e9,1e10 --vary chunks=64,256 --zip
      runner scale --job primes --mode throughput --workers 2 --vary n=1e8,1e9,1e10
      runner scale --cluster slurm-dask --nodes 1,2 --job primes --resume results/primes-....jsonl
    """
    from rich.markup import escape

    from cluster_runner.backends import backend_class, create_backend
    from cluster_runner.commands.provenance import provenance_of
    from cluster_runner.commands.sweep_options import headline, results_file, resumed
    from cluster_runner.console import console
    from cluster_runner.devices import require_gpu
    from cluster_runner.limits import check_results
    from cluster_runner.results import ResultsWriter
    from cluster_runner.runs.faults import check_supported
    from cluster_runner.sweeps.plan import plan_sweep
    from cluster_runner.sweeps.vary import parse_vary

    reference = _baseline(baseline, precision, max_repeats, run.repeat)
    variation = parse_vary(vary, zip_lists)
    job = run.load_job()
    stamp = provenance_of(run.job_path, tags)
    backends = run.backends
    for name in backends:
        check_supported(run.fault, name, backend_class(name).worker_processes)
    connection = run.connection  # what every engine shares: address, TLS files (flags win), ...
    if run.slurm is not None:  # nodes asked of Slurm (issue 19): planned on a stand-in address
        from cluster_runner.clusters.slurm_sweep import check_request

        connection["address"] = check_request(run.slurm, backends, nodes or [], run.address)
    plan = plan_sweep(
        job,
        backends,
        workers=workers or ([] if nodes else _default_workers()),
        nodes=nodes or [],
        chunks=chunks or [],
        mode=mode,
        gpu=gpu,
        baseline=reference,
        vary=variation,
        **connection,
    )
    for step in plan.steps:  # bad options (an address, TLS files) fail now, in one line
        for engine in step.engines:
            create_backend(engine.backend, engine.options)  # checks; starts nothing
    # A point's result the driver cannot hold (weak scaling grows it) is refused now.
    check_results(p.job for step in plan.steps for e in step.engines for p in e.points)
    if (gpu or job.uses_gpu) and not run.address:
        require_gpu()  # a clear error now, before anything starts (a cluster checks its own)
    out = console(stderr=as_json)
    path = results_file(resume, run.out_dir, job.name, "+".join(backends))
    what = headline(plan, backends, nodes, chunks, variation, zip_lists, run.warmup, run.repeat)
    out.print(
        f"[bold]{escape(job.name)}[/]: {escape(what)}"
        + (f" (up to {max_repeats or 30} for ±{precision:g}%)" if precision else ""),
        emoji=False,  # the job name as written
    )
    plan = resumed(plan, resume, run.repeat, lambda line: out.print(escape(line)), run.transfer)
    for note in plan.notes:
        out.print(f"note: {note}")
    out.print(f"results: {escape(str(path))}")
    from cluster_runner.runs.reference import PROCESS_STORE

    PROCESS_STORE.read_from(run.out_dir)  # serial references kept there (issue 13)
    with ResultsWriter(path) as writer, _slurm(run, nodes, out, plan) as provider:
        outcome = _sweep(
            plan,
            writer,
            out,
            run.warmup,
            run.repeat,
            run.timeout,
            run.retries,
            run.fault,
            keep_going,
            transfer=run.transfer,
            until=(precision, (max_repeats or 30) if precision else None),
            stamp=stamp.stamp if provider is None else lambda r: stamp.stamp(provider.stamp(r)),
            around=_profiler(path, plan.axis, out) if profile else None,
            provider=provider,
        )
    if outcome.records or (resume and path.stat().st_size):
        _summary(path, out)
    verdict = "[green]every run verified[/]" if outcome.ok else "[red]not every point verified[/]"
    out.print(f"{verdict}; {outcome.records} record(s) in {escape(str(path))}")
    out.print(escape(f"plot: runner report {path} --plot {path.with_suffix('.png')}"))
    if as_json:
        _print_json(path, outcome)
    return 0 if outcome.ok else 1


def _slurm(run, nodes, out, plan):
    """The Slurm allocation a profile's jobs file asks for, around the sweep (a null context
    without one, or with nothing left to time): the largest of ``nodes``, given back on the
    way out."""
    import contextlib

    if run.slurm is None or not plan.steps:
        return contextlib.nullcontext()
    from rich.markup import escape

    from cluster_runner.clusters.slurm_sweep import slurm_sweep

    largest = max(step.size for step in plan.steps)  # node counts (or the fixed one)
    return slurm_sweep(run.slurm, largest, lambda line: out.print(escape(line)))


def _print_json(path, outcome) -> None:
    """``--json``: whether every run verified, the results file, and the sweep's report."""
    import json

    from cluster_runner.analysis.aggregate import aggregate
    from cluster_runner.analysis.report import json_report
    from cluster_runner.console import print_json

    report = json.loads(json_report(aggregate([path]))) if outcome.records else None
    print_json(
        {"ok": outcome.ok, "results_file": str(path), "records": outcome.records, "report": report}
    )


def _baseline(baseline, precision, max_repeats, repeat) -> tuple[str, int | None] | None:
    """``--baseline`` as ``(backend, size)``, and the --precision options checked together."""
    from cluster_runner.analysis.baseline import OWN, parse_baseline
    from cluster_runner.backends import REGISTRY
    from cluster_runner.errors import UsageError

    if max_repeats is not None and precision is None:
        raise UsageError("--max-repeats goes with --precision P (repeat until within P%)")
    if precision is not None and (max_repeats or 30) < repeat:
        raise UsageError(f"--max-repeats {max_repeats} is below --repeat {repeat}")
    if baseline is None:
        return None
    backend, size = parse_baseline(baseline)
    if backend == OWN:
        return OWN, None
    if backend not in REGISTRY:
        raise UsageError(
            f"--baseline {baseline}: unknown backend {backend!r} (choose from"
            f" {', '.join(REGISTRY)})"
        )
    return backend, size


def _profiler(path, axis, out):
    """``--profile``: each backend's engine trace of one size, in the results file's folder."""
    from cluster_runner.commands.provenance import profiled
    from cluster_runner.results.provenance import profile_dir, profile_stem

    def around(step, engine, backend):
        stem = profile_stem(profile_dir(path), engine.backend, step.size, axis)
        return profiled(backend, stem, out.print)

    return around


def _sweep(
    plan, writer, out, warmup, repeat, timeout, retries, fault=None, keep_going=False, until=None,
    stamp=lambda record: record, around=None, provider=None, transfer="share",
):  # fmt: skip
    """Run the sweep under a progress bar, printing a line per run and per pre-flight;
    ``stamp`` adds the job's commit and the tags to each record as it is written."""
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cluster_runner.analysis.report import NOISY_LOAD
    from cluster_runner.sweeps.loop import SweepObserver, run_sweep

    progress = Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=out,
        transient=True,
    )
    bar = progress.add_task("sweep", total=plan.runs(warmup, repeat))

    class Show(SweepObserver):
        def started(self, engine, info):
            up = f"{info.startup_s:.2f} s" if info.startup_s is not None else "?"
            if info.warmup_s:  # the job's warm-up, timed apart (issue 16)
                up += f" + warm-up {info.warmup_s:.2f} s"
            nodes = f" on {info.nodes} node(s)" if info.nodes and info.nodes > 1 else ""
            progress.console.print(f"{engine.backend}: {info.workers} worker(s){nodes} up in {up}")

        def checked(self, step, load, problems):
            bad = {name: p for name, p in problems.items() if p}
            names = ", ".join(e.backend for e in step.engines)
            busy = f"; other processes use {load:.0f}% of the CPUs" + (
                " (expect noisy timings)" if load > NOISY_LOAD else ""  # as the report says
            )
            if not bad:
                progress.console.print(
                    f"pre-flight at {step.size}: {names} connected and idle{busy}"
                )
            for name, items in bad.items():
                progress.console.print(
                    f"[red]pre-flight at {step.size}: {name} not timed:[/]"
                    f" {escape('; '.join(items))}"
                )

        def finished(self, record):
            label = record.labels.point or record.backend.name
            if record.status == "skipped":
                return
            kind = "warm-up" if record.warmup else f"run {record.labels.round + 1}"
            mark = {"verified": "[green]verified[/]", "unverified": "[red]NOT verified[/]"}
            status = mark.get(record.status, f"[red]{record.status}[/]")
            error = f": {escape(record.error)}" if record.error else ""
            progress.console.print(
                f"{escape(label)} {kind}: {status} in {record.wall_s:.3f} s{error}"
            )

        def advance(self, runs):
            progress.advance(bar, runs)

        def extended(self, runs):
            progress.update(bar, total=progress.tasks[0].total + runs)

        def precision(self, point, check):
            mark = "[green]precise[/]" if check.reached else "[yellow]not precise[/]"
            progress.console.print(f"{escape(point.label)}: {mark}: {escape(check.words)}")

    with progress:
        return run_sweep(
            plan,
            warmup=warmup,
            repeat=repeat,
            timeout=timeout,
            retries=retries,
            on_record=lambda record: writer.append(stamp(record)),
            observer=Show(),
            fault=fault,
            transfer=transfer,
            keep_going=keep_going,
            precision=until[0] if until else None,
            max_repeats=until[1] if until else None,
            around=around,
            provider=provider,
        )


def _summary(path, out) -> None:
    """The report of what this sweep wrote, read back from its file."""
    from cluster_runner.analysis.aggregate import aggregate
    from cluster_runner.analysis.report import print_report

    print_report(aggregate([path]), out)
