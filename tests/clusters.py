"""Real clusters on 127.0.0.1 for tests: a Dask scheduler with worker processes, and a
multi-node Ray cluster with token authentication.

Both are started by the scripts users run (``scripts/dask_local_cluster.py``,
``scripts/ray_local_cluster.py``), loaded here as modules, so every test that uses a cluster
exercises them too. Ports are chosen free, never fixed. Each context manager yields a
:class:`RunningCluster`; on exit it stops the cluster by pid and asserts, with psutil, that
none of its processes (nor any child of one) survived. Usage::

    from clusters import dask_cluster, ray_cluster, driver_env

    with dask_cluster(workers=2) as cluster:
        subprocess.run([*runner_command(), "submit", "--backend", "dask",
                        "--address", cluster.address, ...], env=driver_env(cluster))

Ray clusters, and the embedded Ray instance of a test, take :func:`ray_lock` first: on a
two-core machine two Ray instances at once make both slow and flaky, and the lock also waits
for another test session's Ray (a colleague's) to finish.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
#: Environment variables a driver must not inherit from the test's own environment.
_DRIVER_ENV_DROP = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")


@dataclass(frozen=True)
class RunningCluster:
    """A cluster started for a test, and what a driver needs to use it."""

    engine: str  # "dask" or "ray"
    address: str  # what --address takes: tcp://127.0.0.1:PORT, or 127.0.0.1:PORT
    workers: int  # Dask worker processes, or Ray nodes
    folder: Path  # state.json, logs (and Ray's token file)
    env: dict[str, str] = field(default_factory=dict)  # for a driver: the Ray token
    state: dict[str, Any] = field(default_factory=dict)  # as the script recorded it

    @property
    def pids(self) -> list[int]:
        return [entry["pid"] for entry in self.state.get("processes", [])]


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module (the scripts folder is not a package)."""
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def short_tempdir(prefix: str) -> Path:
    """A fresh folder with a short path (Ray's Unix sockets live under it)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


def driver_env(cluster: RunningCluster | None = None, **extra: str) -> dict[str, str]:
    """The test's environment for a driver subprocess, with only this cluster's Ray settings."""
    env = {k: v for k, v in os.environ.items() if k not in _DRIVER_ENV_DROP}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if cluster is not None:
        env.update(cluster.env)
    env.update(extra)
    return env


@contextlib.contextmanager
def workers_import_tests() -> Iterator[None]:
    """``tests/`` on ``PYTHONPATH`` meanwhile, for engine workers started in that time: they
    unpickle the suite's task functions, which live there (the runner's own need nothing)."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
        yield


def processes_of(pids: list[int]) -> list[psutil.Process]:
    """The live processes among ``pids``, with all their descendants."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found[pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def survivors(procs: list[psutil.Process], timeout: float = 30.0) -> list[str]:
    """Wait up to ``timeout`` s for ``procs`` to end; describe those still running (not zombies)."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive and time.monotonic() < deadline:
        _gone, alive = psutil.wait_procs(alive, timeout=0.5)
        alive = [p for p in alive if _running(p)]
    out = []
    for proc in alive:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:100]}")
        except psutil.NoSuchProcess:
            continue
    return out


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_and_check(module: ModuleType, cluster: RunningCluster, grace: float) -> None:
    procs = processes_of(cluster.pids)
    killed = module.stop(cluster.folder, grace=grace)
    left = survivors(procs)
    for proc in procs:  # a last resort, so a failing test does not leak: ours, by pid
        with contextlib.suppress(psutil.NoSuchProcess):
            if _running(proc):
                proc.kill()
    assert not left, f"{cluster.engine} processes outlived stop: {'; '.join(left)}"
    assert not killed, f"{cluster.engine} processes had to be killed: {killed}"
    shutil.rmtree(cluster.folder, ignore_errors=True)  # kept when a check above failed


@contextlib.contextmanager
def dask_cluster(
    workers: int = 2, *, threads: int = 1, timeout: float = 120.0, tls: dict | None = None
) -> Iterator[RunningCluster]:
    """``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1.

    ``tls`` (``ca_file``, ``cert``, ``key``, as :func:`make_tls_files` writes them) makes the
    cluster speak mutual TLS only.
    """
    module = load_script("dask_local_cluster")
    folder = short_tempdir("rcr-dask-")
    state = module.start(folder, workers, threads=threads, timeout=timeout, tls=tls)
    cluster = RunningCluster("dask", state["address"], workers, folder, {}, state)
    try:
        yield cluster
    finally:
        _stop_and_check(module, cluster, grace=15.0)


