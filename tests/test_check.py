"""``runner baseline save`` and ``runner check``: pass, fail after a slowdown, refuse bad input."""

from __future__ import annotations

import json
import sys

import pytest
from test_compare import sweep

from cluster_runner.analysis.expectations import FORMAT, read_baseline
from cluster_runner.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def saved(tmp_path, capsys):
    results = sweep(tmp_path / "before.jsonl")
    path = tmp_path / "baseline.toml"
    code, out, _ = cli(capsys, "baseline", "save", results, "--to", str(path))
    assert code == 0
    assert "4 point(s) of job" in out
    return path


def test_the_baseline_is_readable_toml_with_median_bounds_and_unit(saved):
    data = tomllib.loads(saved.read_text())
    assert data["format"] == FORMAT
    assert data["tolerance"] == 0.05
    points = {(p["backend"], p["size"]): p for p in data["point"]}
    assert set(points) == {("local", 1), ("local", 2), ("dask", 1), ("dask", 2)}
    one = points[("local", 2)]
    assert one["low"] <= one["median"] <= one["high"]
    assert one["median"] == pytest.approx(0.5, rel=0.01)
    assert one["unit"] == "s" and one["runs"] == 6 and one["job"] == "job"
    assert read_baseline(saved).points[0].median == data["point"][0]["median"]


