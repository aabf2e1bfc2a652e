"""Options shared by several commands, the parameter types that check them, and the one object
that carries them.

Each option is written once here and applied with a decorator, so ``submit`` and ``scale`` take
``--backend``, ``--workers`` and the rest with the same names, checks and help text.
:func:`pass_run_options` gathers what the two commands share into one frozen :class:`RunOptions`
(the job, the backend and how to reach it, the runs), which also makes their
:class:`~cluster_runner.backends.BackendOptions`: the commands take only their own options.

``--cluster PROFILE`` is an eager option: its callback loads the runner profile
(:mod:`cluster_runner.clusters.profile`) before any other option is read, and puts the profile's
values in the context's ``default_map``. Click itself then applies the usual precedence:
command line, then ``RUNNER_*`` variable, then the profile, then the option's default. The
profile's ``BackendOptions.extra`` entries and environment variables wait in ``ctx.meta`` for
:func:`pass_run_options`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from cluster_runner.backends import REGISTRY as BACKENDS
from cluster_runner.commands.types import Bounded, Finite, SafePath
from cluster_runner.errors import ClusterConfigError, UsageError
from cluster_runner.limits import MAX_CONNECT_S, MAX_RETRIES, PER_CPU, WORKER_BYTES
from cluster_runner.paths import job_names, resolve_job, search_order_help
from cluster_runner.paths import jobs_dirs as jobs_dirs  # commands.workloads imports it from here
from cluster_runner.runs.faults import FAULTS

if TYPE_CHECKING:
    from pathlib import Path

    from cluster_runner.backends import BackendOptions
    from cluster_runner.clusters.profile import Resolved
    from cluster_runner.jobspec import JobSpec

F = Callable[..., Any]

#: Longest ``--timeout`` of a run, in seconds (30 days).
MAX_RUN_S = 30 * 86400.0
#: Most runs (``--repeat``, ``--warmup``) one command makes of a point.
MAX_RUNS = 100_000


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


def _complete_job(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """``--job`` completes job names, and ``.toml`` files and folders for a path."""
    from click.shell_completion import CompletionItem

    items = [CompletionItem(name) for name in job_names() if name.startswith(incomplete)]
    if os.sep in incomplete or incomplete.startswith(".") or not items:
        items.append(CompletionItem(incomplete, type="file"))
    return items


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
        default="full",
        show_default=True,
        metavar="FILE|NAME",
        shell_complete=_complete_job,
        help="Job spec: a TOML file, or a job's name, looked up in"
        f" {search_order_help('jobs')} (see 'runner jobs').",
    )(func)


def backend_options(func: F, *, multiple: bool = False) -> F:
    func = click.option(
        "--cluster",
        default=None,
        metavar="PROFILE",
        is_eager=True,  # read first, so that its values are defaults for every other option
        expose_value=False,
        callback=_apply_profile,
        help="A runner profile: a .toml file, or a name (local-dask) looked up in"
        f" {search_order_help('cluster_configs')}. It sets the backend, the address and"
        " defaults; flags given here win.",
    )(func)
    func = click.option(
        "--start-method",
        type=click.Choice(["spawn", "forkserver", "fork"]),
        default=None,
        help="local backend: multiprocessing start method"
        " [default: forkserver on Linux, spawn elsewhere]",
    )(func)
    func = click.option(
        "--oversubscribe",
        is_flag=True,
        help="Start more workers than this machine holds (more than"
        f" {PER_CPU} per CPU, or than its free memory at {WORKER_BYTES // 10**6} MB each).",
    )(func)
    func = click.option(
        "--connect-timeout",
        type=Finite(0.1, MAX_CONNECT_S),
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
        "--transfer",
        type=click.Choice(["share", "copy"]),
        default="share",
        show_default=True,
        help="How data the driver holds reaches the workers: share (once: shared memory,"
        " Ray's object store, a Dask scatter) or copy (with every task), to measure the"
        " difference.",
    )(func)
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
        type=Bounded(0, MAX_RETRIES),
        default=3,
        show_default=True,
        help="Times a task lost with its worker may be rerun (local pool, Dask, Ray).",
    )(func)
    func = click.option(
        "--timeout",
        type=Finite(0.001, MAX_RUN_S),
        default=None,
        help="Seconds a run may take before it is stopped as failed.",
    )(func)
    func = click.option(
        "--out",
        "out_dir",
        type=SafePath(file_okay=False),
        default="results",
        show_default=True,
        help="Folder for the JSON Lines results file.",
    )(func)
    func = click.option(
        "--warmup",
        type=Bounded(0, MAX_RUNS),
        default=0,
        show_default=True,
        help="Untimed runs before the timed ones (recorded, marked warmup).",
    )(func)
    return click.option(
        "--repeat", type=Bounded(1, MAX_RUNS), default=1, show_default=True, help="Timed runs."
    )(func)


#: Where ``--cluster``'s callback leaves the resolved profile for :func:`pass_run_options`.
_PROFILE = "cluster_runner.profile"
_UNSET = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)


def _apply_profile(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Load the profile ``--cluster`` names and make its values the context's defaults.

    Each value is checked by the option it fills (its type and range, as click would when it
    applies it), but worded with the profile's file and key.
    """
    if value is None or ctx.resilient_parsing:
        return
    from cluster_runner.clusters.config import find_file
    from cluster_runner.clusters.profile import load_profile, resolve

    resolved = resolve(load_profile(find_file(value, ".toml", "runner profile")))
    options = {p.name: p for p in ctx.command.params}
    defaults: dict[str, Any] = {}
    for name, given in resolved.params.items():
        if name == "backend" and "backends" in options:
            name, given = "backends", [given]
        if name not in options:
            continue
        try:
            options[name].type_cast_value(ctx, given)
        except click.BadParameter as exc:
            key = f"defaults.{name}" if name in resolved.profile.defaults else name
            raise ClusterConfigError(f"{resolved.profile.path}: {key!r}: {exc.message}") from None
        defaults[name] = given
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[_PROFILE] = resolved


