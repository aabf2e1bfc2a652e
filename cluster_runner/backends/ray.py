"""``ray``: Ray, on an instance started here or on a cluster reached by ``--address``.

With no address, :meth:`RayBackend.start` starts a local Ray instance of ``--workers`` CPUs,
quietly (no dashboard, worker output not forwarded), listening on 127.0.0.1 only, its workers'
BLAS/OpenMP thread variables set to 1 through the job's runtime environment. With
``--address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``) the driver connects to a running
cluster. :meth:`~RayBackend.close` calls ``ray.shutdown()``, which stops the processes of an
instance started here and only disconnects from a cluster connected to.

The graph runs natively: each task is a remote call of :func:`run_wire_task` whose upstream
arguments are ObjectRefs, resolved by Ray on the worker that runs it.

``BackendOptions.nodes = k`` restricts every task to k of the cluster's nodes (the head first,
then by name and id) with a label selector on Ray's built-in ``ray.io/node-id`` label, leaving
Ray free to balance the work among those k.

Token authentication (on by default for a cluster Ray 2.60 starts) stays on. The instance
started here gets a token made for this process (``RAY_AUTH_TOKEN``, never written to disk)
unless one is already set up; when connecting, Ray reads the cluster's token from
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, and the runner turns
token mode on when it finds one there (Ray itself does so only for ``auto``). Connecting is
bounded by ``--connect-timeout`` (see :mod:`cluster_runner.backends.ray_connection`).

Lost workers. A task whose worker process dies is rerun by its owner, the driver, at most
``BackendOptions.retries`` times (Ray's ``max_retries``); one lost more often ends the run with a
:class:`~cluster_runner.errors.WorkerLostError`. Each task reports the attempt it ran in (Ray's
own attempt number) in its trace, and :attr:`RayBackend.last_retried` sums them for the run.

Orphans. The instance started here is fate-shared with the driver by Ray itself, except its
two agent processes, which, when the raylet dies without a SIGTERM, first try for a minute to
report to a GCS that is gone. A reaper process (:mod:`cluster_runner.backends.reaper`) ends
them at once if the driver dies without closing the backend (killed by SIGKILL).

Loopback: on Linux, Ray rewrites ``127.0.0.1`` (a node IP, or an address's host) to the
machine's outward IP, unless its ``ENABLE_RAY_CLUSTER`` flag is off, as it is on macOS (see
``ray._private.services.resolve_ip_for_localhost``). The driver turns the flag off, so that
the instance started here listens on 127.0.0.1 only and ``--address 127.0.0.1:PORT`` reaches
a cluster that listens on loopback only (such as ``scripts/ray_local_cluster.py`` starts).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import ray
import ray._private.ray_constants as ray_constants
from ray.exceptions import (
    GetTimeoutError,
    NodeDiedError,
    ObjectLostError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)

from cluster_runner.backends.addresses import parse_address
from cluster_runner.backends.base import (
    SINGLE_THREAD_ENV,
    Backend,
    BackendInfo,
    BackendOptions,
    TaskOutput,
    TaskTrace,
    call_timed,
    warm_worker,
)
from cluster_runner.backends.ray_connection import connect, reread_auth_config, token_auth
from cluster_runner.backends.reaper import Reaper
from cluster_runner.devices import require_gpu
from cluster_runner.errors import (
    BackendUnavailableError,
    ConnectError,
    ExecutionError,
    RunTimeoutError,
    TaskFailedError,
    UsageError,
    WorkerLostError,
)
from cluster_runner.graph import Task

#: Every node carries its id under this label (Ray >= 2.49), which the ``nodes=k`` selector uses.
NODE_ID_LABEL = "ray.io/node-id"


_identity: tuple[str, str] | None = None  # this worker process's (worker id, node id)


def ray_identity() -> tuple[str, str]:
    """``(worker, node)`` inside a Ray task: the worker's id and its node's id.

    Asked of Ray once per worker process (a worker keeps its id and its node for life).
    """
    global _identity
    if _identity is None:
        context = ray.get_runtime_context()
        _identity = context.get_worker_id(), context.get_node_id()
    return _identity


def bind(func: Any) -> Any:
    """The Ray task body of one task function, with the function built in.

    Ray serialises every argument of every call, so passing the function with each task cost
    about 130 us a task more than a plain remote function; bound here, it is shipped once,
    when Ray exports the remote function. The body takes a *head* and, for a task that has
    upstream outputs, its arguments (see :meth:`RayBackend.submit`), and runs
    :func:`run_wire_task`.
    """

    def task_body(head: list[Any], *args: Any) -> WireOutput:
        key, rest = head
        if args:  # [key, positions of the upstream outputs], then the arguments
            return run_wire_task(key, func, args, rest)
        return run_wire_task(key, func, rest, ())  # [key, arguments]: nothing upstream

    task_body.__name__ = getattr(func, "__name__", "task")
    task_body.__qualname__ = f"run_task[{getattr(func, '__qualname__', task_body.__name__)}]"
    return task_body


#: What a Ray task returns: ``[value, traces]``, the traces of it and of every task upstream of
#: it, each the fields of a :class:`~cluster_runner.backends.base.TaskTrace` as a plain list.
#:
#: Why lists: Ray encodes lists, dicts, strings and numbers with msgpack, natively, and passes
#: anything else (tuples included, kept exact) to cloudpickle, which costs a Pickler and a
#: Python-level hook per object. A TaskOutput of TaskTrace dataclasses cost about 10 us to
#: pickle and 5 us to load; on 10,000 no-op tasks with two workers the runner went from 1.22x
#: to 1.07-1.09x the time of plain ``f.remote``/``ray.get`` with this format and the list head of
#: :meth:`RayBackend.submit`. The driver turns it into a TaskOutput (:func:`from_wire`).
#: Values themselves are returned as they are: a tuple value is pickled, and stays a tuple.
WireOutput = list[Any]


def run_wire_task(key: str, func: Any, args: Sequence[Any], upstream: Sequence[int]) -> WireOutput:
    """:func:`~cluster_runner.backends.base.run_task` for Ray, in the wire format.

    ``upstream`` are the positions of the arguments that are upstream outputs, to unwrap; the
    trace records the attempt Ray says this run of the task is.
    """
    traces: list[list[Any]] = []
    if upstream:
        args = list(args)
        for position in upstream:
            args[position], their_traces = args[position]
            traces.extend(their_traces)
    worker, node = ray_identity()
    value, start, end, phases, device = call_timed(key, func, args)
    traces.append([key, worker, node, start, end, phases, device, _attempt()])
    return [value, traces]


def _attempt() -> int:
    """The attempt Ray says the running task is: 0 the first run, n its n-th rerun."""
    try:
        return ray._private.worker.global_worker.core_worker.get_current_task_attempt_number()
    except AttributeError:  # a Ray without it: no retry count
        return 0


def from_wire(output: WireOutput) -> TaskOutput:
    """A Ray task's :data:`WireOutput` as the driver's TaskOutput."""
    value, traces = output
    return TaskOutput(value, tuple(TaskTrace(*trace) for trace in traces))


class RayBackend(Backend):
    name = "ray"
    native_dependencies = True
    supports_address = True
    retries_lost_tasks = True
    worker_processes = True

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self.target: str | None = None  # what ray.init is given
        if options.address:
            text = options.address.strip()
            if text == "auto":
                self.target = "auto"
            else:
                address = parse_address(text, ("ray", ""), "auto, HOST:PORT or ray://HOST:PORT")
                self.target = str(address)
        self.workers = options.workers or os.cpu_count() or 1
        if options.nodes is not None and options.nodes < 1:
            raise UsageError(f"nodes must be at least 1, not {options.nodes}")
        self._remotes: dict[tuple, Any] = {}  # (function, *resources) -> remote with options
        self._refs: list[ray.ObjectRef] = []  # every ref of the run in progress
        self._selector: dict[str, str] | None = None
        self.chosen: list[str] | None = None  # ids of the nodes tasks may use (nodes=k)
        self.dashboard: str | None = None
        self.worker_blas_threads: int | None = None
        self._nodes_at_start: list[dict[str, Any]] = []  # for resource checks at submit
        self.gpus = 0  # GPUs of the instance started here, for a job with GPU stages
        self._signalled: BaseException | None = None  # what a signal handler raised
        self._saved_env: dict[str, str | None] = {}  # variables start() set, as they were
        self._saved_flag: bool | None = None
        self._auth_read = False  # start() made Ray re-read its auth settings
        self.last_retried = 0  # tasks the last run had to rerun after losing workers
        self._reaper: Reaper | None = None  # ends the instance's processes if the driver dies

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        from cluster_runner.workloads.sieve import base_primes, count_primes_between

        count_primes_between(0, 100, base_primes(10))  # compile once, before the workers load
        if ray.is_initialized():
            raise UsageError(
                "Ray is already initialised in this process; the ray backend needs to start"
                " or connect its own driver"
            )
        # Keep 127.0.0.1 as 127.0.0.1 (see the module docstring). A module flag, read by Ray
        # when it resolves an address, so it works whenever ray was imported.
        self._saved_flag = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        if "RAY_USAGE_STATS_ENABLED" not in os.environ:
            self._setenv("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent out
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            if self.target is None:
                self._start_local()
            else:
                self._connect()
            self._remotes = {}
            self._choose_nodes()
            self._nodes_at_start = self._used_nodes()
            self._warm()
        except BaseException:
            self.close()
            raise
        finally:
            # ray.init installs its own SIGTERM handler (sys.exit(15)); keep the runner's.
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._remember(on_sigterm))

    def _remember(self, handler: Any) -> Any:
        """Wrap a Python signal handler so that :meth:`gather` can re-raise what it raised.

        Ray turns any exception raised by a signal handler while ``ray.get`` waits into
        ``SystemExit(1)``; the runner's SIGTERM handler means exit status 143.
        """
        if not callable(handler):
            return handler

        def remembering(signum: int, frame: Any) -> None:
            try:
                handler(signum, frame)
            except BaseException as exc:
                self._signalled = exc
                raise

        return remembering

    def _start_local(self) -> None:
        self.gpus = require_gpu().count if self.options.gpu else 0
        self._auth_read = token_auth(embedded=True, setenv=self._setenv)
        before = _children()
        context = ray.init(
            address="local",  # never join a cluster found in /tmp/ray or $RAY_ADDRESS
            num_cpus=self.workers,
            num_gpus=self.gpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env={"env_vars": SINGLE_THREAD_ENV},
            namespace="cluster-runner",
            _node_ip_address="127.0.0.1",
        )
        self.dashboard = context.dashboard_url or None
        self._reaper = Reaper.watch(_children() - before)

    def _connect(self) -> None:
        assert self.target is not None
        self._auth_read = token_auth(embedded=False, setenv=self._setenv)
        context = connect(self.target, self.options.address or "", self.options.connect_timeout)
        self.dashboard = getattr(context, "dashboard_url", None) or None

    def _choose_nodes(self) -> None:
        """With ``nodes=k``, pick k alive nodes (head first) and select them by label."""
        if self.options.nodes is None:
            return
        alive = _alive_nodes()
        if len(alive) < self.options.nodes:
            raise UsageError(
                f"asked for {self.options.nodes} Ray node(s), the cluster has {len(alive)} alive"
            )
        ordered = sorted(alive, key=lambda n: (not _is_head(n), n.get("NodeName", ""), n["NodeID"]))
        self.chosen = [n["NodeID"] for n in ordered[: self.options.nodes]]
        self._selector = {NODE_ID_LABEL: f"in({','.join(self.chosen)})"}

    def _warm(self, timeout: float = 120.0) -> None:
        """One probe per CPU, held briefly, so every worker slot starts and loads the kernels."""
        cpus = max(1, int(sum(_cpus(n) for n in self._used_nodes())))
        probe_task = ray.remote(warm_worker).options(num_cpus=1, **self._placement())
        refs = [probe_task.remote(0.5) for _ in range(cpus)]
        try:
            found = ray.get(refs, timeout=timeout)
        except GetTimeoutError:
            raise ConnectError(
                f"Ray did not start {cpus} worker(s) within {timeout:g} s (too few free CPUs"
                " on the cluster?)"
            ) from None
        self.worker_blas_threads = max((blas for _, blas in found), default=None)

    def close(self) -> None:
        """Disconnect (and stop an instance started here); undo start()'s settings."""
        self._refs = []
        self._remotes = {}
        if ray.is_initialized():
            ray.shutdown()
        if self._reaper is not None:
            self._reaper.dismiss()  # the instance is down: nothing left for it to end
            self._reaper = None
        if self._saved_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = self._saved_flag
            self._saved_flag = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        if self._auth_read:
            reread_auth_config()  # Ray caches it: let it see the environment as it is now
            self._auth_read = False

    def _setenv(self, name: str, value: str) -> None:
        """Set an environment variable for Ray (and its child processes) until close()."""
        self._saved_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    # --- running tasks ------------------------------------------------------------------------

    def _placement(self) -> dict[str, Any]:
        return {"label_selector": self._selector} if self._selector else {}

    def submit(self, task: Task, args: Sequence[Any]) -> ray.ObjectRef:
        assert ray.is_initialized(), "start() the backend before submitting"
        remote = self._remotes.get((task.func, *task.resources.items()))
        if remote is None:
            remote = self._remote_for(task)
        # Ray resolves ObjectRefs only among a call's own arguments, and charges the driver
        # about 15 us for each: a task that has upstream outputs passes [key, their positions]
        # and its arguments; one that has none passes [key, arguments], one argument in all
        # (a list: see WireOutput for why).
        upstream = [i for i, arg in enumerate(args) if isinstance(arg, ray.ObjectRef)]
        if upstream:
            ref = remote.remote([task.key, upstream], *args)
        else:
            ref = remote.remote([task.key, list(args)])
        self._refs.append(ref)
        return ref

    def _remote_for(self, task: Task) -> Any:
        """The remote function, with its options set, for tasks of this function and resources.

        Made once and kept: ``.options()`` costs about 40 us a call, as much as the submit.
        """
        resources = dict(task.resources)
        for resource in resources:
            if resource != "CPU" and not any(
                n.get("Resources", {}).get(resource) for n in self._nodes_at_start
            ):
                # Ray would keep such a task pending as "infeasible", forever.
                raise BackendUnavailableError(
                    f"task {task.key} needs {resource}, which no Ray node in use has"
                )
        options: dict[str, Any] = {
            "num_cpus": resources.pop("CPU", 1),
            "max_retries": self.options.retries,  # reruns after the worker died
            "retry_exceptions": False,  # a task that raises fails the run at once
            **self._placement(),
        }
        if "GPU" in resources:
            # On the instance started here every worker may run a GPU task, the workers
            # sharing the GPUs out (as the local backend's do): a fraction of a GPU each.
            share = min(1.0, self.gpus / self.workers) if self.gpus else 1.0
            options["num_gpus"] = resources.pop("GPU") * share
        if resources:
            options["resources"] = resources
        remote = ray.remote(bind(task.func)).options(**options)
        self._remotes[(task.func, *task.resources.items())] = remote
        return remote

    def gather(self, handles: Sequence[ray.ObjectRef], timeout: float | None) -> list[TaskOutput]:
        refs, self._refs = self._refs, []
        failed = True
        self.last_retried = 0
        try:
            outputs = [from_wire(o) for o in ray.get(list(handles), timeout=timeout)]
            failed = False
            attempts = {t.key: t.attempt for o in outputs for t in o.traces}
            self.last_retried = sum(attempts.values())
            return outputs
        except GetTimeoutError:
            running = _not_ready(refs)
            for ref in running:
                ray.cancel(ref, force=True)  # ends the worker process running it
            raise RunTimeoutError(
                f"run timed out after {timeout:g} s: {len(running)} task(s) still running"
                " (raise --timeout or use more chunks)"
            ) from None
        except RayTaskError as exc:
            raise _task_error(exc, self.options.retries) from None
        except (WorkerCrashedError, NodeDiedError, ObjectLostError) as exc:
            raise _worker_lost(exc, self.options.retries) from None
        except TaskCancelledError as exc:
            raise ExecutionError(f"a task was cancelled: {_first_line(exc)}") from None
        except SystemExit:
            if self._signalled is not None:
                raise self._signalled from None
            raise
        finally:
            if failed:
                for ref in _not_ready(refs):
                    ray.cancel(ref)

    # --- what the records and a sweep need to know --------------------------------------------

    def _used_nodes(self) -> list[dict[str, Any]]:
        alive = _alive_nodes()
        if self.chosen is None:
            return alive
        return [n for n in alive if n["NodeID"] in self.chosen]

    def info(self) -> BackendInfo:
        nodes = self._used_nodes()
        return BackendInfo(
            self.name,
            ray.__version__,
            workers=int(sum(_cpus(n) for n in nodes)),
            nodes=len(nodes),
            address=self.options.address,
            dashboard=self.dashboard,
            startup_s=self.startup_s,
            extra={
                "gcs": ray.get_runtime_context().gcs_address,
                "node_ids": [n["NodeID"] for n in nodes],
                "cluster_nodes": len(_alive_nodes()),
                "chosen_nodes": self.chosen,
                "auth_mode": os.environ.get("RAY_AUTH_MODE", "disabled"),
                "worker_blas_threads": self.worker_blas_threads,
                "gpus": int(sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)),
            },
        )

    def preflight(self, expected_workers: int, settle: float = 3.0) -> list[str]:
        """Missing nodes or CPUs, and CPUs busy with other tasks or actors."""
        problems = []
        nodes = self._used_nodes()
        if self.chosen is not None and len(nodes) < len(self.chosen):
            problems.append(f"ray: {len(nodes)} of the {len(self.chosen)} chosen node(s) alive")
        cpus = sum(_cpus(n) for n in nodes)
        if cpus < expected_workers:
            problems.append(f"ray: {cpus:g} CPU(s) up, {expected_workers} expected")
        # Nodes report their free resources about once a second: give our own finished run's
        # CPUs a moment to show up as free before calling them busy.
        deadline = time.monotonic() + settle
        while True:
            total = ray.cluster_resources().get("CPU", 0.0)
            busy = total - ray.available_resources().get("CPU", 0.0)
            if busy <= 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if busy > 0:
            problems.append(f"ray: {busy:g} of {total:g} CPU(s) busy with other tasks or actors")
        return problems


def _task_error(exc: RayTaskError, retries: int) -> Exception:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, TaskFailedError):
        return TaskFailedError(str(cause))
    if isinstance(cause, (WorkerCrashedError, NodeDiedError, ObjectLostError)):
        return _worker_lost(cause, retries)  # a task upstream lost its worker once too often
    name = getattr(exc, "function_name", "a task")
    if cause is not None:
        return TaskFailedError(f"{name} failed: {type(cause).__name__}: {_first_line(cause)}")
    return TaskFailedError(f"{name} failed: {_first_line(exc)}")


def _worker_lost(exc: BaseException, retries: int) -> WorkerLostError:
    return WorkerLostError(
        f"a task was lost with its Ray worker or node more often than --retries {retries}"
        f" allows (out of memory, or a crash in the task?): {_first_line(exc)}"
    )


def _not_ready(refs: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
    if not refs:
        return []
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
    return pending


def _children() -> set[int]:
    """The pids of the driver's descendants."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _is_head(node: dict[str, Any]) -> bool:
    return "node:__internal_head__" in node.get("Resources", {})


def _cpus(node: dict[str, Any]) -> float:
    return float(node.get("Resources", {}).get("CPU", 0.0))


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
