"""Malformed input of every kind: one line on stderr, exit 2, nothing started, nothing sent.

One table (:data:`BAD_INPUT`): command-line flags, worker lists, job specs, cluster addresses,
TLS and fault options, and results files that are not ours. Each row runs the real command in
this process; it must fail before anything starts, with exit 2, one ``runner: error: ...`` line
naming the problem and no traceback, and without opening a single network connection (checked
by watching ``socket.connect``: a refused remote address must not even be tried).

A property (hypothesis) adds the job-spec loader at the byte level: any file either loads into
a valid spec or raises the runner's own :class:`~cluster_runner.errors.JobSpecError`.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster_runner.cli import main
from cluster_runner.errors import JobSpecError
from cluster_runner.jobspec import load_job
from cluster_runner.results import RECORD_FORMAT, SCHEMA_VERSION

from conftest import ROOT

#: Files the rows name as {placeholders}, written by the ``files`` fixture.
FILES = {
    "not_toml": b'[[stage]\nworkload = "primes"\n',
    "unknown_workload": b'[[stage]]\nworkload = "fibonacci"\nn = 10\n',
    "no_stages": b'description = "nothing to run"\n',
    "unknown_key": b'colour = "red"\n[[stage]]\nworkload = "primes"\n',
    "junk_job": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
    "wrong_type": b'[[stage]]\nworkload = "primes"\nn = "lots"\n',
    "empty_jsonl": b"",
    "other_jsonl": b'{"name": "alice", "age": 7}\n{"name": "bob", "age": 9}\n',
    "junk_jsonl": b"\xff\xfe\x00junk\x81\x82\n\x00\x01\x02",
    "text_jsonl": b"hello\nworld\n",
    "newer_jsonl": (
        json.dumps({"format": RECORD_FORMAT, "schema_version": SCHEMA_VERSION + 1}) + "\n"
    ).encode(),
    "pem": b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n",
}

DASK = ["submit", "--backend", "dask"]
SCALE = ["scale", "--backend", "threads"]

#: (arguments, a part of the one-line message). {name} is the path of FILES[name]; {dir} an
#: empty folder.
BAD_INPUT = [
    # command-line flags
    (["submit", "--backend", "spark"], "'spark' is not one of"),
    (["submit", "--workers", "0"], "0 is not in the range x>=1"),
    (["submit", "--workers", "many"], "'many' is not a valid integer"),
    (["submit", "--repeat", "0"], "0 is not in the range x>=1"),
    (["submit", "--timeout", "-1"], "-1.0 is not in the range x>=0.001"),
    (["submit", "--retries", "-1"], "-1 is not in the range x>=0"),
    (["submit", "--start-method", "vfork"], "'vfork' is not one of"),
    (["submit", "--frobnicate"], "No such option '--frobnicate'"),
    (["sumbit"], "No such command 'sumbit'"),
    (["scale", "--backend", "local,spark"], "unknown backend 'spark'"),
    (["scale", "--backend", "local,local"], "lists a backend twice"),
    (["scale", "--mode", "sideways"], "'sideways' is not one of"),
    (["scale", "--chunks", "0"], "not a list of positive integers"),
    # worker lists
    ([*SCALE, "--workers", "1,,2"], "'1,,2' is not a list of positive integers"),
    ([*SCALE, "--workers", "0"], "'0' is not a list of positive integers"),
    ([*SCALE, "--workers", "-1"], "'-1' is not a list of positive integers"),
    ([*SCALE, "--workers", "a"], "'a' is not a list of positive integers"),
    ([*SCALE, "--workers", "1,1"], "lists a number twice"),
    ([*SCALE, "--workers", ""], "is not a list of positive integers"),
    ([*SCALE, "--nodes", "1,2"], "give its --address too"),
    # job specs and overrides
    (["submit", "--job", "jobs/none.toml"], "does not exist"),
    (["submit", "--job", "nosuchjob"], "no job named 'nosuchjob'"),
    (["submit", "--job", "{not_toml}"], "not valid TOML"),
    (["submit", "--job", "{unknown_workload}"], "fibonacci"),
    (["submit", "--job", "{no_stages}"], "no [[stage]] tables"),
    (["submit", "--job", "{unknown_key}"], "unknown key 'colour'"),
    (["submit", "--job", "{junk_job}"], "cannot be read"),
    (["submit", "--job", "{wrong_type}"], "n must be an integer, got 'lots'"),
    (["submit", "--set", "n=-5"], "n must be >= 2"),
    (["submit", "--set", "n"], "expected KEY=VALUE"),
    (["submit", "--set", "colour=red"], "has a parameter 'colour'"),
    (["submit", "--set", "nostage.n=5"], "no stage named 'nostage'"),
    # cluster addresses
    (["submit", "--backend", "local", "--address", "tcp://127.0.0.1:1"], "takes no --address"),
    ([*DASK, "--address", "tcp://"], "'tcp://' is not an address of the form"),
    ([*DASK, "--address", "tcp://host"], "'tcp://host' is not an address of the form"),
    ([*DASK, "--address", "http://x:1"], "'http://x:1' is not an address of the form"),
    ([*DASK, "--address", "tcp://127.0.0.1:0"], "port 0 is out of range"),
    ([*DASK, "--address", "tcp://127.0.0.1:99999"], "port 99999 is out of range"),
    ([*DASK, "--address", "tcp://192.0.2.1:8786"], "refusing plain tcp:// to the Dask"),
    ([*DASK, "--address", "192.0.2.1:8786"], "--insecure on a network you trust"),
    ([*DASK, "--address", "tcp://scheduler.example:8786"], "not on this machine"),
    (
        ["scale", "--backend", "dask", "--address", "tcp://192.0.2.1:8786", "--nodes", "1"],
        "refusing plain tcp:// to the Dask",
    ),
    (["submit", "--backend", "ray", "--address", "ray://x"], "'ray://x' is not an address"),
    (["submit", "--backend", "ray", "--address", "127.0.0.1:70000"], "port 70000 is out of"),
    # TLS
    ([*DASK, "--address", "tls://127.0.0.1:8786"], "is a TLS address: give --tls-ca-file"),
    ([*DASK, "--tls-cert", "{pem}"], "--tls-ca-file, --tls-key missing"),
    (
        [*DASK, "--tls-ca-file", "{pem}", "--tls-cert", "{pem}", "--tls-key", "{dir}/none.key"],
        "--tls-key {dir}/none.key: no such readable file",
    ),
    (
        [
            *DASK,
            "--address",
            "tcp://127.0.0.1:8786",
            "--tls-ca-file",
            "{pem}",
            "--tls-cert",
            "{pem}",
            "--tls-key",
            "{pem}",
        ],
        "is plain TCP but TLS files were given: use tls://127.0.0.1:8786",
    ),
    # faults
    (["submit", "--backend", "serial", "--inject-fault", "kill-worker"], "no worker to kill"),
    (
        ["scale", "--backend", "local,threads", "--inject-fault", "kill-worker"],
        "the threads backend runs tasks in the driver's own process",
    ),
    (["submit", "--inject-fault", "explode"], "'explode' is not 'kill-worker'"),
    # results files that are not ours
    (["report", "{empty_jsonl}"], "the results files hold no runs"),
    (["report", "{other_jsonl}"], "other.jsonl:1 is not a cluster-runner record"),
    (["report", "{junk_jsonl}"], "cannot read results file"),
    (["report", "{text_jsonl}"], "text.jsonl:1 is not JSON"),
    (["report", "{newer_jsonl}"], f"schema version {SCHEMA_VERSION + 1}, newer than this"),
    (["report", "{dir}/missing.jsonl"], "does not exist"),
    (["report", "{dir}"], "holds no *.jsonl results files"),
    (["report", "{not_toml}"], "is not JSON: not a results file of cluster-runner"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad-input")
    paths = {}
    for name, data in FILES.items():
        path = folder / (f"{name[:-6]}.jsonl" if name.endswith("_jsonl") else f"{name}.toml")
        path.write_bytes(data)
        paths[name] = str(path)
    (folder / "empty").mkdir()
    paths["dir"] = str(folder / "empty")
    return paths


@pytest.fixture
def no_connections(monkeypatch):
    """Record, and refuse, every TCP connection this process tries to open."""
    tried: list[object] = []

    def refuse(sock, address, *args):
        tried.append(address)
        raise OSError("a bad-input test must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return tried


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_on_stderr_with_exit_2(
    args, message, files, no_connections, capsys, monkeypatch
):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RUNNER_SUBMIT_OUT", files["dir"] + "/out")  # results would go here
    monkeypatch.setenv("RUNNER_SCALE_OUT", files["dir"] + "/out")
    args = [arg.format(**files) for arg in args]
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("runner: error: ")
    assert message.format(**files) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert no_connections == [], f"tried to connect to {no_connections}"
    assert not Path(files["dir"], "out").exists(), "a results file was started"


def test_the_table_is_large_enough():
    assert len(BAD_INPUT) >= 20


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_job_file_loads_or_raises_job_spec_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.toml"
        path.write_bytes(data)
        try:
            job = load_job(path)
        except JobSpecError as exc:
            assert "\n" not in str(exc)
            return
    assert job.stages and job.build_graph().sinks()


@pytest.mark.parametrize(("backend", "module"), [("dask", "distributed"), ("ray", "ray")])
def test_missing_engine_names_the_extra_to_install(backend, module, tmp_path):
    """A backend whose engine is not installed: one line naming the pip extra, exit 2."""
    import sys

    from clusters import driver_env, run_watched

    code = (
        f"import sys; sys.modules[{module!r}] = None;"
        "from cluster_runner.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    out = run_watched(
        [sys.executable, "-c", code, "submit", "--job", str(ROOT / "jobs" / "full.toml"),
         "--backend", backend, "--out", str(tmp_path)],
        env=driver_env(), cwd=tmp_path,
    )  # fmt: skip
    assert out[0] == 2
    lines = out[2].strip().splitlines()
    assert len(lines) == 1, out[2]
    assert f"pip install 'cluster-runner[{backend}]'" in lines[0]
