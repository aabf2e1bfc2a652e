"""Runner profiles: a named cluster, so that ``runner submit --cluster NAME`` needs no long flags.

A profile is a TOML file (``cluster_configs/NAME.toml``)::

    backend = "dask"                      # the backend that runs the graph
    address = "tcp://192.0.2.10:8786"     # an engine's address, or:
    # cluster = "local-dask.yaml"         # a `runner cluster` config, once it is up
    insecure = false                      # dask: allow an address without TLS (issue 6)
    # token_file = "~/.ray/auth_token"    # ray: the cluster's token (RAY_AUTH_TOKEN_PATH)

    [tls]                                 # dask: the client's TLS files
    ca_file = "tls/ca.pem"
    cert = "tls/client.pem"
    key = "tls/client.key"

    [defaults]                            # what the command-line options default to
    workers = 2
    repeat = 3
    warmup = 1
    connect_timeout = 30
    timeout = 600

Relative paths are relative to the profile's own folder. A flag given on the command line (or
in a ``RUNNER_*`` environment variable) always wins over the profile; the profile wins over
the command's own defaults.

:func:`load_profile` checks everything at once, strictly: an unknown key, a value of the
wrong type, or a file that is not there is one :class:`~cluster_runner.errors.ClusterConfigError`
line naming the profile and the key. :func:`resolve` turns a profile into what a command
needs: option values, :attr:`BackendOptions.extra <cluster_runner.backends.BackendOptions>`
entries (the TLS files under the keys the Dask backend reads), and environment variables (a
Ray cluster's token).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster_runner.backends import REGISTRY as BACKENDS
from cluster_runner.clusters.config import (
    boolean,
    integer,
    load_cluster_config,
    number,
    state_folder,
)
from cluster_runner.errors import ClusterConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: ``[tls]`` key -> the ``BackendOptions.extra`` key the Dask backend reads it from.
TLS_KEYS = {"ca_file": "tls_ca_file", "cert": "tls_cert", "key": "tls_key"}
#: Which backends each connection key makes sense for.
_ONLY = {"tls": "dask", "insecure": "dask", "token_file": "ray"}
_TOP = {"backend", "address", "cluster", "token_file", "insecure", "tls", "defaults"}
_DEFAULTS = {"workers", "repeat", "warmup", "connect_timeout", "timeout"}


@dataclass(frozen=True)
class Profile:
    """A checked runner profile; one comment a field."""

    path: Path  # the file it was read from
    backend: str  # the backend that runs the graph
    address: str | None = None  # an engine's address, as --address takes it
    cluster: Path | None = None  # a `runner cluster` config whose state gives the address
    token_file: Path | None = None  # ray: the cluster's token file
    tls: Mapping[str, Path] = field(default_factory=dict)  # [tls] key -> an existing file
    insecure: bool = False  # dask: connect without TLS to a non-loopback address
    defaults: Mapping[str, Any] = field(default_factory=dict)  # option name -> default value

    @property
    def extra(self) -> dict[str, Any]:
        """What the profile adds to ``BackendOptions.extra`` (TLS files, ``insecure``)."""
        extra: dict[str, Any] = {TLS_KEYS[k]: str(v) for k, v in self.tls.items()}
        if self.insecure:
            extra["insecure"] = True
        return extra


@dataclass(frozen=True)
class Resolved:
    """A profile made concrete for one command: what it sets, and for which options."""

    profile: Profile
    params: dict[str, Any]  # option name -> value: backend, address, defaults
    extra: dict[str, Any]  # for BackendOptions.extra
    env: dict[str, str | None]  # variables to set (None: to unset) while the command runs


def load_profile(path: Path | str) -> Profile:
    """Read and check a runner profile (TOML)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ClusterConfigError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClusterConfigError(f"profile {path} is not valid TOML: {exc}") from None
    _no_unknown(path, data, _TOP, "")
    backend = data.get("backend")
    if backend not in BACKENDS:
        raise ClusterConfigError(
            f"{path}: 'backend' must be one of {', '.join(BACKENDS)}, not {backend!r}"
        )
    for key, engine in _ONLY.items():
        if key in data and backend != engine:
            raise ClusterConfigError(f"{path}: {key!r} applies to backend {engine} only")
    if "address" in data and "cluster" in data:
        raise ClusterConfigError(f"{path}: give 'address' or 'cluster', not both")
    address = data.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ClusterConfigError(f"{path}: 'address' must be a non-empty string, not {address!r}")
    if (address is not None or "cluster" in data) and backend not in ("dask", "ray"):
        raise ClusterConfigError(
            f"{path}: backend {backend} runs on this machine only: it takes no address or"
            " cluster (use dask or ray)"
        )
    cluster = _file(path, data, "cluster", "cluster")
    if cluster is not None:
        spec = load_cluster_config(cluster)
        if spec.engine != backend:
            raise ClusterConfigError(
                f"{path}: 'cluster' {cluster} is a {spec.engine} cluster, but the backend is"
                f" {backend}"
            )
    tls = data.get("tls", {})
    if not isinstance(tls, dict):
        raise ClusterConfigError(f"{path}: 'tls' must be a table ([tls])")
    _no_unknown(path, tls, set(TLS_KEYS), "tls.")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ClusterConfigError(f"{path}: 'defaults' must be a table ([defaults])")
    _no_unknown(path, defaults, _DEFAULTS, "defaults.")
    checked = {
        "workers": integer(path, defaults, "workers", None, minimum=1, label="defaults.workers"),
        "repeat": integer(path, defaults, "repeat", None, minimum=1, label="defaults.repeat"),
        "warmup": integer(path, defaults, "warmup", None, minimum=0, label="defaults.warmup"),
        "connect_timeout": number(
            path, defaults, "connect_timeout", None, minimum=0.1, label="defaults.connect_timeout"
        ),
        "timeout": number(path, defaults, "timeout", None, minimum=0.001, label="defaults.timeout"),
    }
    return Profile(
        path=path,
        backend=backend,
        address=address.strip() if address else None,
        cluster=cluster,
        token_file=_file(path, data, "token_file", "token_file"),
        tls={k: _file(path, tls, k, f"tls.{k}") for k in tls},
        insecure=boolean(path, data, "insecure", False),
        defaults={k: v for k, v in checked.items() if v is not None},
    )


