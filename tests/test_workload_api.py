"""The public workload API in one process: values, parameters by signature, naming, the pickle
check, the serial reference, and setup (issue 13).

The CLI, the backends and the clusters are exercised in ``test_own_workload.py`` and
``test_examples.py``; here each piece is checked on its own, on the serial and threads backends.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

import cluster_runner
from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.errors import JobSpecError
from cluster_runner.graph import Graph
from cluster_runner.jobspec import load_job, parse_job
from cluster_runner.runs.job import run_job
from cluster_runner.runs.reference import ReferenceStore, reference_key
from cluster_runner.workloads.code import check_by_reference, code_source
from cluster_runner.workloads.naming import find_workload, forget
from cluster_runner.workloads.simple import MapReduce, params_of, workload
from cluster_runner.workloads.values import agree, digest_value, display_value, json_value

# --- values: digests, displays, agreement ------------------------------------------------------


def test_digests_tell_types_and_bits_apart_and_ignore_set_and_dict_order():
    assert digest_value(1) != digest_value(1.0) != digest_value(True)
    assert digest_value(0.1 + 0.2) != digest_value(0.3)  # bit for bit: the last bit counts
    assert digest_value((1, 2)) != digest_value([1, 2])
    assert digest_value({"a": 1, "b": 2}) == digest_value({"b": 2, "a": 1})
    assert digest_value({"x", "y", "z"}) == digest_value({"z", "y", "x"})
    array = np.arange(6, dtype=np.float64)
    assert digest_value(array) == digest_value(array.copy())
    assert digest_value(array) != digest_value(array.astype(np.float32))
    assert digest_value(array) != digest_value(array.reshape(2, 3))
    assert digest_value(np.float64(2.5)) != digest_value(2.5)  # a numpy scalar keeps its dtype


def test_json_form_keeps_small_plain_values_only():
    assert json_value({"a": [1, 2.5], "b": "x"}) == {"a": [1, 2.5], "b": "x"}
    assert json_value(np.arange(3)) == [0, 1, 2]
    assert json_value(np.arange(5_000)) is None  # too many numbers for a record
    assert json_value(float("nan")) is None  # JSON has no NaN
    assert json_value(2**70) is None  # a results file holds 64-bit integers
    assert json_value(object()) is None
    nested: list = []
    for _ in range(10):
        nested = [nested]
    assert json_value(nested) is None  # deeper than a record may nest


def test_display_is_short_and_says_what_it_is():
    assert display_value(1234567) == "1,234,567"
    assert display_value(np.ones((3, 4))) == "float64 array 3x4, mean 1"
    assert display_value(list(range(100))).endswith("(100-item list)")
    assert len(display_value({str(i): i for i in range(1000)})) <= 72


def test_agreement_within_a_tolerance_and_where_it_fails():
    assert agree([1.0, 2.0], [1.0, 2.0 + 1e-12], rtol=1e-9, atol=0) is None
    assert "differ" in agree([1.0, 2.0], [1.0, 2.1], rtol=1e-9, atol=0)
    assert "structure" in agree({"a": 1.0}, {"b": 1.0}, rtol=1, atol=1)
    assert agree(np.array([1.0, np.nan]), np.array([1.0, np.nan]), 0, 0) is None
    assert "'x'" in agree(["x"], ["y"], rtol=1, atol=1)


# --- parameters declared by a split function's signature ---------------------------------------


def test_split_signature_declares_the_parameters():
    def split(n: int, rate: float = 0.5, label: str = "a", fast: bool = False, *, url: str):
        return []

    params = {p.name: p for p in params_of(split)}
    assert list(params) == ["n", "rate", "label", "fast"]  # url (after *) comes from setup
    assert params["n"].default is None  # required
    assert (params["rate"].kind, params["rate"].default) == (float, 0.5)
    assert params["fast"].kind is bool


def test_literal_annotations_become_choices():
    def split(mode: Literal["fast", "slow"] = "fast"):
        return []

    (param,) = params_of(split)
    assert param.choices == ("fast", "slow")


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("def split(n): return []", "needs a type"),
        ("def split(*pieces: int): return []", "plain named parameter"),
        ("def split(n: int = None): return []", "defaults to None"),
        ("def split(n: list = []): return []", "needs a type"),
        ("def split(): return []", "takes no parameters"),
    ],
)
def test_a_split_the_runner_cannot_read_is_refused_when_declared(source, words):
    namespace: dict = {}
    exec(source, namespace)
    with pytest.raises(TypeError, match=words):
        params_of(namespace["split"])


# --- the pickle-by-reference check -------------------------------------------------------------


def _top_level(x):
    return x


def test_only_functions_a_worker_can_import_by_name_pass():
    check_by_reference(_top_level, "f", "w")
    check_by_reference(functools.partial(_top_level, 1), "f", "w")
    check_by_reference(sum, "f", "w")  # a builtin
    with pytest.raises(JobSpecError, match="is a lambda"):
        check_by_reference(lambda x: x, "the chunk function", "w")

    def closure(x):
        return x

    with pytest.raises(JobSpecError, match=r"defined inside .*\(\) \(a closure\)"):
        check_by_reference(closure, "the chunk function", "w")
    namespace = {"__name__": "__main__"}
    exec("def chunk(x):\n    return x\n", namespace)
    with pytest.raises(JobSpecError, match="defined in __main__"):
        check_by_reference(namespace["chunk"], "the chunk function", "w")


def test_an_undecorated_wrapper_is_not_what_its_name_names():
    def wrapper(x):
        return x

    wrapper.__qualname__ = "_top_level"  # claims a name that holds another function
    wrapper.__module__ = __name__
    with pytest.raises(JobSpecError, match="is not what"):
        check_by_reference(wrapper, "the chunk function", "w")


# --- naming a workload, and a map-reduce on serial and threads ---------------------------------

WORKLOAD_FILE = '''
"""Sums of squares, chunk by chunk."""
import os
from cluster_runner import workload

CALLS = []


def split(n: int, chunks: int = 4, offset: int = 0):
    return [(offset, i, n, chunks) for i in range(chunks)]


def total(parts, n):
    assert len(parts) >= 1 and n > 0
    return {"sum": sum(parts), "n": n}


def shown(value):
    return f"sum of squares = {value['sum']:,}"


@workload(split=split, reduce=total, summarize=shown)
def squares(offset, index, n, chunks):
    return sum((offset + k) ** 2 for k in range(index, n, chunks))
'''


def unload(*names: str) -> None:
    """Forget the workloads found, and the test's modules, so the next test imports afresh."""
    forget()
    for name in names:
        module = sys.modules.pop(name, None)
        folder = str(Path(getattr(module, "__file__", "") or ".").parent)
        if module is not None and folder in sys.path:
            sys.path.remove(folder)


