"""What the cluster backends (Dask, Ray) share, written once: everything not about an engine.

:class:`ClusterBackend` is a :class:`~cluster_runner.backends.base.GraphBackend` that either
starts an engine on this machine or connects to a running cluster (``--address``), and then,
in :meth:`ClusterBackend.start`, always does the same things in the same order:

1. run the warm-up hooks in the driver (so workers load compiled kernels from the cache);
2. start our own engine (:meth:`~ClusterBackend._start_local`) or connect
   (:meth:`~ClusterBackend._connect`);
3. with ``nodes = k``, choose k of the cluster's members (workers or nodes) in a stable order
   (:meth:`~ClusterBackend._members`), so that a sweep can time 1, 2, ... of them without
   restarting the cluster; the pre-flight re-checks that they are still there;
4. note which resources (a GPU) the members in use offer: a task needing one that no member
   offers is refused at submit (:meth:`~ClusterBackend.refuse_unoffered`), where the engine
   would keep it waiting forever;
5. run the start-up probe (:func:`~cluster_runner.execution.tasks.warm_worker`) on every
   worker, which runs the warm-up hooks there and reports BLAS threads and how long the hooks
   took, which is recorded as warm-up, apart from the start-up (with step 1's).

If any step fails, what was started is closed again before the error goes on. The engine
modules only fill in the engine-specific steps.
"""

from __future__ import annotations

import logging
import os
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from cluster_runner.backends.base import BackendOptions, GraphBackend
from cluster_runner.errors import BackendUnavailableError, UsageError
from cluster_runner.graph import Task


class EnvPatch:
    """What an engine changes in the driver's process until :meth:`restore`: environment
    variables (seen by the engine and its child processes) and quietened loggers.

    Each goes back to what it was (a variable away if it was not set); usable as a context
    manager for a change that lasts one call.
    """

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}
        self._levels: dict[str, int] = {}

    def set(self, name: str, value: str) -> None:
        """Set environment variable ``name`` to ``value``."""
        self._saved.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def quiet(self, logger: str) -> None:
        """Silence ``logger`` (an engine's tracebacks that say no more than the run's error)."""
        self._levels.setdefault(logger, logging.getLogger(logger).level)
        logging.getLogger(logger).setLevel(logging.CRITICAL + 1)

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for logger, level in self._levels.items():
            logging.getLogger(logger).setLevel(level)
        self._saved, self._levels = {}, {}

    def __enter__(self) -> EnvPatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


#: Checks a waiting run makes at each heartbeat, besides asking the head: each raises an
#: :class:`ExecutionError` when the run cannot finish for a reason outside the engine (issue 19:
#: a Slurm job holding the sweep's nodes was cancelled or passed its time limit, see
#: :mod:`cluster_runner.clusters.slurm_alloc`). Whoever holds such resources adds its check for
#: as long as it holds them.
RUN_WATCHES: list[Callable[[], None]] = []


class Heartbeat:
    """Notices, while a run waits, that the cluster's head (a GCS, a scheduler) is lost.

    A driver waiting on a head that died, froze or dropped off the network may hear nothing
    from the engine: Ray's ``ray.get`` waits on until Ray's C++ core ends the process 60 s
    later with a line of its own; a Dask client waits forever on a frozen scheduler. So the
    backends wait in steps of about a second and call :meth:`check` between them, which asks
    ``ping`` (a cheap call to the head, True if it answered); once the head has not answered
    for ``lost_after`` seconds, ``lost()`` is raised (an :class:`ExecutionError`), the run is
    recorded as failed and ends with one line.
    """

    def __init__(
        self, ping: Callable[[], bool], lost: Callable[[], Exception], lost_after: float
    ) -> None:
        self.ping, self.lost, self.lost_after = ping, lost, lost_after
        self._since: float | None = None  # when the head first failed to answer

    def check(self) -> None:
        for watch in list(RUN_WATCHES):
            watch()
        if self.ping():
            self._since = None
            return
        now = time.monotonic()
        self._since = self._since if self._since is not None else now
        if now - self._since >= self.lost_after:
            raise self.lost()


