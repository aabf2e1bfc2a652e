"""What every workload provides: a parameter schema, a graph builder, a verifier.

A workload is a graph of tasks (most often a fan-out of chunk tasks and a reduce) with one sink.
It knows nothing of backends: it adds top-level functions to a
:class:`~cluster_runner.graph.Graph`, and later checks the value that the graph's sink produced
against an independent oracle. The task functions live in a module (the workload's own, or one
it imports) so that they pickle by reference on every backend.

:class:`Workload` is the full level of the public workload API (see
:mod:`cluster_runner.workloads.api`): only :meth:`Workload.build` is required. A workload without
an oracle of its own (:meth:`Workload.verify` returns None) is checked against a run of the same
job on ``serial`` (:mod:`cluster_runner.runs.reference`), bit for bit or within its declared
:attr:`Workload.rtol` and :attr:`Workload.atol`; one without a summary of its own gets the
default one (:func:`cluster_runner.workloads.values.summarize_value`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
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
    kind: type  # int, float, str or bool
    help: str = ""
    default: Any = None  # None: the parameter is required
    minimum: float | None = None  # inclusive lower bound for numbers
    maximum: float | None = None  # inclusive upper bound for numbers
    choices: tuple[str, ...] | None = None  # allowed values for strings

    def __post_init__(self) -> None:
        if self.kind not in (int, float, str, bool):
            raise TypeError(f"parameter {self.name!r}: kind must be int, float, str or bool")
        if not self.name.isidentifier():
            raise TypeError(f"parameter name {self.name!r} is not a Python identifier")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))


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
    """A graph of tasks with one sink, its parameters, and optionally its own oracle.

    Subclass it and implement :meth:`build`; everything else has a default. The object a job
    names is an instance (a class is instantiated with no arguments).
    """

    name: str = ""  # a word; default: the attribute the job names
    description: str = ""  # one line; default: the first line of the class's docstring
    params: tuple[Param, ...] = ()
    weak_param: str = ""  # the size parameter that grows with workers in weak scaling; "": none
    #: Tolerance of the reference check (no oracle of its own): a result agrees with the serial
    #: reference where |value - reference| <= atol + rtol * |reference|, number by number.
    #: Both 0 (the default): the digests must be equal, bit for bit.
    rtol: float = 0.0
    atol: float = 0.0
    #: Top-level, picklable functions of no arguments that load what the tasks need (compiled
    #: kernels): backends run them once in the driver, then on each worker at start-up, so that
    #: the first timed run does not pay for them (see ``JobSpec.warm_ups``).
    warm_up: tuple[Callable[[], object], ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def has_oracle(self) -> bool:
        """Whether :meth:`verify` is the workload's own (else a serial reference decides)."""
        return type(self).verify is not Workload.verify

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
        param = next((p for p in self.params if p.name == name), None)
        choices = param.choices if param is not None else None
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
            shown = f"{limit:.0e}" if abs(limit) >= 1e6 else plain(limit)
            return f"{name} must be <= {shown}, got {plain(given)}"
        if choices is not None and isinstance(given, str):
            return f"{name} must be one of {', '.join(choices)}, got {given!r}"
        if choices is not None or kind.startswith("string"):
            return f"{name} must be a string, got {given!r}"
        if is_type_error(detail):
            wanted = {float: "a number", bool: "true or false"}.get(
                param.kind if param is not None else int, "an integer"
            )
            return f"{name} must be {wanted}, got {given!r}"
        return f"{name}: {detail['msg']}, got {given!r}"

    def check(self, params: Mapping[str, Any], where: str) -> None:
        """Cross-parameter checks (e.g. no more chunks than items); raise :class:`JobSpecError`."""

    @abstractmethod
    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        """Add this workload's tasks to ``graph`` under ``stage``; return the reduce's ref."""

    def verify(self, params: Mapping[str, Any], value: Any) -> Verification | None:
        """Check the sink's value against an independent oracle; None: no oracle of its own.

        The default is None: the runner then checks the value against a run of the same job and
        parameters on ``serial`` (see :mod:`cluster_runner.runs.reference`).
        """
        return None

    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        """A JSON-able summary of the value for tables, records and comparisons.

        The default digests the exact bits of numbers, numpy arrays, strings, and lists and
        dicts of them, and shows them in a few words (:func:`~.values.summarize_value`).
        """
        from cluster_runner.workloads.values import summarize_value

        return summarize_value(value)

    def setup(self, params: Mapping[str, Any]) -> AbstractContextManager[Mapping[str, Any]]:
        """A context manager around every run of a stage, entered in the driver before its graph
        is built: it starts what the tasks need (a server) and yields values that
        :meth:`build`, :meth:`verify` and :meth:`summarize` then find among the parameters
        (its URL). The default starts nothing and yields nothing."""
        return contextlib.nullcontext({})

    def result_bytes(self, params: Mapping[str, Any]) -> int | None:
        """About how many bytes the stage's result takes in the driver; None: small or unknown.

        Known before anything runs, so that a result larger than the driver's memory is refused
        up front (:func:`cluster_runner.limits.check_result`) rather than killing the driver.
        """
        return None

    def resources(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Resources each chunk task needs beyond one CPU (``{"GPU": 1}`` for GPU stages)."""
        return {"GPU": 1} if params.get("device") == GPU else {}


def call_hook(key: str, hook: Callable[..., Any], *args: Any) -> Any:
    """A workload's hook run in the driver (``build``, ``setup``, ``verify``, ``summarize``),
    its error named as a task's is, ``task STAGE/HOOK failed: ...``, with its traceback (shown
    by ``runner --traceback``). The runner's own errors pass as they are."""
    from cluster_runner.errors import RunnerError, TaskFailedError

    try:
        return hook(*args)
    except RunnerError:
        raise
    except Exception as exc:
        raise TaskFailedError.from_exception(key, exc) from exc


@functools.cache
def _compile(name: str, params: tuple[Param, ...]) -> type[BaseModel]:
    """A pydantic model with one field a parameter: TOML's ``1e9`` is an int, ``true`` is not."""
    from typing import Literal

    from pydantic import Field, create_model

    from cluster_runner.validation import STRICT_CONFIG, Boolean, Integer, Number

    fields: dict[str, Any] = {}
    for p in params:
        default = ... if p.default is None else p.default
        if p.kind in (int, float):
            kind: Any = Integer if p.kind is int else Number
            field = Field(default, ge=p.minimum, le=p.maximum, description=p.help)
        elif p.kind is bool:
            kind, field = Boolean, Field(default, description=p.help)
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
