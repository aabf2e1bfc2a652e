"""Sweeps over any parameter (``--vary``, issue 19) in a report: a series per backend and variant,
and each variant's speedups against a reference of its own variant.

A record of a ``--vary`` sweep carries its variant's values in ``labels.params`` (``{"n": 1e9,
"chunks": 64}``). They are part of the point: the series is named ``local n=1e9 chunks=64``
(the backend first, so that ``local/gpu`` still reads as before), and two variants are never
one point. Only the throughput mode's axis parameter is left out of the name, being the axis.

The speedup's reference is chosen by the usual rule (:mod:`.baseline`) *within* each variant:
``--baseline serial@1`` measures ``local n=1e10`` against ``serial n=1e10`` at 1 worker, never
against another problem, and the default (``serial@1`` when serial was timed, else each
series' own smallest size) applies to each variant alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from cluster_runner.analysis.baseline import Baseline
from cluster_runner.results import RunRecord


def variant_of(record: RunRecord) -> str:
    """The record's ``--vary`` values as ``n=1e9 chunks=64`` (the axis parameter left out);
    ``""`` for a sweep without ``--vary``."""
    labels = record.labels
    if labels is None or not labels.params:
        return ""
    from cluster_runner.sweeps.vary import params_text

    return params_text({k: v for k, v in labels.params.items() if k != labels.axis})


def with_variant(series: str, variant: str) -> str:
    """A series name with its variant: ``local`` + ``n=1e9`` -> ``local n=1e9``."""
    return f"{series} {variant}" if variant else series


def split(series: str) -> tuple[str, str]:
    """``local/gpu n=1e9`` -> ``("local/gpu", "n=1e9")`` (backend names have no spaces)."""
    base, _, variant = series.partition(" ")
    return base, variant


def references(
    points: Iterable[Any],
    choose: Callable[[dict[tuple[str, int], Any]], Baseline],
) -> tuple[dict[str, Baseline], Baseline]:
    """The reference of each variant, and the one to describe the experiment by.

    ``choose(timed)`` is the usual rule (:func:`.baseline.choose_baseline` with the report's
    ``--baseline`` and the sweep's), given the timed points of one variant under their plain
    backend names. A fixed reference is then renamed with its variant, so that only points of
    that variant are measured against it.
    """
    groups: dict[str, dict[tuple[str, int], Any]] = {}
    for p in points:
        base, variant = split(p.backend)
        timed = groups.setdefault(variant, {})
        if p.time is not None:
            timed[(base, p.size)] = p.samples
    chosen: dict[str, Baseline] = {}
    for variant, timed in groups.items():
        ref = choose(timed)
        chosen[variant] = (
            replace(ref, backend=with_variant(ref.backend, variant)) if ref.fixed else ref
        )
    if not chosen:
        return {}, choose({})
    first = next(iter(chosen.values()))
    if len(chosen) > 1 and first.fixed:
        base = split(first.backend or "")[0]
        first = replace(first, backend=f"{base} of each variant")
    return chosen, first
