"""Small ready tasks travel to pool workers in batches sized from measured task times."""

from __future__ import annotations

import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.execution.batching import SHARES_PER_WORKER, TARGET_BATCH_S, BatchSizer
from cluster_runner.execution.walk import execute
from cluster_runner.jobspec import parse_job
from cluster_runner.runs.job import run_job


def test_one_task_a_batch_until_task_times_are_known():
    sizer = BatchSizer(workers=2)
    assert sizer.size(1000) == 1
    assert sizer.max_in_flight == 4


def test_batches_hold_the_target_seconds_of_work_once_tasks_are_timed():
    sizer = BatchSizer(workers=2)
    sizer.record(tasks=10, busy_s=10 * 0.001)  # 1 ms a task
    assert sizer.size(10_000) == round(TARGET_BATCH_S / 0.001)


def test_batches_never_exceed_a_fair_share_of_the_ready_tasks():
    sizer = BatchSizer(workers=2)
    sizer.record(tasks=100, busy_s=100 * 1e-6)  # 1 us a task: time alone would say 10,000
    assert sizer.size(800) == 800 // (SHARES_PER_WORKER * 2)
    assert sizer.size(3) == 1
    assert sizer.size(1) == 1


def test_slow_tasks_travel_alone():
    sizer = BatchSizer(workers=4)
    sizer.record(tasks=2, busy_s=2.0)
    assert sizer.size(500) == 1


@pytest.mark.parametrize("backend", ["local", "threads"])
def test_many_tiny_tasks_go_in_far_fewer_messages_and_all_run(backend):
    job = parse_job('[[stage]]\nworkload = "noop"\ntasks = 5000\n')
    graph = job.build_graph().stage("noop")
    with create_backend(backend, BackendOptions(workers=2)) as engine:
        result = execute(graph, engine, timeout=300)
        (record,) = [r.to_json() for r in run_job(job, engine)]
    assert result.values == {"noop/reduce": 5000 * 4999 // 2}
    assert sorted(t.key for t in result.traces) == sorted(t.key for t in graph)
    assert result.extra["batches"] < len(graph) / 10
    assert record["status"] == "verified"
