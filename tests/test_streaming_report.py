"""Issue 16: ``runner report`` streams records. Its memory grows with the points, not with the
runs; a big file folded in parallel gives the same report as one read in order; and the
intervals of points with thousands of runs are the ones the exact arithmetic gives."""

from __future__ import annotations

import json
import random
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from cluster_runner.analysis import folding, intervals
from cluster_runner.analysis.aggregate import aggregate
from cluster_runner.analysis.report import json_report
from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.errors import ResultsFileError
from cluster_runner.jobspec import parse_job
from cluster_runner.results import RunRecord, read_records
from cluster_runner.runs.job import run_job

NOOP = '[[stage]]\nworkload = "noop"\ntasks = 20\n'


def template() -> dict:
    """One real record of a small run, as its results file holds it."""
    with create_backend("serial", BackendOptions()) as serial:
        (record,) = run_job(parse_job(NOOP, name="noop"), serial)
    return record.to_json()


def synthetic_runs(path: Path, runs: int, seed: int = 0) -> None:
    """``runs`` records of four points (serial and threads at 1 and 2 workers), times jittered."""
    base = template()
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(runs):
            record = json.loads(json.dumps(base))
            name, workers = [("serial", 1), ("threads", 1), ("threads", 2), ("threads", 4)][i % 4]
            record["backend"].update(name=name, workers=workers)
            record["run_id"] = f"{i:012x}"
            record["repeat"] = i // 4
            record["wall_s"] = 0.01 * (1 + 0.2 * rnd.random()) / (workers**0.5)
            record.pop("cold", None)
            out.write(json.dumps(record, sort_keys=True) + "\n")


def test_report_memory_grows_with_points_not_runs(tmp_path):
    path = tmp_path / "runs.jsonl"
    synthetic_runs(path, 20_000)
    # What keeping the records would take: a thousand of them, measured, times twenty.
    tracemalloc.start()
    try:
        kept = list(_first(read_records([path]), 1000))
        per_thousand, _ = tracemalloc.get_traced_memory()
        del kept
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        experiment = aggregate([path], workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(p.runs for s in experiment.series for p in s.points) == 20_000
    whole_records = 20 * per_thousand  # about 110 MB
    # The fold keeps a few dozen bytes a run; fitting the laws to every run's time takes a
    # few hundred bytes a run for a moment: O(runs) floats, never the records.
    assert peak - before < whole_records / 8, (peak - before, whole_records)
    assert peak - before < 16 * 2**20


def _first(records, n):
    for i, record in enumerate(records):
        if i == n:
            return
        yield record


def test_a_big_file_folded_in_parallel_reports_as_one_read_in_order(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    synthetic_runs(path, 3_000, seed=1)
    in_order = json_report(aggregate([path], workers=1))
    monkeypatch.setattr(folding, "PARALLEL_BYTES", 1)
    monkeypatch.setattr(folding, "BLOCK_BYTES", 4096)  # many blocks, lines cut across them
    ranges = folding._ranges(path, {path}, 3)
    assert len(ranges) == 3 and ranges[0][0] == 0 and ranges[-1][1] is None
    assert json_report(aggregate([path], workers=3)) == in_order


def test_a_bad_line_in_a_big_file_reads_as_it_always_did(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    synthetic_runs(path, 400, seed=2)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[300] = lines[300].replace('"status": "verified"', '"status": "sure"')
    path.write_text("\n".join(lines) + "\n" + lines[0][:50], encoding="utf-8")  # and cut short
    monkeypatch.setattr(folding, "PARALLEL_BYTES", 1)
    with pytest.raises(ResultsFileError, match=rf"{path}:301 is not a complete, well-formed"):
        aggregate([path], workers=2)
    lines[300] = lines[0]
    path.write_text("\n".join(lines) + "\n" + lines[0][:50], encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment = aggregate([path], workers=2)
    assert [str(w.message) for w in caught] == [f"{path}:401: skipped a truncated last line"]
    assert sum(p.runs for s in experiment.series for p in s.points) == 400


def test_records_read_one_line_at_a_time_are_those_written(tmp_path):
    path = tmp_path / "runs.jsonl"
    synthetic_runs(path, 9)
    written = [RunRecord.from_json(json.loads(line)) for line in path.read_text().splitlines()]
    assert list(read_records([path])) == written


@pytest.mark.parametrize(("m", "n"), [(30, 50), (400, 300), (1200, 1500)])
def test_ratio_intervals_of_many_runs_select_the_ranks_sorting_would_give(m, n, monkeypatch):
    rng = np.random.default_rng(m)
    a = np.round(rng.lognormal(0.0, 0.1, m), 4)  # rounded: ties among the differences
    b = np.round(rng.lognormal(0.3, 0.1, n), 4)
    sorted_all = intervals.ratio_interval(a, b)
    monkeypatch.setattr(intervals, "MAX_PAIRS", 0)  # select, never sort the m x n
    assert intervals.ratio_interval(a, b) == sorted_all


def test_the_normal_approximation_takes_over_where_the_exact_distribution_is_too_costly(
    monkeypatch,
):
    for m, n in [(141, 141), (200, 150)]:
        assert intervals._exact_cost(m, n) > intervals.EXACT_COST
        k, level = intervals.shift_rank(m, n)
        cdf = np.cumsum(intervals._mann_whitney_pmf(m, n))
        assert abs(level - (1 - 2 * cdf[k - 2])) < 1e-3  # its level is the exact one's, nearly
        with monkeypatch.context() as patched:
            patched.setattr(intervals, "EXACT_COST", 10**12)
            exact_k, exact_level = intervals.shift_rank(m, n)
        assert abs(k - exact_k) <= 1 and abs(level - exact_level) < 1e-3
