"""``dask``: Dask distributed, on a cluster started here or on one reached by ``--address``.

With no address, :meth:`DaskBackend.start` starts an embedded ``LocalCluster`` of ``--workers``
worker processes with one thread each. Its scheduler, workers and dashboard listen on 127.0.0.1
only, and each worker starts with the BLAS/OpenMP thread variables set to 1, so that N workers
use N cores. With ``--address tcp://HOST:PORT`` (or ``tls://``) a ``Client`` connects to a
running scheduler and nothing is started; :meth:`~DaskBackend.close` then closes the client and
leaves the cluster as it found it.

Security. Whoever can open a connection to a Dask scheduler can run any code on its workers.
``BackendOptions.extra`` may hold ``tls_ca_file``, ``tls_cert`` and ``tls_key`` (PEM files):
the driver then speaks mutual TLS (``tls://``), to a connected scheduler or within the embedded
cluster. Plain ``tcp://`` to a scheduler that is not on a loopback address is refused before
any packet is sent, unless ``extra["insecure"]`` says the user knows (``--insecure``).

Lost workers. A task whose worker dies while running it is rerun by the scheduler, at most
``distributed.scheduler.allowed-failures`` times; the embedded cluster's scheduler gets
``BackendOptions.retries`` for that (a connected one keeps its own setting), and one task lost
more often ends the run with a :class:`~cluster_runner.errors.WorkerLostError`. The tasks rerun
are counted from the scheduler's ``remove-worker`` events (topic ``all``): those the dead worker
was running and those whose results it held; :attr:`DaskBackend.last_retried` is the count of
the last run. The embedded cluster's nannies restart a dead worker, and the backend waits for
it, so the next run starts with every worker again.

The graph runs natively: each task is a Dask task (``dask.task_spec.Task``) whose upstream
arguments are references to other tasks' keys, so intermediate values move from worker to
worker and only the sinks reach the driver. The whole graph goes to the scheduler in one
message (``client.get(graph, keys, sync=False)``, as ``client.map`` sends its tasks), not one
``client.submit`` a task. Dask would hand a new graph with a key that the scheduler still
holds the *old* result, so every key carries a token that changes after each run
(``primes/chunk-000003@5f2a9c01``): repeats are computed again, never served from memory.

``BackendOptions.nodes = k`` restricts every task to k of the cluster's workers (the first k by
name), through a per-key ``workers`` annotation, strict (no other workers): a sweep can time 1,
2, ... workers of one running cluster without restarting it. Restricted tasks are placed where
their inputs already are (``distributed.scheduler.decide_worker`` picks among the workers
holding a dependency), and are never treated as root-ish, so the fan-out after one shared input
(the base primes) would all land on the worker holding that input, stealing moving only a few:
measured 60 of 66 chunk tasks on one of two workers. So tasks with inputs are dealt to the
chosen workers round-robin, one worker each; tasks without inputs keep the whole set, and the
scheduler balances them by occupancy.

A run that passes its timeout has its futures cancelled. A running Python function cannot be
stopped, so on the embedded cluster the workers still running one are restarted by their
nannies; a connected cluster's workers are never restarted: the task runs on, and
:meth:`~DaskBackend.preflight` reports the busy worker until it is done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Sequence
from typing import Any

import dask
import distributed
from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef
from distributed import Client, Future, LocalCluster, as_completed, get_worker
from distributed.client import FutureCancelledError
from distributed.comm import get_address_host
from distributed.scheduler import KilledWorker
from distributed.security import Security

from cluster_runner.backends.addresses import Address, is_loopback, parse_address, probe
from cluster_runner.backends.base import (
    SINGLE_THREAD_ENV,
    Backend,
    BackendInfo,
    BackendOptions,
    TaskOutput,
    run_task,
    warm_worker,
)
from cluster_runner.devices import WORKER_GPU_ENV, require_gpu
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

#: Loggers of the driver process whose tracebacks say no more than the run's one-line error.
_QUIET_LOGGERS = ("distributed.client", "distributed.scheduler")


class _SyncCancelRace(logging.Filter):
    """Drops one known, harmless error that the client's event loop logs after a Ctrl-C.

    ``distributed.utils.sync`` (2026.8) declares its ``future`` without a value; a Ctrl-C
    that lands before the coroutine has assigned it makes the ``cancel`` callback raise
    ``NameError``, which tornado logs with its traceback on ``tornado.application``. The run's
    own one-line "interrupted" message says all there is to say. Every other record passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, NameError) and "sync.<locals>.cancel" in record.getMessage())