def resolve(profile: Profile, state_root: Path | str | None = None) -> Resolved:
    """The address, defaults, backend extras and environment that ``profile`` stands for.

    A profile naming a ``runner cluster`` config reads the address (and Ray's token) from that
    cluster's state file; a cluster that is not up is a one-line error saying how to start it.
    """
    params: dict[str, Any] = {"backend": profile.backend, **profile.defaults}
    env: dict[str, str | None] = {}
    if profile.address is not None:
        params["address"] = profile.address
    if profile.token_file is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(profile.token_file))
    if profile.cluster is not None:
        from cluster_runner.clusters import engine_module

        spec = load_cluster_config(profile.cluster)
        module = engine_module(spec.engine)
        folder = state_folder(spec, state_root)
        state = module.status(folder)
        if state is None or not module.healthy(state):
            how = "is not up" if state is None else "is not running (some processes are gone)"
            raise UsageError(
                f"the cluster of {profile.cluster} {how} (state: {folder}); start it with:"
                f" runner cluster up --config {profile.cluster}"
            )
        params["address"] = state["address"]
        env.update(module.driver_env(state))
    if "RAY_AUTH_TOKEN_PATH" in env:
        env["RAY_AUTH_TOKEN"] = None  # Ray would read a token in the environment first
    return Resolved(profile, params, profile.extra, env)


def _no_unknown(path: Path, table: Mapping[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ClusterConfigError(
            f"{path}: unknown key {prefix + unknown[0]!r}"
            f" (known: {', '.join(prefix + k for k in sorted(known))})"
        )


def _file(path: Path, table: Mapping[str, Any], key: str, label: str) -> Path | None:
    """``table[key]``: a file that exists, relative to the profile's folder; None if absent."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str) or not value:
        raise ClusterConfigError(f"{path}: {label!r} must be a file name, not {value!r}")
    found = (path.parent / Path(value).expanduser()).resolve()
    if not found.is_file():
        raise ClusterConfigError(f"{path}: {label!r}: no such file {found}")
    return found
