"""``ray``: Ray, on an instance started here or on a cluster reached by ``--address``.

With no address, :meth:`RayBackend.start` starts a local Ray instance of ``--workers`` CPUs,
quietly (no dashboard, worker output not forwarded), listening on 127.0.0.1 only, its workers'
BLAS/OpenMP thread variables set to 1 through the job's runtime environment. With
``--address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``) the driver connects to a running
cluster. :meth:`~RayBackend.close` calls ``ray.shutdown()``, which stops the processes of an
instance started here and only disconnects from a cluster connected to.

The graph runs natively: each task is a remote call of
:func:`~cluster_runner.backends.ray_tasks.run_wire_task` whose upstream arguments are
ObjectRefs, resolved by Ray on the worker that runs it (:mod:`.ray_tasks`: the task body and
the wire format of its output).

``BackendOptions.nodes = k`` restricts every task to k of the cluster's nodes (the head first,
then by name and id, chosen by :class:`~cluster_runner.backends.cluster.ClusterBackend`) with a
label selector on Ray's built-in ``ray.io/node-id`` label, leaving Ray free to balance the work
among those k.

Token authentication (on by default for a cluster Ray 2.60 starts) stays on. The instance
started here gets a token made for this process (``RAY_AUTH_TOKEN``, never written to disk)
unless one is already set up; when connecting, Ray reads the cluster's token from
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, and the runner turns
token mode on when it finds one there (Ray itself does so only for ``auto``). Connecting is
bounded by ``--connect-timeout`` (see :mod:`cluster_runner.backends.ray_connection`).

Lost workers. A task whose worker process dies is rerun by its owner, the driver, at most
``BackendOptions.retries`` times (Ray's ``max_retries``); one lost more often ends the run with a
:class:`~cluster_runner.errors.WorkerLostError`. Each task reports the attempt it ran in (Ray's
own attempt number) in its trace, and :meth:`~RayBackend.gather` reports their sum.

User code. A job's own workload (a user's module or file) is shipped in the job's
``runtime_env`` (``py_modules``), to the instance started here as to a cluster: Ray workers
never start from the driver's ``sys.path`` (:mod:`cluster_runner.backends.shipping`).

A lost GCS would leave ``ray.get`` waiting until Ray's C++ core ends the driver 60 s later, with
no record of the run: :meth:`~RayBackend.gather` checks the GCS as it waits
(:func:`~cluster_runner.backends.ray_connection.gcs_heartbeat`) and fails the run after 10 s.
The instance started here keeps its session (sockets, logs) in a private folder (0700), removed
when it ends (by the reaper if the driver dies), not in the world-readable ``/tmp/ray``.

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
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import ray
import ray._private.ray_constants as ray_constants
from ray.exceptions import (
    GetTimeoutError,
    NodeDiedError,
    ObjectLostError,
    RayTaskError,
    RuntimeEnvSetupError,
    TaskCancelledError,
    WorkerCrashedError,
)

from cluster_runner.backends.base import BackendInfo, BackendOptions, Gathered
from cluster_runner.backends.cluster import ClusterBackend
from cluster_runner.backends.failures import one_line, task_failed, timed_out, worker_lost
from cluster_runner.backends.ray_connection import (
    alive_nodes,
    connect,
    gcs_heartbeat,
    is_head,
    node_cpus,
    reread_auth_config,
    token_auth,
)
from cluster_runner.backends.ray_inputs import CopyWindow, copy, not_ready, share, top_level
from cluster_runner.backends.ray_tasks import bind, from_wire
from cluster_runner.backends.reaper import Reaper
from cluster_runner.backends.shipping import code_in, describe, ray_runtime_env, worker_warm_ups
from cluster_runner.errors import ConnectError, ExecutionError, UsageError
from cluster_runner.execution.inputs import PlacedInput
from cluster_runner.execution.tasks import SINGLE_THREAD_ENV, warm_worker
from cluster_runner.graph import Task

#: Every node carries its id under this label (Ray >= 2.49), which the ``nodes=k`` selector uses.
NODE_ID_LABEL = "ray.io/node-id"
#: What Ray raises when a task was lost with its worker or node more often than allowed.
LOST = (WorkerCrashedError, NodeDiedError, ObjectLostError)
#: Seconds between the GCS checks of a run that waits (see :meth:`RayBackend._get`).
WATCH_S = 1.0
#: Where the embedded instance's private session folder goes: a short path, for Ray's sockets.
_SHORT_TMP = "/tmp" if os.path.isdir("/tmp") else None


class RayBackend(ClusterBackend):
    name = "ray"
    engine, member = "Ray", "node"
    address_schemes = ("ray", "")
    address_form = "auto, HOST:PORT or ray://HOST:PORT"
    address_keywords = ("auto",)

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self._remotes: dict[tuple, Any] = {}  # (function, *resources) -> remote with options
        self._refs: list[ray.ObjectRef] = []  # every ref of the run in progress
        self._copies = CopyWindow(0)  # tasks carrying copied inputs in flight (sized at start)
        self._selector: dict[str, str] | None = None
        self.dashboard: str | None = None
        self._signalled: BaseException | None = None  # what a signal handler raised
        self._saved_flag: bool | None = None
        self._auth_read = False  # start() made Ray re-read its auth settings
        self._reaper: Reaper | None = None  # ends the instance's processes if the driver dies
        self._session_root: str | None = None  # the private folder of the instance's session
        self._gcs_lost = False  # a run found the GCS gone (see gcs_heartbeat)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
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
            self.env.set("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent out
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            super().start()
            self._copies = CopyWindow(2 * self.info().workers)
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
        self.gpus = self.spec.gpus()
        self._auth_read = token_auth(embedded=True, setenv=self.env.set)
        before = _children()
        # Ray's session folder (sockets, logs, spilled objects) inside a private folder of
        # ours (0700), removed when the instance ends, rather than in /tmp/ray, where each run
        # leaves one that every user may read. Ray makes its own folder 0777, hence the one
        # around it. Short: Unix socket paths stay under 108 bytes.
        self._session_root = tempfile.mkdtemp(prefix="rcr-ray-", dir=_SHORT_TMP)
        context = ray.init(
            address="local",  # never join a cluster found in /tmp/ray or $RAY_ADDRESS
            _temp_dir=os.path.join(self._session_root, "r"),
            num_cpus=self.workers,
            num_gpus=self.gpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env=ray_runtime_env(SINGLE_THREAD_ENV, code_in(self.spec.warm_up)),
            namespace="cluster-runner",
            _node_ip_address="127.0.0.1",
        )
        self.dashboard = context.dashboard_url or None
        self._reaper = Reaper.watch(_children() - before, remove=self._session_root)

    def _connect(self) -> None:
        assert self.spec.target is not None
        self._auth_read = token_auth(embedded=False, setenv=self.env.set)
        context = connect(
            self.spec.target,
            self.options.address or "",
            self.spec.connect_timeout,
            runtime_env=ray_runtime_env(SINGLE_THREAD_ENV, code_in(self.spec.warm_up)),
        )
        self.dashboard = getattr(context, "dashboard_url", None) or None

    def _on_connected(self) -> None:
        self._remotes = {}

    def _members(self) -> dict[str, Any]:
        """Alive nodes by id, the head first, then by name and id."""
        return {
            n["NodeID"]: (not is_head(n), n.get("NodeName", ""), n["NodeID"]) for n in alive_nodes()
        }

    def _on_chosen(self) -> None:
        assert self.chosen is not None
        self._selector = {NODE_ID_LABEL: f"in({','.join(self.chosen)})"}

    def _offered_resources(self) -> Iterable[str]:
        return {name for n in self._used_nodes() for name, v in n.get("Resources", {}).items() if v}

    def _probe_workers(self, timeout: float = 120.0) -> list[tuple[int, int, float]]:
        """One probe per CPU, held briefly, so every worker slot starts and runs the warm-ups."""
        cpus = max(1, int(sum(node_cpus(n) for n in self._used_nodes())))
        probe_task = ray.remote(warm_worker).options(num_cpus=1, **self._placement())
        hooks = worker_warm_ups(self.spec.warm_up, shipped=True)  # the code is in runtime_env
        refs = [probe_task.remote(hooks, 0.5) for _ in range(cpus)]
        try:
            return ray.get(refs, timeout=timeout)
        except GetTimeoutError:
            raise ConnectError(
                f"Ray did not start {cpus} worker(s) within {timeout:g} s (too few free CPUs"
                " on the cluster?)"
            ) from None
        except RuntimeEnvSetupError as exc:  # the user's code did not unpack or import there
            shipped = ", ".join(describe(code_in(self.spec.warm_up))) or "none"
            raise ExecutionError(
                f"Ray could not set up the job's runtime environment (code shipped: {shipped}):"
                f" {one_line(exc)[:300]}"
            ) from None

    def close(self) -> None:
        """Disconnect (and stop an instance started here); undo start()'s settings."""
        self._refs = []
        self._remotes = {}
        if ray.is_initialized():
            ray.shutdown()
        if self._reaper is not None:
            if self._gcs_lost:
                self._reaper.reap_now()  # what shutdown left of an instance without its GCS
            else:
                self._reaper.dismiss()  # the instance is down: nothing left for it to end
            self._reaper = None
        if self._session_root is not None:  # only the folder of the instance started here
            shutil.rmtree(self._session_root, ignore_errors=True)
            self._session_root = None
        if self._saved_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = self._saved_flag
            self._saved_flag = None
        self.env.restore()
        if self._auth_read:
            reread_auth_config()  # Ray caches it: let it see the environment as it is now
            self._auth_read = False

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
        args, inputs, copies = top_level(list(args))  # driver inputs go top level too
        if copies:
            self._copies.admit()
        if upstream or inputs:
            ref = remote.remote([task.key, upstream], *args)
        else:
            ref = remote.remote([task.key, args])
        if copies:
            self._copies.add(ref)
        self._refs.append(ref)
        return ref

    def share_input(self, key: str, value: Any, nbytes: int) -> PlacedInput:
        """Once, with ``ray.put``: tasks get zero-copy views (:mod:`.ray_inputs`)."""
        return share(key, value, nbytes)

    def copy_input(self, key: str, value: Any, nbytes: int) -> PlacedInput:
        """With every task, as ``f.remote(value, ...)`` passes it (:mod:`.ray_inputs`)."""
        return copy(key, value, nbytes)

    def _remote_for(self, task: Task) -> Any:
        """The remote function, with its options set, for tasks of this function and resources.

        Made once and kept: ``.options()`` costs about 40 us a call, as much as the submit.
        """
        self.refuse_unoffered(task)
        resources = dict(task.resources)
        options: dict[str, Any] = {
            "num_cpus": resources.pop("CPU", 1),
            "max_retries": self.spec.retries,  # reruns after the worker died
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

    def gather(self, handles: Sequence[ray.ObjectRef], timeout: float | None) -> Gathered:
        refs, self._refs = self._refs, []
        self._copies.clear()
        failed = True
        try:
            outputs = [from_wire(o) for o in self._get(list(handles), timeout)]
            failed = False
        except GetTimeoutError:
            running = not_ready(refs)
            for ref in running:
                ray.cancel(ref, force=True)  # ends the worker process running it
            raise timed_out(len(running), after=timeout) from None
        except RayTaskError as exc:
            raise _task_error(exc, self.spec.retries) from None
        except LOST as exc:
            raise _worker_lost(exc, self.spec.retries) from None
        except TaskCancelledError as exc:
            raise ExecutionError(f"a task was cancelled: {one_line(exc)}") from None
        except ExecutionError:
            self._gcs_lost = True  # the heartbeat: cancel and shutdown must not wait on the GCS
            raise
        except SystemExit:
            if self._signalled is not None:
                raise self._signalled from None
            raise
        finally:
            if failed and not self._gcs_lost:
                for ref in not_ready(refs):
                    ray.cancel(ref)
        attempts = {t.key: t.attempt for o in outputs for t in o.traces}
        return Gathered(outputs, sum(attempts.values()))

    def _get(self, handles: list[ray.ObjectRef], timeout: float | None) -> list[Any]:
        """``ray.get(handles, timeout)``, waking every :data:`WATCH_S` seconds to check that
        the GCS still answers (:func:`~cluster_runner.backends.ray_connection.gcs_heartbeat`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            watch = gcs_heartbeat(ray.get_runtime_context().gcs_address)
        except Exception:  # Ray Client (ray://) has no GCS address here: the server watches it
            watch = gcs_heartbeat(None)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return ray.get(handles, timeout=WATCH_S if left is None else min(WATCH_S, left))
            except GetTimeoutError:
                if left is not None and left <= WATCH_S:
                    raise  # the run's own --timeout
                watch.check()

    # --- what the records and a sweep need to know --------------------------------------------

    def _used_nodes(self) -> list[dict[str, Any]]:
        alive = alive_nodes()
        if self.chosen is None:
            return alive
        return [n for n in alive if n["NodeID"] in self.chosen]

    def info(self) -> BackendInfo:
        nodes = self._used_nodes()
        return BackendInfo(
            self.name,
            ray.__version__,
            workers=int(sum(node_cpus(n) for n in nodes)),
            nodes=len(nodes),
            address=self.options.address,
            dashboard=self.dashboard,
            startup_s=self.startup_s,
            warmup_s=self.warmup_s,
            extra={
                "gcs": ray.get_runtime_context().gcs_address,
                "node_ids": [n["NodeID"] for n in nodes],
                "cluster_nodes": len(alive_nodes()),
                "chosen_nodes": self.chosen,
                "auth_mode": os.environ.get("RAY_AUTH_MODE", "disabled"),
                "worker_blas_threads": self.worker_blas_threads,
                "gpus": int(sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)),
                "shipped": describe(code_in(self.spec.warm_up)),
            },
        )

    def profile(self, stem):
        """Ray's timeline when the block ends (``--profile``; :mod:`.profiling`)."""
        from cluster_runner.backends.profiling import ray_timeline

        return ray_timeline(stem)

    def preflight(self, expected_workers: int, settle: float = 3.0) -> list[str]:
        """Missing nodes or CPUs, and CPUs busy with other tasks or actors."""
        nodes = self._used_nodes()
        problems = self.chosen_problems(n["NodeID"] for n in nodes)
        cpus = sum(node_cpus(n) for n in nodes)
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
    """The runner error for a task that raised: the worker's TaskFailedError (Ray's ``cause``)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LOST):
        return _worker_lost(cause, retries)  # a task upstream lost its worker once too often
    name = getattr(exc, "function_name", "a task")
    return task_failed(cause if cause is not None else exc, name, remote=str(exc))


def _worker_lost(exc: BaseException, retries: int) -> Exception:
    return worker_lost("a task", None, retries, holder="Ray worker or node", detail=one_line(exc))


def _children() -> set[int]:
    """The pids of the driver's descendants."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}
