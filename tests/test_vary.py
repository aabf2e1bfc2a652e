"""Sweeps over any parameter (issue 19): ``--vary`` (product and ``--zip``), throughput mode, and
reports that group by the varied parameters."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from cluster_runner.errors import JobSpecError, UsageError
from cluster_runner.jobspec import parse_job
from cluster_runner.sweeps.plan import plan_sweep
from cluster_runner.sweeps.vary import parse_vary

from clusters import driver_env, records_in
from conftest import runner_command

TINY = """
[[stage]]
workload = "primes"
n = 200_000
chunks = 4
"""


@pytest.fixture
def tiny():
    return parse_job(TINY, name="tiny")


def _points(plan):
    return [p for step in plan.steps for e in step.engines for p in e.points]


# --- the variants --------------------------------------------------------------------------


def test_several_vary_make_every_combination_in_order():
    vary = parse_vary(["n=1e5,2e5", "chunks=4,8,16"])
    assert vary.names == ("n", "chunks")
    assert vary.variants == (
        (1e5, 4), (1e5, 8), (1e5, 16), (2e5, 4), (2e5, 8), (2e5, 16),
    )  # fmt: skip
    assert vary.overrides(4) == ["n=2e5", "chunks=8"]


def test_zip_pairs_the_lists_in_order():
    vary = parse_vary(["n=1e5,2e5,4e5", "primes.chunks=4,8,16"], zip_lists=True)
    assert vary.variants == ((1e5, 4), (2e5, 8), (4e5, 16))
    assert vary.params(1) == {"n": 2e5, "primes.chunks": 8}


@pytest.mark.parametrize(
    ("items", "zipped", "words"),
    [
        (["n"], False, "expected NAME=V1,V2"),
        (["=1,2"], False, "expected NAME=V1,V2"),
        (["n=1,,2"], False, "an empty value"),
        (["n=1,1"], False, "given twice"),
        (["n=1", "n=2"], False, "given twice"),
        (["n=1,2", "chunks=4"], True, "their lengths differ: n (2), chunks (1)"),
        ([], True, "give two or more --vary"),
    ],
)
def test_malformed_vary_is_one_line(items, zipped, words):
    with pytest.raises(UsageError, match=re.escape(words)) as caught:
        parse_vary(items, zip_lists=zipped)
    assert "\n" not in str(caught.value)


def test_every_size_is_timed_at_every_variant_with_its_parameters(tiny):
    vary = parse_vary(["n=100000,300000", "chunks=2,4"], zip_lists=True)
    plan = plan_sweep(tiny, ["threads"], workers=[1, 2], vary=vary)
    points = _points(plan)
    assert [(p.size, p.params) for p in points] == [
        (1, (("n", 100000), ("chunks", 2))), (1, (("n", 300000), ("chunks", 4))),
        (2, (("n", 100000), ("chunks", 2))), (2, (("n", 300000), ("chunks", 4))),
    ]  # fmt: skip
    stage = points[1].job.stages[0]
    assert (stage.params["n"], stage.params["chunks"]) == (300000, 4)
    assert points[1].label == "threads x1 chunks=4 n=3e5"
    assert len({p.label for p in points}) == 4  # a label a point: the loop keys on them


def test_a_bad_variant_names_vary_and_fails_before_anything_runs(tiny):
    with pytest.raises(JobSpecError, match="--vary 'nope=3': no stage of job 'tiny'"):
        plan_sweep(tiny, ["threads"], workers=[1], vary=parse_vary(["nope=3"]))
    with pytest.raises(UsageError, match=re.escape("--vary chunks=... and --chunks")):
        plan_sweep(tiny, ["threads"], workers=[1], chunks=[2, 4], vary=parse_vary(["chunks=8"]))


def test_throughput_plan_grows_the_problem_at_fixed_workers(tiny):
    vary = parse_vary(["n=1e5,4e5"])
    plan = plan_sweep(tiny, ["threads"], workers=[2], mode="throughput", vary=vary)
    assert (plan.mode, plan.axis, [s.size for s in plan.steps]) == ("throughput", "n", [2])
    points = _points(plan)
    assert [(p.size, p.workers, p.job.stages[0].params["n"]) for p in points] == [
        (100000, 2, 100000),
        (400000, 2, 400000),
    ]
    for kwargs, words in [
        ({"workers": [1, 2]}, "give one --workers"),
        ({"workers": [2], "vary": parse_vary(["n=1e5,2.5"])}, "whole numbers above 0"),
        ({"workers": [2], "vary": None}, "give one --vary"),
    ]:
        with pytest.raises(UsageError, match=words):
            plan_sweep(tiny, ["threads"], mode="throughput", **{"vary": vary, **kwargs})


# --- through the command line --------------------------------------------------------------


def _scale(tmp_path, *args, check=True):
    done = subprocess.run(
        [*runner_command(), "scale", "--job", "primes", "--set", "n=200000", "--backend",
         "serial,threads", "--repeat", "1", "--warmup", "0", "--out", str(tmp_path), *args],
        capture_output=True, text=True, env=driver_env(), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _report(tmp_path) -> dict:
    (path,) = tmp_path.glob("*.jsonl")
    done = subprocess.run(
        [*runner_command(), "report", str(path), "--format", "json"],
        capture_output=True, text=True, env=driver_env(), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_vary_product_records_each_variant_and_the_report_groups_by_them(tmp_path):
    _scale(tmp_path, "--workers", "1,2", "--vary", "n=100000,300000", "--vary", "chunks=2,4")
    timed = [r for r in records_in(tmp_path) if not r["warmup"]]
    seen = {(r["backend"]["name"], r["labels"]["size"], json.dumps(r["labels"]["params"]))
            for r in timed}  # fmt: skip
    variants = [{"chunks": c, "n": n} for n in (100000, 300000) for c in (2, 4)]
    assert seen == {
        (b, size, json.dumps(v, sort_keys=True))
        for v in variants
        for b, size in (("serial", 1), ("threads", 1), ("threads", 2))
    }
    for r in timed:  # the job ran as the variant says
        assert r["job"]["stages"][0]["params"]["n"] == r["labels"]["params"]["n"]
    assert len({r["labels"]["base_digest"] for r in timed}) == 1  # one experiment
    report = _report(tmp_path)
    names = {s["backend"] for s in report["series"]}
    assert names == {f"{b} chunks={c} n={n}" for b in ("serial", "threads") for c in (2, 4)
                     for n in ("1e5", "3e5")}  # fmt: skip
    # Each variant is measured against serial at 1 worker of its own variant.
    for series in report["series"]:
        if series["backend"].startswith("threads"):
            assert series["reference"] == "serial@1"
            assert series["points"][0]["speedup"] is not None


def test_zip_times_the_pairs_only(tmp_path):
    _scale(tmp_path, "--workers", "1", "--backend", "threads", "--vary", "n=100000,300000",
           "--vary", "chunks=2,4", "--zip")  # fmt: skip
    params = sorted(json.dumps(r["labels"]["params"], sort_keys=True) for r in records_in(tmp_path))
    assert params == [
        json.dumps({"chunks": 2, "n": 100000}),
        json.dumps({"chunks": 4, "n": 300000}),
    ]


def test_throughput_sweep_reports_work_per_second(tmp_path):
    _scale(tmp_path, "--backend", "threads", "--workers", "2", "--mode", "throughput",
           "--vary", "n=100000,400000", "--repeat", "2")  # fmt: skip
    records = records_in(tmp_path)
    assert {(r["labels"]["mode"], r["labels"]["axis"], r["labels"]["size"]) for r in records} == {
        ("throughput", "n", 100000),
        ("throughput", "n", 400000),
    }
    assert {r["backend"]["workers"] for r in records} == {2}
    (path,) = tmp_path.glob("*.jsonl")
    done = subprocess.run(
        [*runner_command(), "report", str(path)],
        capture_output=True, text=True, env=driver_env(), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "throughput as n grows, 2 worker(s) fixed" in done.stdout
    assert "n/s" in done.stdout and "relative (CI)" in done.stdout
    assert "threads: throughput" in done.stdout and "as n grew from 1e5 to 4e5" in done.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--vary", "n"], "--vary 'n': expected NAME=V1,V2"),
        (["--vary", "n=1,2", "--vary", "chunks=4", "--zip"], "their lengths differ"),
        (["--mode", "throughput", "--vary", "n=1e5,2e5"], "give one --workers"),
        (["--vary", "nope=1,2"], "no stage of job 'primes' has a parameter 'nope'"),
    ],
)
def test_bad_vary_on_the_command_line_is_one_line_exit_2(tmp_path, args, words):
    done = _scale(tmp_path, "--workers", "1,2", *args, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("runner: error: ") and words in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*.jsonl"))  # nothing ran
