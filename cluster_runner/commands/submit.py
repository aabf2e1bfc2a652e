"""``runner submit``: run one job on one backend, verify it, print and record the results."""

from __future__ import annotations

import dataclasses
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
from cluster_runner.commands.provenance import provenance_options


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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the backend and every run's record as one JSON document on stdout, for"
    " scripts; the lines for people go to stderr.",
)
@provenance_options
@run_options
def submit(
    run: RunOptions,
    workers: int | None,
    gpu: bool,
    as_json: bool,
    tags: tuple[str, ...] = (),
    profile: bool = False,
) -> int:
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
      runner submit --job primes --json > run.json
      runner submit --job primes --backend dask --tag variant=new --profile
    """
    from rich.markup import escape

    from cluster_runner.backends import backend_class, create_backend
    from cluster_runner.commands.provenance import profiled, provenance_of
    from cluster_runner.console import console, plural, print_json, run_line, stage_table
    from cluster_runner.devices import require_gpu
    from cluster_runner.results import ResultsWriter, RunRecord, results_path
    from cluster_runner.runs.faults import check_supported
    from cluster_runner.runs.job import prepare, run_job
    from cluster_runner.runs.reference import ReferenceStore

    if run.slurm is not None:  # issue 19: a sweep asks Slurm for the largest size once
        from cluster_runner.errors import UsageError

        raise UsageError(
            f"the profile asks Slurm for nodes ({run.slurm.name}), which runner scale does:"
            " runner scale --cluster PROFILE --nodes 1,2"
        )
    job = run.load_job()
    stamp = provenance_of(run.job_path, tags)
    check_supported(run.fault, run.backend, backend_class(run.backend).worker_processes)
    if gpu:
        job = job.on_gpu()
    if job.uses_gpu and not run.address:
        require_gpu()  # a clear error now, before anything starts (a cluster checks its own)
    options = run.backend_options(workers=workers, gpu=job.uses_gpu, warm_up=job.warm_ups())
    out = console(stderr=as_json)
    engine = create_backend(run.backend, options)
    path = results_path(run.out_dir, job.name, run.backend)
    written: list[RunRecord] = []
    with ResultsWriter(path) as writer:
        out.print(
            f"[bold]{escape(job.name)}[/]: {escape(job.description or '')} "
            f"({len(job.stages)} stage{'s' * (len(job.stages) > 1)})",
            emoji=False,  # the user's words, as written (:smile: too)
        )
        with prepare(job) as ready, engine:  # inputs made and checked before the engine starts
            info = engine.info()
            out.print(_backend_line(info))
            out.print(f"results: {escape(str(path))}")

            def on_record(record: RunRecord) -> None:
                record = stamp.stamp(record)  # the job's git commit, the --tag labels
                writer.append(record)
                written.append(record)
                out.print(run_line(record, run.warmup + run.repeat))

            stem = None
            if profile:  # named after the workers the engine really has
                from cluster_runner.results.provenance import profile_dir, profile_stem

                stem = profile_stem(profile_dir(path), run.backend, info.workers)
            with profiled(engine, stem, out.print):
                run_job(
                    job,
                    engine,
                    repeat=run.repeat,
                    warmup=run.warmup,
                    timeout=run.timeout,
                    retries=run.retries,
                    on_record=on_record,
                    fault=run.fault,
                    transfer=run.transfer,
                    ready=ready,
                    references=ReferenceStore(run.out_dir),  # serial references kept there
                )
    records = written
    timed = [r for r in records if not r.warmup]
    out.print(stage_table(timed))
    ok = all(r.status == "verified" for r in records)
    total = statistics.median(r.wall_s for r in timed)
    verdict = "[green]all stages verified[/]" if ok else "[red]verification FAILED[/]"
    out.print(f"{verdict}; median wall time {total:.3f} s over {plural(len(timed), 'run')}")
    if as_json:
        print_json(
            {
                "ok": ok,
                "results_file": str(path),
                "median_wall_s": total,
                "backend": dataclasses.asdict(info),
                "runs": [record.to_json() for record in records],
            }
        )
    return 0 if ok else 1


def _backend_line(info) -> str:
    from rich.markup import escape

    from cluster_runner.console import plural

    where = f"connected to {escape(info.address)}" if info.address else "started here"
    # The address the engine reports, where it differs from the one given (issue 17:
    # `--address auto` said `connected to auto`, while /tmp/ray can name anyone's cluster).
    resolved = info.extra.get("gcs") or info.extra.get("scheduler")
    if info.address and resolved and resolved != info.address:
        where = f"connected to {escape(resolved)}, from --address {escape(info.address)}"
    method = f", {info.start_method}" if info.start_method else ""
    nodes = f" on {plural(info.nodes, 'node')}" if info.nodes and info.nodes > 1 else ""
    up = f", up in {info.startup_s:.2f} s" if info.startup_s is not None else ""
    if info.startup_s is not None and info.warmup_s:  # the job's warm-up, apart (issue 16)
        up += f" + warm-up {info.warmup_s:.2f} s"
    dash = f"\ndashboard: {info.dashboard}" if info.dashboard else ""
    if not info.dashboard and info.extra.get("dashboard_hint"):
        dash = f"\ndashboard: {escape(info.extra['dashboard_hint'])}"
    return (
        f"backend [bold]{info.name}[/] {info.version}: {plural(info.workers, 'worker')}{nodes}"
        f"{method} ({where}{up}){dash}"
    )
