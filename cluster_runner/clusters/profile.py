"""Runner profiles: a named cluster, so that ``runner submit --cluster NAME`` needs no long flags.

A profile is a TOML file (``cluster_configs/NAME.toml``)::

    backend = "dask"                      # the backend that runs the graph
    address = "tcp://192.0.2.10:8786"     # an engine's address, or:
    # cluster = "local-dask.yaml"         # a `runner cluster` config, once it is up, or:
    # slurm = "slurm-dask.yaml"           # nodes asked of Slurm by `runner scale` (issue 19;
                                          # see cluster_runner.clusters.slurm_settings)
    insecure = false                      # dask, ray: allow an unencrypted address off this
                                          # machine (issue 6; issue 15 for Ray)
    # token_file = "~/.ray/auth_token"    # ray: the cluster's token (RAY_AUTH_TOKEN_PATH),
                                          # read only for a loopback address or with insecure

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

:func:`load_profile` checks everything at once, strictly (:class:`ProfileFile`, a pydantic model
checked by :func:`cluster_runner.validation.validate`): an unknown key, a value of the wrong type,
or a file that is not there is one :class:`~cluster_runner.errors.ClusterConfigError` line naming
the profile and the key. The ranges of the ``[defaults]`` are the options' own: click checks
them when it applies the profile (``--cluster`` fills click's ``default_map``).
:func:`resolve` turns a profile into what a command needs: option values,
:attr:`BackendOptions.extra <cluster_runner.backends.BackendOptions>` entries (the TLS files
under the keys the Dask backend reads), and environment variables (a Ray cluster's token).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator

from cluster_runner.backends import REGISTRY as BACKENDS
from cluster_runner.clusters.config import load_cluster_config, state_folder
from cluster_runner.errors import ClusterConfigError, UsageError
from cluster_runner.validation import STRICT_CONFIG, Boolean, Integer, Number, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: ``[tls]`` key -> the ``BackendOptions.extra`` key the Dask backend reads it from.
TLS_KEYS = {"ca_file": "tls_ca_file", "cert": "tls_cert", "key": "tls_key"}
#: Which backends each connection key makes sense for.
_ONLY = {"tls": ("dask",), "insecure": ("dask", "ray"), "token_file": ("ray",)}
_BACKEND_NAMES = tuple(BACKENDS)


def _file_name(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a file name")
    return value


def _address(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


#: A file named in a profile: a non-empty string, relative to the profile's folder.
FileName = Annotated[str, BeforeValidator(_file_name)]


class TlsFiles(BaseModel):
    """``[tls]``: the client's TLS files for a Dask scheduler that requires TLS."""

    model_config = STRICT_CONFIG
    ca_file: FileName | None = None
    cert: FileName | None = None
    key: FileName | None = None


class OptionDefaults(BaseModel):
    """``[defaults]``: what the options default to; their ranges are checked by click."""

    model_config = STRICT_CONFIG
    workers: Integer | None = None
    repeat: Integer | None = None
    warmup: Integer | None = None
    connect_timeout: Number | None = None
    timeout: Number | None = None


class ProfileFile(BaseModel):
    """A profile as its file spells it; :class:`Profile` is what it means, files found."""

    model_config = STRICT_CONFIG
    backend: Literal[_BACKEND_NAMES]  # type: ignore[valid-type]
    address: Annotated[str, BeforeValidator(_address)] | None = None
    cluster: FileName | None = None
    slurm: FileName | None = None  # issue 19: Slurm jobs that `runner scale` asks for
    token_file: FileName | None = None
    insecure: Boolean = False
    tls: TlsFiles = TlsFiles()
    defaults: OptionDefaults = OptionDefaults()


@dataclass(frozen=True)
class Profile:
    """A checked runner profile; one comment a field."""

    path: Path  # the file it was read from
    backend: str  # the backend that runs the graph
    address: str | None = None  # an engine's address, as --address takes it
    cluster: Path | None = None  # a `runner cluster` config whose state gives the address
    slurm: Path | None = None  # Slurm jobs to ask for (clusters/slurm_settings.py): no address
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
    except ValueError:  # an integer of more than 4300 digits (sys.int_info)
        raise ClusterConfigError(
            f"{path}: a value has more digits than a number may have"
        ) from None
    where = str(path)
    checked = validate(ProfileFile, data, where=where, error=ClusterConfigError)
    backend = checked.backend
    for key, engines in _ONLY.items():
        if key in data and backend not in engines:
            raise ClusterConfigError(
                f"{path}: {key!r} applies to backend {', '.join(engines)} only"
            )
    if checked.address is not None and checked.cluster is not None:
        raise ClusterConfigError(f"{path}: give 'address' or 'cluster', not both")
    if checked.slurm is not None and (checked.address or checked.cluster):
        raise ClusterConfigError(
            f"{path}: 'slurm' asks Slurm for the nodes: give no 'address' or 'cluster' with it"
        )
    if (checked.address or checked.cluster or checked.slurm) and backend not in ("dask", "ray"):
        raise ClusterConfigError(
            f"{path}: backend {backend} runs on this machine only: it takes no address or"
            " cluster (use dask or ray)"
        )
    cluster = _file(path, checked.cluster, "cluster")
    if cluster is not None:
        spec = load_cluster_config(cluster)
        if spec.engine != backend:
            raise ClusterConfigError(
                f"{path}: 'cluster' {cluster} is a {spec.engine} cluster, but the backend is"
                f" {backend}"
            )
    tls = checked.tls.model_dump(exclude_none=True)
    return Profile(
        path=path,
        backend=backend,
        address=checked.address,
        cluster=cluster,
        slurm=_slurm(path, checked.slurm, backend),
        token_file=_file(path, checked.token_file, "token_file"),
        tls={k: _file(path, v, f"tls.{k}") for k, v in tls.items()},
        insecure=checked.insecure,
        defaults=checked.defaults.model_dump(exclude_none=True),
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
            if state is None:
                how = "is not up"
            elif not state.get("up", True):
                how = "did not finish starting (end it with runner cluster down, then start it)"
            else:
                how = "is not running (some processes are gone)"
            raise UsageError(
                f"the cluster of {profile.cluster} {how} (state: {folder}); start it with:"
                f" runner cluster up --config {profile.cluster}"
            )
        params["address"] = state["address"]
        env.update(module.driver_env(state))
    if "RAY_AUTH_TOKEN_PATH" in env:
        env["RAY_AUTH_TOKEN"] = None  # Ray would read a token in the environment first
    return Resolved(profile, params, profile.extra, env)


def _slurm(path: Path, value: str | None, backend: str) -> Path | None:
    """The profile's Slurm jobs file, checked now (its engine must be the backend)."""
    found = _file(path, value, "slurm")
    if found is not None:
        from cluster_runner.clusters.slurm_settings import load_slurm_jobs

        settings = load_slurm_jobs(found)
        if settings.engine != backend:
            raise ClusterConfigError(
                f"{path}: 'slurm' {found} starts {settings.engine}, but the backend is {backend}"
            )
    return found


def _file(path: Path, value: str | None, label: str) -> Path | None:
    """``value``: a file that exists, relative to the profile's folder; None if not given."""
    if value is None:
        return None
    found = (path.parent / Path(value).expanduser()).resolve()
    if not found.is_file():
        raise ClusterConfigError(f"{path}: {label!r}: no such file {found}")
    return found