@pytest.fixture
def squares_job(tmp_path):
    folder = tmp_path / "code"
    folder.mkdir()
    source = folder / "squares_api_test.py"
    source.write_text(WORKLOAD_FILE)
    job = tmp_path / "job.toml"
    job.write_text('[[stage]]\nworkload = "code/squares_api_test.py:squares"\nn = 1000\n')
    yield job, source
    unload("squares_api_test")


def test_a_file_is_found_relative_to_the_job_and_kept_by_its_absolute_path(squares_job):
    job_path, source = squares_job
    job = load_job(job_path)
    (stage,) = job.stages
    assert stage.workload == f"{source}:squares"
    assert stage.name == "squares"
    assert stage.weak == "n"  # the first size parameter
    assert dict(stage.params) == {"n": 1000, "chunks": 4, "offset": 0}
    found = find_workload(stage.workload)
    assert found.kind == "file"
    assert [s.module for s in found.code] == ["squares_api_test"]
    assert found.workload.description == "Sums of squares, chunk by chunk."


@pytest.mark.parametrize("backend", ["serial", "threads"])
def test_a_map_reduce_without_verify_is_checked_against_a_serial_reference(
    squares_job, backend, tmp_path
):
    job = load_job(squares_job[0])
    store = ReferenceStore(tmp_path / "results")
    options = BackendOptions(workers=2, warm_up=job.warm_ups())
    with create_backend(backend, options) as engine:
        first, second = run_job(job, engine, repeat=2, references=store)
    expected = sum(k * k for k in range(1000))
    for record in (first, second):
        (stage,) = record.stages
        assert record.status == "verified"
        assert stage.result.result == {"sum": expected, "n": 1000}
        assert stage.result.display == f"sum of squares = {expected:,}"
        assert stage.result.verification.startswith("bit for bit equal to")
        assert stage.result.reference["digest"] == stage.result.digest
    # one serial reference run for both runs (computed once, after the first)
    assert "by this command" in second.stages[0].result.verification


