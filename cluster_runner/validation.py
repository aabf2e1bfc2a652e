"""One validation mechanism for everything a user writes: pydantic v2 models, one-line errors.

Job specs, workload parameters, cluster configs, runner profiles and backend options are each
declared once as a pydantic model next to the data it checks (field types, bounds, defaults,
``extra="forbid"``), and checked here by :func:`validate`. The first problem pydantic finds
becomes one line, in the runner's words (``where: 'nodes' must be an integer >= 1, not 0``),
raised as the caller's :class:`~cluster_runner.errors.UsageError` subclass: never a pydantic
traceback, never a list of ten errors for one typo.

Two choices that pydantic's lax mode would make differently, and that a TOML file needs:

- an integral float is an integer (TOML writes ``1e9`` as a float; pydantic accepts
  ``1e9`` for an ``int`` field and refuses ``1.5``), but a bool is never a number
  (:data:`Integer`, :data:`Number` refuse ``true``, which pydantic would read as 1);
- strings are not numbers (``strict`` number types: ``"5"`` in a file is a mistake).

pydantic is imported when something is validated, never by ``runner --help``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from cluster_runner.errors import UsageError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

Model = TypeVar("Model", bound=BaseModel)

#: How every model of the runner is configured: unknown keys refused, frozen once made.
STRICT_CONFIG = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _integer_input(value: Any) -> Any:
    if isinstance(value, (bool, str, bytes)):
        raise ValueError("must be an integer")
    return value


def _number_input(value: Any) -> Any:
    if isinstance(value, (bool, str, bytes)):
        raise ValueError("must be a number")
    return value


#: An ``int`` field that takes integral floats (TOML's ``1e9``) and refuses bools and strings.
Integer = Annotated[int, BeforeValidator(_integer_input)]
#: A ``float`` field that takes ints and refuses bools and strings.
Number = Annotated[float, BeforeValidator(_number_input)]


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
    may word an error its own way (return ``None`` to keep the standard wording).
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        details = exc.errors(include_url=False)
        first = details[0]
        text = (describe(first) if describe else None) or problem_text(first)
        raise error(f"{where}: {text}" if where else text) from None


def field_name(detail: ErrorDetails) -> str:
    """The dotted name of the field an error is about (``tls.ca_file``), as the user wrote it."""
    return ".".join(str(part) for part in detail["loc"] if not isinstance(part, int)) or "value"


def problem_text(detail: ErrorDetails) -> str:
    """One error of pydantic's in the runner's words: what is wrong and what was given."""
    name = field_name(detail)
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    given = detail.get("input")
    if kind == "missing":
        return f"missing required key {name!r}"
    if kind == "extra_forbidden":
        return f"unknown key {name!r}"
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        return f"{name!r} must be {op} {ctx.get(key)}, not {given!r}"
    if kind in ("literal_error", "enum"):
        return f"{name!r} must be one of {ctx.get('expected', '?')}, not {given!r}"
    if kind.startswith("int"):
        return f"{name!r} must be an integer, not {given!r}"
    if kind.startswith("float"):
        return f"{name!r} must be a number, not {given!r}"
    if kind.startswith("bool"):
        return f"{name!r} must be true or false, not {given!r}"
    if kind.startswith("string"):
        return f"{name!r} must be a string, not {given!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{name!r} must be a table, not {given!r}"
    message = str(detail["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and message.startswith("must "):
        return f"{name!r} {message}, not {given!r}"
    return f"{name!r}: {message}, not {given!r}"
