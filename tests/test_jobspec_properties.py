"""Property: any input to the job-spec loader either loads into a valid spec or raises ours."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster_runner.errors import JobSpecError
from cluster_runner.jobspec import JobSpec, parse_job
from cluster_runner.workloads import REGISTRY, get_workload

KEYS = ["workload", "name", "weak", "n", "rows", "cols", "chunks", "seed", "device", "size", ""]
VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from([*list(REGISTRY), "n", "rows", "chunks", "seed"]),
    st.lists(st.integers(), max_size=3),
)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (int, list)):
        return json.dumps(value)
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def toml_stage(table: dict) -> str:
    lines = ["[[stage]]"]
    lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines)


def check_valid(job: JobSpec) -> None:
    """What a loaded spec promises: known workloads, validated params, unique stage names."""
    assert job.stages
    assert len({s.name for s in job.stages}) == len(job.stages)
    for stage in job.stages:
        workload = get_workload(stage.workload)
        assert set(stage.params) == set(workload.param_names)
        assert stage.params["chunks"] >= 1
        assert all(
            isinstance(v, (int, str)) and not isinstance(v, bool) for v in stage.params.values()
        )
        assert stage.weak in stage.params
    assert job.build_graph().sinks()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_loads_or_raises_job_spec_error(text):
    try:
        job = parse_job(text)
    except JobSpecError as exc:
        assert "\n" not in str(exc)
        return
    check_valid(job)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6), min_size=0, max_size=3))
def test_structured_stages_load_or_raise_job_spec_error(stages):
    text = "\n\n".join(toml_stage(table) for table in stages)
    try:
        job = parse_job(text)
    except JobSpecError as exc:
        assert "\n" not in str(exc)
        return
    check_valid(job)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=3))
def test_any_override_applies_or_raises_job_spec_error(overrides):
    job = parse_job('[[stage]]\nworkload = "primes"\nn = 1000\nchunks = 4\n')
    try:
        changed = job.with_overrides(overrides)
    except JobSpecError as exc:
        assert "\n" not in str(exc)
        return
    check_valid(changed)


NEAR_VALID = st.fixed_dictionaries(
    {"workload": st.sampled_from(list(REGISTRY))},
    optional={
        "n": st.integers(min_value=-5, max_value=10**7),
        "rows": st.integers(min_value=-5, max_value=10**4),
        "cols": st.integers(min_value=-5, max_value=10**3),
        "chunks": st.integers(min_value=-1, max_value=40),
        "seed": st.integers(min_value=-1, max_value=2**64),
        "weak": st.sampled_from(["n", "rows", "cols", "chunks", "bogus"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(NEAR_VALID, min_size=1, max_size=2))
def test_near_valid_specs_load_or_raise_job_spec_error(stages):
    text = "\n\n".join(toml_stage(table) for table in stages)
    try:
        job = parse_job(text)
    except JobSpecError as exc:
        assert "\n" not in str(exc)
        return
    check_valid(job)
    for stage, table in zip(job.stages, stages, strict=True):
        for key, value in table.items():
            if key in stage.params:
                assert stage.params[key] == value
