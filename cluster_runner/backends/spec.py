"""From what the user asked for to what a backend starts: :class:`BackendOptions` checked once,
and resolved once into a :class:`BackendSpec`.

:class:`~cluster_runner.backends.base.BackendOptions` is the request, as the commands and the
tests write it (``BackendOptions(workers=2)``); it is checked when made, by the project's one
validation mechanism (:func:`cluster_runner.validation.validate`), so a bad value is one line
and an exit code, never a traceback from deep in an engine. A backend then resolves it here,
in one place for every backend (as joblib resolves ``n_jobs`` once in ``effective_n_jobs``):

- the worker count: ``--workers``, or this machine's CPU count;
- the address: parsed against the schemes the backend accepts, or one of its keywords
  (Ray's ``auto``); refused for a backend that runs on this machine only;
- the TLS and loopback policy, for a backend that speaks TLS (:mod:`.tls`), and the loopback
  policy alone for one that does not (Ray: no packet, and no token, to a host that is not this
  machine's loopback without ``--insecure``);
- the bounds of this machine, for an engine started here (:mod:`cluster_runner.limits`): no
  more workers than it can hold unless ``extra["oversubscribe"]`` (``--oversubscribe``) says
  the user insists, and never more than a sane maximum;
- the GPUs an engine started here shares out (:meth:`BackendSpec.gpus`, asked at start-up, so
  that a backend can be made, to check its options, on a machine without a GPU).

This module imports pydantic; :mod:`.base` imports it only when options are made, so that
``runner --help`` stays free of it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field

from cluster_runner.backends.addresses import Address, parse_address
from cluster_runner.backends.tls import TlsFiles, require_loopback, tls_files
from cluster_runner.errors import UsageError
from cluster_runner.execution.tasks import WarmUp
from cluster_runner.limits import (
    MAX_CONNECT_S,
    MAX_RETRIES,
    THREAD_BYTES,
    WORKER_BYTES,
    check_processes,
)
from cluster_runner.validation import STRICT_CONFIG, Integer, Number, validate

if TYPE_CHECKING:
    from cluster_runner.backends.base import Backend, BackendOptions


class OptionsModel(BaseModel):
    """The checks of :class:`~cluster_runner.backends.base.BackendOptions`, field by field."""

    model_config = STRICT_CONFIG

    workers: Annotated[Integer | None, Field(ge=1)] = None
    address: str | None = None
    connect_timeout: Annotated[Number, Field(gt=0, le=MAX_CONNECT_S, allow_inf_nan=False)] = 30.0
    start_method: str | None = None
    nodes: Annotated[Integer | None, Field(ge=1)] = None
    gpu: bool = False
    retries: Annotated[Integer, Field(ge=0, le=MAX_RETRIES)] = 3
    extra: dict[str, Any] = Field(default_factory=dict)
    warm_up: tuple[Callable[[], Any], ...] = ()


def check_options(options: BackendOptions) -> dict[str, Any]:
    """The fields of ``options`` as checked (``2.0`` workers is 2), or a one-line
    :class:`UsageError` for the first bad one."""
    data = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    model = validate(OptionsModel, data, where="backend options")
    return {name: getattr(model, name) for name in ("workers", "nodes", "retries", "warm_up")}


@dataclass(frozen=True)
class BackendSpec:
    """What a backend starts or connects to, resolved from the options (see the module doc)."""

    workers: int  # workers to start: --workers, or the CPU count (an engine started here)
    nodes: int | None  # use only k nodes/workers of a cluster; None: all of them
    gpu: bool  # the job has GPU stages
    retries: int  # times a task lost with its worker may be rerun
    connect_timeout: float  # seconds an address has to answer
    address: Address | None  # --address, parsed (None: none, or a keyword such as "auto")
    target: str | None  # what the engine connects to; None: start our own engine
    tls: TlsFiles | None  # mutual TLS files, checked against the address
    warm_up: tuple[WarmUp, ...]  # run once in the driver, then on every worker at start-up

    @property
    def remote(self) -> bool:
        """True when connecting to an existing cluster, False when starting our own."""
        return self.target is not None

    def gpus(self) -> int:
        """GPUs an engine started here shares out among its workers: 0 unless the job has GPU
        stages, else every GPU this process sees (a one-line error if there is none)."""
        from cluster_runner.devices import require_gpu

        return require_gpu().count if self.gpu else 0


def resolve(options: BackendOptions, backend: type[Backend]) -> BackendSpec:
    """The :class:`BackendSpec` of ``options`` for ``backend`` (its class: flags, schemes)."""
    address: Address | None = None
    target: str | None = None
    if options.address:
        if not backend.supports_address:
            raise UsageError(
                f"the {backend.name} backend runs on this machine only and takes no"
                " --address (use --backend dask or --backend ray)"
            )
        text = options.address.strip()
        if text in backend.address_keywords:
            target = text
        else:
            address = parse_address(text, backend.address_schemes, backend.address_form)
            target = str(address)
    if backend.supports_tls:
        tls = tls_files(options.extra, address)
    else:
        tls = None
        if backend.supports_address:
            require_loopback(
                getattr(backend, "engine", backend.name), _routed(address, target), options.extra
            )
    if target is None and options.workers is not None:
        check_processes(
            options.workers,
            "workers",
            bytes_each=WORKER_BYTES if backend.worker_processes else THREAD_BYTES,
            oversubscribe=bool(options.extra.get("oversubscribe")),
        )
    return BackendSpec(
        workers=options.workers or os.cpu_count() or 1,
        nodes=options.nodes,
        gpu=options.gpu,
        retries=options.retries,
        connect_timeout=float(options.connect_timeout),
        address=address,
        target=target,
        tls=tls,
        warm_up=tuple(options.warm_up),
    )


def _routed(address: Address | None, target: str | None) -> Address | None:
    """Where a connection to ``target`` goes: ``address``, or for Ray's ``auto`` the cluster
    ``$RAY_ADDRESS`` names (none: the cluster recorded on this machine)."""
    if address is not None or target != "auto":
        return address
    named = os.environ.get("RAY_ADDRESS", "").strip()
    if not named or named == "auto":
        return None
    try:
        return parse_address(named, ("ray", "", "http", "https"), "HOST:PORT")
    except UsageError:
        return None  # Ray itself will say what is wrong with it
