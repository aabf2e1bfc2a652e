"""``local``: a process pool on this machine, the embedded default that needs nothing running.

The pool is a ``ProcessPoolExecutor`` created with an explicit start method (``forkserver`` on
Linux, ``spawn`` elsewhere; never the platform default, which changed in Python 3.14). It is
started once and reused by every run and repeat of a submission, so repeats time the work, not
process start-up.

Each worker process, when it starts (:func:`init_worker`):

- pins BLAS and OpenMP thread pools to one thread, so N workers use N cores, not N x cores;
- ignores SIGINT: Ctrl-C is the driver's to handle, which then shuts the pool down in order;
- on Linux, asks the kernel to SIGKILL it when its parent dies (``PR_SET_PDEATHSIG``), so no
  worker outlives a driver that was itself killed.

:meth:`LocalBackend.start` then waits until every worker has started and run the job's
warm-up hooks (``BackendOptions.warm_up``: loading compiled kernels), so the start-up cost is
measured apart from the first run.

With ``forkserver``, the server that forks the workers is started with numpy imported and the
job's own warm-up hooks run, the runner's only (:mod:`cluster_runner.backends.preload`): workers
are born with the kernels loaded, and import nothing a job without kernels does not need (the
no-op job's workers have numpy, not numba). The driver then need not run the hooks itself; with
``spawn``, or when a forkserver was already running without them, it runs them first, so that
the workers load compiled kernels from the cache instead of all compiling them at once.

Warm-up is the job's, and is recorded apart (issue 16): the hooks' seconds in the forkserver
(when this start started it, as every worker it forks reports), in the driver and in the
slowest worker are ``warmup_s``; ``startup_s`` is the rest, the pool's own start-up, which
``scripts/bench_driver.py`` compares with a plain ``ProcessPoolExecutor`` whose workers import
numpy.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from cluster_runner.backends.base import BackendInfo, BackendOptions
from cluster_runner.backends.executor import ExecutorBackend
from cluster_runner.backends.preload import HOOKS_ENV, local_probe, preloadable
from cluster_runner.backends.shared_memory import Arena, share
from cluster_runner.devices import WORKER_GPU_ENV
from cluster_runner.errors import ExecutionError, UsageError
from cluster_runner.execution.inputs import Copied, PlacedInput
from cluster_runner.execution.tasks import SINGLE_THREAD_ENV, WarmUp

#: ``prctl`` option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def default_start_method() -> str:
    """``forkserver`` where the platform has it (fast, and safe with threads), else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def init_worker(counter: Any = None, gpus: int = 0) -> None:
    """Prepare a pool worker (see the module docstring).

    With ``gpus`` > 0, the worker takes the next number from the shared ``counter`` and uses
    GPU ``number % gpus``, so the workers of a pool share out every GPU of the machine.
    """
    os.environ.update(SINGLE_THREAD_ENV)
    if gpus and counter is not None:
        with counter.get_lock():
            number = counter.value
            counter.value += 1
        os.environ[WORKER_GPU_ENV] = str(number % gpus)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _release_forkserver()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _release_forkserver() -> None:
    """Close this worker's copy of the pipe end whose EOF tells the forkserver its driver died.

    CPython hands every forkserver child that end (``forkserver._serve_one``); while a worker
    holds it, a driver killed by SIGKILL leaves the forkserver waiting, and the worker, whose
    PDEATHSIG follows the forkserver, alive with it. Workers start no processes of their own.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


#: The hooks the forkserver this process started runs at its start (None: not started here).
_forkserver_hooks: set[str] | None = None


def _preloaded_forkserver(
    start_method: str, warm_up: Sequence[WarmUp], gpus: int
) -> tuple[bool, bool]:
    """Make sure the forkserver runs, started with numpy and ``warm_up``'s hooks if it may be.

    Returns ``(ready, started)``: ready when the workers it forks are born with every hook run
    (see the module docstring); False when the driver should run them first: ``spawn``, GPU
    jobs (a CUDA context must not cross a fork), a user's hooks, a forkserver this process had
    started without them, or a platform other than Linux (macOS's system libraries, numpy's
    Accelerate among them, are not safe to use after a fork). ``started``: this call started
    the server, so the hooks' time there belongs to this pool's warm-up.
    """
    global _forkserver_hooks
    if start_method != "forkserver" or gpus or not sys.platform.startswith("linux"):
        return False, False
    from multiprocessing import forkserver

    wanted = preloadable(warm_up)
    server = forkserver._forkserver  # the process-wide server every forkserver pool uses
    started = False
    if getattr(server, "_forkserver_pid", None) is None:
        server.set_forkserver_preload(["__main__", "cluster_runner.backends.preload"])
        os.environ[HOOKS_ENV] = ",".join(wanted)  # read, and removed, by the server as it starts
        try:
            server.ensure_running()
        finally:
            os.environ.pop(HOOKS_ENV, None)
        if getattr(server, "_forkserver_pid", None) is not None:
            _forkserver_hooks = set(wanted)
            started = True
    ready = _forkserver_hooks is not None and set(wanted) <= _forkserver_hooks
    return ready and len(wanted) == len(warm_up), started


class LocalBackend(ExecutorBackend):
    name = "local"
    worker_processes = True

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self.workers = self.spec.workers
        self.start_method = options.start_method or default_start_method()
        if self.start_method not in multiprocessing.get_all_start_methods():
            raise UsageError(
                f"start method {self.start_method!r} is not available here"
                f" (choose from {', '.join(multiprocessing.get_all_start_methods())})"
            )
        self.worker_blas_threads: int | None = None
        self.gpus = 0  # GPUs the workers share out, when the job has GPU stages
        self.worker_pids: list[int] = []
        self.arena = Arena()  # driver inputs' shared memory, reused run after run

    def start(self) -> None:
        context = multiprocessing.get_context(self.start_method)
        gpus = self.gpus = self.spec.gpus()
        ready, started = _preloaded_forkserver(self.start_method, self.spec.warm_up, gpus)
        if not ready:
            self.warm_up_driver()
        self.executor = cf.ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=init_worker,
            initargs=(context.Value("i", 0), gpus),
        )
        self._wait_for_workers(started)

    def _wait_for_workers(self, server_started: bool, timeout: float = 120.0) -> None:
        """Submit probes until every worker has answered one (the pool spawns on demand).

        Each probe runs the warm-up hooks and says how long they took, there and in the
        forkserver: both are the warm-up (the forkserver's only if this start started it).
        """
        assert isinstance(self.executor, cf.ProcessPoolExecutor)
        seen: dict[int, tuple[int, float, float]] = {}
        deadline = time.monotonic() + timeout
        hold = 0.05
        while len(seen) < self.workers and time.monotonic() < deadline:
            probes = [
                self.executor.submit(local_probe, self.spec.warm_up, hold)
                for _ in range(self.workers)
            ]
            try:
                for probe in probes:
                    pid, blas, hooks_s, server_s = probe.result(
                        timeout=max(1.0, deadline - time.monotonic())
                    )
                    seen.setdefault(pid, (blas, hooks_s, server_s))
            except (cf.BrokenExecutor, cf.TimeoutError) as exc:
                self.close(grace=0.0)
                raise ExecutionError(
                    f"the local pool's workers did not start ({type(exc).__name__}); run"
                    " from a file rather than stdin, or try --start-method spawn"
                ) from None
            hold *= 2
        self.worker_pids = sorted(seen)
        self.worker_blas_threads = max((blas for blas, _, _ in seen.values()), default=None)
        self.warmed_on_workers(hooks_s for _, hooks_s, _ in seen.values())
        if server_started:
            self.warmed_on_workers(server_s for _, _, server_s in seen.values())

    def close(self, grace: float = 5.0) -> None:
        """Shut the pool down, and unlink the driver inputs' shared memory (its arena)."""
        try:
            self._stop_pool(grace)
        finally:
            self.arena.clear()

    def _stop_pool(self, grace: float) -> None:
        """Stop the pool; a worker still busy after ``grace`` seconds (a hung task) is killed.

        ``ProcessPoolExecutor.shutdown(wait=True)`` would wait for a hung task forever, and
        offers no way to end one, so the worker processes are joined here with a deadline and
        the stragglers (ours, by their ``Process`` objects) are sent SIGKILL.
        """
        if self.executor is None:
            return
        executor, self.executor = self.executor, None
        # The executor's private ``_processes`` (pid -> Process, unchanged since Python 3.2) is
        # the only handle on its workers; without it a hung worker could not be ended.
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=5.0)

    def restart(self) -> None:
        """Replace a pool broken by a dead worker, or stuck on a hung task, with a fresh one.

        The arena stays: the stage under way still needs its inputs' segments."""
        self._stop_pool(grace=0.0)
        self.start()

    def abort_running(self) -> None:
        """End the tasks in flight (after a timeout) by replacing the pool."""
        self.restart()

    def share_input(self, key: str, value: Any, nbytes: int) -> PlacedInput:
        """Once, into shared memory that every worker maps (:mod:`.shared_memory`)."""
        return share(key, value, nbytes, self.arena)

    def copy_input(self, key: str, value: Any, nbytes: int) -> PlacedInput:
        """Pickled into every task's message, through the pool's pipe, as ``submit`` sends it."""
        return PlacedInput("pickled with every task", Copied(value), wire_bytes=nbytes)

    def info(self) -> BackendInfo:
        return BackendInfo(
            self.name,
            platform.python_version(),
            workers=self.workers,
            start_method=self.start_method,
            startup_s=self.startup_s,
            warmup_s=self.warmup_s,
            extra={"worker_blas_threads": self.worker_blas_threads, "gpus": self.gpus},
        )
