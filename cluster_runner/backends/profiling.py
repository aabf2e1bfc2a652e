"""The engines' own traces, on demand (``--profile``): Dask's performance report, Ray's timeline.

The runner's records already hold a timeline of every task (when, on which worker); an engine
knows more (transfers, scheduler and worker events, its own overhead). ``--profile`` keeps
what the engine offers, per backend and size, next to the results file:

- Dask: ``distributed.performance_report`` (distributed 2026.8) collects, from the scheduler,
  the task stream, worker profiles and bandwidths between entering and leaving its block, and
  writes one HTML page (bokeh, which the ``dask`` extra installs). It finds its client with
  ``get_client()``, so the block runs with the backend's client made current.
- Ray: ``ray.timeline(filename=...)`` (ray 2.60) dumps every task event the cluster kept as
  Chrome trace JSON (open it in ``chrome://tracing`` or Perfetto). It covers the whole life of
  the driver's connection, so it is taken when the block ends; it waits 1 s for the events to
  reach the GCS, outside any timed run.

Neither may fail a sweep: a trace that cannot be written (bokeh missing, a Ray client
connection without task events) is reported in :class:`~.base.EngineTrace` and the runs go on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster_runner.backends.base import EngineTrace


@contextlib.contextmanager
def dask_report(client: Any, stem: Path) -> Iterator[EngineTrace]:
    """Dask's ``performance_report`` of what runs in the block, to ``stem.html``."""
    from distributed import performance_report

    path = stem.with_suffix(".html")
    trace = EngineTrace()
    report = performance_report(filename=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with client.as_current():
            report.__enter__()
    except Exception as exc:  # an engine's trace never fails the runs
        trace.error = f"dask performance report not started: {type(exc).__name__}: {exc}"
        yield trace
        return
    try:
        yield trace
    finally:
        try:
            with client.as_current():
                report.__exit__(None, None, None)
            trace.path = path
        except Exception as exc:
            trace.error = f"dask performance report not written: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def ray_timeline(stem: Path) -> Iterator[EngineTrace]:
    """Ray's timeline (Chrome trace JSON) when the block ends, to ``stem.json``."""
    import ray

    path = stem.with_suffix(".json")
    trace = EngineTrace()
    try:
        yield trace
    finally:
        # ray.timeline logs a notice about its future data source at WARNING on every call.
        logger = logging.getLogger("ray._private.state")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            ray.timeline(filename=str(path))
            trace.path = path
        except Exception as exc:
            trace.error = f"ray timeline not written: {type(exc).__name__}: {exc}"
        finally:
            logger.setLevel(level)