def test_a_later_command_finds_the_reference_in_the_results_folder(squares_job, tmp_path):
    from cluster_runner.results import ResultsWriter, results_path

    job = load_job(squares_job[0])
    out = tmp_path / "results"
    writer = ResultsWriter(results_path(out, "j", "serial"))
    with writer, create_backend("serial", BackendOptions()) as engine:
        run_job(job, engine, on_record=writer.append, references=ReferenceStore(out))
    with create_backend("serial", BackendOptions()) as engine:
        (record,) = run_job(job, engine, references=ReferenceStore(out))
    assert "kept in j-serial-" in record.stages[0].result.verification


def test_the_reference_key_changes_with_the_code_and_the_parameters(squares_job):
    job_path, source = squares_job
    (stage,) = load_job(job_path).stages
    before = reference_key(stage.workload, stage.params)
    assert reference_key(stage.workload, {**stage.params, "n": 999}) != before
    forget()
    source.write_text(WORKLOAD_FILE + "\n# an edit\n")
    found = find_workload(stage.workload)
    assert found.code[0].digest == code_source("squares_api_test").digest
    # the module is not imported again, but the digest is of the file as it is now
    assert reference_key(stage.workload, stage.params) != before


NONDETERMINISTIC = """
import itertools
from cluster_runner import workload

_COUNT = itertools.count()


def split(n: int = 3):
    return list(range(n))


def first(parts):
    return parts[0]


@workload(split=split, reduce=first, rtol=RTOL)
def wobble(i):
    return 1.0 + next(_COUNT) * 1e-12  # not the same twice: a result that depends on the run
"""


@pytest.mark.parametrize(("rtol", "status"), [(0.0, "unverified"), (1e-6, "verified")])
def test_a_result_that_differs_from_the_reference_fails_unless_within_tolerance(
    tmp_path, rtol, status
):
    name = f"wobble_{'exact' if rtol == 0 else 'tolerant'}"
    (tmp_path / f"{name}.py").write_text(NONDETERMINISTIC.replace("RTOL", repr(rtol)))
    job = parse_job(f'[[stage]]\nworkload = "{name}.py:wobble"\n', base=tmp_path)
    with create_backend("serial", BackendOptions()) as engine:
        (record,) = run_job(job, engine, references=ReferenceStore())
    unload(name)
    assert record.status == status
    words = record.stages[0].result.verification
    assert ("differs from" in words) == (status == "unverified")
    if rtol:
        assert "within rtol 1e-06" in words


# --- setup: a value made in the driver reaches split, and is cleaned up ------------------------

SETUP_FILE = """
import contextlib
from cluster_runner import workload

EVENTS = []


@contextlib.contextmanager
def token(base: int):
    EVENTS.append("up")
    yield {"token": base * 10}
    EVENTS.append("down")


def split(base: int = 4, *, token: int):
    return [(token, i) for i in range(3)]


def check(total, base, *, token):
    return total == 3 * token + 3


@workload(split=split, reduce=sum, setup=token, verify=check)
def add(token, i):
    return token + i
"""


def test_setup_values_reach_split_and_verify_and_setup_ends_after_the_runs(tmp_path):
    (tmp_path / "setup_api_test.py").write_text(SETUP_FILE)
    job = parse_job('[[stage]]\nworkload = "setup_api_test.py:add"\n', base=tmp_path)
    assert list(job.stages[0].params) == ["base"]  # token is not a job parameter
    import setup_api_test

    with create_backend("threads", BackendOptions(workers=2)) as engine:
        records = run_job(job, engine, repeat=2)
    unload("setup_api_test")
    assert [r.status for r in records] == ["verified", "verified"]
    assert records[0].stages[0].result.result == 3 * 40 + 3
    assert setup_api_test.EVENTS == ["up", "down"]  # once around both runs


# --- weak scaling, stage names, the API's exports -----------------------------------------------


