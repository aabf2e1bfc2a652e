"""The environment a record describes: Python, packages, CPU, memory, host of the driver."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

_PACKAGES = ("numpy", "numba", "click", "dask", "distributed", "ray", "cupy", "psutil")


@functools.cache
def driver_environment() -> Environment:
    """Where the driver runs: Python, packages, CPU, memory, host (computed once a process).

    Named for whose environment it is: :mod:`cluster_runner.clusters.processes` builds the
    process environment of a cluster's daemons, which is another thing.
    """
    import psutil
    from threadpoolctl import threadpool_info

    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return Environment.from_json(
        {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
            "platform": platform.platform(),
            "packages": versions,
            "cpu_model": cpu_model(),
            "cpu_logical": psutil.cpu_count(logical=True),
            "cpu_physical": psutil.cpu_count(logical=False),
            "cpu_affinity": len(psutil.Process().cpu_affinity() or [])
            if hasattr(psutil.Process, "cpu_affinity")
            else None,
            "memory_bytes": psutil.virtual_memory().total,
            "hostname": socket.gethostname(),
            "blas": [
                {
                    "api": lib.get("internal_api"),
                    "threads": lib.get("num_threads"),
                    "version": lib.get("version"),
                }
                for lib in threadpool_info()
            ],
        }
    )


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class BlasLibrary:
    """One BLAS (or OpenMP) library loaded in the driver, as threadpoolctl reports it."""

    api: str | None
    threads: int | None
    version: str | None

    def to_json(self) -> Json:
        return {"api": self.api, "threads": self.threads, "version": self.version}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlasLibrary:
        return cls(data.get("api"), data.get("threads"), data.get("version"))


@dataclass(frozen=True)
class Environment:
    """Where the driver ran: Python, packages, CPU, memory, host (None: not recorded)."""

    python: str | None = None
    implementation: str | None = None
    gil_enabled: bool | None = None
    platform: str | None = None
    packages: Mapping[str, str] = field(default_factory=dict)  # package -> version
    cpu_model: str | None = None
    cpu_logical: int | None = None
    cpu_physical: int | None = None
    cpu_affinity: int | None = None  # CPUs this process may run on, where the OS says
    memory_bytes: int | None = None
    hostname: str | None = None
    blas: tuple[BlasLibrary, ...] = ()

    def to_json(self) -> Json:
        return {
            "python": self.python,
            "implementation": self.implementation,
            "gil_enabled": self.gil_enabled,
            "platform": self.platform,
            "packages": dict(self.packages),
            "cpu_model": self.cpu_model,
            "cpu_logical": self.cpu_logical,
            "cpu_physical": self.cpu_physical,
            "cpu_affinity": self.cpu_affinity,
            "memory_bytes": self.memory_bytes,
            "hostname": self.hostname,
            "blas": [lib.to_json() for lib in self.blas],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Environment:
        return cls(
            python=data.get("python"),
            implementation=data.get("implementation"),
            gil_enabled=data.get("gil_enabled"),
            platform=data.get("platform"),
            packages=data.get("packages", {}),
            cpu_model=data.get("cpu_model"),
            cpu_logical=data.get("cpu_logical"),
            cpu_physical=data.get("cpu_physical"),
            cpu_affinity=data.get("cpu_affinity"),
            memory_bytes=data.get("memory_bytes"),
            hostname=data.get("hostname"),
            blas=tuple(BlasLibrary.from_json(lib) for lib in data.get("blas", ())),
        )