def natural_key(name: Any) -> list[Any]:
    """Names in natural order: ``node-2`` before ``node-10``, ``2`` before ``10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name))]


class ClusterBackend(GraphBackend):
    """A backend on a cluster engine, started here or connected to (see the module doc)."""

    supports_address = True
    worker_processes = True
    #: How messages name the engine and the members ``nodes = k`` chooses among.
    engine: ClassVar[str]
    member: ClassVar[str]

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self.workers = self.spec.workers  # workers of the engine started here
        self.chosen: list[str] | None = None  # the members tasks may use (nodes=k)
        self.offered: frozenset[str] = frozenset()  # resources some member in use offers
        self.worker_blas_threads: int | None = None
        self.gpus = 0  # GPUs the engine started here shares out among its workers
        self.env = EnvPatch()  # variables set for the engine, undone by close()

    # --- the engine's part ----------------------------------------------------------------

    @abstractmethod
    def _start_local(self) -> None:
        """Start an engine of ``self.workers`` workers on this machine, on loopback only."""

    @abstractmethod
    def _connect(self) -> None:
        """Connect to the cluster at ``self.spec.target`` within the connect timeout."""

    def _on_connected(self) -> None:
        """Set up what needs a live engine, before members are chosen (default: nothing)."""

    @abstractmethod
    def _members(self) -> Mapping[str, Any]:
        """The cluster's live members (workers or nodes), by name: name -> sort key."""

    def _on_chosen(self) -> None:
        """Restrict placement to ``self.chosen`` (default: nothing)."""

    @abstractmethod
    def _offered_resources(self) -> Iterable[str]:
        """The resources (``GPU``, ...) that some member in use offers."""

    @abstractmethod
    def _probe_workers(self) -> list[tuple[int, int, float]]:
        """Run :func:`~cluster_runner.execution.tasks.warm_worker` on every worker."""

    # --- written once ---------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.warm_up_driver()
            if self.spec.remote:
                self._connect()
            else:
                self._start_local()
            self._on_connected()
            self._choose()
            self.offered = frozenset(self._offered_resources())
            found = self._probe_workers()
            self.worker_blas_threads = max((blas for _, blas, _ in found), default=None)
            self.warmed_on_workers(seconds for _, _, seconds in found)
        except BaseException:
            self.close()
            raise

    def _choose(self) -> None:
        """With ``nodes = k``, choose the first k members in their order (see :meth:`_members`)."""
        wanted = self.spec.nodes
        if wanted is None:
            return
        members = self._members()
        if len(members) < wanted:
            raise UsageError(
                f"asked for {wanted} {self.engine} {self.member}(s), the cluster has {len(members)}"
            )
        self.chosen = sorted(members, key=members.__getitem__)[:wanted]
        self._on_chosen()

    def chosen_problems(self, present: Iterable[str]) -> list[str]:
        """The pre-flight's words for chosen members that are gone (``[]``: all there)."""
        if self.chosen is None:
            return []
        gone = sorted(set(self.chosen) - set(present))
        return [f"{self.name}: chosen {self.member}(s) gone: {', '.join(gone)}"] if gone else []

    def refuse_unoffered(self, task: Task) -> None:
        """Refuse ``task`` if it needs a resource that no member in use offers.

        The engines would keep such a task waiting, for a worker that offers it, forever.
        """
        for resource in task.resources:
            if resource not in self.offered:
                raise BackendUnavailableError(
                    f"task {task.key} needs {resource}, which no {self.engine} {self.member}"
                    f" in use offers{self._resource_hint(resource)}"
                )

    def _resource_hint(self, resource: str) -> str:
        """How to start members that offer ``resource``, for the refusal (default: none)."""
        return ""
