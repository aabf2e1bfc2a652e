"""What the local pool's forkserver loads before it forks workers: numpy and compiled kernels.

With the ``forkserver`` start method every pool worker is forked from one server process, and
is born with whatever that process had imported and compiled. A worker that had to import numpy
and numba and load the sieve's compiled kernels itself spent about 0.5 s of CPU on it, all
workers at once (issue 17: pool start-up, against a plain ``ProcessPoolExecutor``'s); loaded
once in the server, it costs each worker nothing. The server imports numpy and runs the job's
hooks only: a job without compiled kernels gets no numba (issue 16), and the hooks' time is
kept (:data:`HOOKS_S`) so that the pool records it as warm-up, not start-up.

multiprocessing imports the modules named by ``set_forkserver_preload`` when it starts the
server. :class:`~cluster_runner.backends.local.LocalBackend` names this one and, while it starts
the server, puts the warm-up hooks to run in :data:`HOOKS_ENV`. Only the runner's own hooks go
there (:func:`preloadable`): they load numba kernels, which is safe before a fork; a hook of a
user's workload could start threads or a GPU context, which a fork would break, so it runs in
each worker as before. The pool's start-up probe runs every hook in every worker anyway, at no
cost once it has run here.

Nothing here may raise: an exception would end the forkserver, and every pool with it. A hook
that fails is skipped here and fails again, with its own error, in the workers.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable, Sequence

#: The hooks the forkserver runs when it imports this module: ``module:function``, comma-separated.
HOOKS_ENV = "RUNNER_FORKSERVER_WARM_UP"
#: Seconds the hooks took in the forkserver that imported this module (0.0: none ran), which
#: every worker it forks inherits and reports (:func:`local_probe`): the pool's warm-up,
#: recorded apart from its start-up (issue 16).
HOOKS_S = 0.0


def local_probe(
    warm_up: Sequence[Callable[[], object]], hold: float
) -> tuple[int, int, float, float]:
    """The local pool's start-up probe: :func:`~cluster_runner.execution.tasks.warm_worker`'s
    ``(pid, BLAS threads, hooks' seconds here)``, and the seconds the hooks took in the
    forkserver this worker was forked from."""
    from cluster_runner.execution.tasks import warm_worker

    return (*warm_worker(warm_up, hold), HOOKS_S)


def preloadable(hooks: Sequence[Callable[[], object]]) -> list[str]:
    """The hooks among ``hooks`` that may run in the forkserver, as ``module:function``."""
    names = []
    for hook in hooks:
        module = getattr(hook, "__module__", "") or ""
        qualname = getattr(hook, "__qualname__", "") or ""
        if module.startswith("cluster_runner.") and qualname.isidentifier():
            names.append(f"{module}:{qualname}")
    return list(dict.fromkeys(names))


def run_named(names: str) -> list[str]:
    """Import and call each ``module:function`` of ``names``; those that failed, by name."""
    failed = []
    for name in filter(None, names.split(",")):
        module, _, attribute = name.partition(":")
        try:
            getattr(importlib.import_module(module), attribute)()
        except Exception:
            failed.append(name)
    return failed


def _preload() -> None:
    """In the forkserver: single-threaded BLAS (as in the workers), numpy, then the hooks."""
    global HOOKS_S
    from cluster_runner.execution.tasks import SINGLE_THREAD_ENV

    names = os.environ.pop(HOOKS_ENV, "")
    os.environ.update(SINGLE_THREAD_ENV)  # before numpy: BLAS starts no threads to fork
    try:
        import numpy  # noqa: F401
    except Exception:
        return
    if names:
        began = time.perf_counter()
        run_named(names)
        HOOKS_S = time.perf_counter() - began


if os.environ.get(HOOKS_ENV) is not None:  # set only while the driver starts the forkserver
    with contextlib.suppress(Exception):  # the workers load what they need themselves
        _preload()
