"""What every workload provides: a parameter schema, a graph builder, a verifier.

A workload is a fan-out of chunk tasks and a reduce. It knows nothing of backends: it adds
top-level functions to a :class:`~cluster_runner.graph.Graph`, and later checks the value that
the graph's sink produced against an independent oracle. The chunk functions live in the
workload's own module so that they pickle by reference on every backend.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cluster_runner.devices import GPU, gpu_info
from cluster_runner.errors import JobSpecError
from cluster_runner.graph import Graph, Phased, Ref

#: Largest task count a stage may ask for; beyond it the driver, not the work, is measured.
MAX_CHUNKS = 1_000_000


@dataclass(frozen=True)
class Param:
    """One parameter of a workload: its type, range and meaning."""

    name: str
    kind: type  # int or str
    help: str
    default: Any = None  # None: the parameter is required
    minimum: int | None = None  # inclusive lower bound for ints
    maximum: int | None = None  # inclusive upper bound for ints
    choices: tuple[str, ...] | None = None  # allowed values for strings

    def coerce(self, value: Any, where: str) -> Any:
        """Return ``value`` as this parameter's type, or raise a one-line :class:`JobSpecError`."""
        if self.kind is int:
            number = _as_int(value)
            if number is None:
                raise JobSpecError(f"{where}: {self.name} must be an integer, got {value!r}")
            value = number
            if self.minimum is not None and value < self.minimum:
                raise JobSpecError(f"{where}: {self.name} must be >= {self.minimum}, got {value}")
            if self.maximum is not None and value > self.maximum:
                raise JobSpecError(
                    f"{where}: {self.name} must be <= {self.maximum:.0e}, got {value}"
                )
            return value
        if not isinstance(value, str):
            raise JobSpecError(f"{where}: {self.name} must be a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise JobSpecError(
                f"{where}: {self.name} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        return value


def _as_int(value: Any) -> int | None:
    """Accept ints and integral floats (``1e9`` in TOML is a float); refuse bools and others."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return None


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a result against an oracle the workload trusts."""

    ok: bool
    method: str  # how it was checked, in words a reader of the record understands
    expected: Any = None  # JSON-able expectation, where there is one


@dataclass(frozen=True)
class Summary:
    """A JSON-able digest of a stage's result, for tables and bit-for-bit comparisons."""

    value: Any  # a number, or a short list of numbers
    display: str  # what the result table shows
    digest: str  # sha256 of the exact result bytes: equal digests mean bit-identical results


def digest(value: Any) -> str:
    """sha256 of a result's exact bits (numpy arrays by their bytes, scalars by their repr)."""
    if isinstance(value, np.ndarray):
        payload = str(value.dtype).encode() + str(value.shape).encode() + value.tobytes()
    elif isinstance(value, tuple):
        return digest_many(value)
    else:
        payload = repr(value).encode()
    return hashlib.sha256(payload).hexdigest()


def digest_many(values: tuple[Any, ...]) -> str:
    return hashlib.sha256("".join(digest(v) for v in values).encode()).hexdigest()


class Workload(ABC):
    """A fan-out of chunk tasks and a reduce, with its own parameters and oracle."""

    name: str
    description: str
    params: tuple[Param, ...]
    weak_param: str  # the size parameter that grows with workers in weak scaling

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def validate(self, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Fill defaults, coerce types, check ranges; raise :class:`JobSpecError` on any fault."""
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise JobSpecError(
                f"{where}: unknown parameter {unknown[0]!r} for workload {self.name!r}"
                f" (known: {', '.join(sorted(known))})"
            )
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in values:
                out[p.name] = p.coerce(values[p.name], where)
            elif p.default is None:
                raise JobSpecError(f"{where}: missing required parameter {p.name!r}")
            else:
                out[p.name] = p.default
        self.check(out, where)
        return out

    def check(self, params: Mapping[str, Any], where: str) -> None:
        """Cross-parameter checks (e.g. no more chunks than items); raise :class:`JobSpecError`."""

    @abstractmethod
    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        """Add this workload's tasks to ``graph`` under ``stage``; return the reduce's ref."""

    @abstractmethod
    def verify(self, params: Mapping[str, Any], value: Any) -> Verification:
        """Check the reduce's value against an independent oracle."""

    @abstractmethod
    def summarize(self, params: Mapping[str, Any], value: Any) -> Summary:
        """A JSON-able summary of the value for tables, records and comparisons."""

    def resources(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Resources each chunk task needs beyond one CPU (``{"GPU": 1}`` for GPU stages)."""
        return {"GPU": 1} if params.get("device") == GPU else {}


def recompute(device: str, kernel: Callable[..., Any], *args: Any) -> Any:
    """A chunk recomputed in the driver on the stage's device; None if the driver has no GPU.

    A GPU chunk must be checked on a GPU (its numbers come from cuRAND, not numpy). A driver
    that only submits to a remote GPU cluster has none, and then only the statistical check
    applies, which the verification's words then say.
    """
    if device == GPU and gpu_info().problem:
        return None
    value = kernel(*args, device)
    return value.value if isinstance(value, Phased) else value


def exact_note(device: str, chunk: int, recheck: Any) -> str:
    """How the sampled chunk was checked, in the words of the verification record."""
    if recheck is None:
        return f"chunk {chunk} not recomputed (no GPU in the driver)"
    draws = "; GPU draws (cuRAND) differ from CPU draws (PCG64) by design" if device == GPU else ""
    return f"chunk {chunk} recomputed exactly on the {device}{draws}"


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(total)`` into ``parts`` contiguous ``(start, stop)`` pieces, near-equal."""
    base, extra = divmod(total, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
