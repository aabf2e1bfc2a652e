"""Task timelines in records, their layout and drawing; the commit and tags records carry."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_report import record

from cluster_runner.analysis.timeline import find_run, layout
from cluster_runner.cli import main
from cluster_runner.errors import UsageError
from cluster_runner.results import ResultsWriter, RunRecord, Timeline, read_records
from cluster_runner.results.provenance import git_source, parse_tags
from cluster_runner.results.stages import MAX_TIMELINE_TASKS, task_kind

from conftest import ROOT, runner_command


def trace(key, worker, start, end, attempt=0, node="vm"):
    return SimpleNamespace(key=key, worker=worker, node=node, start=start, end=end, attempt=attempt)


def two_worker_stage(began: float = 1000.0) -> list:
    """A base task, eight chunks over two workers (one four times longer, one rerun), a reduce."""
    traces = [trace("s/base", "pid-1", began + 0.001, began + 0.011)]
    for i in range(8):
        worker = f"pid-{1 + i % 2}"
        start = began + 0.012 + 0.01 * (i // 2)
        length = 0.04 if i == 5 else 0.01
        traces.append(trace(f"s/chunk-{i:06d}", worker, start, start + length, attempt=int(i == 2)))
    traces.append(trace("s/reduce", "pid-2", began + 0.080, began + 0.085))
    return traces


def test_a_timeline_keeps_every_task_compactly_and_reads_back_equal():
    timeline = Timeline.from_traces(two_worker_stage(), began=1000.0)
    assert len(timeline) == 10
    assert timeline.workers == ("pid-1", "pid-2")
    assert timeline.kinds == ("base", "chunk", "reduce")
    assert timeline.start_us[0] == 1000 and timeline.end_us[0] == 11000
    assert timeline.attempt.count(1) == 1
    data = timeline.to_json()
    assert Timeline.from_json(json.loads(json.dumps(data))) == timeline
    ran_once = Timeline.from_traces([trace("s/a-1", "w", 1.0, 2.0)], began=1.0)
    assert "attempt" not in ran_once.to_json()
    many = [trace(f"s/t-{i}", "w", 1.0, 1.5) for i in range(MAX_TIMELINE_TASKS + 1)]
    too_many = Timeline.from_traces(many, began=1.0)
    assert len(too_many) == 0 and too_many.dropped == MAX_TIMELINE_TASKS + 1


@pytest.mark.parametrize(
    "key, kind",
    [("primes/chunk-000003", "chunk"), ("dot/reduce", "reduce"), ("s/task-0000001", "task"),
     ("plain", "plain"), ("s/42", "42")],
)  # fmt: skip
def test_task_kinds_drop_the_stage_and_the_number(key, kind):
    assert task_kind(key) == kind


def stage_json(traces=None, began=1000.0, wall=0.09) -> dict:
    timeline = Timeline.from_traces(traces or two_worker_stage(began), began=began)
    return {"name": "s", "workload": "primes", "tasks": len(timeline), "wall_s": wall,
            "busy_s": 0.1, "timeline": timeline.to_json()}  # fmt: skip


def run_with_timeline(run_id="abc123def456", **extra) -> dict:
    r = record("local", 2, 0.09)
    r.update(run_id=run_id, stages=[stage_json()], **extra)
    return r


def test_layout_marks_reruns_stragglers_and_the_serial_tasks():
    view = layout(RunRecord.from_json(run_with_timeline()))
    assert len(view.rows) == 2 and len(view.bars) == 10
    marked = {(b.kind, b.attempt, b.straggler, b.serial) for b in view.bars}
    assert ("chunk", 1, False, False) in marked  # the rerun
    assert sum(b.straggler for b in view.bars) == 1  # the chunk four times the others
    assert {b.kind for b in view.bars if b.serial} == {"base", "reduce"}
    assert view.windows == (("s", 0.0, 0.09),)
    busy = dict(zip(view.rows, view.busy, strict=True))
    assert busy["pid-2"] > busy["pid-1"]  # it ran the straggler and the reduce
    assert min(view.busy) > 0 and max(view.busy) < 1


def test_a_failed_run_and_an_old_record_say_what_is_missing():
    failed = run_with_timeline(status="failed", error="task s/chunk-000007 failed: boom")
    view = layout(RunRecord.from_json(failed))
    assert any("s/chunk-000007" in m for m in view.missing)
    old = record("local", 2, 0.09)  # written before timelines: stages without one
    view = layout(RunRecord.from_json(old))
    assert view.bars == () and any("no task times" in m for m in view.missing)


def test_find_run_takes_a_unique_prefix():
    records = [RunRecord.from_json(run_with_timeline(i)) for i in ("aaa111", "aab222", "b33")]
    assert find_run(iter(records), "aab").run_id == "aab222"
    assert find_run(iter(records), "b33").run_id == "b33"
    with pytest.raises(UsageError, match="2 runs start with it"):
        find_run(iter(records), "aa")
    with pytest.raises(UsageError, match="no run with that id"):
        find_run(iter(records), "zzz")


def write(path: Path, *records: dict) -> str:
    with ResultsWriter(path) as writer:
        for r in records:
            writer.append(r)
    return str(path)


def test_report_draws_one_runs_timeline_as_a_png(tmp_path, capsys):
    results = write(tmp_path / "r.jsonl", run_with_timeline("abc123def456"))
    png = tmp_path / "timeline.png"
    code = main(["report", results, "--timeline", "abc123", "--plot", str(png)])
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "timeline:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--timeline", "abc"], "--timeline draws with --plot"),
        (["--timeline", "nope", "--plot", "t.png"], "no run with that id"),
        (["--timeline", "a", "--timeline", "b", "--plot", "t.png"], "one --timeline"),
    ],
)
def test_timeline_options_refuse_bad_input_in_one_line(tmp_path, capsys, args, message):
    results = write(tmp_path / "r.jsonl", run_with_timeline("abc123def456"))
    code = main(["report", results, *[str(tmp_path / a) if a.endswith(".png") else a
                                      for a in args]])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "t.png").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(end_us=t["end_us"][:-1]), "entries"),
        (lambda t: t.update(worker=[9] * len(t["worker"])), "out of range"),
        (lambda t: t.update(start_us=[10**9] * len(t["start_us"])), "ends before it starts"),
        (lambda t: t.update(kinds=[1, 2, 3]), "strings"),
    ],
)
def test_a_malformed_timeline_is_refused_in_one_line(tmp_path, capsys, change, message):
    r = run_with_timeline()
    change(r["stages"][0]["timeline"])
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(r) + "\n")
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "r.jsonl:1" in err[0] and message in err[0]


def test_tags_and_source_read_back_and_bad_tags_are_refused(tmp_path, capsys):
    r = run_with_timeline(tags={"variant": "new"},
                          source={"path": "/x", "commit": "c" * 40, "dirty": True})  # fmt: skip
    back = RunRecord.from_json(json.loads(json.dumps(RunRecord.from_json(r).to_json())))
    assert back.tags == {"variant": "new"} and back.source.short == "cccccccc+dirty"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({**r, "tags": {"variant": 3}}) + "\n")
    assert main(["report", str(path)]) == 2
    assert "tags must be an object of strings" in capsys.readouterr().err


@pytest.mark.parametrize(
    "items, message",
    [(["variant"], "KEY=VALUE"), (["=x"], "KEY=VALUE"), (["1a=x"], "KEY=VALUE"),
     (["k=a\nb"], "one line"), (["k=a", "k=b"], "given twice")],
)  # fmt: skip
def test_bad_tags_are_usage_errors(items, message):
    with pytest.raises(UsageError, match=message):
        parse_tags(items)
    assert parse_tags(["a=1", "b.c=x=y", "a=1"]) == {"a": "1", "b.c": "x=y"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_submit_records_the_jobs_commit_and_tags_and_a_two_worker_timeline(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    job = repo / "small.toml"
    job.write_text('[[stage]]\nworkload = "primes"\nn = 3_000_000\nchunks = 12\n')

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    git("add", "small.toml")
    git("commit", "-q", "-m", "job")
    head = git("rev-parse", "HEAD")
    assert git_source(repo).commit == head and not git_source(repo).dirty
    out = tmp_path / "results"
    done = subprocess.run(
        [*runner_command(), "submit", "--job", str(job), "--backend", "local", "--workers", "2",
         "--repeat", "2", "--out", str(out), "--tag", "variant=new", "--tag", "host=ci"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = list(read_records([out]))
    assert len(records) == 2
    for r in records:
        assert r.tags == {"variant": "new", "host": "ci"}
        assert r.source.commit == head and r.source.dirty is False
        (stage,) = r.stages
        assert len(stage.timeline) == stage.tasks == 14  # base, 12 chunks, reduce
        assert 1 <= len(stage.timeline.workers) <= 2
        assert stage.timeline.kinds == ("base", "chunk", "reduce")
        starts, ends = stage.timeline.start_us, stage.timeline.end_us
        assert min(starts) >= 0 and max(ends) <= stage.wall_s * 1e6 + 1e5  # within the stage
    job.write_text(job.read_text() + "# changed\n")
    assert git_source(repo).dirty is True
    assert git_source(tmp_path / "results").commit is None  # no work tree there
