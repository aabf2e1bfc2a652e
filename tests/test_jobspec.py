"""Job specs: the shipped ones load, overrides apply, and every fault is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster_runner.errors import JobSpecError
from cluster_runner.jobspec import load_job, parse_job

ROOT = Path(__file__).resolve().parent.parent

PRIMES = '[[stage]]\nworkload = "primes"\nn = 1000\nchunks = 4\n'


@pytest.mark.parametrize("name", ["primes", "array_means", "dot", "full", "noop", "driver_data"])
def test_shipped_job_specs_load_with_a_description(name):
    job = load_job(ROOT / "jobs" / f"{name}.toml")
    assert job.name == name
    assert job.description
    assert job.build_graph().sinks()


def test_full_job_runs_all_three_workloads():
    job = load_job(ROOT / "jobs" / "full.toml")
    assert [s.workload for s in job.stages] == ["primes", "array_means", "dot"]


def test_defaults_are_filled_in_and_weak_parameter_chosen():
    job = parse_job('[[stage]]\nworkload = "dot"\nn = 100\n')
    (stage,) = job.stages
    assert stage.params == {"n": 100, "chunks": 16, "seed": 0, "device": "cpu"}
    assert stage.weak == "n"


def test_override_applies_to_every_stage_with_the_key():
    job = load_job(ROOT / "jobs" / "full.toml", ["n=1000000", "array_means.rows=500"])
    params = {s.name: s.params for s in job.stages}
    assert params["primes"]["n"] == 1_000_000
    assert params["dot"]["n"] == 1_000_000
    assert params["array_means"]["rows"] == 500


def test_override_accepts_scientific_and_underscored_integers():
    job = parse_job(PRIMES).with_overrides(["n=1e9"])
    assert job.stages[0].params["n"] == 1_000_000_000
    job = parse_job(PRIMES).with_overrides(["n=2_000"])
    assert job.stages[0].params["n"] == 2_000


def test_digest_changes_with_any_parameter_and_only_then():
    job = parse_job(PRIMES)
    assert job.digest == parse_job(PRIMES).digest
    assert job.digest != job.with_overrides(["n=1001"]).digest


def test_weak_scaling_multiplies_the_weak_parameter():
    job = parse_job('[[stage]]\nworkload = "array_means"\nrows = 100\ncols = 3\nchunks = 4\n')
    scaled = job.scaled(3)
    assert scaled.stages[0].params["rows"] == 300
    assert scaled.stages[0].params["cols"] == 3


BAD_SPECS = [
    ("not toml ===", "not valid TOML"),
    ('description = "x"\n', "no \\[\\[stage\\]\\]"),
    ('colour = "red"\n[[stage]]\nworkload = "dot"\nn = 5\n', "unknown key 'colour'"),
    ('[[stage]]\nworkload = "sorting"\nn = 5\n', "unknown workload 'sorting'"),
    ("[[stage]]\nn = 5\n", "needs workload"),
    ('[[stage]]\nworkload = "dot"\nn = 5\nsize = 3\n', "unknown parameter 'size'"),
    ('[[stage]]\nworkload = "dot"\n', "missing required parameter 'n'"),
    ('[[stage]]\nworkload = "dot"\nn = "many"\n', "n must be an integer"),
    ('[[stage]]\nworkload = "dot"\nn = 1.5\n', "n must be an integer"),
    ('[[stage]]\nworkload = "dot"\nn = true\n', "n must be an integer"),
    ('[[stage]]\nworkload = "dot"\nn = 0\n', "n must be >= 1"),
    ('[[stage]]\nworkload = "dot"\nn = -4\n', "n must be >= 1"),
    ('[[stage]]\nworkload = "primes"\nn = 1e13\n', "n must be <="),
    ('[[stage]]\nworkload = "dot"\nn = 10\nchunks = 11\n', "chunks \\(11\\) must not exceed n"),
    (
        '[[stage]]\nworkload = "array_means"\nrows = 3\ncols = 3\nchunks = 4\n',
        "must not exceed rows",
    ),
    ('[[stage]]\nworkload = "dot"\nn = 10\nchunks = 0\n', "chunks must be >= 1"),
    ('[[stage]]\nworkload = "dot"\nn = 100\nweak = "seed"\n', "not a size parameter"),
    (
        '[[stage]]\nworkload = "dot"\nn = 100\n[[stage]]\nworkload = "dot"\nn = 200\n',
        "two stages are named 'dot'",
    ),
    ("stage = 3\n", "no \\[\\[stage\\]\\]"),
]


@pytest.mark.parametrize("text,message", BAD_SPECS)
def test_malformed_specs_raise_one_line_errors(text, message):
    with pytest.raises(JobSpecError, match=message) as info:
        parse_job(text, where="bad.toml")
    assert "\n" not in str(info.value)


BAD_OVERRIDES = [
    ("n", "expected KEY=VALUE"),
    ("=5", "expected KEY=VALUE"),
    ("n=", "expected KEY=VALUE"),
    ("colour=red", "no stage of job .* has a parameter 'colour'"),
    ("dot.n=5", "no stage named 'dot'"),
    ("n=abc", "n must be an integer"),
    ("n=0", "n must be >= 2"),
    ("chunks=5000", "must not exceed n"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES)
def test_malformed_overrides_raise_one_line_errors(override, message):
    with pytest.raises(JobSpecError, match=message) as info:
        parse_job(PRIMES).with_overrides([override])
    assert "\n" not in str(info.value)


def test_missing_job_file_says_where_to_look(tmp_path):
    with pytest.raises(JobSpecError, match="does not exist"):
        load_job(tmp_path / "nope.toml")
