"""Typed run records: every type round-trips through its JSON, old records still read, and a
real run's record is written exactly as it is read back."""

from __future__ import annotations

import json

import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.errors import ResultsFileError
from cluster_runner.results import (
    RECORD_FORMAT,
    SCHEMA_VERSION,
    BackendRecord,
    BlasLibrary,
    Environment,
    JobRecord,
    JobStage,
    Placement,
    ResultsWriter,
    RunRecord,
    StageRecord,
    StageResult,
    SweepLabels,
    Usage,
    read_records,
)
from cluster_runner.runs.job import run_job

STAGE_USAGE = Usage(cpu_s=0.25, peak_rss_bytes=2**27, processes=3, interval_s=0.1)
RUN_USAGE = Usage(cpu_s=0.5, peak_rss_bytes=2**28, processes=3, scope="driver process tree")
RESULT = StageResult(9592, "pi(100,000) = 9,592", "ab12", True, "known value", 9592)
PLACEMENT = Placement({"pid-1": 3, "pid-2": 4}, {"vm": 7}, 1.5, 0.4, 0.9)
GPU_PLACEMENT = Placement({"pid-1": 2}, {"vm": 2}, 0.5, 0.3, 0.4, {"kernel": 0.2}, {"gpu0": 2})
STAGE = StageRecord("primes", "primes", 7, 1.0, RESULT, PLACEMENT, 1, STAGE_USAGE)
JOB = JobRecord(
    "full", "d1", "tiny", (JobStage("primes", "primes", "n", {"n": 100_000, "chunks": 4}),)
)
BACKEND = BackendRecord(
    "local", 2, "3.11.7", 1, None, "forkserver", None, 0.12, {"cluster_workers": 2}
)
ENVIRONMENT = Environment(
    "3.11.7", "CPython", True, "Linux", {"numpy": "2.0"}, "CPU", 8, 4, 8, 2**34, "vm",
    (BlasLibrary("openblas", 2, "0.3"),),
)  # fmt: skip
LABELS = SweepLabels(
    "strong", "workers", 2, 2, None, None, 1, "cpu", "d1", 0, "local x2", 3.5
)  # fmt: skip
RUN = RunRecord(
    run_id="r1",
    session="s1",
    time="2026-01-01T00:00:00+00:00",
    job=JOB,
    backend=BACKEND,
    repeat=1,
    warmup=False,
    status="verified",
    environment=ENVIRONMENT,
    wall_s=1.0,
    stages=(STAGE,),
    labels=LABELS,
    fault="kill-worker",
    retried=1,
    usage=RUN_USAGE,
)
FAILED = RunRecord(
    "r2", "s1", "t", JOB, BACKEND, 0, False, "failed", ENVIRONMENT, error="task x failed",
    wall_s=0.5, error_traceback="Traceback (most recent call last):\nValueError: no\n",
)  # fmt: skip
SKIPPED = RunRecord(
    "r3", "s1", "t", JOB, BACKEND, 0, False, "skipped", ENVIRONMENT, error="worker busy",
    labels=LABELS,
)  # fmt: skip

EVERY = [
    STAGE_USAGE, RUN_USAGE, RESULT, PLACEMENT, GPU_PLACEMENT, STAGE, JOB, JOB.stages[0],
    BACKEND, ENVIRONMENT, ENVIRONMENT.blas[0], LABELS, RUN, FAILED, SKIPPED,
]  # fmt: skip


@pytest.mark.parametrize("record", EVERY, ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips_through_its_json(record):
    data = json.loads(json.dumps(record.to_json()))
    assert type(record).from_json(data) == record
    assert type(record).from_json(data).to_json() == record.to_json()


def test_which_keys_a_run_record_writes_depends_on_its_status():
    run, failed, skipped = RUN.to_json(), FAILED.to_json(), SKIPPED.to_json()
    assert run["format"] == RECORD_FORMAT and run["schema_version"] == SCHEMA_VERSION
    assert "error_traceback" not in run and "usage" in run
    assert failed["error_traceback"].endswith("ValueError: no\n") and "usage" not in failed
    assert failed["labels"] == {} and failed["fault"] is None and failed["retried"] == 0
    assert not {"fault", "retried", "usage", "error_traceback"} & set(skipped)
    flat = run["stages"][0]  # result and placement sit flat in the stage, as they always did
    assert flat["result"] == 9592 and flat["busy_s"] == 1.5 and "phases" not in flat
    assert GPU_PLACEMENT.to_json()["devices_used"] == {"gpu0": 2}


def test_a_version_1_record_without_the_optional_fields_still_reads():
    """Written by ``submit`` before usage, labels, fault and retried were added."""
    old = RUN.to_json()
    for key in ("usage", "labels", "fault", "retried"):
        del old[key]
    for stage in old["stages"]:
        del stage["usage"]
    record = RunRecord.from_json(old)
    assert record.usage is None and record.labels is None and record.fault is None
    assert record.retried == 0 and record.stages[0].usage is None
    assert record.error_traceback is None
    assert record.stages[0].result == RESULT and record.stages[0].placement == PLACEMENT


def test_a_real_run_is_written_as_it_is_read_back(tmp_path, small_job):
    with create_backend("serial", BackendOptions()) as serial:
        (record,) = run_job(small_job, serial)
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.append(record)
    line = path.read_text().strip()
    (back,) = read_records([path])
    assert back == record
    assert json.dumps(back.to_json(), sort_keys=True) == line
    assert back.status == "verified" and back.labels is None
    assert back.environment.python and back.stages[0].usage.interval_s is not None


def test_a_line_that_is_ours_but_incomplete_is_a_one_line_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"format": RECORD_FORMAT, "schema_version": 1}) + "\n")
    with pytest.raises(ResultsFileError, match=r"r.jsonl:1 is not a complete"):
        list(read_records([path]))
