"""``--vary NAME=V1,V2,...``: sweeps over any parameter of the job, and how the lists combine.

Each ``--vary`` names one parameter as ``--set`` does (``n``: every stage that has one;
``primes.n``: that stage's) and the values it takes. Several ``--vary`` combine as their product
(every value of one with every value of the others), or, with ``--zip``, pair up in order (the
lists must be equally long): ``--vary n=1e9,1e10 --vary chunks=64,256`` times four variants, with
``--zip`` two (``n=1e9 chunks=64``, ``n=1e10 chunks=256``). The variants then combine with the
sweep's own axis (workers or nodes): each size times every variant.

A variant's values go into its records (``labels.params``), where they are part of the point:
a report shows one series per backend and variant (``local n=1e9 chunks=64``), and ``--resume``
knows which variants a file already holds. Values are read as ``--set`` reads them (TOML:
``1e9`` is a number, ``gpu`` a string).
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cluster_runner.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Most variants one sweep may time (the product of the --vary lists).
MAX_VARIANTS = 1000
_NAME = re.compile(r"^(?:[A-Za-z_][\w-]*\.)?[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Variation:
    """The variants a sweep times, one tuple of values each, in the order of ``names``."""

    names: tuple[str, ...]  # the parameters, as --set names them (``n``, ``primes.n``)
    variants: tuple[tuple[Any, ...], ...]  # one value per name, per variant
    texts: tuple[tuple[str, ...], ...]  # the same values as the user typed them

    def overrides(self, index: int) -> list[str]:
        """The ``--set`` assignments of variant ``index``."""
        return [f"{n}={t}" for n, t in zip(self.names, self.texts[index], strict=True)]

    def params(self, index: int) -> dict[str, Any]:
        """Variant ``index`` as ``name -> value`` (what its records' ``labels.params`` hold)."""
        return dict(zip(self.names, self.variants[index], strict=True))


def parse_vary(items: Sequence[str], zip_lists: bool = False) -> Variation | None:
    """The variants of ``--vary`` options (``zip_lists``: ``--zip``); None without any.

    Each mistake is a one-line :class:`UsageError`: a malformed item, a parameter varied
    twice, an empty or repeated value, lists of different lengths for ``--zip``, too many
    variants.
    """
    if not items:
        if zip_lists:
            raise UsageError("--zip pairs the --vary lists: give two or more --vary")
        return None
    names: list[str] = []
    values: list[list[Any]] = []
    texts: list[list[str]] = []
    for item in items:
        name, sep, rest = item.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise UsageError(
                f"--vary {item!r}: expected NAME=V1,V2,... (e.g. --vary n=1e9,1e10 or"
                " --vary primes.chunks=64,256)"
            )
        if name in names:
            raise UsageError(f"--vary {name}: given twice; list all its values in one --vary")
        raw = [part.strip() for part in rest.split(",")]
        if not rest.strip() or any(not part for part in raw):
            raise UsageError(f"--vary {item!r}: an empty value; separate values with commas")
        parsed = [_value(part) for part in raw]
        if len({repr(v) for v in parsed}) != len(parsed):
            raise UsageError(f"--vary {item!r}: a value is given twice")
        names.append(name)
        values.append(parsed)
        texts.append(raw)
    if zip_lists:
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            shown = ", ".join(f"{n} ({len(v)})" for n, v in zip(names, values, strict=True))
            raise UsageError(
                f"--zip pairs the --vary lists in order: their lengths differ: {shown}"
            )
        combos = list(zip(*range_lists(values), strict=True))
    else:
        combos = list(itertools.product(*range_lists(values)))
    if len(combos) > MAX_VARIANTS:
        raise UsageError(
            f"--vary: {len(combos)} variants is more than {MAX_VARIANTS}; vary fewer values"
            " (or pair them with --zip)"
        )
    return Variation(
        names=tuple(names),
        variants=tuple(tuple(values[k][i] for k, i in enumerate(c)) for c in combos),
        texts=tuple(tuple(texts[k][i] for k, i in enumerate(c)) for c in combos),
    )


def range_lists(values: list[list[Any]]) -> list[range]:
    """Indices into each list (combinations are made of indices, then looked up)."""
    return [range(len(v)) for v in values]


def _value(text: str) -> Any:
    """A value as ``--set`` reads it: TOML, else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, ValueError):
        return text


def value_text(value: Any) -> str:
    """A value as a person writes it (``1e9``, ``64``, ``gpu``), for labels and reports."""
    from cluster_runner.analysis.identity import value_text as shown

    return shown(value).strip("'") if isinstance(value, str) else shown(value)


def params_text(params: Any) -> str:
    """``chunks=64 n=1e9``: a variant's values, by name (as records, whose keys are sorted,
    give them back)."""
    items = params.items() if hasattr(params, "items") else params
    return " ".join(f"{name}={value_text(value)}" for name, value in sorted(items))
