"""What every workload provides: a parameter schema, a graph builder, a verifier.

A workload is a fan-out of chunk tasks and a reduce. It knows nothing of backends: it adds
top-level functions to a :class:`~cluster_runner.graph.Graph`, and later checks the value that
the graph's sink produced against an independent oracle. The chunk functions live in the
workload's own module so that they pickle by reference on every backend.
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cluster_runner.devices import GPU, gpu_info
from cluster_runner.errors import JobSpecError
from cluster_runner.graph import Graph, Phased, Ref

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic_core import ErrorDetails

#: Largest task count a stage may ask for; beyond it the driver, not the work, is measured.
MAX_CHUNKS = 1_000_000


@dataclass(frozen=True)
class Param:
    """One parameter of a workload: its type, range and meaning.

    A plain declaration, compiled into a pydantic model by :meth:`Workload.params_model` when a
    job is validated: workload modules are imported by every worker (their task functions
    pickle by reference), and a worker should not pay for importing pydantic.
    """

    name: str
    kind: type  # int or str
    help: str
    default: Any = None  # None: the parameter is required
    minimum: int | None = None  # inclusive lower bound for ints
    maximum: int | None = None  # inclusive upper bound for ints
    choices: tuple[str, ...] | None = None  # allowed values for strings


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a result against an oracle the workload trusts."""

    ok: bool
    method: str  # how it was checked, in words a reader of the record understands
    expected: Any = None  # JSON-able expectation, where there is one


@dataclass(frozen=True)
class ResultSummary:
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
    #: Top-level, picklable functions of no arguments that load what the tasks need (compiled
    #: kernels): backends run them once in the driver, then on each worker at start-up, so that
    #: the first timed run does not pay for them (see ``JobSpec.warm_ups``).
    warm_up: tuple[Callable[[], object], ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def params_model(self) -> type[BaseModel]:
        """The pydantic model of this workload's parameters, compiled once from :attr:`params`."""
        return _compile(type(self).__name__, self.params)

    def validate(self, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Fill defaults, coerce types, check ranges; raise :class:`JobSpecError` on any fault."""
        from cluster_runner.validation import validate

        model = validate(
            self.params_model(),
            values,
            where=where,
            error=JobSpecError,
            describe=self._describe,
        )
        out = model.model_dump()
        self.check(out, where)
        return out

    def _describe(self, detail: ErrorDetails) -> str:
        """A parameter error in the words job files have always had (``n must be >= 1, got 0``)."""
        from cluster_runner.validation import field_name, is_type_error, plain

        name, kind, given = field_name(detail), detail["type"], detail.get("input")
        limit = (detail.get("ctx") or {}).get("ge", (detail.get("ctx") or {}).get("le"))
        choices = next((p.choices for p in self.params if p.name == name), None)
        if kind == "extra_forbidden":
            return (
                f"unknown parameter {name!r} for workload {self.name!r}"
                f" (known: {', '.join(sorted(self.param_names))})"
            )
        if kind == "missing":
            return f"missing required parameter {name!r}"
        if kind == "greater_than_equal":
            return f"{name} must be >= {limit}, got {plain(given)}"
        if kind == "less_than_equal":
            return f"{name} must be <= {limit:.0e}, got {plain(given)}"
        if choices is not None and isinstance(given, str):
            return f"{name} must be one of {', '.join(choices)}, got {given!r}"
        if choices is not None or kind.startswith("string"):
            return f"{name} must be a string, got {given!r}"
        if is_type_error(detail):
            return f"{name} must be an integer, got {given!r}"
        return f"{name}: {detail['msg']}, got {given!r}"

    def check(self, params: Mapping[str, Any], where: str) -> None:
        """Cross-parameter checks (e.g. no more chunks than items); raise :class:`JobSpecError`."""

    @abstractmethod
    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        """Add this workload's tasks to ``graph`` under ``stage``; return the reduce's ref."""

    @abstractmethod
    def verify(self, params: Mapping[str, Any], value: Any) -> Verification:
        """Check the reduce's value against an independent oracle."""

    @abstractmethod
    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        """A JSON-able summary of the value for tables, records and comparisons."""

    def resources(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Resources each chunk task needs beyond one CPU (``{"GPU": 1}`` for GPU stages)."""
        return {"GPU": 1} if params.get("device") == GPU else {}


@functools.cache
def _compile(name: str, params: tuple[Param, ...]) -> type[BaseModel]:
    """A pydantic model with one field a parameter: TOML's ``1e9`` is an int, ``true`` is not."""
    from typing import Literal

    from pydantic import Field, create_model

    from cluster_runner.validation import STRICT_CONFIG, Integer

    fields: dict[str, Any] = {}
    for p in params:
        default = ... if p.default is None else p.default
        if p.kind is int:
            kind: Any = Integer
            field = Field(default, ge=p.minimum, le=p.maximum, description=p.help)
        else:
            kind = Literal[p.choices] if p.choices else str
            field = Field(default, description=p.help)
        fields[p.name] = (kind, field)
    return create_model(f"{name}Params", __config__=STRICT_CONFIG, **fields)


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
