"""The speedup's reference: which timed point every speedup is relative to, chosen explicitly.

A speedup ``T(ref) / T(N)`` means nothing until the reader knows ``ref``. Issue 14: after one
``runner submit`` per backend, a report printed "speedup 1.00, 100% efficiency" for each, every
backend measured against itself. So the reference is named in every report, in words and in
JSON, and chosen by one rule:

1. ``--baseline`` on ``runner report``: ``serial`` (``serial@1``), ``local@1``, ``BACKEND@N``
   (N workers, or nodes on a node sweep; ``local/gpu@1`` for a GPU series), or ``own``;
2. else the ``--baseline`` the sweep was run with (recorded in its labels);
3. else ``serial@1`` when serial runs were timed: the T(1) with no parallel machinery;
4. else ``own``: each backend against its own smallest size. A backend timed at one size then
   has no speedup, and when every backend was, the report says no speedup can be computed.

With a fixed reference ``B@N``, a point at size ``n`` has ``r = n / N``: efficiency ``S / r``
and Karp-Flatt use it, so ``local@2`` against ``serial@1`` is judged against 2x, not 1x.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cluster_runner.errors import UsageError

#: The reference that measures each backend against its own smallest size.
OWN = "own"
_SPEC = re.compile(r"^(?P<backend>[a-z][a-z0-9_]*(?:/gpu)?)(?:@(?P<size>[0-9]+))?$")


@dataclass(frozen=True)
class Baseline:
    """The speedup reference of a report, and why it is that one."""

    spec: str | None  # ``serial@1``, ``local@1``; ``own``; None when no speedup can be computed
    backend: str | None  # the reference point's series (``local``, ``local/gpu``), when fixed
    size: int | None  # its size on the axis, when fixed
    source: str  # --baseline, sweep, serial, own or none
    samples: tuple[float, ...] = ()  # the reference point's times, when fixed

    @property
    def fixed(self) -> bool:
        """Whether every series is measured against one point (not each against its own)."""
        return self.backend is not None


def parse_baseline(text: str) -> tuple[str, int | None]:
    """``"serial"`` -> ``("serial", 1)``, ``"dask@4"`` -> ``("dask", 4)``, ``"own"`` -> (own,
    None); raises a one-line :class:`UsageError` for anything else."""
    text = text.strip().lower()
    if text == OWN:
        return OWN, None
    match = _SPEC.match(text)
    if not match:
        raise UsageError(
            f"--baseline {text!r}: expected serial, BACKEND@N (e.g. local@1, dask@4) or own"
        )
    backend, size = match["backend"], match["size"]
    if size is None:
        if backend != "serial":
            raise UsageError(
                f"--baseline {text}: give the size too, e.g. {backend}@1 ({backend} at 1 worker)"
            )
        size = "1"
    if int(size) < 1:
        raise UsageError(f"--baseline {text}: the size must be at least 1")
    return backend, int(size)


def spec_text(backend: str, size: int | None) -> str:
    """The canonical spelling of a reference: ``serial@1``, ``own``."""
    return OWN if backend == OWN else f"{backend}@{size}"


def choose_baseline(
    given: str | None,
    sweep: Iterable[str | None],
    timed: dict[tuple[str, int], Sequence[float]],
    axis: str,
) -> Baseline:
    """The reference by the rule of the module docstring.

    ``timed`` maps each timed point ``(series, size)`` to its times; ``sweep`` holds the
    ``--baseline`` labels of the records. A reference that was asked for but not timed is a
    one-line :class:`UsageError` naming the points that were.
    """
    if axis not in ("workers", "nodes"):  # task counts (--chunks), or problem sizes
        if given:
            what = (
                "a granularity sweep (--chunks) compares task counts"
                if axis == "chunks"
                else f"a throughput sweep compares problem sizes ({axis})"
            )
            raise UsageError(
                f"--baseline: {what}, not sizes; it has no speedup to refer to a baseline"
            )
        return Baseline(None, None, None, "none")
    if given:
        backend, size = parse_baseline(given)
        return _fixed(backend, size, timed, "--baseline", f"--baseline {given}")
    labelled = [s for s in dict.fromkeys(sweep) if s]
    if len(labelled) == 1:
        backend, size = parse_baseline(labelled[0])
        if backend == OWN or (backend, size) in timed:
            return _fixed(backend, size, timed, "sweep", "")
    if ("serial", 1) in timed:
        return _fixed("serial", 1, timed, "serial", "")
    return Baseline(OWN, None, None, "own")


def _fixed(backend: str, size: int | None, timed: dict, source: str, asked: str) -> Baseline:
    if backend == OWN:
        return Baseline(OWN, None, None, source)
    if (backend, size) not in timed:
        have = ", ".join(spec_text(b, n) for b, n in sorted(timed)) or "none"
        raise UsageError(
            f"{asked}: no verified runs of {backend} at size {size} in these files"
            f" (timed: {have}); time it, e.g. runner submit --backend"
            f" {backend.split('/')[0]} --workers {size}, or choose another --baseline"
        )
    return Baseline(spec_text(backend, size), backend, size, source, tuple(timed[(backend, size)]))


def describe(baseline: Baseline, word: str) -> str:
    """The reference in words, for the report: what speedups are relative to, and why."""
    why = {
        "--baseline": "as asked with --baseline",
        "sweep": "the sweep's --baseline",
        "serial": "serial was timed: the T(1) with no parallel machinery; choose another"
        " with --baseline",
        "own": "choose one for all with --baseline, e.g. serial or local@1",
    }
    if baseline.spec is None:
        return ""
    if not baseline.fixed:
        return (
            f"Speedups are relative to each backend's own smallest size ({why[baseline.source]})."
            if baseline.source != "--baseline"
            else "Speedups are relative to each backend's own smallest size, as asked."
        )
    unit = word if baseline.size != 1 else word.rstrip("s")
    return (
        f"Speedups are relative to {baseline.backend} at {baseline.size} {unit}"
        f" ({why[baseline.source]})."
    )