_SYNC_CANCEL_RACE = _SyncCancelRace()

#: How many GPUs the embedded cluster's workers share out (read by :func:`dask_setup`).
GPUS_ENV = "CLUSTER_RUNNER_GPUS"


def dask_identity() -> tuple[str, str]:
    """``(worker, node)`` inside a Dask worker: its address, and the host in that address."""
    address = get_worker().address
    return address, get_address_host(address)


def dask_setup(worker: Any) -> None:
    """Preload hook run in each embedded worker process.

    Leaves Ctrl-C to the driver: a terminal's Ctrl-C reaches every process of the foreground
    group; the driver then closes the cluster in order, and a worker interrupted on its own
    would only print a traceback. For a job with GPU stages, gives worker ``i`` the GPU
    ``i % gpus``, so the workers share out every GPU (as the local backend's workers do).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gpus = int(os.environ.get(GPUS_ENV, "0"))
    if gpus:
        digits = "".join(ch for ch in str(worker.name) if ch.isdigit()) or "0"
        os.environ[WORKER_GPU_ENV] = str(int(digits) % gpus)


class DaskBackend(Backend):
    name = "dask"
    native_dependencies = True
    supports_address = True
    retries_lost_tasks = True
    worker_processes = True

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self.address = (
            parse_address(options.address, ("tcp", "tls", ""), "tcp://HOST:PORT or tls://HOST:PORT")
            if options.address
            else None
        )
        self.security = security_from(options.extra, self.address)
        self.workers = options.workers or os.cpu_count() or 1
        if options.nodes is not None and options.nodes < 1:
            raise UsageError(f"nodes must be at least 1, not {options.nodes}")
        self.cluster: LocalCluster | None = None
        self.client: Client | None = None
        self.chosen: list[str] | None = None  # names of the workers tasks may use (nodes=k)
        self._allowed: list[str] | None = None  # their current addresses
        self._dealt = 0  # tasks with inputs dealt round-robin to the chosen workers so far
        self._token = secrets.token_hex(4)
        self._futures: list[Future] = []  # every future of the run in progress
        self._graph: dict[str, DaskTask] = {}  # the run's tasks, until gather() sends them
        self._workers: dict[str, list[str]] = {}  # their worker restrictions (nodes=k)
        self._resources: dict[str, dict[str, float]] = {}  # their resources (GPU)
        self.worker_blas_threads: int | None = None
        self._offered: set[str] = set()  # resources (GPU, ...) that some worker in use offers
        self._log_levels: dict[str, int] = {}  # of the loggers start() quietened
        self.gpus = 0  # GPUs the embedded cluster's workers share out
        self.last_retried = 0  # tasks the last run had to rerun after losing workers
        self._lost: list[tuple[str, ...]] = []  # keys in the scheduler's remove-worker events
        self._subscribed = False  # to the scheduler's events (topic "all")

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        # The client logs every failed reconnect, with a traceback, when a scheduler goes
        # away; the run's own error says so in one line.
        # The embedded scheduler logs, with the same lack of need, each task it gives up on
        # after losing workers, and (as CRITICAL) each message it could not send to a client
        # that was closing on Ctrl-C.
        for name in _QUIET_LOGGERS:
            self._log_levels[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        # Installed once, never removed: the callback may run after close() (addFilter is
        # idempotent for the same filter).
        logging.getLogger("tornado.application").addFilter(_SYNC_CANCEL_RACE)
        # Compile (or load from numba's cache) the kernels once here, so that workers load the
        # cached machine code instead of all compiling it at the same time.
        from cluster_runner.workloads.sieve import base_primes, count_primes_between

        count_primes_between(0, 100, base_primes(10))
        try:
            if self.address is None:
                self._start_local()
            else:
                self._connect()
            self.client.subscribe_topic("all", self._on_event)
            self._subscribed = True
            self._choose_workers()
            self._offered = {
                name for w in self._used(self._worker_table()).values() for name in w["resources"]
            }
            warm = self.client.run(warm_worker)
            self.worker_blas_threads = max((b for _, b in warm.values()), default=None)
        except BaseException:
            self.close()
            raise

    def _start_local(self) -> None:
        self.gpus = require_gpu().count if self.options.gpu else 0
        tls = {"protocol": "tls://", "security": self.security} if self.security else {}
        self.cluster = LocalCluster(
            n_workers=self.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
            env={**SINGLE_THREAD_ENV, GPUS_ENV: str(self.gpus)},
            resources={"GPU": 1} if self.gpus else None,  # each worker may run a GPU task
            preload=[__name__],  # runs dask_setup in each worker
            **tls,
        )
        # The scheduler runs in this process: its budget for tasks lost with their workers is
        # an attribute it reads each time a worker dies.
        self.cluster.scheduler.allowed_failures = self.options.retries
        self.client = Client(self.cluster, set_as_default=False, security=self.security)
        self.client.wait_for_workers(self.workers, timeout=120)

    def _connect(self) -> None:
        assert self.address is not None
        timeout = self.options.connect_timeout
        began = time.monotonic()
        probe(self.address, timeout, "Dask")
        target = f"{'tls' if self.security else 'tcp'}://{self.address.hostport}"
        try:
            self.client = Client(
                target, timeout=max(1.0, timeout - (time.monotonic() - began)),
                set_as_default=False, security=self.security,
            )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            tls_hint = (
                " If it requires TLS, connect to tls://HOST:PORT with --tls-ca-file, --tls-cert"
                " and --tls-key."
                if self.security is None
                else " Do its certificates come from the CA given by --tls-ca-file?"
            )
            raise ConnectError(
                f"no Dask scheduler answered at {target} within {timeout:g} s"
                f" ({_first_line(exc)}); is it a Dask scheduler's address?{tls_hint}"
            ) from None
        wanted = self.options.nodes or 1
        try:
            self.client.wait_for_workers(wanted, timeout=max(1.0, timeout))
        except TimeoutError:
            have = len(self._worker_table())
            raise ConnectError(
                f"the Dask scheduler at {target} has {have} worker(s), {wanted} needed;"
                " start workers with: dask worker " + target
            ) from None

    def _choose_workers(self) -> None:
        """With ``nodes=k``, pick the first k workers by name and keep their addresses."""
        if self.options.nodes is None:
            return
        table = self._worker_table()
        if len(table) < self.options.nodes:
            raise UsageError(
                f"asked for {self.options.nodes} Dask worker(s), the cluster has {len(table)}"
            )
        by_name = sorted(table.items(), key=lambda item: _sort_key(item[1]["name"]))
        self.chosen = [str(w["name"]) for _, w in by_name[: self.options.nodes]]
        self._resolve_chosen()

    def _resolve_chosen(self) -> None:
        if self.chosen is None:
            return
        names = {str(w["name"]): address for address, w in self._worker_table().items()}
        self._allowed = [names[n] for n in self.chosen if n in names]

    def close(self) -> None:
        client, self.client = self.client, None
        cluster, self.cluster = self.cluster, None
        self._futures = []
        self._discard_graph()
        if client is not None:
            if self._subscribed and client.status == "running":
                # Else the scheduler would send this client the news of its own leaving.
                client.unsubscribe_topic("all")
            self._subscribed = False
            client.close(timeout=30)
        if cluster is not None:
            cluster.close(timeout=30)
        for name, level in self._log_levels.items():
            logging.getLogger(name).setLevel(level)
        self._log_levels = {}

    # --- running tasks ------------------------------------------------------------------------

    def submit(self, task: Task, args: Sequence[Any]) -> TaskRef:
        """Add ``task`` to the run's graph, sent to the scheduler whole by :meth:`gather`."""
        assert self.client is not None, "start() the backend before submitting"
        for resource in task.resources:
            if resource not in self._offered:
                self._discard_graph()  # the run ends here: none of its tasks is to be sent
                # Dask would keep such a task waiting for a worker that offers it, forever.
                raise BackendUnavailableError(
                    f"task {task.key} needs {resource}, which no Dask worker in use offers"
                    f" (start workers with: dask worker ADDRESS --resources '{resource}=1')"
                )
        key = f"{task.key}@{self._token}"
        self._graph[key] = DaskTask(key, run_task, dask_identity, task.key, task.func, *args)
        if self._allowed:
            workers = self._allowed
            if task.dependencies:
                workers = [workers[self._dealt % len(workers)]]  # see the module docstring
                self._dealt += 1
            self._workers[key] = workers
        self._resources[key] = dict(task.resources)
        return TaskRef(key)

    def _send_graph(self) -> dict[str, Future]:
        """Send the run's graph to the scheduler in one message; a future for each task.

        One ``update-graph`` for the whole graph, as ``client.map`` sends for its tasks, where
        a ``client.submit`` a task sends one each: on 5,000 no-op tasks, 8.8 s against 8.0 s.
        Placement goes with it as annotations, per key (the scheduler calls them with the key).
        """
        annotations: dict[str, Any] = {}
        if self._workers:
            annotations["workers"] = self._workers.__getitem__
        if any(self._resources.values()):
            annotations["resources"] = self._resources.__getitem__
        graph = self._graph
        self._discard_graph()
        keys = list(graph)
        with dask.annotate(**annotations):
            futures = self.client.get(graph, keys, sync=False)
        self._futures = list(futures)
        return dict(zip(keys, futures, strict=True))

    def _discard_graph(self) -> None:
        self._graph, self._workers, self._resources = {}, {}, {}

    def gather(self, handles: Sequence[TaskRef], timeout: float | None) -> list[TaskOutput]:
        assert self.client is not None, "start() the backend before gathering"
        sent = self._send_graph()
        handles = [sent[handle.key] for handle in handles]
        futures, self._futures = self._futures, []
        token, self._token = self._token, secrets.token_hex(4)  # the next run's keys
        self.last_retried = 0
        try:
            for future in as_completed(handles, loop=self.client.loop, timeout=timeout):
                if future.status != "finished":
                    raise _error(future)
            return self.client.gather(list(handles))
        except TimeoutError:
            running = [f for f in futures if not f.done()]
            self._abort(running)
            example = running[0].key.rpartition("@")[0] if running else "?"
            raise RunTimeoutError(
                f"run timed out after {timeout:g} s: {len(running)} task(s) still running,"
                f" e.g. {example} (raise --timeout or use more chunks)"
            ) from None
        finally:
            self.client.cancel([f for f in futures if not f.done()])
            self.last_retried = self._retried(token)

    def _on_event(self, event: tuple[float, Any]) -> None:
        """Note the keys a worker's death made the scheduler run again (client's event loop)."""
        _, message = event
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        if not message.get("expected"):  # a worker retired in order loses no work
            running = message.get("processing-tasks", ())
            held = message.get("lost-computed-tasks", ())
            self._lost.append(tuple(str(key) for key in (*running, *held)))

    def _retried(self, token: str) -> int:
        """Tasks of the run with ``token`` rerun after their worker died; the events are read."""
        events, self._lost = self._lost, []
        count = sum(key.endswith(f"@{token}") for keys in events for key in keys)
        if count and self.cluster is not None and self.client.status == "running":
            # The nannies restart the dead workers: let the next run start with all of them.
            with contextlib.suppress(TimeoutError):  # else the pre-flight of a sweep says so
                self.client.wait_for_workers(self.workers, timeout=60)
            self._resolve_chosen()
        return count

    def _abort(self, futures: list[Future]) -> None:
        """Cancel ``futures``; on our own cluster, restart the workers still running one."""
        assert self.client is not None
        keys = {f.key for f in futures}
        processing = self.client.processing()
        self.client.cancel(futures, force=True)
        busy = [w for w, running in processing.items() if keys.intersection(running)]
        if self.cluster is not None and busy:
            self.client.restart_workers(busy, timeout=120, raise_for_error=False)
            self.client.wait_for_workers(self.workers, timeout=120)
            self._resolve_chosen()

    # --- what the records and a sweep need to know --------------------------------------------

    def _worker_table(self) -> dict[str, dict[str, Any]]:
        assert self.client is not None
        return dict(self.client.scheduler_info(n_workers=-1)["workers"])

    def _used(self, table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if self._allowed is None:
            return table
        return {a: w for a, w in table.items() if a in self._allowed}

    def info(self) -> BackendInfo:
        assert self.client is not None, "start() the backend first"
        scheduler = self.client.scheduler_info(n_workers=-1)
        used = self._used(dict(scheduler["workers"]))
        dashboard = None
        if "dashboard" in scheduler.get("services", {}):
            dashboard = self.client.dashboard_link
        return BackendInfo(
            self.name,
            distributed.__version__,
            workers=sum(w["nthreads"] for w in used.values()),
            nodes=len({w["host"] for w in used.values()}),
            address=self.options.address,
            dashboard=dashboard,
            startup_s=self.startup_s,
            extra={
                "scheduler": scheduler.get("address"),
                "dask": dask.__version__,
                "worker_processes": len(used),
                "cluster_workers": len(scheduler["workers"]),
                "chosen_workers": (
                    {str(w["name"]): a for a, w in used.items()} if self.chosen else None
                ),
                "worker_blas_threads": self.worker_blas_threads,
                "gpus": self.gpus,
            },
        )

    def preflight(self, expected_workers: int) -> list[str]:
        """Missing workers (fewer threads than expected, chosen ones gone) and busy workers."""
        assert self.client is not None, "start() the backend first"
        problems = []
        self._resolve_chosen()
        used = self._used(self._worker_table())
        threads = sum(w["nthreads"] for w in used.values())
        if threads < expected_workers:
            problems.append(
                f"dask: {threads} worker thread(s) connected, {expected_workers} expected"
            )
        if self.chosen is not None and len(used) < len(self.chosen):
            gone = sorted(set(self.chosen) - {str(w["name"]) for w in used.values()})
            problems.append(f"dask: chosen worker(s) gone: {', '.join(gone)}")
        busy = {w: len(keys) for w, keys in self.client.processing(list(used)).items() if keys}
        if busy:
            where = ", ".join(f"{w} ({n})" for w, n in sorted(busy.items()))
            problems.append(f"dask: tasks are already running on {where}")
        return problems


def _error(future: Future) -> Exception:
    """The runner error for a future that did not finish (erred, cancelled, lost)."""
    key = str(future.key).rpartition("@")[0] or future.key
    lost = ExecutionError(
        f"lost the connection to the Dask scheduler while task {key} was pending"
        " (the scheduler stopped or crashed)"
    )
    try:
        exc = future.exception(timeout=30)
    except FutureCancelledError as cancelled:
        if cancelled.reason == "scheduler-connection-lost":
            return lost
        return ExecutionError(f"task {key} was cancelled ({cancelled.reason})")
    except (OSError, TimeoutError):
        return lost
    if exc is None:  # cancelled without a reason, or lost with the scheduler
        if future.client.status != "running":
            return lost
        return ExecutionError(f"task {key} ended without a result (status {future.status})")
    if isinstance(exc, TaskFailedError):
        return TaskFailedError(str(exc))
    if isinstance(exc, KilledWorker):
        key = str(getattr(exc, "task", key)).rpartition("@")[0] or key  # the task that was lost
        allowed = getattr(exc, "allowed_failures", None)
        times = (
            f"{allowed + 1} time(s), more than --retries {allowed} allows"
            if allowed is not None
            else "more often than --retries allows"
        )
        return WorkerLostError(
            f"task {key} was lost with its worker {times} (on a connected cluster: its"
            " scheduler's allowed-failures); out of memory, or a crash in the task?"
        )
    return TaskFailedError(f"task {key} failed: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _sort_key(name: Any) -> list[Any]:
    """Worker names in natural order: ``node-2`` before ``node-10``, ``2`` before ``10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name))]


def security_from(extra: dict[str, Any], address: Address | None) -> Security | None:
    """The TLS settings ``extra`` asks for, checked against ``address``; ``None``: plain TCP.

    Raises a one-line :class:`UsageError` for incomplete or missing TLS files, a ``tls://``
    address without them (or ``tcp://`` with them), and plain TCP to a scheduler that is not on
    a loopback address without ``insecure``: all before any packet is sent.
    """
    files = {name: extra.get(name) for name in ("tls_ca_file", "tls_cert", "tls_key")}
    given = {name: str(value) for name, value in files.items() if value}
    flags = {name: "--" + name.replace("_", "-") for name in files}
    if given and len(given) < len(files):
        missing = ", ".join(flags[name] for name in files if name not in given)
        raise UsageError(f"TLS needs --tls-ca-file, --tls-cert and --tls-key: {missing} missing")
    for name, path in given.items():
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise UsageError(f"{flags[name]} {path}: no such readable file")
    scheme = address.scheme if address else ""
    if not given:
        if scheme == "tls":
            raise UsageError(
                f"--address {address} is a TLS address: give --tls-ca-file, --tls-cert and"
                " --tls-key (PEM files of the cluster's CA and of a certificate it signed)"
            )
        if address is not None and not is_loopback(address.host) and not extra.get("insecure"):
            raise UsageError(
                f"refusing plain tcp:// to the Dask scheduler at {address.host}, which is not"
                " on this machine: anyone who can reach it can run code on its workers, and"
                " the traffic is not encrypted. Use tls://HOST:PORT with --tls-ca-file,"
                " --tls-cert and --tls-key, or pass --insecure on a network you trust"
            )
        return None
    if scheme == "tcp":
        raise UsageError(
            f"--address {address} is plain TCP but TLS files were given: use"
            f" tls://{address.hostport}"
        )
    cert, key = given["tls_cert"], given["tls_key"]
    return Security(
        require_encryption=True,
        tls_ca_file=given["tls_ca_file"],
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )
