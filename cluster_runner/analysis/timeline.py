"""Why a point scaled as it did: one run's tasks on a timeline, a row per worker.

A speedup says *that* a point scaled badly; the timeline shows *why* (issue 18): one row per
worker, each task a bar from its start to its end, coloured by stage, so that idle gaps (a
worker waiting for work or for a dependency), stragglers (one task much longer than the
others of its kind) and a serial reduce at the end (one worker busy, the others idle) are
visible at a glance. It is drawn from the records alone (``stages[].timeline``, see
:class:`~cluster_runner.results.stages.Timeline`), so any run of any backend can be drawn
after the fact, without the engine.

What is marked:

- each stage's window, from the driver's first submit to its value in the driver (grey
  band): the scheduling and transfer costs before the first task and after the last;
- a task rerun after its worker was lost (``attempt`` > 0) is hatched with a red edge;
- a straggler, a task more than :data:`STRAGGLER` times the median of its kind in its stage
  (kinds of at least 4 tasks) and over 2% of the stage's wall time, has an orange edge;
- a serial task, the only one of its kind in its stage (the primes' base sieve, every
  reduce), has a black edge and its kind written on it where it fits;
- a failed run says which task failed, and draws the stages that finished (the failed stage's
  tasks are not in the record).

Each row's label says how busy that worker was over the run's span.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cluster_runner.errors import UsageError

if TYPE_CHECKING:
    from cluster_runner.results import RunRecord

#: A task this many times the median of its kind in its stage is a straggler.
STRAGGLER = 2.0


@dataclass(frozen=True)
class Bar:
    """One task on the timeline: its row, seconds from the run's start, what it was."""

    row: int
    start: float
    end: float
    stage: str
    kind: str
    attempt: int = 0
    serial: bool = False  # the only task of its kind in its stage
    straggler: bool = False


@dataclass(frozen=True)
class RunTimeline:
    """A run's tasks laid out: rows (workers), bars, stage windows, and what is missing."""

    record: RunRecord
    rows: tuple[str, ...]  # one label per worker
    busy: tuple[float, ...]  # per row: share of the run's span its tasks kept it busy
    bars: tuple[Bar, ...]
    windows: tuple[tuple[str, float, float], ...]  # (stage, from, to): the driver's view
    missing: tuple[str, ...] = ()  # stages drawn without tasks, and why

    @property
    def span(self) -> float:
        ends = [b.end for b in self.bars] + [w[2] for w in self.windows]
        return max(ends, default=0.0)

    @property
    def title(self) -> str:
        r = self.record
        size = r.labels.size if r.labels is not None and r.labels.size else r.backend.workers
        wall = f"{r.wall_s:.3g} s" if r.wall_s is not None else "not timed"
        return (
            f"{r.job.name} on {r.backend.name} x{size}, run {r.run_id} ({r.status}, {wall},"
            f" {len(self.bars)} tasks on {len(self.rows)} workers)"
        )


def layout(record: RunRecord) -> RunTimeline:
    """The timeline of one run, from its record (see the module docstring)."""
    stages = [s for s in record.stages if s.timeline is not None and len(s.timeline)]
    missing = []
    for s in record.stages:
        if s.timeline is None:
            missing.append(f"{s.name}: no task times in this record (written before issue 18)")
        elif s.timeline.dropped:
            missing.append(f"{s.name}: {s.timeline.dropped} tasks, more than a record keeps")
    for s in record.stages:
        marked = s.timeline is not None and any(s.timeline.attempt)
        if s.retried and not marked:
            missing.append(f"{s.name}: {s.retried} task(s) rerun after a lost worker, which"
                           f" {record.backend.name} does not name")  # fmt: skip
    if record.status == "failed":
        missing.append(f"failed: {record.error or 'no reason given'}")
    if not stages:
        return RunTimeline(record, (), (), (), (), tuple(missing))
    origin = min(s.timeline.began for s in stages)
    workers: dict[tuple[str, str], None] = {}
    for s in stages:
        tl = s.timeline
        for name, node in zip(tl.workers, tl.nodes, strict=True):
            workers.setdefault((node, name), None)
    order = sorted(workers, key=lambda w: (_natural(w[0]), _natural(w[1])))
    row_of = {w: i for i, w in enumerate(order)}
    bars: list[Bar] = []
    windows = []
    for s in stages:
        tl = s.timeline
        shift = tl.began - origin
        windows.append((s.name, shift, shift + (s.wall_s or 0.0)))
        durations: dict[int, list[float]] = defaultdict(list)
        for k, a, b in zip(tl.kind, tl.start_us, tl.end_us, strict=True):
            durations[k].append((b - a) / 1e6)
        typical = {k: statistics.median(v) for k, v in durations.items() if len(v) >= 4}
        noticeable = 0.02 * (s.wall_s or 0.0)  # shorter than this, no one waits on it
        attempts = tl.attempt or (0,) * len(tl)
        for i in range(len(tl)):
            k = tl.kind[i]
            start, end = shift + tl.start_us[i] / 1e6, shift + tl.end_us[i] / 1e6
            w = tl.worker[i]
            bars.append(
                Bar(
                    row_of[(tl.nodes[w], tl.workers[w])], start, end, s.name, tl.kinds[k],
                    attempts[i], serial=len(durations[k]) == 1,
                    straggler=k in typical
                    and end - start > max(STRAGGLER * typical[k], noticeable),
                )
            )  # fmt: skip
    span = max([b.end for b in bars] + [w[2] for w in windows]) - min(
        [b.start for b in bars] + [w[1] for w in windows]
    )
    busy_s = [0.0] * len(order)
    for bar in bars:
        busy_s[bar.row] += bar.end - bar.start
    several_nodes = len({node for node, _ in order}) > 1
    rows = tuple(_row_label(node, name, several_nodes) for node, name in order)
    busy = tuple(b / span if span > 0 else 0.0 for b in busy_s)
    return RunTimeline(record, rows, busy, tuple(bars), tuple(windows), tuple(missing))


def _row_label(node: str, name: str, with_node: bool) -> str:
    short = name
    if len(short) > 22:  # a Ray worker id: 56 hex digits
        short = short[:10] + "…" + short[-6:]
    return f"{node}: {short}" if with_node else short


