"""The CuPy GPU stage: clean refusals without a GPU, and (marked ``gpu``) real runs with one."""

from __future__ import annotations

import numpy as np
import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.cli import main
from cluster_runner.devices import CPU, array_module, gpu_info
from cluster_runner.execution.walk import execute
from cluster_runner.graph import Graph, Phased
from cluster_runner.jobspec import parse_job
from cluster_runner.runs.job import run_job
from cluster_runner.sweeps.plan import plan_sweep

from conftest import ROOT, SMALL_FULL

NO_GPU = gpu_info().problem is not None


def phased_value(x: float) -> Phased:
    return Phased(x * 2, {"generate_s": 0.25, "compute_s": 0.5, "reduce_s": 0.125}, "test-device")


def add(*xs: float) -> float:
    return sum(xs)


def test_cpu_namespace_is_numpy():
    assert array_module(CPU) is np


def test_phased_values_pass_downstream_and_their_phases_reach_the_trace():
    graph = Graph()
    a = graph.add("g/a", phased_value, 1.5, stage="g")
    graph.add("g/sum", add, a, 1.0, stage="g")
    with create_backend("serial", BackendOptions()) as serial:
        result = execute(graph, serial)
    assert result.values == {"g/sum": 4.0}
    (trace,) = [t for t in result.traces if t.key == "g/a"]
    assert trace.phases == {"generate_s": 0.25, "compute_s": 0.5, "reduce_s": 0.125}
    assert trace.device == "test-device"


def test_gpu_flag_turns_only_the_array_stages_to_gpu():
    job = parse_job(SMALL_FULL).on_gpu()
    devices = {s.name: s.params.get("device") for s in job.stages}
    assert devices == {"primes": None, "array_means": "gpu", "dot": "gpu"}
    assert job.uses_gpu
    graph = job.build_graph()
    chunk = graph.stage("dot")["dot/chunk-000000"]
    assert dict(chunk.resources) == {"GPU": 1}
    assert dict(graph.stage("primes")["primes/chunk-000000"].resources) == {}


def test_gpu_sweep_times_a_cpu_and_a_gpu_series_of_one_experiment():
    job = parse_job(SMALL_FULL)
    plan = plan_sweep(job, ["local"], workers=[1, 2], gpu=True)
    points = [p for step in plan.steps for e in step.engines for p in e.points]
    assert [p.device for p in points] == ["cpu", "gpu", "cpu", "gpu"]
    assert all(e.options.gpu for step in plan.steps for e in step.engines)
    assert points[1].label.endswith("gpu")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize(
    "args",
    [
        ["submit", "--job", "jobs/full.toml", "--gpu"],
        ["submit", "--job", "jobs/dot.toml", "--gpu", "--backend", "serial"],
        ["scale", "--job", "jobs/array_means.toml", "--gpu", "--workers", "1"],
    ],
)
def test_gpu_asked_without_one_is_one_line_exit_2_and_nothing_runs(
    args, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(ROOT)
    assert main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("runner: error: a GPU stage was asked for")
    assert ("CuPy is not installed" in err) or ("no CUDA device" in err)
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written


def test_device_gpu_in_a_job_file_is_refused_the_same_way(tmp_path, capsys):
    if not NO_GPU:
        pytest.skip("this machine has a GPU")
    spec = tmp_path / "g.toml"
    spec.write_text('[[stage]]\nworkload = "dot"\nn = 1000\nchunks = 2\ndevice = "gpu"\n')
    assert main(["submit", "--job", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "GPU stage was asked for" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gpu_flag_on_a_job_without_array_stages_is_refused(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["submit", "--job", "jobs/primes.toml", "--gpu"]) == 2
    assert "has no array stage" in capsys.readouterr().err


def test_unknown_device_is_a_job_spec_error(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["submit", "--job", "jobs/dot.toml", "--set", "device=tpu"]) == 2
    assert "device must be one of cpu, gpu" in capsys.readouterr().err


# --- with a GPU -------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["serial", "local"])
def test_full_graph_on_gpus_verifies_and_reports_device_phases(backend):
    job = parse_job(SMALL_FULL).on_gpu()
    with create_backend(backend, BackendOptions(workers=2, gpu=True)) as engine:
        records = [r.to_json() for r in run_job(job, engine, repeat=2)]
    for record in records:
        assert record["status"] == "verified", record["stages"]
        for stage in record["stages"][1:]:
            assert "recomputed exactly on the gpu" in stage["verification"]
            assert stage["devices_used"], stage
            assert set(stage["phases"]) == {"generate_s", "compute_s", "reduce_s"}
            assert all(v > 0 for v in stage["phases"].values())
    assert [s["digest"] for s in records[0]["stages"]] == [
        s["digest"] for s in records[1]["stages"]
    ]


@pytest.mark.gpu
def test_gpu_results_are_identical_on_serial_and_local():
    job = parse_job(SMALL_FULL).on_gpu()
    digests = []
    for backend in ("serial", "local"):
        with create_backend(backend, BackendOptions(workers=2, gpu=True)) as engine:
            (record,) = [r.to_json() for r in run_job(job, engine)]
        digests.append([s["digest"] for s in record["stages"]])
    assert digests[0] == digests[1]