def test_check_passes_the_same_results_then_fails_after_a_slowdown(tmp_path, saved, capsys):
    same = sweep(tmp_path / "again.jsonl", noise=(1.004, 0.992, 1.008, 0.998, 1.001, 0.996))
    code, out, _ = cli(capsys, "check", same, "--baseline", str(saved))
    assert code == 0
    assert "all 4 point(s) passed" in out
    slower = sweep(tmp_path / "slower.jsonl", factor=1.2)
    code, out, _ = cli(capsys, "check", slower, "--baseline", str(saved), "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["failures"] == 4
    assert {row["status"] for row in report["rows"]} == {"fail"}
    # a tolerance wide enough for a 20% slowdown passes it
    code, _, _ = cli(capsys, "check", slower, "--baseline", str(saved), "--tolerance", "25")
    assert code == 0


def test_a_faster_point_passes_and_a_point_missing_from_either_side_is_named(
    tmp_path, saved, capsys
):
    faster = sweep(tmp_path / "faster.jsonl", factor=0.5, sizes=(1, 2, 4))
    code, out, _ = cli(capsys, "check", faster, "--baseline", str(saved), "--format", "json")
    assert code == 0
    statuses = {(r["where"], r["status"]) for r in json.loads(out)["rows"]}
    assert ("job local x1", "faster") in statuses
    assert ("job local x4", "new") in statuses
    partial = sweep(tmp_path / "partial.jsonl", backends=("local",))
    code, out, _ = cli(capsys, "check", partial, "--baseline", str(saved), "--format", "json")
    assert code == 0
    rows = {(r["where"], r["status"]) for r in json.loads(out)["rows"]}
    assert ("job dask x2", "not run") in rows


def test_a_point_whose_runs_failed_fails_the_check(tmp_path, saved, capsys):
    broken = tmp_path / "broken.jsonl"
    sweep(broken)
    lines = broken.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        if r["backend"]["name"] == "dask" and r["labels"]["size"] == 2:
            r.update(status="failed", error="worker lost")
    broken.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out, _ = cli(capsys, "check", str(broken), "--baseline", str(saved), "--format", "json")
    assert code == 1
    failed = [r for r in json.loads(out)["rows"] if r["status"] == "fail"]
    assert [r["where"] for r in failed] == ["job dask x2"]
    assert "worker lost" in failed[0]["why"]


@pytest.mark.parametrize(
    "results, baseline_text, message",
    [
        (lambda p: sweep(p, job="other"), None, "ran job other"),
        (lambda p: sweep(p, digest="d2", params={"n": 7}), None, "another spec of job job"),
        (lambda p: sweep(p, mode="weak"), None, "no point of these results is in baseline"),
        (lambda p: (p.write_text(""), str(p))[1], None, "hold no runs"),
        (lambda p: sweep(p), "not = [toml", "is not TOML"),
        (lambda p: sweep(p), 'format = "something/else"\n', "not a cluster-runner baseline"),
        (lambda p: sweep(p), f'format = "{FORMAT}"\nversion = 1\n', "holds no points"),
        (
            lambda p: sweep(p),
            f'format = "{FORMAT}"\nversion = 1\n[[point]]\njob = "job"\n',
            "point 1 is malformed",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, saved, capsys, results, baseline_text, message):
    path = results(tmp_path / "new.jsonl")
    if baseline_text is not None:
        saved.write_text(baseline_text)
    code, _, err = cli(capsys, "check", path, "--baseline", str(saved))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("runner: error: ") and message in lines[0]


def test_save_refuses_a_folder_and_results_without_a_timed_run(tmp_path, capsys):
    results = sweep(tmp_path / "r.jsonl")
    code, _, err = cli(capsys, "baseline", "save", results, "--to", str(tmp_path))
    assert code == 2 and "is a directory" in err
    code, _, err = cli(capsys, "baseline", "save", results, "--to", str(tmp_path / "no/b.toml"))
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "no").exists()
    failed = tmp_path / "failed.jsonl"
    failed.write_text(
        "".join(
            json.dumps({**json.loads(line), "status": "failed", "error": "boom"}) + "\n"
            for line in (tmp_path / "r.jsonl").read_text().splitlines()
        )
    )
    target = tmp_path / "b.toml"
    code, _, err = cli(capsys, "baseline", "save", str(failed), "--to", str(target))
    assert code == 2 and "nothing to save" in err
    assert not target.exists()


def test_check_selects_tagged_runs(tmp_path, saved, capsys):
    sweep(tmp_path / "mixed-old.jsonl", tags={"variant": "old"})
    sweep(tmp_path / "mixed-new.jsonl", factor=1.2, tags={"variant": "new"})
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("mixed-old.jsonl", "mixed-new.jsonl"):
        (tmp_path / name).rename(folder / name)
    code, _, _ = cli(capsys, "check", str(folder), "--baseline", str(saved), "--select",
                     "variant=old")  # fmt: skip
    assert code == 0
    code, _, _ = cli(capsys, "check", str(folder), "--baseline", str(saved), "--select",
                     "variant=new")  # fmt: skip
    assert code == 1


def test_a_baseline_keeps_the_transfer_mode_and_check_compares_like_with_like(tmp_path, capsys):
    """Issue 21: runs whose driver inputs were copied are not checked against a baseline of
    shared ones (nor the reverse); a baseline saved from both keeps each point apart."""
    files = {}
    for mode in ("share", "copy"):
        out = tmp_path / mode
        code, _, err = cli(
            capsys, "scale", "--job", "driver_data", "--set", "size_mb=1", "--set", "chunks=4",
            "--backend", "serial", "--workers", "1", "--repeat", "3", "--warmup", "0",
            "--transfer", mode, "--out", str(out),
        )  # fmt: skip
        assert code == 0, err
        (files[mode],) = (str(p) for p in out.glob("*.jsonl"))
    shared = tmp_path / "share.toml"
    assert cli(capsys, "baseline", "save", files["share"], "--to", str(shared))[0] == 0
    assert {p.transfer for p in read_baseline(shared).points} == {"share"}
    code, _, err = cli(capsys, "check", files["copy"], "--baseline", str(shared))
    assert code == 2 and err.count("\n") == 1
    assert "with transfer share; these results ran with transfer copy" in err
    both = tmp_path / "both.toml"
    assert cli(capsys, "baseline", "save", *files.values(), "--to", str(both))[0] == 0
    points = read_baseline(both).points
    assert sorted(p.transfer for p in points) == ["copy", "share"]
    code, out, err = cli(capsys, "check", files["copy"], "--baseline", str(both), "--tolerance",
                         "1000")  # fmt: skip
    assert code == 0, err
    assert "(copy)" in out and "not run" in out  # its own point passes; share's was not run
