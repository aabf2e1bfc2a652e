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
import sys
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
#: What of ``pickle`` reads data back (writing, ``pickle.dumps``, runs no code of the data's).
_PICKLE_LOADERS = {"load", "loads", "Unpickler", "_loads", "_load"}
_UNSAFE_YAML = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}


def test_the_runner_never_unpickles_results_or_specs():
    """No module of the package unpickles or calls an unsafe YAML loader: results are JSON, job
    specs TOML, cluster configs YAML read with ``safe_load``.

    ``pickle`` itself may be imported to *write* (checking that a user's chunk function pickles
    by reference, digesting a result that is not JSON): its loaders are what is refused, by name
    and as attributes. The other serialisers are refused outright. One function is exempt,
    ``execution/inputs.py``'s ``load_own``: it unpickles what the runner pickled itself in the
    same session for its own tasks (a driver input, issue 21), never anything read from outside.
    """
    found = []
    for path in sorted((ROOT / "cluster_runner").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exempt = {
            id(inner)
            for node in ast.walk(tree)
            if path.name == "inputs.py" and isinstance(node, ast.FunctionDef)
            and node.name == "load_own"
            for inner in ast.walk(node)
        }  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in exempt:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name != "pickle"]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.module != "pickle" else []
                if node.module == "pickle":
                    names += [f"pickle.{a.name}" for a in node.names if a.name in _PICKLE_LOADERS]
                if node.module == "yaml":
                    names += [f"yaml.{a.name}" for a in node.names if a.name in _UNSAFE_YAML]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
                and node.attr in _UNSAFE_YAML
            ):
                names = [f"yaml.{node.attr}"]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "pickle"
                and node.attr in _PICKLE_LOADERS
            ):
                names = [f"pickle.{node.attr}"]
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


# --- issue 15: nothing written outside --out, secrets only where the user sent them ------------

TINY_JOB = '[[stage]]\nworkload = "primes"\nn = 10000\nchunks = 2\n'


@pytest.mark.parametrize(
    "name",
    ["../../escape", "/tmp/escape", "a/b/c", "..", ".hidden", "-rf", "~root", "x\\..\\y", "é/ü"],
)
def test_a_jobs_name_never_puts_its_results_outside_out(name, tmp_path, capsys):
    from cluster_runner.cli import main

    job = tmp_path / "job.toml"
    job.write_text(f"name = {json.dumps(name)}\n{TINY_JOB}")
    out = tmp_path / "deep" / "out"
    before = set(tmp_path.rglob("*"))
    assert main(["submit", "--job", str(job), "--backend", "serial", "--out", str(out)]) == 0
    (path,) = out.iterdir()
    assert path.parent == out and path.suffix == ".jsonl"
    assert not path.name.startswith((".", "-")) and "/" not in path.name
    assert set(tmp_path.rglob("*")) - before == {tmp_path / "deep", out, path}
    assert json.loads(path.read_text())["job"]["name"] == name  # the record keeps it as given


def test_a_failed_connect_leaves_no_results_file(tmp_path):
    from clusters import free_port

    out = tmp_path / "out"
    code, _stdout, stderr, _ = run_watched(
        [*runner_command(), "submit", *TINY, "--backend", "dask", "--address",
         f"tcp://127.0.0.1:{free_port()}", "--connect-timeout", "1", "--out", str(out)],
        env=driver_env(), cwd=tmp_path,
    )  # fmt: skip
    assert code == 2 and "cannot connect to the Dask cluster" in stderr
    assert not out.exists(), "a results file (or its folder) was made for no run"


#: What the audit hook watches for, and what it saw: opens of the files in ``watched``.
_OPENS: dict[str, set[str] | list[str]] = {"watched": set(), "opened": []}


def _on_audit(event: str, args: tuple) -> None:
    """Records the watched files this process opens (an audit hook sees every ``open``)."""
    if event == "open" and _OPENS["watched"] and str(args[0]) in _OPENS["watched"]:
        _OPENS["opened"].append(str(args[0]))


sys.addaudithook(_on_audit)  # cannot be removed; idle while nothing is watched


@pytest.mark.parametrize("address", ["192.0.2.1:6379", "ray://203.0.113.5:10001", "head:6379"])
def test_a_ray_profiles_token_is_never_read_for_an_address_off_this_machine(
    address, tmp_path, capsys, monkeypatch
):
    from cluster_runner.cli import main

    token = tmp_path / "cluster.token"
    token.write_text("secret-token\n")
    profile = tmp_path / "remote.toml"
    profile.write_text(f'backend = "ray"\naddress = "{address}"\ntoken_file = "cluster.token"\n')
    monkeypatch.setitem(_OPENS, "watched", {str(token)})
    monkeypatch.setitem(_OPENS, "opened", [])
    assert main(["submit", "--cluster", str(profile), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("runner: error: refusing to connect to the Ray cluster") and "\n" not in err
    )
    assert _OPENS["opened"] == [], "the token file was read"


@pytest.mark.parametrize(
    ("address", "extra", "allowed"),
    [
        ("127.0.0.1:6379", {}, True),
        ("127.0.0.2:6379", {}, True),
        ("localhost:6379", {}, True),
        ("[::1]:6379", {}, True),
        ("ray://127.0.0.1:10001", {}, True),
        ("auto", {}, True),  # the cluster recorded on this machine
        ("192.0.2.1:6379", {}, False),
        ("192.0.2.1:6379", {"insecure": True}, True),  # --insecure: the user knows
        ("ray://192.0.2.1:10001", {"insecure": True}, True),
    ],
)
def test_ray_addresses_follow_the_loopback_rule_of_dask(address, extra, allowed, monkeypatch):
    """Decided from the address alone, before any packet (no Ray call is made here)."""
    pytest.importorskip("ray")
    from cluster_runner.backends import backend_class
    from cluster_runner.backends.spec import resolve
    from cluster_runner.errors import UsageError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    options = BackendOptions(address=address, extra=extra)
    if allowed:
        assert resolve(options, backend_class("ray")).target == (
            address if address == "auto" else str(resolve(options, backend_class("ray")).address)
        )
    else:
        with pytest.raises(UsageError, match="refusing to connect to the Ray cluster"):
            resolve(options, backend_class("ray"))


@pytest.mark.cluster
def test_the_embedded_ray_session_folder_is_private_and_removed(tmp_path):
    """Ray's session (sockets, logs) lives in a folder of the runner's, mode 0700, gone when
    the instance ends; nothing new appears in the world-readable /tmp/ray."""
    import stat
    import tempfile

    from clusters import ray_lock

    shared = Path(tempfile.gettempdir()) / "ray"
    before = set(shared.iterdir()) if shared.is_dir() else set()
    job = parse_job(SMALL_FULL, name="small")
    with ray_lock(), create_backend("ray", BackendOptions(workers=1)) as backend:
        root = Path(backend._session_root)
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert any(root.glob("*/session_*")), "Ray's session is not in the private folder"
        (record,) = [r.to_json() for r in run_job(job, backend)]
    assert record["status"] == "verified"
    assert not root.exists()
    after = set(shared.iterdir()) if shared.is_dir() else set()
    assert after <= before, f"new in {shared}: {after - before}"
