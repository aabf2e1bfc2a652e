"""Issue 16: a map of many tasks costs what its list of arguments costs, and the walk keeps
every task's trace as columns, whose placement figures are those of the trace objects."""

from __future__ import annotations

import tracemalloc
from collections import Counter

import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.execution.tasks import TaskTrace
from cluster_runner.execution.traces import Traces
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph, MapRef, Ref
from cluster_runner.jobspec import parse_job
from cluster_runner.runs.faults import die_once, victim, with_kill_worker
from cluster_runner.runs.job import placement


def double(x: int) -> int:
    return 2 * x


def add(*xs: int) -> int:
    return sum(xs)


def test_a_million_task_map_allocates_nothing_per_task():
    tracemalloc.start()
    try:
        graph = Graph()
        parts = graph.map("s/task", double, range(1_000_000), stage="s", digits=7)
        graph.add("s/reduce", add, parts, stage="s")
        sinks = graph.sinks()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(graph) == 1_000_001
    assert sinks == ["s/reduce"]
    # A Task, Ref and key a task would be hundreds of megabytes; the map is a few objects.
    assert peak < 64 * 1024, peak


def test_map_keys_refs_and_lookups_are_those_of_single_tasks():
    graph = Graph()
    parts = graph.starmap("s/chunk", add, [(1, 2), (3, 4), (5, 6)], stage="s")
    assert isinstance(parts, MapRef) and len(parts) == 3
    assert list(parts) == [Ref("s/chunk-000000"), Ref("s/chunk-000001"), Ref("s/chunk-000002")]
    assert parts[-1] == Ref("s/chunk-000002")
    assert "s/chunk-000001" in graph and "s/chunk-000003" not in graph and "s/chunk" not in graph
    task = graph["s/chunk-000001"]
    assert (task.key, task.func, task.args, task.stage) == ("s/chunk-000001", add, (3, 4), "s")
    one = graph.add("s/one", double, parts[1], stage="s")
    graph.add("s/all", add, parts, one, stage="s")
    assert [t.key for t in graph] == [
        *(f"s/chunk-00000{i}" for i in range(3)), "s/one", "s/all",
    ]  # fmt: skip
    assert graph["s/all"].dependencies == (*(r.key for r in parts), "s/one")
    assert graph.sinks() == ["s/all"]
    assert [graph.key_of(i) for i in range(len(graph))] == [t.key for t in graph]
    assert graph.number_of("s/chunk-000002") == 2 and graph.number_of("s/all") == 4
    assert "s/chunk-000000..s/chunk-000002 = test_map_graph.add(*each of 3:" in graph.describe()


def test_map_refusals_name_the_problem():
    graph = Graph()
    ref = graph.add("s/a", double, 1, stage="s")
    with pytest.raises(ValueError, match="cannot be refs"):
        graph.map("s/m", double, [1, ref], stage="s")
    with pytest.raises(ValueError, match="no tasks"):
        graph.map("s/m", double, [], stage="s")
    graph.map("s/m", double, range(3), stage="s")
    with pytest.raises(ValueError, match="duplicate task key 's/m-000001'"):
        graph.add("s/m-000001", double, 1, stage="s")
    with pytest.raises(ValueError, match="unknown map"):
        graph.add("s/b", add, MapRef("s/nope", 2, 6), stage="s")


def test_a_map_of_another_stage_is_refused_as_a_task_of_it_would_be():
    graph = Graph()
    parts = graph.map("p/m", double, range(4), stage="p")
    graph.add("q/sum", add, parts, stage="q")
    with pytest.raises(ValueError, match="another stage"):
        graph.stage("q")
    assert len(graph.stage("p")) == 4


def test_the_fault_victim_of_a_map_is_one_task_of_it_wrapped_alone():
    job = parse_job('[[stage]]\nworkload = "primes"\nn = 100000\nchunks = 16\n')
    graph = job.build_graph().stage("primes")
    assert victim(graph) == "primes/chunk-000007"  # the middle one of base and 16 chunks
    faulty, marker = with_kill_worker(graph)
    task = faulty["primes/chunk-000007"]
    assert task.func is die_once and task.args[:1] == (str(marker),)
    assert faulty["primes/chunk-000006"].func is graph["primes/chunk-000006"].func
    assert len(faulty) == len(graph)


@pytest.mark.parametrize("backend", ["serial", "threads"])
def test_compact_traces_give_the_placement_the_trace_objects_give(backend):
    job = parse_job('[[stage]]\nworkload = "noop"\ntasks = 20000\n')
    graph = job.build_graph().stage("noop")
    with create_backend(backend, BackendOptions(workers=2)) as engine:
        result = execute(graph, engine, timeout=300)
    traces = result.traces
    assert isinstance(traces, Traces) and len(traces) == len(graph)
    assert traces.nbytes() <= 24 * len(graph)  # a few dozen bytes a task, not an object
    objects = list(traces)  # TaskTrace objects again, made one at a time
    assert all(isinstance(t, TaskTrace) for t in objects)
    assert sorted(t.key for t in objects) == sorted(t.key for t in graph)
    # The figures the records held when traces were objects, computed as they were then.
    busy = [t.end - t.start for t in objects]
    expected = {
        "workers_used": dict(Counter(t.worker for t in objects)),
        "nodes_used": dict(Counter(t.node for t in objects)),
        "busy_s": sum(busy),
        "task_max_s": max(busy),
        "span_s": max(t.end for t in objects) - min(t.start for t in objects),
        "phases": None,
        "devices_used": None,
    }
    assert traces.placement() == expected
    again = Traces.of(objects, graph.number_of)  # round trip: objects to columns
    assert list(again) == objects and again.placement() == expected
    assert placement(objects) == placement(traces)


def test_traces_keep_what_the_columns_do_not_hold():
    traces = Traces({0: "g/a", 1: "g/b"}.__getitem__)
    traces.add(TaskTrace("g/a", "w1", "n1", 1.0, 2.5, {"compute": 1.0}, "gpu:0", 0), 0)
    traces.add(TaskTrace("g/b", "w2", "n1", 1.5, 2.0, None, None, 2), 1)
    assert list(traces) == [
        TaskTrace("g/a", "w1", "n1", 1.0, 2.5, {"compute": 1.0}, "gpu:0", 0),
        TaskTrace("g/b", "w2", "n1", 1.5, 2.0, None, None, 2),
    ]
    figures = traces.placement()
    assert figures["devices_used"] == {"gpu:0": 1} and figures["phases"] == {"compute": 1.0}
    assert figures["workers_used"] == {"w1": 1, "w2": 1} and figures["nodes_used"] == {"n1": 2}
    assert (figures["busy_s"], figures["task_max_s"], figures["span_s"]) == (2.0, 1.5, 1.5)
