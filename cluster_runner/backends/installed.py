"""What this installation can run: engines and GPU support, found without importing engines."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from dataclasses import dataclass

from cluster_runner.backends import REGISTRY
from cluster_runner.devices import gpu_info


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
        if name == "ray" and installed and importlib.util.find_spec("grpc") is None:
            note += " (ray:// needs Ray Client: pip install 'ray[client]')"
        out.append(EngineStatus(name, installed, _version(package), note))
    return out


def gpu_status() -> EngineStatus:
    """Whether CuPy imports and which CUDA devices it sees (names and memory)."""
    info = gpu_info()
    if info.problem:
        return EngineStatus("gpu", info.cupy_version is not None, info.cupy_version, info.problem)
    names = ", ".join(f"{d['name']} ({d['memory_bytes'] / 2**30:.0f} GiB)" for d in info.devices)
    return EngineStatus("gpu", True, info.cupy_version, f"{info.count} device(s): {names}")
