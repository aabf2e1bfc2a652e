"""``dask``: Dask distributed, on a cluster started here or on one reached by ``--address``.

With no address, :meth:`DaskBackend.start` starts an embedded ``LocalCluster`` of ``--workers``
worker processes with one thread each. Its scheduler, workers and dashboard listen on 127.0.0.1
only, and each worker starts with the BLAS/OpenMP thread variables set to 1, so that N workers
use N cores. With ``--address tcp://HOST:PORT`` (or ``tls://``) a ``Client`` connects to a
running scheduler and nothing is started; :meth:`~DaskBackend.close` then closes the client and
leaves the cluster as it found it.

User code. A job's own workload (a user's module or file) reaches the workers of the embedded
cluster through the driver's ``sys.path``, which their processes start from, and a warm-up hook
that imports it; a connected cluster's workers get it from worker plugins, withdrawn at close
(:mod:`cluster_runner.backends.shipping`).

Security. Whoever can open a connection to a Dask scheduler can run any code on its workers.
``BackendOptions.extra`` may hold ``tls_ca_file``, ``tls_cert`` and ``tls_key`` (PEM files):
the driver then speaks mutual TLS (``tls://``), to a connected scheduler or within the embedded
cluster. The policy (plain ``tcp://`` only to loopback, unless ``--insecure``) is decided
before any packet is sent, in :mod:`cluster_runner.backends.tls`; this module only builds
Dask's ``Security`` from the files (:func:`security_from`).

Lost workers. A task whose worker dies while running it is rerun by the scheduler, at most
``distributed.scheduler.allowed-failures`` times; the embedded cluster's scheduler gets
``BackendOptions.retries`` for that (a connected one keeps its own setting), and one task lost
more often ends the run with a :class:`~cluster_runner.errors.WorkerLostError`. The tasks rerun
are counted from the scheduler's ``remove-worker`` events (topic ``all``): those the dead worker
was running and those whose results it held; :meth:`~DaskBackend.gather` reports the count.
The embedded cluster's nannies restart a dead worker, and the backend waits for it, so the next
run starts with every worker again.

The graph runs natively, sent whole to the scheduler when it is gathered; how a run becomes
one Dask graph, and where ``nodes = k`` places its tasks, is :mod:`.dask_graph`'s to say.

A lost scheduler ends the run in one line with a failed record: a connected scheduler that is
gone fails the run's futures at once; one that froze or dropped off the network is noticed by
a heartbeat between the steps of the wait (:meth:`~DaskBackend._wait`); the embedded
cluster's, should it stop mid-run, has its worker processes ended at close rather than waited
for (:mod:`.dask_watch`).

A run that passes its timeout has its futures cancelled. A running Python function cannot be
stopped, so on the embedded cluster the workers still running one are restarted by their
nannies; a connected cluster's workers are never restarted: the task runs on, and
:meth:`~DaskBackend.preflight` reports the busy worker until it is done.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import dask
import distributed
from dask.task_spec import TaskRef
from distributed import Client, Future, LocalCluster, as_completed
from distributed.security import Security

from cluster_runner.backends import dask_inputs
from cluster_runner.backends.addresses import probe
from cluster_runner.backends.base import BackendInfo, BackendOptions, Gathered
from cluster_runner.backends.cluster import ClusterBackend, natural_key
from cluster_runner.backends.dask_graph import (
    GPUS_ENV,
    DaskGraph,
    dask_setup,
    future_error,
    task_key,
)
from cluster_runner.backends.dask_watch import WATCH_S, close_cluster, scheduler_heartbeat
from cluster_runner.backends.failures import one_line, timed_out
from cluster_runner.backends.shipping import DaskShipment, code_in, describe, worker_warm_ups
from cluster_runner.backends.tls import TlsFiles
from cluster_runner.errors import ConnectError
from cluster_runner.execution.inputs import PlacedInput
from cluster_runner.execution.tasks import SINGLE_THREAD_ENV, warm_worker
from cluster_runner.graph import Task

#: Loggers of the driver process whose tracebacks say no more than the run's one-line error.
_QUIET_LOGGERS = (
    "distributed.client",
    "distributed.scheduler",
    "distributed.nanny",  # the workers it could not stop when the embedded scheduler is lost
)


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


class DaskBackend(ClusterBackend):
    name = "dask"
    engine, member = "Dask", "worker"
    address_schemes = ("tcp", "tls", "")
    address_form = "tcp://HOST:PORT or tls://HOST:PORT"
    supports_tls = True

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self.security = security_from(self.spec.tls)
        self.cluster: LocalCluster | None = None
        self.client: Client | None = None
        self._allowed: list[str] | None = None  # the chosen workers' current addresses
        self._graph = DaskGraph()  # the run's tasks, until gather() sends them
        self._lost: list[tuple[str, ...]] = []  # keys in the scheduler's remove-worker events
        self._subscribed = False  # to the scheduler's events (topic "all")
        self._code = DaskShipment(code_in(self.spec.warm_up))  # the user's, for --address

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        # The client logs every failed reconnect, with a traceback, when a scheduler goes
        # away; the run's own error says so in one line.
        # The embedded scheduler logs, with the same lack of need, each task it gives up on
        # after losing workers, and (as CRITICAL) each message it could not send to a client
        # that was closing on Ctrl-C.
        for name in _QUIET_LOGGERS:
            self.env.quiet(name)
        # Installed once, never removed: the callback may run after close() (addFilter is
        # idempotent for the same filter).
        logging.getLogger("tornado.application").addFilter(_SYNC_CANCEL_RACE)
        super().start()

    def _start_local(self) -> None:
        self.gpus = self.spec.gpus()
        tls = {"protocol": "tls://", "security": self.security} if self.security else {}
        self.cluster = LocalCluster(
            n_workers=self.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,  # a lost scheduler is the run's one line
            env={**SINGLE_THREAD_ENV, GPUS_ENV: str(self.gpus)},
            resources={"GPU": 1} if self.gpus else None,  # each worker may run a GPU task
            preload=[dask_setup.__module__],  # runs dask_setup in each worker
            **tls,
        )
        # The scheduler runs in this process: its budget for tasks lost with their workers is
        # an attribute it reads each time a worker dies.
        self.cluster.scheduler.allowed_failures = self.spec.retries
        self.client = Client(self.cluster, set_as_default=False, security=self.security)
        self.client.wait_for_workers(self.workers, timeout=120)

    def _connect(self) -> None:
        assert self.spec.address is not None
        timeout = self.spec.connect_timeout
        began = time.monotonic()
        probe(self.spec.address, timeout, "Dask")
        target = f"{'tls' if self.security else 'tcp'}://{self.spec.address.hostport}"
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
                f" ({one_line(exc, first_only=True)}); is it a Dask scheduler's address?"
                f"{tls_hint}"
            ) from None
        wanted = self.spec.nodes or 1
        try:
            self.client.wait_for_workers(wanted, timeout=max(1.0, timeout))
        except TimeoutError:
            have = len(self._worker_table())
            raise ConnectError(
                f"the Dask scheduler at {target} has {have} worker(s), {wanted} needed;"
                " start workers with: dask worker " + target
            ) from None

    def _on_connected(self) -> None:
        assert self.client is not None
        self.client.subscribe_topic("all", self._on_event)
        self._subscribed = True
        if self.spec.remote and self._code.sources:
            # A connected cluster's workers may be other machines: send them the user's code
            # (issue 13; see cluster_runner.backends.shipping). The embedded cluster's workers
            # start from the driver's sys.path, and run the code's warm-up hooks instead.
            self._code.send(self.client)

    def _members(self) -> dict[str, Any]:
        return {str(w["name"]): natural_key(w["name"]) for w in self._worker_table().values()}

    def _on_chosen(self) -> None:
        """Keep the chosen workers' current addresses (a restarted worker gets a new one)."""
        if self.chosen is None:
            return
        names = {str(w["name"]): address for address, w in self._worker_table().items()}
        self._allowed = [names[n] for n in self.chosen if n in names]

    def _offered_resources(self) -> Iterable[str]:
        return {name for w in self._used(self._worker_table()).values() for name in w["resources"]}

    def _probe_workers(self) -> list[tuple[int, int, float]]:
        assert self.client is not None
        hooks = worker_warm_ups(self.spec.warm_up, shipped=self.spec.remote)
        return list(self.client.run(warm_worker, hooks).values())

    def close(self) -> None:
        client, self.client = self.client, None
        cluster, self.cluster = self.cluster, None
        self._graph.discard()
        if client is not None:
            self._code.withdraw(client)  # the cluster's later workers do not get our code
            if self._subscribed and client.status == "running":
                # Else the scheduler would send this client the news of its own leaving.
                client.unsubscribe_topic("all")
            self._subscribed = False
            client.close(timeout=30)
        if cluster is not None:
            close_cluster(cluster)
        self.env.restore()

    # --- running tasks ------------------------------------------------------------------------

    def submit(self, task: Task, args: Sequence[Any]) -> TaskRef:
        """Add ``task`` to the run's graph, sent to the scheduler whole by :meth:`gather`."""
        assert self.client is not None, "start() the backend before submitting"
        try:
            self.refuse_unoffered(task)
        except BaseException:
            self._graph.discard()  # the run ends here: none of its tasks is to be sent
            raise
        return self._graph.add(task, args, self._allowed)

    def share_input(self, key: str, value: Any, nbytes: int) -> PlacedInput:
        """Scattered once to the run's workers (:mod:`.dask_inputs`)."""
        assert self.client is not None, "start() the backend first"
        return dask_inputs.share(self.client, self._used(self._worker_table()), key, value, nbytes)

    def copy_input(self, key: str, value: Any, nbytes: int) -> PlacedInput:
        """Inside every task's message (:mod:`.dask_inputs`)."""
        self._graph.large = True  # asked for: no warning that the graph is large
        return dask_inputs.copy(key, value, nbytes)

    def _resource_hint(self, resource: str) -> str:
        return f" (start workers with: dask worker ADDRESS --resources '{resource}=1')"

    def gather(self, handles: Sequence[TaskRef], timeout: float | None) -> Gathered:
        assert self.client is not None, "start() the backend before gathering"
        token = self._graph.token
        sent = self._graph.send(self.client)
        wanted = [sent[handle.key] for handle in handles]
        futures = list(sent.values())
        try:
            self._wait(wanted, timeout)
            outputs = self.client.gather(wanted)
        except TimeoutError:
            running = [f for f in futures if not f.done()]
            self._abort(running)
            example = task_key(running[0].key) if running else "?"
            raise timed_out(len(running), after=timeout, example=example) from None
        finally:
            self.client.cancel([f for f in futures if not f.done()])
            retried = self._retried(token)
        return Gathered(outputs, retried)

    def _wait(self, wanted: list[Future], timeout: float | None) -> None:
        """Wait for ``wanted`` (raising ``TimeoutError`` after ``timeout`` s, or the error of
        one that did not finish), waking every :data:`WATCH_S` seconds to check that a
        connected cluster's scheduler still answers (:func:`.dask_watch.scheduler_heartbeat`)."""
        assert self.client is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        # A connected scheduler may freeze; the embedded one runs in this process.
        heartbeat = scheduler_heartbeat(self.client, self.spec.target, watch=self.cluster is None)
        pending = list(wanted)
        while pending:
            left = None if deadline is None else deadline - time.monotonic()
            step = WATCH_S if left is None else max(0.0, min(WATCH_S, left))
            try:
                for future in as_completed(pending, loop=self.client.loop, timeout=step):
                    if future.status != "finished":
                        raise future_error(future)
                    pending.remove(future)
            except TimeoutError:
                if left is not None and left <= WATCH_S:
                    raise  # the run's own --timeout
                heartbeat.check()

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
        assert self.client is not None
        events, self._lost = self._lost, []
        count = sum(key.endswith(f"@{token}") for keys in events for key in keys)
        if count and self.cluster is not None and self.client.status == "running":
            # The nannies restart the dead workers: let the next run start with all of them.
            with contextlib.suppress(TimeoutError):  # else the pre-flight of a sweep says so
                self.client.wait_for_workers(self.workers, timeout=60)
            self._on_chosen()
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
            self._on_chosen()

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
        dashboard, hint = None, {}
        if "dashboard" in scheduler.get("services", {}):
            # Without bokeh the scheduler still serves HTTP, but its dashboard pages answer 404
            # (issue 17); only of an embedded cluster is it known whether bokeh is there.
            if self.options.address is None and importlib.util.find_spec("bokeh") is None:
                hint["dashboard_hint"] = "needs bokeh: pip install 'cluster-runner[dask]'"
            else:
                dashboard = self.client.dashboard_link
        return BackendInfo(
            self.name,
            distributed.__version__,
            workers=sum(w["nthreads"] for w in used.values()),
            nodes=len({w["host"] for w in used.values()}),
            address=self.options.address,
            dashboard=dashboard,
            startup_s=self.startup_s,
            warmup_s=self.warmup_s,
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
                "shipped": describe(self._code.sources) if self._code.names else [],
                **hint,
            },
        )

    def profile(self, stem):
        """Dask's ``performance_report`` of the block (``--profile``; :mod:`.profiling`)."""
        from cluster_runner.backends.profiling import dask_report

        return dask_report(self.client, stem)

    def preflight(self, expected_workers: int) -> list[str]:
        """Missing workers (fewer threads than expected, chosen ones gone) and busy workers."""
        assert self.client is not None, "start() the backend first"
        problems = []
        self._on_chosen()
        used = self._used(self._worker_table())
        threads = sum(w["nthreads"] for w in used.values())
        if threads < expected_workers:
            problems.append(
                f"dask: {threads} worker thread(s) connected, {expected_workers} expected"
            )
        problems += self.chosen_problems(str(w["name"]) for w in used.values())
        busy = {w: len(keys) for w, keys in self.client.processing(list(used)).items() if keys}
        if busy:
            where = ", ".join(f"{w} ({n})" for w, n in sorted(busy.items()))
            problems.append(f"dask: tasks are already running on {where}")
        return problems


def security_from(files: TlsFiles | None) -> Security | None:
    """Dask's ``Security`` for mutual TLS with ``files`` (checked by the TLS policy)."""
    if files is None:
        return None
    return Security(
        require_encryption=True,
        tls_ca_file=files.ca_file,
        tls_client_cert=files.cert,
        tls_client_key=files.key,
        tls_scheduler_cert=files.cert,
        tls_scheduler_key=files.key,
        tls_worker_cert=files.cert,
        tls_worker_key=files.key,
    )
