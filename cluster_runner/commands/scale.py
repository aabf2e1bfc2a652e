"""``runner scale``: time a job over worker counts, node counts or task counts, and report."""

from __future__ import annotations

import os

import click

from cluster_runner.commands.options import (
    IntList,
    RunOptions,
    backend_options,
    job_options,
    pass_run_options,
    run_options,
    security_options,
)


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
    type=click.Choice(["strong", "weak"]),
    default="strong",
    show_default=True,
    help="strong: fixed problem; weak: the problem grows with the size (each stage's weak"
    " parameter times the worker or node count).",
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
@run_options
def scale(
    run: RunOptions,
    workers: list[int] | None,
    nodes: list[int] | None,
    mode: str,
    chunks: list[int] | None,
    gpu: bool,
    keep_going: bool,
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
    """
    from cluster_runner.backends import backend_class, create_backend
    from cluster_runner.console import console
    from cluster_runner.devices import require_gpu
    from cluster_runner.results import ResultsWriter, results_path
    from cluster_runner.runs.faults import check_supported
    from cluster_runner.sweeps.plan import plan_sweep

    job = run.load_job()
    backends = run.backends
    for name in backends:
        check_supported(run.fault, name, backend_class(name).worker_processes)
    plan = plan_sweep(
        job,
        backends,
        workers=workers or ([] if nodes else _default_workers()),
        nodes=nodes or [],
        chunks=chunks or [],
        mode=mode,
        gpu=gpu,
        **run.connection,  # what every engine shares: address, TLS files (flags win), ...
    )
    for step in plan.steps:  # bad options (an address, TLS files) fail now, in one line
        for engine in step.engines:
            create_backend(engine.backend, engine.options)  # checks; starts nothing
    if (gpu or job.uses_gpu) and not run.address:
        require_gpu()  # a clear error now, before anything starts (a cluster checks its own)
    out = console()
    path = results_path(run.out_dir, job.name, "+".join(backends))
    sizes = ",".join(str(s.size) for s in plan.steps)
    more = f", chunks {','.join(map(str, chunks))}" if chunks and len(chunks) > 1 else ""
    out.print(
        f"[bold]{job.name}[/]: {mode} scaling of {', '.join(backends)} over"
        f" {'nodes' if nodes else 'workers'} {sizes}{more};"
        f" {run.warmup} warm-up + {run.repeat} timed run(s) a point"
    )
    for note in plan.notes:
        out.print(f"note: {note}")
    out.print(f"results: {path}")
    with ResultsWriter(path) as writer:
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
        )
    if outcome.records:
        _summary(path, out)
    verdict = "[green]every run verified[/]" if outcome.ok else "[red]not every point verified[/]"
    out.print(f"{verdict}; {outcome.records} record(s) in {path}")
    out.print(f"plot: runner report {path} --plot {path.with_suffix('.png')}")
    return 0 if outcome.ok else 1


def _sweep(plan, writer, out, warmup, repeat, timeout, retries, fault=None, keep_going=False):
    """Run the sweep under a progress bar, printing a line per run and per pre-flight."""
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

    with progress:
        return run_sweep(
            plan,
            warmup=warmup,
            repeat=repeat,
            timeout=timeout,
            retries=retries,
            on_record=writer.append,
            observer=Show(),
            fault=fault,
            keep_going=keep_going,
        )


def _summary(path, out) -> None:
    """The report of what this sweep wrote, read back from its file."""
    from cluster_runner.analysis.aggregate import aggregate
    from cluster_runner.analysis.report import print_report

    print_report(aggregate([path]), out)