def _natural(text: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def find_run(records: Iterable[RunRecord], run_id: str) -> RunRecord:
    """The record whose ``run_id`` is or starts with ``run_id``; one line if none or several.

    ``records`` may be a generator (read once): only the matches are kept.
    """
    found, some = [], []
    for r in records:
        if len(some) < 5 and r.run_id:
            some.append(r.run_id)
        if r.run_id == run_id:
            return r
        if run_id and r.run_id.startswith(run_id):
            found.append(r)
    if len(found) == 1:
        return found[0]
    if not found:
        some = ", ".join(some)
        raise UsageError(
            f"--timeline {run_id}: no run with that id in these results (run ids are in the"
            f" records' run_id, e.g. {some or 'none'})"
        )
    raise UsageError(f"--timeline {run_id}: {len(found)} runs start with it; give more of it")


def typical_runs(experiment, records: Iterable[RunRecord]) -> list[RunRecord]:
    """A run worth looking at per series: the median-time run of its largest timed point.

    ``records`` may be a generator (read once): only the runs chosen are kept.
    """
    from cluster_runner.analysis.aggregate import series_name
    from cluster_runner.analysis.identity import labels_of

    targets: dict[tuple, float] = {}
    for series in experiment.series:
        timed = series.timed
        if not timed:
            continue
        point = max(timed, key=lambda p: p.size)
        targets[(point.backend, point.size, point.chunks)] = statistics.median_low(point.samples)
    chosen = {}
    for r in records:
        labels = labels_of(r)
        key = (series_name(r), labels.size, labels.chunks)
        if (
            key in targets
            and key not in chosen
            and not r.warmup
            and r.status == "verified"
            and r.wall_s == targets[key]
            and any(s.timeline is not None for s in r.stages)
        ):
            chosen[key] = r
    return [chosen[k] for k in targets if k in chosen]


# --- drawing --------------------------------------------------------------------------------


def draw(view: RunTimeline, ax) -> None:
    """Draw ``view`` on a matplotlib axis (see the module docstring for the marks)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    stages = list(dict.fromkeys(w[0] for w in view.windows))
    colour = {s: cycle[i % len(cycle)] for i, s in enumerate(stages)}
    n = max(len(view.rows), 1)
    for i, (stage, start, end) in enumerate(view.windows):
        ax.axvspan(start, end, color="0.5" if i % 2 else "0.7", alpha=0.15, linewidth=0)
        ax.text((start + end) / 2, -0.42, stage, ha="center", va="bottom", fontsize=8,
                color="0.3", clip_on=True)  # fmt: skip
    by_style: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    thinnest = 0.004 * (view.span or 1.0)  # a marked task stays visible however short it was
    for bar in view.bars:
        edge = (
            "red" if bar.attempt else "orange" if bar.straggler else "black" if bar.serial else None
        )
        width = max(bar.end - bar.start, thinnest if edge else 1e-9)
        by_style[(bar.row, bar.stage, edge, bool(bar.attempt))].append((bar.start, width))
    for (row, stage, edge, rerun), spans in by_style.items():
        ax.broken_barh(
            spans, (row - 0.38, 0.76), facecolors=colour[stage],
            edgecolors=edge or colour[stage], linewidth=1.4 if edge else 0.3,
            hatch="///" if rerun else None,
        )  # fmt: skip
    span = view.span or 1.0
    for bar in view.bars:
        if bar.serial and bar.end - bar.start > 0.06 * span:
            ax.text((bar.start + bar.end) / 2, bar.row, bar.kind, ha="center", va="center",
                    fontsize=7, color="white", clip_on=True)  # fmt: skip
    ax.set_yticks(range(len(view.rows)))
    ax.set_yticklabels([f"{r} ({b:.0%} busy)" for r, b in zip(view.rows, view.busy, strict=True)],
                       fontsize=8)  # fmt: skip
    ax.set_ylim(n - 0.5, -0.85)  # the first worker on top, room for the stage names above
    ax.set_xlim(min([0.0] + [w[1] for w in view.windows]), span * 1.01)
    ax.set_xlabel("seconds since the run's first submit (each task timed by its worker's clock)")
    ax.grid(True, axis="x", alpha=0.3)
    handles = [Patch(facecolor=colour[s], label=s) for s in stages]
    marks = (
        (any(b.attempt for b in view.bars), "red", "///", "rerun"),
        (any(b.straggler for b in view.bars), "orange", None,
         f"straggler (>{STRAGGLER:g}x its kind's median)"),
        (any(b.serial for b in view.bars), "black", None, "serial (alone of its kind)"),
    )  # fmt: skip
    for shown, edge, hatch, label in marks:
        if shown:
            handles.append(Patch(facecolor="white", edgecolor=edge, hatch=hatch, label=label))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = view.title
    if view.missing:
        title += "\n" + "; ".join(view.missing)
    ax.set_title(title, fontsize=9, color="tab:red" if view.record.status == "failed" else "black",
                 loc="left")  # fmt: skip


def figure(view: RunTimeline):
    """A matplotlib figure of the timeline, sized to its rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 1.6 + 0.32 * max(len(view.rows), 1)
    fig, ax = plt.subplots(figsize=(12, height), layout="constrained")
    if view.bars or view.windows:
        draw(view, ax)
    else:
        ax.set_axis_off()
        ax.set_title(view.title + "\n" + ("; ".join(view.missing) or "no tasks recorded"),
                     fontsize=9, loc="left")  # fmt: skip
    return fig


def write_png(view: RunTimeline, path: str | Path) -> Path:
    """``runner report --timeline RUN_ID --plot FILE``: the timeline as an image file."""
    from cluster_runner.analysis.plots import save_figure

    return save_figure(figure(view), path, "the timeline")
