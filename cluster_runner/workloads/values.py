"""What the runner can say about a value it knows nothing of: a digest, a short display, the
numbers in it, and whether two such values agree.

A built-in workload summarises its own result (``Workload.summarize``). A user's workload need
not: :func:`summarize_value` gives any result a
:class:`~cluster_runner.workloads.base.ResultSummary` by default, so that the reference check
(:mod:`cluster_runner.runs.reference`) can compare it bit for bit and a table can show it.

The digest is a sha256 of the value's exact bits, written so that equal values give equal
digests in any process on any machine with the same library versions:

- numbers by their ``repr`` (a float's is exact), tagged by type (``1`` and ``1.0`` and ``True``
  differ); numpy scalars and arrays by dtype, shape and bytes (C order);
- strings by their UTF-8 bytes, ``bytes`` as they are;
- lists and tuples element by element, dicts by their items sorted by the key's digest, sets
  by their elements' sorted digests (a set's iteration order changes between processes);
- anything else by its pickle (protocol 4), which is exact but not promised stable across
  library versions: such a workload should override ``summarize`` (the hook) with a digest of
  its own.

:func:`agree` compares two values within a relative and absolute tolerance, leaf by leaf
(``numpy.isclose``'s rule), for workloads whose results depend on the order of floating-point
operations and declare how much.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import pickle
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cluster_runner.workloads.base import ResultSummary

#: Most numbers a result's JSON form holds; a larger result is kept as its digest alone.
JSON_NUMBERS = 1_000
#: Deepest nesting a result's JSON form keeps (a results file refuses records nested too deep).
JSON_DEPTH = 6
#: Longest display a table shows for a value.
DISPLAY_CHARS = 72


def digest_value(value: Any) -> str:
    """sha256 of the exact bits of ``value`` (see the module docstring for the rules)."""
    hasher = hashlib.sha256()
    _feed(hasher, value)
    return hasher.hexdigest()


def _feed(hasher: Any, value: Any) -> None:
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.ascontiguousarray(value)
        if array.dtype.hasobject:
            hasher.update(b"O" + str(array.shape).encode())
            for item in array.ravel():
                _feed(hasher, item)
            return
        hasher.update(f"a{array.dtype.str}{array.shape}".encode() + array.tobytes())
    elif value is None or isinstance(value, (bool, int, float, complex)):
        hasher.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        hasher.update(f"s{len(data)}:".encode() + data)
    elif isinstance(value, (bytes, bytearray)):
        hasher.update(f"b{len(value)}:".encode() + bytes(value))
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{'l' if isinstance(value, list) else 't'}{len(value)}[".encode())
        for item in value:
            _feed(hasher, item)
        hasher.update(b"]")
    elif isinstance(value, Mapping):
        items = sorted((digest_value(k), v) for k, v in value.items())
        hasher.update(f"d{len(items)}{{".encode())
        for key, item in items:
            hasher.update(key.encode())
            _feed(hasher, item)
        hasher.update(b"}")
    elif isinstance(value, (set, frozenset)):
        hasher.update(f"S{len(value)}{{".encode())
        for item in sorted(digest_value(v) for v in value):
            hasher.update(item.encode())
        hasher.update(b"}")
    else:
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        hasher.update(f"p{name}:".encode() + pickle.dumps(value, protocol=4))


def json_value(value: Any) -> Any:
    """``value`` as JSON (numbers, strings, lists, dicts with string keys), or None if it is not
    small and plain enough: what a record's ``result`` holds."""
    try:
        out, count = _json(value, 0, 0)
    except (_TooBig, RecursionError):
        return None
    return out if count <= JSON_NUMBERS else None


class _TooBig(Exception):
    pass


def _json(value: Any, count: int, depth: int) -> tuple[Any, int]:
    if count > JSON_NUMBERS or depth > JSON_DEPTH:
        raise _TooBig
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str) and len(value) > 200:
            raise _TooBig
        return value, count
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise _TooBig  # a results file holds 64-bit integers at most
        return value, count + 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _TooBig  # JSON has no NaN or infinity
        return value, count + 1
    if isinstance(value, np.ndarray):
        if value.size > JSON_NUMBERS or value.dtype.kind not in "biuf":
            raise _TooBig
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            item, count = _json(item, count, depth + 1)
            out.append(item)
        return out, count
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        mapping = {}
        for key, item in value.items():
            mapping[key], count = _json(item, count, depth + 1)
        return mapping, count
    raise _TooBig


def display_value(value: Any, limit: int = DISPLAY_CHARS) -> str:
    """A short line for a table: numbers, numpy arrays, dicts and lists of them, else a type."""
    text = _display(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _display(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, np.ndarray):
        shape = "x".join(map(str, value.shape)) or "scalar"
        if value.size and value.dtype.kind in "biuf":
            finite = value[np.isfinite(value)] if value.dtype.kind == "f" else value
            mean = f", mean {float(np.mean(finite)):.6g}" if finite.size else ""
            return f"{value.dtype} array {shape}{mean}"
        return f"{value.dtype} array {shape}"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_display(k)}: {_display(v)}" for k, v in list(value.items())[:6])
        more = ", ..." if len(value) > 6 else ""
        return f"{{{inner}{more}}} ({len(value):,} keys)"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_display(v) for v in value[:6])
        more = ", ..." if len(value) > 6 else ""
        kind = "list" if isinstance(value, list) else "tuple"
        return f"[{inner}{more}] ({len(value):,}-item {kind})"
    return f"a {type(value).__qualname__}"


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` pairs of a value's structure: arrays and scalars are leaves; lists,
    tuples and dicts (by sorted key) are walked, each adding to the path."""
    if isinstance(value, Mapping):
        yield path + "{", len(value)
        for key in sorted(value, key=repr):
            yield from leaves(value[key], f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        yield path + "[", len(value)
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def agree(value: Any, reference: Any, rtol: float, atol: float) -> str | None:
    """None when ``value`` equals ``reference`` within the tolerance; else where it does not.

    Numbers and numeric arrays agree where ``|value - reference| <= atol + rtol * |reference|``
    (element by element, NaNs where both have them); other leaves must be equal; the structure
    (keys, lengths, shapes) must be the same.
    """
    mine, theirs = list(leaves(value)), list(leaves(reference))
    if [p for p, _ in mine] != [p for p, _ in theirs]:
        return "the structure differs (keys, lengths or nesting)"
    for (path, a), (_, b) in zip(mine, theirs, strict=True):
        where = path or "the value"
        if _numeric(a) and _numeric(b):
            x, y = np.asarray(a), np.asarray(b)
            if x.shape != y.shape:
                return f"{where}: shape {x.shape} against {y.shape}"
            close = np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
            if not np.all(close):
                bad = int(np.size(close) - np.count_nonzero(close))
                worst = float(np.max(np.abs(x.astype(float) - y.astype(float))))
                return f"{where}: {bad} number(s) differ, by up to {worst:.3g}"
        elif digest_value(a) != digest_value(b):
            return f"{where}: {display_value(a, 30)} against {display_value(b, 30)}"
    return None


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "iufc"
    return isinstance(value, (numbers.Number, np.number))


def summarize_value(value: Any) -> ResultSummary:
    """The default summary of any result: its JSON form if small, a short display, a digest."""
    from cluster_runner.workloads.base import ResultSummary

    return ResultSummary(json_value(value), display_value(value), digest_value(value))
