"""What this installation can run: engines and GPU support, found without importing engines."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from dataclasses import dataclass

from cluster_runner.backends import REGISTRY


@dataclass(frozen=True)
class EngineStatus:
    name: str
    installed: bool
    version: str | None
    note: str


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


_ENGINE_PACKAGES = {"dask": ("distributed", "dask"), "ray": ("ray", "ray")}
_NOTES = {
    "serial": "in the driver, one task at a time: the T(1) reference",
    "threads": "a thread pool in the driver: scales where kernels release the GIL",
    "local": "a process pool on this machine (the default)",
    "dask": "Dask distributed: a LocalCluster, or --address tcp://HOST:PORT",
    "ray": "Ray: a local instance, or --address auto|HOST:PORT|ray://HOST:PORT",
}


def engine_status() -> list[EngineStatus]:
    """One entry per backend, in registry order."""
    out = []
    for name, (_, _, extra) in REGISTRY.items():
        if extra is None:
            out.append(EngineStatus(name, True, platform.python_version(), _NOTES[name]))
            continue
        module, package = _ENGINE_PACKAGES[name]
        installed = importlib.util.find_spec(module) is not None
        note = _NOTES[name] if installed else f"pip install 'cluster-runner[{extra}]'"
        out.append(EngineStatus(name, installed, _version(package), note))
    return out


def gpu_status() -> EngineStatus:
    """Whether CuPy imports and how many CUDA devices it sees (and their names)."""
    if importlib.util.find_spec("cupy") is None:
        return EngineStatus(
            "gpu",
            False,
            None,
            "CuPy not installed: pip install 'cluster-runner[gpu]' (or any cupy-cudaXXx build)",
        )
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return EngineStatus("gpu", True, _cupy_version(), f"no CUDA device visible ({exc})")
    if count == 0:
        return EngineStatus("gpu", True, _cupy_version(), "no CUDA device visible")
    names = []
    for index in range(count):
        props = cupy.cuda.runtime.getDeviceProperties(index)
        name = props["name"]
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return EngineStatus("gpu", True, _cupy_version(), f"{count} device(s): {', '.join(names)}")


def _cupy_version() -> str | None:
    try:
        import cupy

        return cupy.__version__
    except Exception:
        return None
