"""``runner scale``'s options for sweeps over any parameter and for resuming (issue 19), and the
words that say what a sweep will time.

``--vary NAME=V1,V2`` (repeatable) and ``--zip`` choose the variants (:mod:`cluster_runner.sweeps
.vary`); ``--resume FILE`` continues a sweep that was cut off (:mod:`cluster_runner.sweeps
.resume`). Kept apart from :mod:`.scale` so that each stays one screenful of options.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cluster_runner.commands.types import SafePath


def sweep_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--resume",
        type=SafePath(dir_okay=False),
        default=None,
        metavar="FILE",
        help="Continue the sweep whose results are in FILE (cut off by a time limit, a crash"
        " or Ctrl-C): time only the rounds FILE lacks (same job, --set, backends, sizes and"
        " --vary), and append them to FILE (--out is not used). A FILE not there yet gets the"
        " whole sweep: one batch script starts and continues it alike.",
    )(func)
    func = click.option(
        "--zip",
        "zip_lists",
        is_flag=True,
        help="Pair the --vary lists in order (n=1e9 with chunks=64, n=1e10 with chunks=256)"
        " instead of timing every combination.",
    )(func)
    return click.option(
        "--vary",
        multiple=True,
        metavar="NAME=V1,V2",
        help="Also sweep a job parameter, as --set names it (n, primes.chunks): each size is"
        " timed at every value, and every combination of several --vary (see --zip). With"
        " --mode throughput: the problem size that grows.",
    )(func)


def results_file(resume: str | None, out_dir: str, job: str, backends: str) -> Path:
    """Where the sweep's records go: the file resumed, else a new one under ``out_dir``."""
    from cluster_runner.results import results_path
    from cluster_runner.results.store import check_out_dir

    if resume is None:
        return results_path(out_dir, job, backends)
    from cluster_runner.errors import ResultsFileError

    path = Path(resume).expanduser()
    try:
        check_out_dir(path.parent)  # a folder one can write in, checked before anything starts
    except ResultsFileError as exc:
        raise ResultsFileError(f"--resume {path}: {exc}".replace(" --out ", " folder ")) from None
    return path


def resumed(plan, resume: str | None, repeat: int, say: Callable[[str], None], transfer="share"):
    """``plan`` less the rounds ``resume`` holds (the plan itself without ``--resume``)."""
    if resume is None:
        return plan
    from cluster_runner.sweeps.resume import resume_plan

    if not Path(resume).exists():
        say(f"resuming {resume}: not there yet, the whole sweep goes there")
        return plan
    left, complete, partial = resume_plan(plan, resume, repeat, transfer)
    points = sum(len(e.points) for s in left.steps for e in s.engines)
    say(
        f"resuming {resume}: {complete} point(s) complete there, {points} to time"
        + (f" ({partial} of their timed runs already there)" if partial else "")
    )
    return left


def headline(plan, backends, nodes, chunks, vary, zipped: bool, warmup: int, repeat: int) -> str:
    """What the sweep times, in one line (after the job's name)."""
    from cluster_runner.sweeps.vary import value_text

    sizes = ",".join(str(s.size) for s in plan.steps)
    over = f"over {'nodes' if nodes else 'workers'} {sizes}"
    if plan.mode == "throughput":
        values = ",".join(value_text(v[0]) for v in vary.variants)
        unit = "node" if nodes else "worker"
        fixed = plan.steps[0].size if plan.steps else "?"
        what = f"throughput of {', '.join(backends)} at {fixed} {unit}(s) over {plan.axis} {values}"
    else:
        what = f"{plan.mode} scaling of {', '.join(backends)} {over}"
    if chunks and len(chunks) > 1:
        what += f", chunks {','.join(map(str, chunks))}"
    if vary is not None and plan.mode != "throughput":
        how = " (paired)" if zipped else ""
        what += f", {len(vary.variants)} variant(s) of {', '.join(vary.names)}{how}"
    return f"{what}; {warmup} warm-up + {repeat} timed run(s) a point"
