"""Array devices: numpy on the CPU, CuPy on a CUDA GPU, behind one array namespace.

The array kernels are written once against a namespace ``xp`` (numpy or cupy) that
:func:`array_module` hands them. CuPy is imported only here and only when a GPU stage runs, and
always as plain ``import cupy``, so that any CuPy build works (cupy-cuda12x, cupy-cuda13x, ...).

Asking for a GPU where there is none is an error, never a silent fallback to the CPU:
:func:`require_gpu` says which part is missing, CuPy or a CUDA device.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from cluster_runner.errors import BackendUnavailableError

CPU, GPU = "cpu", "gpu"
DEVICES = (CPU, GPU)


@dataclass(frozen=True)
class GpuInfo:
    """What the driver sees of CUDA: CuPy's version and the devices' names and memory."""

    cupy_version: str | None
    devices: tuple[dict[str, Any], ...]
    problem: str | None  # why there is no usable GPU; None when there is one

    @property
    def count(self) -> int:
        return len(self.devices)


@functools.cache
def gpu_info() -> GpuInfo:
    """Look for CuPy and CUDA devices once per process, without failing if neither is there."""
    if importlib.util.find_spec("cupy") is None:
        return GpuInfo(
            None,
            (),
            "CuPy is not installed: pip install 'cluster-runner[gpu]'"
            " (or any cupy-cudaXXx build matching your CUDA driver)",
        )
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        devices = tuple(_describe(cupy, index) for index in range(count))
    except Exception as exc:  # CuPy raises several kinds when no driver or device exists
        return GpuInfo(_cupy_version(), (), f"CuPy is installed but sees no CUDA device ({exc})")
    if not devices:
        return GpuInfo(_cupy_version(), (), "CuPy is installed but sees no CUDA device")
    return GpuInfo(_cupy_version(), devices, None)


def _describe(cupy: ModuleType, index: int) -> dict[str, Any]:
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"]
    return {
        "index": index,
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "memory_bytes": int(props["totalGlobalMem"]),
        "compute_capability": f"{props['major']}.{props['minor']}",
    }


def _cupy_version() -> str | None:
    try:
        import cupy

        return cupy.__version__
    except Exception:
        return None


def require_gpu() -> GpuInfo:
    """The GPUs this process sees; a one-line :class:`BackendUnavailableError` if none."""
    info = gpu_info()
    if info.problem:
        raise BackendUnavailableError(
            f'a GPU stage was asked for (--gpu or device = "gpu"), but {info.problem}'
        )
    return info


def array_module(device: str) -> ModuleType:
    """The array namespace of ``device``: ``numpy`` for "cpu", ``cupy`` for "gpu"."""
    if device == CPU:
        import numpy

        return numpy
    if device == GPU:
        require_gpu()
        import cupy

        return cupy
    raise ValueError(f"unknown device {device!r}")


def synchronize(xp: ModuleType) -> None:
    """Wait for the device's queued work, so a clock read next measures it (no-op on the CPU)."""
    if xp.__name__ == "cupy":
        xp.cuda.get_current_stream().synchronize()


#: Environment variable naming the CUDA device a worker process uses (set by the backends
#: that start several GPU workers on one machine; Ray sets CUDA_VISIBLE_DEVICES instead).
WORKER_GPU_ENV = "CLUSTER_RUNNER_GPU"


def worker_gpu() -> int:
    """The CUDA device index this worker process was given (0 when none was)."""
    return int(os.environ.get(WORKER_GPU_ENV, "0"))


def device_context(xp: ModuleType) -> Any:
    """Make this worker's GPU current for a kernel (CuPy's current device is per thread)."""
    if xp.__name__ == "cupy":
        return xp.cuda.Device(worker_gpu() % max(1, xp.cuda.runtime.getDeviceCount()))
    return contextlib.nullcontext()


def device_name(xp: ModuleType) -> str:
    """The name of the current device ("cpu" for numpy)."""
    if xp.__name__ != "cupy":
        return CPU
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
