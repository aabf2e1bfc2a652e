"""Options shared by several commands, and the parameter types that check them.

Each option is written once here and applied with a decorator, so ``submit`` and ``scale`` take
``--backend``, ``--workers`` and the rest with the same names, checks and help text.

``--cluster PROFILE`` (:func:`backend_options`) fills in the other options from a runner profile
(:mod:`cluster_runner.clusters.profile`): each option the user did not give, on the command line
or in a ``RUNNER_*`` variable, takes the profile's value instead of its default (click's
``ParameterSource`` tells the two apart). The command is then called with ``extra``, the
profile's entries for ``BackendOptions.extra``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cluster_runner.backends import REGISTRY as BACKENDS
from cluster_runner.errors import JobSpecError, UsageError
from cluster_runner.runs.faults import FAULTS

F = Callable[..., Any]

#: Where ``--job NAME`` looks for ``NAME.toml`` (besides a literal path).
JOBS_DIR_ENV = "RUNNER_JOBS_DIR"


class IntList(click.ParamType):
    """A comma-separated list of positive integers: ``1,2,4``."""

    name = "N[,N...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, list):
            return value
        items = str(value).split(",")
        numbers = []
        for item in items:
            item = item.strip()
            if not item.isdigit() or int(item) < 1:
                self.fail(f"{value!r} is not a list of positive integers such as 1,2,4", param, ctx)
            numbers.append(int(item))
        if len(set(numbers)) != len(numbers):
            self.fail(f"{value!r} lists a number twice", param, ctx)
        return numbers


class NameList(click.ParamType):
    """A comma-separated list of names from a fixed set: ``local,dask,ray``."""

    name = "NAME[,NAME...]"

    def __init__(self, choices: list[str]) -> None:
        self.choices = choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, list):
            return value
        names = [item.strip() for item in str(value).split(",")]
        for name in names:
            if name not in self.choices:
                self.fail(
                    f"unknown backend {name!r} (choose from {', '.join(self.choices)})", param, ctx
                )
        if len(set(names)) != len(names):
            self.fail(f"{value!r} lists a backend twice", param, ctx)
        return names


def jobs_dirs() -> list[Path]:
    """Folders searched for ``--job NAME``: $RUNNER_JOBS_DIR, then ./jobs."""
    dirs = [Path(os.environ[JOBS_DIR_ENV])] if os.environ.get(JOBS_DIR_ENV) else []
    return [*dirs, Path("jobs")]


def resolve_job(value: str) -> Path:
    """A job file path, or the name of a job in :func:`jobs_dirs` (``primes``)."""
    path = Path(value)
    if path.exists() or path.suffix == ".toml" or os.sep in value:
        if not path.is_file():
            raise JobSpecError(f"job file {value} does not exist (see 'runner jobs')")
        return path
    for folder in jobs_dirs():
        candidate = folder / f"{value}.toml"
        if candidate.is_file():
            return candidate
    raise JobSpecError(
        f"no job named {value!r} in {', '.join(map(str, jobs_dirs()))}"
        " (see 'runner jobs', or give a path to a .toml file)"
    )


def job_options(func: F) -> F:
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="[STAGE.]KEY=VALUE",
        help="Override a job parameter, e.g. --set n=1000000000"
        " or --set dot.chunks=64 (repeatable).",
    )(func)
    return click.option(
        "--job",
        "job_path",
        default="jobs/full.toml",
        show_default=True,
        metavar="FILE|NAME",
        help="Job spec: a TOML file, or a name in jobs/.",
    )(func)


def backend_options(func: F, *, multiple: bool = False) -> F:
    func = click.option(
        "--cluster",
        default=None,
        metavar="PROFILE",
        help="A runner profile: a .toml file, or a name in cluster_configs/ (local-dask). It"
        " sets the backend, the address and defaults; flags given here win.",
    )(_with_profile(func))
    func = click.option(
        "--start-method",
        type=click.Choice(["spawn", "forkserver", "fork"]),
        default=None,
        help="local backend: multiprocessing start method"
        " [default: forkserver on Linux, spawn elsewhere]",
    )(func)
    func = click.option(
        "--connect-timeout",
        type=click.FloatRange(min=0.1),
        default=30.0,
        show_default=True,
        help="Seconds an --address has to answer.",
    )(func)
    func = click.option(
        "--address",
        default=None,
        metavar="ADDRESS",
        help="Connect to an existing cluster: tcp://HOST:PORT or tls://HOST:PORT (dask),"
        " auto | HOST:PORT | ray://HOST:PORT (ray).",
    )(func)
    if multiple:
        return click.option(
            "--backend",
            "backends",
            type=NameList(list(BACKENDS)),
            default="local",
            show_default=True,
            help=f"Backends to compare: {', '.join(BACKENDS)}.",
        )(func)
    return click.option(
        "--backend",
        type=click.Choice(list(BACKENDS)),
        default="local",
        show_default=True,
        help="Engine that runs the graph.",
    )(func)


def run_options(func: F) -> F:
    func = click.option(
        "--inject-fault",
        "fault",
        type=click.Choice(FAULTS),
        default=None,
        help="Test the recovery: kill one worker process partway through each run's first"
        " stage (local, dask, ray); the run must still verify.",
    )(func)
    func = click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=3,
        show_default=True,
        help="Times a task lost with its worker may be rerun (local pool, Dask, Ray).",
    )(func)
    func = click.option(
        "--timeout",
        type=click.FloatRange(min=0.001),
        default=None,
        help="Seconds a run may take before it is stopped as failed.",
    )(func)
    func = click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False),
        default="results",
        show_default=True,
        help="Folder for the JSON Lines results file.",
    )(func)
    func = click.option(
        "--warmup",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Untimed runs before the timed ones (recorded, marked warmup).",
    )(func)
    return click.option(
        "--repeat", type=click.IntRange(min=1), default=1, show_default=True, help="Timed runs."
    )(func)


_UNSET = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)


def _with_profile(func: F) -> F:
    """Wrap a command so that ``--cluster`` fills in the options the user left unset."""

    @functools.wraps(func)
    def wrapper(*args: Any, cluster: str | None = None, **kwargs: Any) -> Any:
        if cluster is None:
            return func(*args, extra={}, **kwargs)
        from cluster_runner.clusters.config import find_file
        from cluster_runner.clusters.processes import environment
        from cluster_runner.clusters.profile import load_profile, resolve

        ctx = click.get_current_context()
        resolved = resolve(load_profile(find_file(cluster, ".toml", "runner profile")))
        params = {p.name: p for p in ctx.command.params}
        for name, value in resolved.params.items():
            if name == "backend" and "backends" in params:
                name, value = "backends", [value]
            if name not in params:
                continue
            if isinstance(params[name].type, IntList) and not isinstance(value, list):
                value = [value]
            if ctx.get_parameter_source(name) in _UNSET:
                kwargs[name] = value
            elif (
                name in ("backend", "backends")
                and kwargs[name] != value
                and "address" in resolved.params
                and ctx.get_parameter_source("address") in _UNSET
            ):
                given = ",".join(kwargs[name]) if name == "backends" else kwargs[name]
                raise UsageError(
                    f"--backend {given} does not match the profile {resolved.profile.path},"
                    f" whose cluster runs {resolved.profile.backend}"
                )
        with environment(resolved.env):
            return func(*args, extra=resolved.extra, **kwargs)

    return wrapper  # type: ignore[return-value]


#: The ``BackendOptions.extra`` keys of the security options (cluster profiles' ``[tls]`` use them).
SECURITY_KEYS = ("tls_ca_file", "tls_cert", "tls_key", "insecure")


def security_options(func: F) -> F:
    """``--tls-ca-file``, ``--tls-cert``, ``--tls-key`` and ``--insecure``, passed to the
    command as one ``security`` mapping of the options given (for ``BackendOptions.extra``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {key: kwargs.pop(key) for key in SECURITY_KEYS}
        security = {key: value for key, value in given.items() if value}
        return func(*args, security=security, **kwargs)

    tls = click.Path(dir_okay=False)  # checked by the backend, with the address, in one line
    for flag, key, text in (
        ("--insecure", "insecure", None),
        ("--tls-key", "tls_key", "dask: this side's private key (PEM) for mutual TLS."),
        ("--tls-cert", "tls_cert", "dask: this side's certificate (PEM), signed by the CA."),
        ("--tls-ca-file", "tls_ca_file", "dask: the CA certificate (PEM) the cluster trusts."),
    ):
        if text is None:
            wrapper = click.option(
                flag,
                key,
                is_flag=True,
                help="dask: allow plain tcp:// to a scheduler that is not on this machine"
                " (anyone who can reach it can run code on its workers).",
            )(wrapper)
        else:
            wrapper = click.option(flag, key, type=tls, default=None, metavar="FILE", help=text)(
                wrapper
            )
    return wrapper  # type: ignore[return-value]
