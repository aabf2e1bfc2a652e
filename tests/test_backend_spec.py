"""The backend contract's pure parts: options checked once, the spec resolved once, the TLS
and loopback policy decided without Dask, failures worded once, warm-up hooks collected."""

from __future__ import annotations

import os
import sys

import pytest

from cluster_runner.backends import REGISTRY, BackendOptions, backend_class
from cluster_runner.backends.addresses import parse_address
from cluster_runner.backends.base import GraphBackend, PoolBackend
from cluster_runner.backends.failures import one_line, task_failed, timed_out, worker_lost
from cluster_runner.backends.spec import resolve
from cluster_runner.backends.tls import TlsFiles, tls_files
from cluster_runner.errors import TaskFailedError, UsageError
from cluster_runner.jobspec import parse_job
from cluster_runner.workloads.primes import warm_up_sieve


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"workers": 0}, "'workers' must be an integer >= 1, not 0"),
        ({"nodes": 0}, "'nodes' must be an integer >= 1, not 0"),
        ({"retries": -1}, "'retries'"),
        ({"workers": "2"}, "'workers'"),
        ({"connect_timeout": 0}, "'connect_timeout'"),
        ({"warm_up": (1,)}, "'warm_up'"),
    ],
)
def test_bad_backend_options_are_one_line(fields, message):
    with pytest.raises(UsageError, match=message) as caught:
        BackendOptions(**fields)
    assert "\n" not in str(caught.value)


def test_options_are_kept_as_checked():
    assert BackendOptions(workers=2.0).workers == 2  # TOML's 1e9 is a float
    assert BackendOptions(warm_up=[warm_up_sieve]).warm_up == (warm_up_sieve,)


def test_the_spec_is_resolved_once_for_every_backend():
    local = resolve(BackendOptions(), backend_class("threads"))
    assert local.workers == (os.cpu_count() or 1) and not local.remote
    assert resolve(BackendOptions(workers=3), backend_class("threads")).workers == 3
    with pytest.raises(UsageError, match="takes no --address"):
        resolve(BackendOptions(address="tcp://127.0.0.1:8786"), backend_class("local"))


def test_each_backend_declares_the_kind_the_walk_calls():
    pools = {"serial", "threads", "local"}
    for name in pools:
        cls = backend_class(name)
        assert issubclass(cls, PoolBackend) and not cls.native_dependencies
    assert set(REGISTRY) >= pools
    assert GraphBackend.native_dependencies and not PoolBackend.native_dependencies


def test_the_tls_policy_needs_no_dask(tmp_path):
    before = set(sys.modules)
    files = {}
    for name in ("tls_ca_file", "tls_cert", "tls_key"):
        (tmp_path / name).write_text("pem")
        files[name] = str(tmp_path / name)
    loopback = parse_address("tcp://127.0.0.1:8786", ("tcp", "tls", ""), "")
    remote = parse_address("tcp://10.0.0.5:8786", ("tcp", "tls", ""), "")
    tls = parse_address("tls://10.0.0.5:8786", ("tcp", "tls", ""), "")
    assert tls_files({}, loopback) is None
    assert tls_files({"insecure": True}, remote) is None
    with pytest.raises(UsageError, match="refusing plain tcp://"):
        tls_files({}, remote)
    with pytest.raises(UsageError, match="is a TLS address"):
        tls_files({}, tls)
    with pytest.raises(UsageError, match="--tls-key missing"):
        tls_files({k: v for k, v in files.items() if k != "tls_key"}, tls)
    with pytest.raises(UsageError, match="use tls://"):
        tls_files(files, remote)
    assert tls_files(files, tls) == TlsFiles(
        files["tls_ca_file"], files["tls_cert"], files["tls_key"]
    )
    assert not any(m.startswith(("distributed", "dask")) for m in set(sys.modules) - before)


def test_failures_are_worded_once():
    assert str(timed_out(3, example="s/chunk-1")) == (
        "run timed out: 3 task(s) still running, e.g. s/chunk-1 (raise --timeout or use more"
        " chunks)"
    )
    assert "after 2 s: 1 task(s)" in str(timed_out(1, after=2.0))
    lost = str(worker_lost("task s/a", 4, 3))
    assert lost.startswith("task s/a was lost with its worker 4 time(s), more than --retries 3")
    assert one_line(ValueError("a\n  b")) == "a b"
    assert one_line(ValueError("a\nb"), first_only=True) == "a"


def test_a_task_error_keeps_the_workers_traceback():
    try:
        raise ValueError("boom 7")
    except ValueError as exc:
        raised = TaskFailedError.from_exception("s/bad", exc)
    assert task_failed(raised, "task s/bad") is raised  # as the worker raised it
    try:
        raise KeyError("k")
    except KeyError as exc:
        other = task_failed(exc, "task s/x", "s/x")
    assert str(other).startswith("task s/x failed: KeyError")
    assert "KeyError: 'k'" in other.remote_traceback and other.key == "s/x"


def test_a_job_collects_its_workloads_warm_ups_once():
    job = parse_job(
        '[[stage]]\nworkload = "primes"\nname = "a"\nn = 1000\n'
        '[[stage]]\nworkload = "primes"\nname = "b"\nn = 1000\n'
        '[[stage]]\nworkload = "noop"\nname = "c"\ntasks = 4\n'
    )
    assert job.warm_ups() == (warm_up_sieve,)