@contextlib.contextmanager
def ray_cluster(
    nodes: int = 2, *, cpus: int = 1, timeout: float = 180.0
) -> Iterator[RunningCluster]:
    """A Ray head and ``nodes - 1`` more nodes on 127.0.0.1, sharing a fresh token."""
    module = load_script("ray_local_cluster")
    folder = short_tempdir("rcr-ray-")
    with ray_lock():
        state = module.start(folder, nodes, cpus=cpus, timeout=timeout)
        cluster = RunningCluster(
            "ray", state["address"], nodes, folder, module.driver_env(state), state
        )
        try:
            yield cluster
        finally:
            _stop_and_check(module, cluster, grace=30.0)


@contextlib.contextmanager
def ray_lock(timeout: float = 900.0) -> Iterator[None]:
    """Hold the machine-wide lock that lets one test's Ray instance run at a time.

    Re-entrant within a process (a cluster fixture and an embedded backend nest).
    """
    if _LOCK_DEPTH[0]:
        _LOCK_DEPTH[0] += 1
        try:
            yield
        finally:
            _LOCK_DEPTH[0] -= 1
        return
    path = Path(tempfile.gettempdir()) / f"cluster-runner-tests-ray-{os.getuid()}.lock"
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another session held {path} for {timeout:g} s") from None
                time.sleep(0.5)
        _LOCK_DEPTH[0] = 1
        try:
            yield
        finally:
            _LOCK_DEPTH[0] = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


_LOCK_DEPTH = [0]


def listening_addresses(procs: list[psutil.Process]) -> set[str]:
    """The IP addresses that ``procs`` accept TCP connections on (IPv4-mapped ones unmapped)."""
    found = set()
    for proc in procs:
        try:
            connections = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                found.add(conn.laddr.ip.removeprefix("::ffff:"))
    return found


def run_watched(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    signal_after: str | None = None,
    signum: int | None = None,
    timeout: float = 300.0,
) -> tuple[int, str, str, list[psutil.Process]]:
    """Run ``command``; return ``(code, stdout, stderr, processes it started)``.

    The child's descendants are sampled while it runs, so the caller can check that they all
    ended with it (a descendant orphaned at exit would escape the leak check in conftest).
    With ``signal_after``, ``signum`` is sent once a stdout line starts with that text: SIGINT
    to the child's whole process group, as a terminal's Ctrl-C is; any other signal to the
    child alone, as ``kill PID`` or a job scheduler sends it.
    """
    import signal
    import subprocess
    import threading

    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    seen: dict[int, psutil.Process] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_lines: list[str] = []
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            out_lines.append(line)
            if signal_after and line.startswith(signal_after):
                time.sleep(1.0)  # let the run get going
                if (signum or signal.SIGINT) == signal.SIGINT:
                    os.killpg(proc.pid, signal.SIGINT)
                else:
                    proc.send_signal(signum)
                signal_after = None
            if time.monotonic() > deadline:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        raise
    finally:
        stop.set()
        sampler.join(timeout=5)
        reader.join(timeout=30)
    return code, "".join(out_lines), "".join(err), list(seen.values())


def make_tls_files(folder: Path, name: str = "node") -> dict[str, str]:
    """A fresh CA, and a certificate and key it signed for 127.0.0.1 (server and client use),
    written as PEM files under ``folder``: ``{"ca_file", "cert", "key"}``, the keys that
    ``scripts/dask_local_cluster.py`` and ``BackendOptions.extra`` (with ``tls_``) take."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def named(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(named(f"cluster-runner test CA {name}"))
        .issuer_name(named(f"cluster-runner test CA {name}"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(named(name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "ca_file": folder / "ca.pem",
        "cert": folder / f"{name}.pem",
        "key": folder / f"{name}.key",
    }
    files["ca_file"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files["key"].chmod(0o600)
    return {role: str(path) for role, path in files.items()}


def submit_cli(*args: str, env=None, cwd: Path, signal_after=None, signum=None):
    """``runner submit ARGS`` in a subprocess, watched (see :func:`run_watched`)."""
    from conftest import runner_command

    return run_watched(
        [*runner_command(), "submit", *args],
        env=env or driver_env(),
        cwd=cwd,
        signal_after=signal_after,
        signum=signum,
    )


def records_in(folder: Path) -> list[dict]:
    """Every record of every results file in ``folder``."""
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.open()]


def assert_same_results(record: dict, reference: dict) -> None:
    """``record`` verified and gave, stage by stage, the reference's exact result bits."""
    assert record["status"] == "verified"
    for stage, ref in zip(record["stages"], reference["stages"], strict=True):
        assert (stage["name"], stage["digest"], stage["display"]) == (
            ref["name"],
            ref["digest"],
            ref["display"],
        )
