"""Security defaults: TLS for Dask, no plain TCP to a remote scheduler, no unpickling.

Whoever can reach a Dask scheduler or a Ray GCS can run code on its workers. The runner
therefore keeps what it starts on 127.0.0.1 (checked by listing the listening sockets of every
process tree it starts: here for the TLS clusters, in ``test_scaling`` for an interrupted sweep
of every backend, in ``test_backend_dask``/``test_backend_ray`` for the scripts' clusters),
speaks mutual TLS to Dask when given certificates, refuses plain ``tcp://`` to a scheduler on
another machine (``test_bad_input``: before any packet), keeps Ray's token authentication on
(``test_backend_ray``), and reads results and job specs as JSON and TOML only.

The TLS tests make their own CA and certificate (``clusters.make_tls_files``) and start a
scheduler and two workers with Dask's own CLI, TLS only, on 127.0.0.1.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.jobspec import parse_job
from cluster_runner.runs.job import run_job

from backend_conformance import reference_digests
from clusters import (
    ROOT,
    dask_cluster,
    driver_env,
    listening_addresses,
    make_tls_files,
    processes_of,
    run_watched,
    survivors,
)
from conftest import SMALL_FULL, runner_command

pytest.importorskip("cryptography", reason="the TLS tests make their certificates with it")

TINY = [
    "--job", str(ROOT / "jobs" / "full.toml"), "--set", "primes.n=1000000", "--set", "rows=400",
    "--set", "dot.n=20000",
]  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> dict[str, str]:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _flags(tls: dict[str, str]) -> list[str]:
    return ["--tls-ca-file", tls["ca_file"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]


@pytest.mark.cluster
def test_a_tls_dask_cluster_runs_the_job_and_refuses_plain_tcp(tls, tmp_path):
    with dask_cluster(workers=2, tls=tls) as cluster:
        assert cluster.address.startswith("tls://127.0.0.1:")
        procs = processes_of(cluster.pids)
        assert listening_addresses(procs) <= {"127.0.0.1"}, listening_addresses(procs)
        submit = [*runner_command(), "submit", *TINY, "--backend", "dask", "--out", str(tmp_path)]

        code, stdout, stderr, started = run_watched(
            [*submit, "--address", cluster.address, *_flags(tls)], env=driver_env(), cwd=tmp_path
        )
        assert code == 0, stderr
        assert "all stages verified" in stdout
        (path,) = tmp_path.glob("*.jsonl")
        (record,) = [json.loads(line) for line in path.read_text().splitlines()]
        assert record["status"] == "verified" and record["backend"]["address"] == cluster.address
        used = {w for stage in record["stages"] for w in stage["workers_used"]}
        assert len(used) == 2 and all(w.startswith("tls://127.0.0.1:") for w in used), used
        assert not survivors(started)

        plain = cluster.address.replace("tls://", "tcp://")
        began = time.monotonic()
        code, _stdout, stderr, started = run_watched(
            [*submit, "--address", plain, "--connect-timeout", "5"], env=driver_env(), cwd=tmp_path
        )
        assert code == 2
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith(f"runner: error: no Dask scheduler answered at {plain}")
        assert "tls://HOST:PORT with --tls-ca-file" in lines[0]
        assert time.monotonic() - began < 5 + 30
        assert not survivors(started)

        other = make_tls_files(tmp_path / "other", name="stranger")  # a CA it does not trust
        code, _stdout, stderr, _ = run_watched(
            [*submit, "--address", cluster.address, "--connect-timeout", "5", *_flags(other)],
            env=driver_env(),
            cwd=tmp_path,
        )
        assert code == 2
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "--tls-ca-file" in lines[0], stderr


@pytest.mark.cluster
def test_the_embedded_dask_cluster_speaks_tls_when_given_certificates(tls):
    extra = {f"tls_{k}" if k != "ca_file" else "tls_ca_file": v for k, v in tls.items()}
    job = parse_job(SMALL_FULL, name="small")
    with create_backend("dask", BackendOptions(workers=2, extra=extra)) as backend:
        assert backend.cluster.scheduler_address.startswith("tls://127.0.0.1:")
        (record,) = [r.to_json() for r in run_job(job, backend)]
        workers = set(backend.client.scheduler_info(n_workers=-1)["workers"])
    assert record["status"] == "verified"
    assert [s["digest"] for s in record["stages"]] == reference_digests()
    assert workers and all(w.startswith("tls://127.0.0.1:") for w in workers)


#: Modules whose loading functions could run code hidden in data.
_UNPICKLERS = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
#: YAML loaders that build arbitrary Python objects (``yaml.safe_load`` builds none).
_UNSAFE_YAML = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}


def test_the_runner_never_unpickles_results_or_specs():
    """No module of the package imports an unpickler or calls an unsafe YAML loader: results
    are JSON, job specs TOML, cluster configs YAML read with ``safe_load``."""
    found = []
    for path in sorted((ROOT / "cluster_runner").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.module == "yaml":
                    names += [f"yaml.{a.name}" for a in node.names if a.name in _UNSAFE_YAML]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
                and node.attr in _UNSAFE_YAML
            ):
                names = [f"yaml.{node.attr}"]
            found += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in _UNPICKLERS or n.startswith("yaml.")
            ]
    assert not found, found


def test_results_files_are_read_as_json_only(tmp_path, capsys):
    import pickle

    from cluster_runner.cli import main

    evil = tmp_path / "evil.jsonl"
    evil.write_bytes(pickle.dumps({"format": "cluster-runner/run"}))
    assert main(["report", str(evil)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("runner: error:") and "\n" not in err
    assert Path(evil).exists()
