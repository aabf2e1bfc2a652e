"""The workload graph is plain, inspectable data that refuses to become anything but a DAG."""

from __future__ import annotations

import pytest

from cluster_runner.graph import Graph, Ref


def double(x: int) -> int:
    return 2 * x


def total(*xs: int) -> int:
    return sum(xs)


def test_tasks_reference_results_by_key_and_keep_topological_order():
    graph = Graph()
    a = graph.add("a", double, 1, stage="s")
    b = graph.add("b", double, a, stage="s")
    graph.add("c", total, a, b, 3, stage="s")
    assert [t.key for t in graph] == ["a", "b", "c"]
    assert graph["c"].dependencies == ("a", "b")
    assert graph.dependents() == {"a": ["b", "c"], "b": ["c"], "c": []}
    assert graph.sinks() == ["c"]
    assert isinstance(graph["b"].args[0], Ref)


def test_unknown_dependency_and_duplicate_key_are_refused():
    graph = Graph()
    graph.add("a", double, 1, stage="s")
    with pytest.raises(ValueError, match="unknown task 'zzz'"):
        graph.add("b", double, Ref("zzz"), stage="s")
    with pytest.raises(ValueError, match="duplicate"):
        graph.add("a", double, 2, stage="s")


def test_stage_subgraph_holds_only_that_stage():
    graph = Graph()
    graph.add("p/a", double, 1, stage="p")
    graph.add("q/a", double, 1, stage="q")
    graph.add("q/b", total, Ref("q/a"), stage="q")
    assert graph.stages == ["p", "q"]
    assert [t.key for t in graph.stage("q")] == ["q/a", "q/b"]
    with pytest.raises(KeyError):
        graph.stage("nope")


def test_a_stage_depending_on_another_stage_is_refused():
    graph = Graph()
    a = graph.add("p/a", double, 1, stage="p")
    graph.add("q/b", double, a, stage="q")
    with pytest.raises(ValueError, match="another stage"):
        graph.stage("q")


def test_describe_shows_function_and_refs():
    graph = Graph()
    a = graph.add("a", double, 21, stage="s")
    graph.add("b", total, a, 1, stage="s")
    text = graph.describe()
    assert "b = test_graph.total(<a>, 1)" in text
    assert "a = test_graph.double(21)" in text


def test_job_graph_is_a_fan_out_and_a_reduce_per_stage(small_job):
    graph = small_job.build_graph()
    assert graph.stages == ["primes", "array_means", "dot"]
    assert sorted(graph.sinks()) == ["array_means/reduce", "dot/reduce", "primes/reduce"]
    primes = graph.stage("primes")
    assert len(primes) == 1 + 7 + 1  # base primes, 7 chunks, reduce
    assert all(t.dependencies == ("primes/base",) for t in primes if "chunk" in t.key)
    assert len(graph.stage("dot")["dot/reduce"].dependencies) == 5
