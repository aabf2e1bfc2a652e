"""The backends, by name; each imported only when asked for.

Optional engines (Dask, Ray) live in modules that import their engine at the top, so that a
missing package shows up as an ``ImportError`` here, turned into a one-line error naming the
extra to install (as joblib does for its optional backends).
"""

from __future__ import annotations

import importlib

from cluster_runner.backends.base import (
    Backend,
    BackendInfo,
    BackendOptions,
    GraphBackend,
    PoolBackend,
)
from cluster_runner.errors import BackendUnavailableError, UsageError

#: Backend name -> (module, class, the pip extra that provides its engine or None).
REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "serial": ("cluster_runner.backends.serial", "SerialBackend", None),
    "threads": ("cluster_runner.backends.threads", "ThreadsBackend", None),
    "local": ("cluster_runner.backends.local", "LocalBackend", None),
    "dask": ("cluster_runner.backends.dask", "DaskBackend", "dask"),
    "ray": ("cluster_runner.backends.ray", "RayBackend", "ray"),
}


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name``, or a one-line error saying what is wrong and what to do."""
    if name not in REGISTRY:
        raise UsageError(f"unknown backend {name!r} (choose from {', '.join(REGISTRY)})")
    module_name, class_name, extra = REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None or (exc.name or "").startswith("cluster_runner"):
            raise  # our own bug, not a missing engine
        raise BackendUnavailableError(
            f"the {name} backend needs {exc.name}, which is not installed:"
            f" pip install 'cluster-runner[{extra}]'"
        ) from None
    return getattr(module, class_name)


def create_backend(name: str, options: BackendOptions) -> Backend:
    """An unstarted backend ``name`` configured by ``options``."""
    return backend_class(name)(options)


__all__ = [
    "REGISTRY",
    "Backend",
    "BackendInfo",
    "BackendOptions",
    "GraphBackend",
    "PoolBackend",
    "backend_class",
    "create_backend",
]