@dataclass(frozen=True)
class RunOptions:
    """What ``submit`` and ``scale`` share, gathered once from their options and a profile."""

    job_path: str  # --job: a file, or a name in jobs/
    overrides: tuple[str, ...]  # --set [STAGE.]KEY=VALUE
    backends: tuple[str, ...]  # --backend: one for submit, one or more for scale
    address: str | None  # --address (or the profile's): an existing cluster
    connect_timeout: float  # --connect-timeout
    start_method: str | None  # --start-method, local backend only
    repeat: int  # --repeat: timed runs
    warmup: int  # --warmup: untimed runs first
    out_dir: str  # --out: folder of the results file
    timeout: float | None  # --timeout: seconds a run may take
    retries: int  # --retries: reruns of a task lost with its worker
    fault: str | None  # --inject-fault
    transfer: str = "share"  # --transfer: driver inputs shared once or copied with each task
    extra: Mapping[str, Any] = field(default_factory=dict)  # profile TLS files; --tls-* win
    env: Mapping[str, str | None] = field(default_factory=dict)  # the profile's variables
    slurm: Path | None = None  # the profile's Slurm jobs file: `runner scale` asks for nodes

    @property
    def backend(self) -> str:
        """The one backend of a command that takes one (``submit``)."""
        return self.backends[0]

    @property
    def connection(self) -> dict[str, Any]:
        """The ``BackendOptions`` fields every engine of the command shares."""
        return {
            "address": self.address,
            "connect_timeout": self.connect_timeout,
            "start_method": self.start_method,
            "retries": self.retries,
            "extra": dict(self.extra),
        }

    def load_job(self) -> JobSpec:
        """The job ``--job`` names, with the ``--set`` overrides applied and checked."""
        from cluster_runner.jobspec import load_job
        from cluster_runner.limits import check_result

        job = load_job(resolve_job(self.job_path), self.overrides)
        check_result(job)  # a result the driver cannot hold is refused before anything starts
        return job

    def backend_options(
        self,
        *,
        workers: int | None,
        gpu: bool,
        warm_up: Sequence[Callable[[], Any]] = (),
        nodes: int | None = None,
    ) -> BackendOptions:
        """The options of one engine: these shared ones, and its own size."""
        from cluster_runner.backends import BackendOptions

        return BackendOptions(
            workers=workers, nodes=nodes, gpu=gpu, warm_up=tuple(warm_up), **self.connection
        )


