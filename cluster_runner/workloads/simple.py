"""The simple level of the workload API: a map-reduce described by a few plain functions.

Most code a user wants to scale is a map-reduce: split the problem into chunks, run a function
on each chunk, combine the results. :class:`MapReduce` (or the :func:`workload` decorator on the
chunk function, which makes one) turns those functions into a
:class:`~cluster_runner.workloads.base.Workload`::

    def split(samples: int, chunks: int = 8, seed: int = 0):
        return [(seed, i, samples // chunks) for i in range(chunks)]

    @workload(split=split, reduce=sum, weak="samples")
    def hits(seed: int, index: int, draws: int) -> int:
        ...

How each function is called:

``split(**params)``
    Its signature *is* the job's parameters: each parameter before any ``*`` becomes one, its
    annotation (``int``, ``float``, ``str``, ``bool`` or a ``Literal`` of strings) its type and
    its default its default (none: required). It returns the chunks, one item each: a tuple is
    the chunk function's arguments, anything else its one argument. ``params=`` (a sequence
    of :class:`~cluster_runner.workloads.base.Param`) declares the parameters instead, with
    bounds and help; split then takes those it names.
``chunk(*args)``
    The work, run on the workers: a top-level function of a module, so that it pickles by
    reference (:func:`~cluster_runner.workloads.code.check_by_reference`).
``reduce(results, **params)``
    One task on the workers, after every chunk: ``results`` is the list of the chunks' values,
    in chunk order; it also gets the parameters it names. Default: the list itself.
``verify(value, **params)``, optional
    Runs in the driver after each run: ``True``, ``False`` or a
    :class:`~cluster_runner.workloads.base.Verification`. Without it the value must agree with
    a run of the job on ``serial`` (bit for bit, or within ``rtol``/``atol``).
``summarize(value, **params)``, optional
    A display string, or a :class:`~cluster_runner.workloads.base.ResultSummary`.
``data(**params)``, optional
    Its parameters that split does not name are job parameters too, declared the same way
    (``def load(path: str = "", rows: int = 100_000)``). It
    runs in the driver before each stage's graph is built, and returns data the driver holds
    (an array it loaded, a model, a table): any picklable object, given once and passed to
    every chunk as its *last* argument, ``chunk(*args, data)``. The runner moves it the best
    way the backend has (shared memory, Ray's object store, a Dask scatter; ``--transfer
    copy`` sends it with every task instead) and records what moved; a numpy array arrives
    read-only (see :mod:`cluster_runner.execution.inputs`).
``setup(**params)``, optional
    A context manager, entered in the driver around every run (``contextlib.contextmanager``),
    that starts what the chunks need and yields a dict of values (a server's URL): split,
    reduce, verify and summarize get them as keyword-only parameters (after a ``*``), which are
    therefore never job parameters.

A function "gets the parameters it names": each of its parameters whose name is a job parameter
or a value of setup is passed by keyword; a function with ``**kwargs`` gets them all.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from cluster_runner.errors import JobSpecError
from cluster_runner.graph import Graph, Ref
from cluster_runner.workloads.base import (
    MAX_CHUNKS,
    Param,
    ResultSummary,
    Verification,
    Workload,
)
from cluster_runner.workloads.code import check_by_reference

#: The attribute :func:`workload` sets on a chunk function: the :class:`MapReduce` it declares.
WORKLOAD_ATTRIBUTE = "__cluster_runner_workload__"
#: Parameter kinds a job file can give.
_KINDS = (int, float, str, bool)


class MapReduce(Workload):
    """A workload made of a split, a chunk function and a reduce (see the module docstring)."""

    def __init__(
        self,
        chunk: Callable[..., Any],
        *,
        split: Callable[..., Any],
        reduce: Callable[..., Any] | None = None,
        verify: Callable[..., Any] | None = None,
        summarize: Callable[..., Any] | None = None,
        setup: Callable[..., Any] | None = None,
        data: Callable[..., Any] | None = None,
        params: Sequence[Param] | None = None,
        weak: str | None = None,
        name: str | None = None,
        description: str | None = None,
        rtol: float = 0.0,
        atol: float = 0.0,
        warm_up: Sequence[Callable[[], object]] = (),
    ) -> None:
        if data is not None and not callable(data):
            raise TypeError(f"MapReduce: data must be a function that returns it, not {data!r}")
        self.data = data
        for role, func in (("chunk", chunk), ("split", split)):
            if not callable(func):
                raise TypeError(f"MapReduce: {role} must be a function, not {func!r}")
        self.chunk, self.split, self.reduce = chunk, split, reduce
        self._verify, self._summarize, self._setup = verify, summarize, setup
        self.params = tuple(params) if params is not None else params_of(split, data)
        self.name = name or getattr(chunk, "__name__", "map_reduce")
        module = sys.modules.get(getattr(chunk, "__module__", "") or "")
        self.description = (
            description or _first_line(module) or _first_line(chunk) or f"map-reduce of {self.name}"
        )
        sizes = [p.name for p in self.params if p.kind is int and p.name not in ("chunks", "seed")]
        self.weak_param = weak if weak is not None else (sizes[0] if sizes else "")
        if self.weak_param and self.weak_param not in self.param_names:
            raise TypeError(f"MapReduce {self.name}: weak={weak!r} is not one of its parameters")
        if rtol < 0 or atol < 0:
            raise TypeError(f"MapReduce {self.name}: rtol and atol must be >= 0")
        self.rtol, self.atol = float(rtol), float(atol)
        self.warm_up = tuple(warm_up)

    def __repr__(self) -> str:
        return f"MapReduce({self.name}: {_qualified(self.chunk)})"

    @property
    def has_oracle(self) -> bool:
        return self._verify is not None

    def task_functions(self) -> dict[str, Callable[..., Any]]:
        """The functions that run on workers, by role: each must pickle by reference."""
        found = {"the chunk function": self.chunk}
        if self.reduce is not None:
            found["the reduce function"] = self.reduce
        return found

    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        pieces = self.split(**named(self.split, params))
        try:
            pieces = list(pieces)
        except TypeError:
            raise JobSpecError(
                f"stage {stage!r}: split returned {type(pieces).__name__}, not a list of chunks"
            ) from None
        if not pieces:
            raise JobSpecError(f"stage {stage!r}: split returned no chunks")
        if len(pieces) > MAX_CHUNKS:
            raise JobSpecError(
                f"stage {stage!r}: split returned {len(pieces):,} chunks, more than {MAX_CHUNKS:,}"
            )
        # One map node for all the chunks (issue 16): a list of their arguments, not a Task each.
        arguments = [_arguments(piece) for piece in pieces]
        shared = ()
        if self.data is not None:  # held by the driver, given to every chunk (issue 21)
            value = self.data(**named(self.data, params))
            shared = (graph.put(f"{stage}/data", value, stage=stage),)
        parts = graph.starmap(f"{stage}/chunk", self.chunk, arguments, stage=stage, shared=shared)
        extra = named(self.reduce, params, skip_first=True) if self.reduce is not None else {}
        return graph.add(f"{stage}/reduce", reduce_chunks, self.reduce, extra, parts, stage=stage)

    def verify(self, params: Mapping[str, Any], value: Any) -> Verification | None:
        if self._verify is None:
            return None
        outcome = self._verify(value, **named(self._verify, params, skip_first=True))
        if isinstance(outcome, Verification):
            return outcome
        if isinstance(outcome, bool) or type(outcome).__name__ == "bool_":  # numpy's too
            return Verification(bool(outcome), f"its own check, {_qualified(self._verify)}")
        raise TypeError(
            f"{_qualified(self._verify)} returned {type(outcome).__name__}: a verify function"
            " returns True, False or a Verification"
        )

    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        summary = super().summarize(params, value)
        if self._summarize is None:
            return summary
        mine = self._summarize(value, **named(self._summarize, params, skip_first=True))
        if isinstance(mine, ResultSummary):
            return mine
        return ResultSummary(summary.value, str(mine), summary.digest)

    @contextlib.contextmanager
    def setup(self, params: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
        if self._setup is None:
            yield {}
            return
        manager = self._setup(**named(self._setup, params))
        if not hasattr(manager, "__enter__"):
            raise TypeError(
                f"{_qualified(self._setup)} returned {type(manager).__name__}, not a context"
                " manager (decorate it with @contextlib.contextmanager)"
            )
        with manager as values:
            if not isinstance(values, Mapping):
                raise TypeError(f"{_qualified(self._setup)} yielded {values!r}, not a dict")
            clash = sorted(set(values) & set(self.param_names))
            if clash:
                raise TypeError(f"{_qualified(self._setup)} yields job parameters: {clash}")
            yield dict(values)


def workload(chunk: Callable[..., Any] | None = None, /, **options: Any) -> Callable[..., Any]:
    """Declare a map-reduce workload on its chunk function: ``@workload(split=..., ...)``.

    Takes :class:`MapReduce`'s keyword arguments. The function itself is returned unchanged
    (so it still pickles by reference and can be called and tested as it is); the workload it
    declares rides on it, and a job names it by the function: ``file.py:hits``.
    """

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, WORKLOAD_ATTRIBUTE, MapReduce(func, **options))
        return func

    return mark if chunk is None else mark(chunk)


def reduce_chunks(
    reduce: Callable[..., Any] | None, extra: Mapping[str, Any], *results: Any
) -> Any:
    """The reduce task: the user's reduce of the chunks' values in chunk order (or the list)."""
    values = list(results)
    return values if reduce is None else reduce(values, **extra)


def params_of(
    split: Callable[..., Any], data: Callable[..., Any] | None = None
) -> tuple[Param, ...]:
    """The job parameters a split function declares by its signature (see the module doc),
    then those of the data function that split does not name (the size of what it loads)."""
    params = list(_declared(split, "split"))
    if data is not None:
        known = {p.name for p in params}
        params.extend(p for p in _declared(data, "data") if p.name not in known)
    if not params:
        raise TypeError(
            f"split function {_qualified(split)} takes no parameters: a job could not size it"
        )
    return tuple(params)


def _declared(func: Callable[..., Any], role: str) -> list[Param]:
    """The parameters ``func``'s signature declares (its keyword-only ones are setup's)."""
    where = f"{role} function {_qualified(func)}"
    try:
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func)
    except (TypeError, ValueError, NameError) as exc:
        raise TypeError(f"{where}: cannot read its parameters ({exc})") from None
    params = []
    for p in signature.parameters.values():
        if p.kind is p.KEYWORD_ONLY or (p.kind is p.VAR_KEYWORD and role == "data"):
            continue  # a value of setup, not a job parameter; or data taking every parameter
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(f"{where}: parameter {p.name!r} must be a plain named parameter")
        default = None if p.default is p.empty else p.default
        if p.default is None:
            raise TypeError(f"{where}: parameter {p.name!r} defaults to None, not a value")
        kind, choices = _kind(hints.get(p.name, type(default) if default is not None else None))
        if kind is None:
            raise TypeError(
                f"{where}: parameter {p.name!r} needs a type: annotate it int, float, str, bool"
                " or Literal['a', 'b']"
            )
        params.append(Param(p.name, kind, "", default, choices=choices))
    return params


def _kind(annotation: Any) -> tuple[type | None, tuple[str, ...] | None]:
    if annotation in _KINDS:
        return annotation, None
    if get_origin(annotation) is Literal:
        values = get_args(annotation)
        if values and all(isinstance(v, str) for v in values):
            return str, tuple(values)
    return None, None


@functools.cache
def _signature(func: Callable[..., Any], skip_first: bool) -> tuple[tuple[str, ...], bool]:
    """The names a function takes by keyword (its first parameter left out if asked, as the
    value it is given), and whether it takes ``**kwargs``."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return (), False
    takes_all = any(p.kind is p.VAR_KEYWORD for p in parameters)
    parameters = [p for p in parameters if p.kind is not p.VAR_KEYWORD]
    if skip_first and parameters:
        parameters = parameters[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.kind in kinds), takes_all


def named(func: Callable[..., Any], values: Mapping[str, Any], skip_first: bool = False) -> dict:
    """The entries of ``values`` that ``func`` names (all of them if it takes ``**kwargs``)."""
    names, takes_all = _signature(func, skip_first)
    if takes_all:
        return dict(values)
    return {name: values[name] for name in names if name in values}


def _arguments(piece: Any) -> tuple[Any, ...]:
    return piece if isinstance(piece, tuple) else (piece,)


def _qualified(func: Any) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _first_line(func: Any) -> str:
    return (inspect.getdoc(func) or "").strip().split("\n")[0]


def check_map_reduce(found: MapReduce, where: str) -> None:
    """Refuse, in one line, a map-reduce whose worker functions would not pickle by reference."""
    for role, func in found.task_functions().items():
        check_by_reference(func, role, where)
