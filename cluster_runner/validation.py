"""One validation mechanism for everything a user writes: pydantic v2 models, one-line errors.

Job specs, workload parameters, cluster configs, runner profiles and backend options are each
declared once as a pydantic model next to the data it checks (field types, bounds, defaults,
``extra="forbid"``), and checked here by :func:`validate`. The first problem pydantic finds (an
unknown key before any other) becomes one line, in the runner's words, saying all the field
takes whichever check failed (``where: 'port' must be an integer from 0 to 65535, not 70000``),
raised as the caller's :class:`~cluster_runner.errors.UsageError` subclass: never a pydantic
traceback, never a list of ten errors for one typo. A caller whose users know other words (job
files: ``n must be >= 1, got 0``) passes a ``describe`` hook.

Two choices that pydantic's lax mode would make differently, and that a TOML file needs:

- an integral float is an integer (TOML writes ``1e9`` as a float; pydantic accepts
  ``1e9`` for an ``int`` field and refuses ``1.5``), but a bool is never a number
  (:data:`Integer`, :data:`Number` refuse ``true``, which pydantic would read as 1);
- strings are not numbers (``"5"`` in a file is a mistake), and only ``true`` and ``false``
  are booleans (:data:`Boolean`; pydantic would take ``1`` and ``"yes"``).

pydantic is imported when something is validated, never by ``runner --help``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict, ValidationError
from pydantic_core import PydanticCustomError

from cluster_runner.errors import UsageError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo
    from pydantic_core import ErrorDetails

Model = TypeVar("Model", bound=BaseModel)

#: How every model of the runner is configured: unknown keys refused, frozen once made.
STRICT_CONFIG = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _integer_input(value: Any) -> Any:
    # A type error (not a value error), so that it is worded like pydantic's own int errors.
    if isinstance(value, (bool, str, bytes)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _number_input(value: Any) -> Any:
    if isinstance(value, (bool, str, bytes)):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


#: An ``int`` field that takes integral floats (TOML's ``1e9``) and refuses bools and strings.
Integer = Annotated[int, BeforeValidator(_integer_input)]
#: A ``float`` field that takes ints and refuses bools and strings.
Number = Annotated[float, BeforeValidator(_number_input)]
#: A ``bool`` field that takes ``true`` and ``false`` only (pydantic would take 1 and "yes").
Boolean = Annotated[bool, Strict()]

#: Error kinds that say "not of the field's type", whatever pydantic's reason.
TYPE_ERRORS = ("int_", "float_", "bool_", "string_type", "finite_number", "literal_error", "enum")


def validate(
    model: type[Model],
    data: Mapping[str, Any],
    *,
    where: str,
    error: type[UsageError] = UsageError,
    describe: Callable[[ErrorDetails], str | None] | None = None,
) -> Model:
    """``model`` made from ``data``, or ``error`` with one line naming the first problem.

    ``where`` starts the line (a file name, ``stage 'primes'``, ``--workers``). ``describe``
    may word an error its own way (return ``None`` to keep the standard wording). An unknown
    key is reported before anything else: it is most often a misspelt key, and then it is
    also the cause of any "missing" error (the hand-written validators did the same).
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        details = exc.errors(include_url=False)
        first = min(details, key=lambda d: d["type"] != "extra_forbidden")
        text = (describe(first) if describe else None) or problem_text(first, model)
        raise error(f"{where}: {text}" if where else text) from None


def field_name(detail: ErrorDetails) -> str:
    """The dotted name of the field an error is about (``tls.ca_file``), as the user wrote it."""
    return ".".join(str(part) for part in detail["loc"] if not isinstance(part, int)) or "value"


def is_type_error(detail: ErrorDetails) -> bool:
    """Whether the error says the value is not of the field's type (or not one of its values)."""
    return detail["type"].startswith(TYPE_ERRORS)


def plain(value: Any) -> Any:
    """A number as the user meant it: TOML's ``1e13`` (a float) shown as ``10000000000000``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def problem_text(detail: ErrorDetails, model: type[BaseModel] | None = None) -> str:
    """One error of pydantic's in the runner's words: what is wrong and what was given.

    With ``model``, a type or range error says what the field takes, in full (``'port' must be
    an integer from 0 to 65535, not 70000``), whichever of its checks failed.
    """
    name = field_name(detail)
    kind = detail["type"]
    given = detail.get("input")
    if kind == "missing":
        return f"missing required key {name!r}"
    if kind == "extra_forbidden":
        known = known_keys(model, detail["loc"][:-1]) if model is not None else []
        return f"unknown key {name!r}" + (f" (known: {', '.join(known)})" if known else "")
    message = str(detail["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and message.startswith("must "):
        return f"{name!r} {message}, not {given!r}"  # a validator's own words
    wanted = expectation(model, detail["loc"]) if model is not None else None
    if wanted is not None:
        return f"{name!r} must be {wanted}, not {given!r}"
    ctx = detail.get("ctx") or {}
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}
    if kind in bounds or kind == "less_than":
        op = bounds.get(kind, "<")
        limit = next(iter(ctx.values()), "?")
        return f"{name!r} must be {op} {limit}, not {plain(given)!r}"
    if kind.startswith(("int_", "finite_number")):
        return f"{name!r} must be an integer, not {given!r}"
    if kind.startswith("float_"):
        return f"{name!r} must be a number, not {given!r}"
    if kind.startswith("bool_"):
        return f"{name!r} must be true or false, not {given!r}"
    if kind.startswith("string_"):
        return f"{name!r} must be a string, not {given!r}"
    if kind in ("literal_error", "enum"):
        return f"{name!r} must be one of {ctx.get('expected', '?')}, not {given!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{name!r} must be a table, not {given!r}"
    if kind == "list_type":
        return f"{name!r} must be a list, not {given!r}"
    return f"{name!r}: {message}, not {given!r}"


def expectation(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """What the field at ``loc`` takes, in words (``an integer >= 1``); None if unknown."""
    info: FieldInfo | None = None
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        info = fields[part]
        current = _model_in(info.annotation)
    return None if info is None else _phrase(info)


def known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the table at ``loc`` takes, dotted as the user writes them (``tls.cert``)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        current = _model_in(fields[part].annotation) if part in fields else None
    prefix = "".join(f"{part}." for part in loc if not isinstance(part, int))
    return sorted(prefix + key for key in getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *_alternatives(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _alternatives(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return ()


def _phrase(info: FieldInfo) -> str | None:
    kind = (_alternatives(info.annotation) or (info.annotation,))[0]
    if get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(kind))
    if kind is bool:
        return "true or false"
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return "a table"
    what = {int: "an integer", float: "a number", str: "a string"}.get(kind)
    if what is None:
        return None
    limits = {
        op: getattr(item, op) for item in info.metadata for op in ("ge", "gt", "le", "lt")
        if getattr(item, op, None) is not None
    }  # fmt: skip
    low = [f"{sym} {plain(limits[op])}" for op, sym in (("ge", ">="), ("gt", ">")) if op in limits]
    high = [f"{sym} {plain(limits[op])}" for op, sym in (("le", "<="), ("lt", "<")) if op in limits]
    if "ge" in limits and "le" in limits:
        return f"{what} from {plain(limits['ge'])} to {plain(limits['le'])}"
    return " ".join([what, " and ".join([*low, *high])]) if low or high else what
