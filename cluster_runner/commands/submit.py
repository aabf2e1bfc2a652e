"""``runner submit``: run one job on one backend, verify it, print and record the results."""

from __future__ import annotations

import statistics

import click

from cluster_runner.commands.options import (
    RunOptions,
    backend_options,
    job_options,
    pass_run_options,
    run_options,
    security_options,
)


@click.command()
@pass_run_options
@job_options
@backend_options
@security_options
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Workers to start (processes, threads or Ray CPUs). [default: CPU count]",
)
@click.option(
    "--gpu", is_flag=True, help="Run the array stages (array_means, dot) on GPUs, with CuPy."
)
@run_options
def submit(run: RunOptions, workers: int | None, gpu: bool) -> int:
    """Run a job's graph on one backend; exit 0 if every result verified, 1 if not.

    Each run is appended to a JSON Lines file under --out the moment it ends.

    \b
    Examples:
      runner submit --job jobs/full.toml --backend local --workers 2
      runner submit --job primes --set n=1000000000 --repeat 3
      runner submit --job jobs/dot.toml --backend dask --address tcp://127.0.0.1:8786
      runner submit --job jobs/full.toml --cluster local-dask
      runner submit --job jobs/full.toml --backend dask --inject-fault kill-worker
      runner submit --job jobs/full.toml --gpu
    """
    from cluster_runner.backends import backend_class, create_backend
    from cluster_runner.console import console, run_line, stage_table
    from cluster_runner.devices import require_gpu
    from cluster_runner.results import ResultsWriter, RunRecord, results_path
    from cluster_runner.runs.faults import check_supported
    from cluster_runner.runs.job import run_job

    job = run.load_job()
    check_supported(run.fault, run.backend, backend_class(run.backend).worker_processes)
    if gpu:
        job = job.on_gpu()
    if job.uses_gpu and not run.address:
        require_gpu()  # a clear error now, before anything starts (a cluster checks its own)
    options = run.backend_options(workers=workers, gpu=job.uses_gpu, warm_up=job.warm_ups())
    out = console()
    engine = create_backend(run.backend, options)
    path = results_path(run.out_dir, job.name, run.backend)
    with ResultsWriter(path) as writer:
        out.print(
            f"[bold]{job.name}[/]: {job.description or ''} "
            f"({len(job.stages)} stage{'s' * (len(job.stages) > 1)})"
        )
        with engine:
            info = engine.info()
            out.print(_backend_line(info))
            out.print(f"results: {path}")

            def on_record(record: RunRecord) -> None:
                writer.append(record)
                out.print(run_line(record, run.warmup + run.repeat))

            records = run_job(
                job,
                engine,
                repeat=run.repeat,
                warmup=run.warmup,
                timeout=run.timeout,
                retries=run.retries,
                on_record=on_record,
                fault=run.fault,
            )
    timed = [r for r in records if not r.warmup]
    out.print(stage_table(timed))
    ok = all(r.status == "verified" for r in records)
    total = statistics.median(r.wall_s for r in timed)
    verdict = "[green]all stages verified[/]" if ok else "[red]verification FAILED[/]"
    out.print(f"{verdict}; median wall time {total:.3f} s over {len(timed)} run(s)")
    return 0 if ok else 1


def _backend_line(info) -> str:
    where = f"connected to {info.address}" if info.address else "started here"
    method = f", {info.start_method}" if info.start_method else ""
    nodes = f" on {info.nodes} nodes" if info.nodes and info.nodes > 1 else ""
    up = f", up in {info.startup_s:.2f} s" if info.startup_s is not None else ""
    dash = f"\ndashboard: {info.dashboard}" if info.dashboard else ""
    return (
        f"backend [bold]{info.name}[/] {info.version}: {info.workers} workers{nodes}"
        f"{method} ({where}{up}){dash}"
    )