#: Parameters of a command that :func:`pass_run_options` gathers into :class:`RunOptions`.
_RUN_FIELDS = (
    "job_path",
    "overrides",
    "address",
    "connect_timeout",
    "start_method",
    "repeat",
    "warmup",
    "out_dir",
    "timeout",
    "retries",
    "fault",
    "transfer",
)


def pass_run_options(func: F) -> F:
    """Call the command with ``run``, one :class:`RunOptions`, instead of the options it holds.

    Also where a ``--backend`` flag that contradicts the profile's cluster is refused, and
    where the profile's environment variables are set while the command runs.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        resolved: Resolved | None = ctx.meta.get(_PROFILE)
        name = "backends" if "backends" in kwargs else "backend"
        backends = kwargs.pop(name)
        backends = tuple(backends) if name == "backends" else (backends,)
        security = {key: kwargs.pop(key) for key in (*SECURITY_KEYS, "oversubscribe")}
        if resolved is not None:
            _check_backend(ctx, resolved, name, backends)
        run = RunOptions(
            **{key: kwargs.pop(key) for key in _RUN_FIELDS},
            backends=backends,
            extra={
                **(resolved.extra if resolved else {}),
                **{key: value for key, value in security.items() if value},
            },
            env=resolved.env if resolved else {},
            slurm=resolved.profile.slurm if resolved else None,
        )
        if not run.env:
            return func(*args, run=run, **kwargs)
        from cluster_runner.clusters.processes import modified_environ

        with modified_environ(run.env):
            return func(*args, run=run, **kwargs)

    return wrapper  # type: ignore[return-value]


def _check_backend(
    ctx: click.Context, resolved: Resolved, name: str, backends: tuple[str, ...]
) -> None:
    """Refuse ``--backend X`` with a profile whose address is a cluster of another engine."""
    given = ctx.get_parameter_source(name) not in _UNSET
    mine = ctx.get_parameter_source("address") in _UNSET and "address" in resolved.params
    if given and mine and backends != (resolved.profile.backend,):
        raise UsageError(
            f"--backend {','.join(backends)} does not match the profile"
            f" {resolved.profile.path}, whose cluster runs {resolved.profile.backend}"
        )


#: The ``BackendOptions.extra`` keys of the security options (cluster profiles' ``[tls]`` use them).
SECURITY_KEYS = ("tls_ca_file", "tls_cert", "tls_key", "insecure")


def security_options(func: F) -> F:
    """``--tls-ca-file``, ``--tls-cert``, ``--tls-key`` and ``--insecure``: the options given
    reach ``BackendOptions.extra`` through :attr:`RunOptions.extra`."""
    wrapper = func
    tls = SafePath(dir_okay=False)  # checked by the backend, with the address, in one line
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
                help="dask, ray: allow an unencrypted connection (plain tcp://, a Ray GCS) to"
                " a cluster that is not on this machine (anyone who can reach it can run code"
                " on its workers; a Ray token crosses the network in clear).",
            )(wrapper)
        else:
            wrapper = click.option(flag, key, type=tls, default=None, metavar="FILE", help=text)(
                wrapper
            )
    return wrapper  # type: ignore[return-value]
