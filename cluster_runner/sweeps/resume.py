"""``--resume FILE``: time only what a sweep's results file does not hold yet, and append it there.

A sweep cut off (a batch job's time limit, a crash, Ctrl-C) keeps every run it finished: each
record is written the moment its run ends. ``runner scale ... --resume FILE``, the same command
with the file added, plans the whole sweep again, reads ``FILE``, and times only the rounds that
are missing: a point whose ``--repeat`` timed runs all finished (verified or not) is left out, a
point cut off after two of five runs gets rounds 3 to 5 (after its warm-ups, on a freshly
started backend), and a point not started gets all of them. Runs that failed or were skipped
count as not measured. The new records go to the end of ``FILE``, so the file then holds what
one uninterrupted sweep would have written, with each round once. A ``FILE`` that does not
exist yet is where the whole sweep goes, so that one batch script, submitted again until the
sweep is done, starts it and continues it alike.

A point is known by what makes it that point: the job as given (its spec digest before scaling
and overrides), the mode and axis, the backend, the size, the chunk count, the device and the
``--vary`` values. A file of another sweep (another job, parameters, mode or axis) is refused
in one line naming what differs, rather than silently timing everything again.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from cluster_runner.errors import UsageError
from cluster_runner.results import RunRecord
from cluster_runner.sweeps.plan import Point, SweepPlan

#: Statuses of a run that was measured (its time is in the file).
MEASURED = ("verified", "unverified")


def point_key(
    backend: str, size: int, chunks: int | None, device: str, params: Any, digest: str, mode: str,
    axis: str,
) -> tuple:  # fmt: skip
    """What makes a point that point (see the module docstring), hashable."""
    return (backend, size, chunks, device, json.dumps(dict(params or {}), sort_keys=True),
            digest, mode, axis)  # fmt: skip


def plan_key(plan: SweepPlan, point: Point) -> tuple:
    return point_key(
        point.backend, point.size, point.chunks, point.device, dict(point.params),
        plan.job.digest, plan.mode, plan.axis,
    )  # fmt: skip


def record_key(record: RunRecord) -> tuple | None:
    """A sweep record's point (None for a record of ``runner submit``, which has no labels)."""
    labels = record.labels
    if labels is None or labels.size is None:
        return None
    return point_key(
        record.backend.name, labels.size, labels.chunks, labels.device or "cpu", labels.params,
        labels.base_digest or record.job.digest, labels.mode or "strong", labels.axis or "workers",
    )  # fmt: skip


def measured(path: Path | str, plan: SweepPlan, transfer: str = "share") -> Counter:
    """Timed runs that finished, per point, in ``path``; refuse a file of another sweep."""
    from cluster_runner.results import read_records

    path = Path(path)
    counts: Counter = Counter()
    if not path.exists():
        return counts  # a sweep not started yet: all of it goes there
    if not path.is_file():
        raise UsageError(f"--resume {path}: not a results file (name the file to continue)")
    for record in read_records([path], timelines=False):
        _check_same_sweep(path, plan, record, transfer)
        key = record_key(record)
        if key is not None and not record.warmup and record.status in MEASURED:
            counts[key] += 1
    return counts


def resume_plan(
    plan: SweepPlan, path: Path | str, repeat: int, transfer: str = "share"
) -> tuple[SweepPlan, int, int]:
    """``plan`` less what ``path`` holds: ``(the plan left, points complete, rounds already
    measured of the points left)``. A point keeps the rounds it lacks (``Point.done``).
    ``transfer`` is the sweep's ``--transfer``: a file of runs whose inputs travelled the
    other way is another sweep."""
    counts = measured(path, plan, transfer)
    complete = partial = 0
    steps = []
    for step in plan.steps:
        engines = []
        for engine in step.engines:
            points = []
            for point in engine.points:
                done = min(counts.get(plan_key(plan, point), 0), repeat)
                if done >= repeat:
                    complete += 1
                    continue
                partial += done
                points.append(replace(point, done=done))
            if points:
                engines.append(replace(engine, points=tuple(points)))
        if engines:
            steps.append(replace(step, engines=tuple(engines)))
    return replace(plan, steps=tuple(steps)), complete, partial


def _check_same_sweep(path: Path, plan: SweepPlan, record: RunRecord, transfer: str) -> None:
    labels = record.labels
    if labels is None:
        raise UsageError(
            f"--resume {path}: it holds runs of runner submit, not of a sweep; resume a file"
            " that runner scale wrote"
        )
    have = {
        "job": f"{record.job.name} (spec digest {labels.base_digest})",
        "mode": labels.mode,
        "axis": labels.axis,
        "transfer": record.transfer_mode or transfer,  # a run without inputs fits either
    }
    want = {
        "job": f"{plan.job.name} (spec digest {plan.job.digest})",
        "mode": plan.mode,
        "axis": plan.axis,
        "transfer": transfer,
    }
    for name, value in want.items():
        if have[name] != value:
            detail = f"{name} {have[name]}, this sweep {name} {value}"
            if name == "job" and record.job.name == plan.job.name:
                detail += " (another --set, or the job file changed)"
            raise UsageError(
                f"--resume {path}: it holds another sweep: {detail}; give the same job, --set,"
                " --mode, --transfer and sizes as the sweep that wrote it"
            )