def test_weak_scaling_needs_a_size_parameter(tmp_path):
    (tmp_path / "noweak_api_test.py").write_text(
        "from cluster_runner import workload\n"
        "def split(label: str = 'x'):\n    return [label]\n"
        "@workload(split=split)\ndef echo(label):\n    return label\n"
    )
    job = parse_job('[[stage]]\nworkload = "noweak_api_test.py:echo"\n', base=tmp_path)
    unload("noweak_api_test")
    assert job.stages[0].weak == ""
    with pytest.raises(JobSpecError, match="no size parameter to grow"):
        job.scaled(2)


def test_a_stage_name_error_offers_a_word_as_its_example():
    with pytest.raises(JobSpecError, match="name must be a word such as 'work'"):
        parse_job('[[stage]]\nworkload = "mymod:work"\nname = "no good"\n')


def test_the_public_api_is_exported_and_versioned():
    from cluster_runner.workloads import api

    for name in api.__all__:
        assert getattr(cluster_runner, name, None) is getattr(api, name), name
    major, minor = (int(part) for part in cluster_runner.WORKLOAD_API_VERSION.split("."))
    assert major >= 1 and minor >= 0
    assert f"{major}.{minor}." in api.__doc__  # the history names the current version


def test_a_map_reduce_object_and_a_decorated_function_declare_the_same_workload():
    def split(n: int = 3):
        return list(range(n))

    decorated = workload(split=split, name="same")(_top_level)
    made = MapReduce(_top_level, split=split, name="same")
    found = decorated.__cluster_runner_workload__
    assert decorated is _top_level  # the function itself is left as it was
    assert (found.name, found.param_names, found.weak_param) == (
        made.name,
        made.param_names,
        made.weak_param,
    )


def test_the_record_keeps_the_reference_as_json(squares_job):
    job = load_job(squares_job[0])
    with create_backend("serial", BackendOptions()) as engine:
        (record,) = run_job(job, engine, references=ReferenceStore())
    data = json.loads(json.dumps(record.to_json()))
    reference = data["stages"][0]["reference"]
    assert set(reference) == {"key", "digest", "display", "value", "backend", "computed", "seconds"}
    assert reference["backend"] == "serial"
    assert Path(squares_job[1]).name not in json.dumps(reference)  # no paths in the key's place


HOOKS_RAISE = """
from cluster_runner import workload


def split(n: int = 3, fail_in: str = "split"):
    if fail_in == "split":
        raise KeyError("no such shard")
    return list(range(n))


def judge(value, fail_in):
    return "yes" if fail_in == "verify" else True


@workload(split=split, reduce=sum, verify=judge)
def ident(i):
    return i
"""


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("split", "task ident/build failed: KeyError: 'no such shard'"),
        ("verify", "task ident/verify failed: TypeError: "),
    ],
)
def test_a_hook_that_fails_in_the_driver_is_named_like_a_task_with_its_traceback(
    tmp_path, where, words
):
    from cluster_runner.errors import TaskFailedError

    (tmp_path / "hooks_api_test.py").write_text(HOOKS_RAISE)
    job = parse_job(
        f'[[stage]]\nworkload = "hooks_api_test.py:ident"\nfail_in = "{where}"\n', base=tmp_path
    )
    try:
        with (
            create_backend("serial", BackendOptions()) as engine,
            pytest.raises(TaskFailedError) as caught,
        ):
            run_job(job, engine)
    finally:
        unload("hooks_api_test")
    assert str(caught.value).startswith(words)
    assert "hooks_api_test" in caught.value.remote_traceback  # its file, or its name


def _sized_split(chunks: int = 2):
    return [(i,) for i in range(chunks)]


def _sized_load(size: int = 3, *, url: str = ""):
    return np.arange(size, dtype=np.float64)


def test_a_data_function_declares_the_job_parameters_split_does_not_name():
    found = MapReduce(_top_level, split=_sized_split, data=_sized_load)
    assert found.param_names == ("chunks", "size")  # split's, then data's (url is setup's)
    made = {p.name: p for p in found.params}["size"]
    assert made.kind is int and made.default == 3
    graph = Graph()
    found.build(graph, "s", {"chunks": 2, "size": 5})
    ((value, nbytes),) = graph.inputs().values()
    assert value.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and nbytes >= value.nbytes
