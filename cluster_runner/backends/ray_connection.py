"""Connecting a Ray driver: token authentication, and a connect bounded by a timeout.

Ray's own ``ray.init(address=...)`` retries an address for about 20 s whatever is wrong, logs
each try from its C++ core straight to file descriptor 2, and, given a wrong token, says only
that it could not connect. :func:`connect` gives the user one line within
``--connect-timeout`` instead: a TCP probe first (nothing listening), then one GCS client call
(a token the cluster refuses answers at once), then ``ray.init`` in a thread abandoned at the
timeout.

:func:`token_auth` keeps Ray's token authentication on (see ``cluster_runner.backends.ray``),
and :func:`gcs_heartbeat` notices a GCS that is gone while a run waits on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray

from cluster_runner.backends.addresses import parse_address, probe
from cluster_runner.backends.cluster import EnvPatch, Heartbeat
from cluster_runner.backends.failures import one_line
from cluster_runner.errors import (
    BackendUnavailableError,
    ConnectError,
    ExecutionError,
    RunnerError,
)
from cluster_runner.execution.tasks import SINGLE_THREAD_ENV

#: Seconds (tries, a second apart) Ray waits for a GCS when the driver connects; default 20.
GCS_WAIT_ENV = "RAY_gcs_server_port_wait_time_s"
#: Seconds a GCS may not answer before a run waiting on it fails (Ray itself gives it 60 s,
#: then ends the driver's process: see :func:`gcs_heartbeat`).
GCS_LOST_S = 10.0
#: How Ray is told where a cluster's token is, in the order it looks.
TOKEN_HINT = (
    "give the runner the cluster's token in RAY_AUTH_TOKEN or a file named by"
    " RAY_AUTH_TOKEN_PATH (see 'Ray token authentication' in the README)"
)


def connect(
    target: str, shown: str, timeout: float, runtime_env: dict[str, Any] | None = None
) -> Any:
    """``ray.init(address=target)`` within ``timeout`` seconds; Ray's context, or one line.

    ``shown`` is the address as the user wrote it, for the messages. ``runtime_env`` is the
    job's (default: the single-thread BLAS variables); the user's code rides in it (issue 13).
    """
    began = time.monotonic()
    gcs = None
    if target != "auto":
        address = parse_address(target, ("ray", ""), "")
        probe(address, timeout, "Ray")
        gcs = None if address.scheme == "ray" else address.hostport
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            if gcs is not None:
                from ray._raylet import GcsClient

                GcsClient(address=gcs)  # raises at once for a refused token
            outcome["context"] = ray.init(
                address=target,
                log_to_driver=False,
                logging_level=logging.ERROR,
                runtime_env=runtime_env or {"env_vars": SINGLE_THREAD_ENV},
                namespace="cluster-runner",
            )
        except BaseException as exc:
            outcome["error"] = exc

    with EnvPatch() as env, _quiet_stderr():
        env.set(GCS_WAIT_ENV, str(max(1, int(timeout))))  # Ray's own wait, shortened to fit
        thread = threading.Thread(target=attempt, name="ray-connect", daemon=True)
        thread.start()
        thread.join(max(1.0, timeout - (time.monotonic() - began)))
    if thread.is_alive():
        raise ConnectError(
            f"Ray at {shown} did not let the driver in within {timeout:g} s; is it the GCS"
            " port of a Ray head (6379 by default)? If the cluster uses token authentication,"
            f" {TOKEN_HINT}"
        )
    if "error" in outcome:
        raise _connect_error(shown, outcome["error"]) from None
    return outcome["context"]


def gcs_heartbeat(address: str | None) -> Heartbeat:
    """A :class:`~cluster_runner.backends.cluster.Heartbeat` on the GCS at ``address``.

    It asks by opening a TCP connection to the GCS port: a GCS that is gone refuses it at
    once. Ray would wait 60 s, then end the driver's process with a C++ log line and no
    error of the runner's; the heartbeat fails the run after :data:`GCS_LOST_S` seconds.
    """

    def ping() -> bool:
        if not address:
            return True
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return True
        except OSError:
            return False

    def lost() -> Exception:
        return ExecutionError(
            f"lost the Ray cluster's GCS at {address}: nothing has answered there for"
            f" {GCS_LOST_S:g} s (the head node's control process stopped, was killed or ran"
            " out of memory); the run cannot finish"
        )

    return Heartbeat(ping, lost, GCS_LOST_S)


def token_auth(embedded: bool, setenv: Callable[[str, str], None]) -> bool:
    """Keep token authentication on, without ever writing a token file; True if Ray re-read it.

    An explicit ``RAY_AUTH_MODE`` is the user's choice and is respected, except that the
    instance started here never writes ``~/.ray/auth_token`` (Ray would make one if none
    exists): it gets a token made for this process instead. When connecting, token mode is
    turned on when a token is there to use.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        return False
    has_token = (
        any(os.environ.get(v) for v in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"))
        or (Path.home() / ".ray" / "auth_token").is_file()
    )
    if embedded and not has_token:
        setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        has_token = True
    if has_token and mode is None:
        setenv("RAY_AUTH_MODE", "token")
    if has_token:
        reread_auth_config()
    return has_token


def reread_auth_config() -> None:
    """Make Ray read ``RAY_AUTH_MODE`` and the token again.

    Ray reads its config once, when it is imported, and its token once, when first needed: a
    change to the environment after that goes unseen (and a process whose cached mode is
    ``token`` with no token left aborts in Ray's C++ core). Ray's own ``_enable_token_auth``
    does the same.
    """
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 (where Ray's C++ core logs) to a scratch file meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _connect_error(address: str, exc: BaseException) -> RunnerError:
    text = one_line(exc)
    if "InvalidAuthToken" in str(exc) or "no authentication token" in str(exc):
        return ConnectError(
            f"the Ray cluster at {address} refused the driver: its token is missing or wrong;"
            f" {TOKEN_HINT}"
        )
    if "token" in str(exc).lower() or "auth" in type(exc).__name__.lower():
        return ConnectError(f"Ray at {address} refused the driver ({text[:160]}); {TOKEN_HINT}")
    if "ray[client]" in str(exc) or isinstance(exc, ModuleNotFoundError):
        return BackendUnavailableError(
            "ray:// addresses need Ray Client, which is not installed: pip install 'ray[client]'"
            " (or connect to the GCS port, HOST:PORT, from a machine of the cluster)"
        )
    return ConnectError(
        f"cannot connect to Ray at {address}: {text}; if the cluster uses token"
        f" authentication (Ray's default), {TOKEN_HINT}"
    )


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's nodes that are alive, as ``ray.nodes()`` describes them."""
    return [n for n in ray.nodes() if n.get("Alive")]


def is_head(node: dict[str, Any]) -> bool:
    return "node:__internal_head__" in node.get("Resources", {})


def node_cpus(node: dict[str, Any]) -> float:
    return float(node.get("Resources", {}).get("CPU", 0.0))
