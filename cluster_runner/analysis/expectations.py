"""Baselines with tolerances: what a project expects of its own scaling, and the check against it.

ReFrame checks every performance figure against a reference with tolerances; this is that for
cluster-runner's results (issue 18). ``runner baseline save RESULTS --to FILE.toml`` writes, per
job, backend and size, the median run time with its exact interval (:mod:`.intervals`: lower
and upper bound, the level they reach) and its unit. ``runner check RESULTS --baseline
FILE.toml`` compares each point of new results with it:

- **pass** when the new median is at most the baseline's upper bound times ``1 + tolerance``
  (the baseline's own spread, widened by the tolerance: ``--tolerance``, else the one saved in
  the file, else 5%); a median below the lower bound times ``1 - tolerance`` passes as
  **faster** (time to save a new baseline);
- **fail** when it is above, or when the point ran but no run of it verified;
- **not run**: a point of the baseline the results do not have (said, not failed: a CI job
  may time a subset); **new**: a point the baseline does not have.

The file is TOML a person can read and edit: a header (format, version, when, from which
files, the tolerance), then one ``[[point]]`` table per job, backend and size. A baseline is
tied to the job's spec: checking results of another job, or of the same job with other
parameters (another spec digest), is refused in one line (exit 2), as is a file that is not
a baseline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cluster_runner.analysis.aggregate import Experiment, aggregate_records
from cluster_runner.analysis.identity import labels_of
from cluster_runner.errors import ResultsFileError, UsageError
from cluster_runner.results import RunRecord, now

#: The ``format`` of a baseline file, and the version this runner writes and reads.
FORMAT = "cluster-runner/baseline"
VERSION = 1
#: Default tolerance, as a fraction.
TOLERANCE = 0.05


@dataclass(frozen=True)
class Expected:
    """One point of a baseline: a job's backend at one size, its median time and interval."""

    job: str
    digest: str  # of the job's spec before the sweep scaled it
    mode: str
    axis: str
    backend: str  # the report's series: ``local``, ``local/gpu``
    size: int
    chunks: int | None
    median: float
    low: float
    high: float
    level: float  # the coverage of [low, high]
    runs: int
    unit: str = "s"
    transfer: str | None = None  # how driver inputs travelled (--transfer); None: no inputs

    @property
    def key(self) -> tuple:
        return (self.job, self.mode, self.axis, self.backend, self.size, self.chunks, self.transfer)

    @property
    def where(self) -> str:
        chunks = f" c{self.chunks}" if self.chunks is not None else ""
        transfer = f" ({self.transfer})" if self.transfer else ""
        return f"{self.job} {self.backend} x{self.size}{chunks}{transfer}"


@dataclass(frozen=True)
class BaselineFile:
    """A baseline as read: its points and the tolerance saved with them."""

    points: tuple[Expected, ...]
    tolerance: float = TOLERANCE
    path: str = ""


@dataclass(frozen=True)
class Checked:
    """One point checked: what was expected, what was measured, and the outcome."""

    where: str
    status: str  # pass, faster, fail, not run, new
    expected: Expected | None
    median: float | None = None  # measured
    low: float | None = None
    high: float | None = None
    limit: float | None = None  # the largest median that passes
    why: str = ""


@dataclass(frozen=True)
class CheckReport:
    rows: tuple[Checked, ...]
    tolerance: float
    baseline: str
    failures: list[Checked] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def experiments(records: Sequence[tuple[str, RunRecord]]) -> list[tuple[str | None, Experiment]]:
    """The records grouped into experiments (a job's spec, mode, axis and ``--transfer``), each
    aggregated, with how its driver inputs travelled (None: it had none)."""
    groups: dict[tuple, list[tuple[str, RunRecord]]] = {}
    for source, record in records:
        labels = labels_of(record)
        key = (record.job.name, labels.base_digest, labels.mode, labels.axis)
        groups.setdefault((*key, record.transfer_mode), []).append((source, record))
    return [(key[-1], aggregate_records(group)) for key, group in groups.items()]


def expectations(records: Sequence[tuple[str, RunRecord]]) -> list[Expected]:
    """Every timed point of the records, as a baseline's points."""
    out = []
    for transfer, exp in experiments(records):
        for series in exp.series:
            for p in series.timed:
                t = p.time
                out.append(
                    Expected(
                        exp.job, exp.digest, exp.mode, exp.axis, p.backend, p.size, p.chunks,
                        t.median, t.ci_low, t.ci_high, t.ci_level, p.runs, transfer=transfer,
                    )
                )  # fmt: skip
    if not out:
        raise ResultsFileError("no timed run verified in these results: nothing to save")
    return out


def baseline_text(points: Iterable[Expected], tolerance: float, sources: Sequence[str]) -> str:
    """The TOML of a baseline file (see the module docstring)."""
    lines = [
        "# cluster-runner baseline: per job, backend and size, the median run time and its",
        "# interval. Check new results against it with: runner check RESULTS --baseline FILE",
        f"format = {_toml(FORMAT)}",
        f"version = {VERSION}",
        f"saved = {_toml(now())}",
        f"from = [{', '.join(_toml(s) for s in sources)}]",
        f"tolerance = {_toml(tolerance)}  # a fraction: 0.05 is 5%",
    ]
    for p in points:
        lines += ["", "[[point]]"]
        for name in ("job", "digest", "mode", "axis", "backend", "size", "chunks", "transfer"):
            value = getattr(p, name)
            if value is not None:
                lines.append(f"{name} = {_toml(value)}")
        lines += [
            f"median = {_toml(p.median)}",
            f"low = {_toml(p.low)}",
            f"high = {_toml(p.high)}",
            f"level = {_toml(p.level)}  # the coverage of [low, high]",
            f"runs = {p.runs}",
            f"unit = {_toml(p.unit)}",
        ]
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def save_baseline(path: str | Path, text: str) -> Path:
    """Write the baseline file (refusing a folder, or a folder that does not exist)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--to {path} is a folder: name the baseline file, e.g. baseline.toml")
    if not path.parent.is_dir():
        raise UsageError(f"--to {path}: the folder {path.parent} does not exist")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the baseline to {path}: {exc.strerror or exc}") from None
    return path


def read_baseline(path: str | Path) -> BaselineFile:
    """A baseline file, checked: one line naming what is wrong (exit 2) if it is not one."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"baseline {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read baseline {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"baseline {path} is not TOML: {exc}") from None
    if data.get("format") != FORMAT:
        raise UsageError(f"{path} is not a cluster-runner baseline (no format = {FORMAT!r})")
    if data.get("version") != VERSION:
        raise UsageError(f"baseline {path} has version {data.get('version')!r}; this runner"
                         f" reads version {VERSION}")  # fmt: skip
    points = []
    for number, item in enumerate(data.get("point", []), start=1):
        try:
            points.append(_expected(item))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"baseline {path}: point {number} is malformed ({exc})") from None
    if not points:
        raise UsageError(f"baseline {path} holds no points")
    tolerance = data.get("tolerance", TOLERANCE)
    if not isinstance(tolerance, int | float) or not 0 <= tolerance <= 10:
        raise UsageError(f"baseline {path}: tolerance must be a fraction such as 0.05")
    return BaselineFile(tuple(points), float(tolerance), str(path))


def _expected(item: dict) -> Expected:
    text = {k: item[k] for k in ("job", "digest", "mode", "axis", "backend")}
    if not all(isinstance(v, str) for v in text.values()):
        raise TypeError("job, digest, mode, axis and backend must be strings")
    numbers = {k: item[k] for k in ("median", "low", "high", "level")}
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers.values()):
        raise ValueError("median, low, high and level must be finite numbers")
    if not 0 < numbers["low"] <= numbers["median"] <= numbers["high"]:
        raise ValueError("expected 0 < low <= median <= high")
    size, chunks, runs = item["size"], item.get("chunks"), item.get("runs", 0)
    if type(size) is not int or (chunks is not None and type(chunks) is not int):
        raise TypeError("size and chunks must be integers")
    transfer = item.get("transfer")
    if transfer not in (None, "share", "copy"):
        raise ValueError("transfer must be share or copy")
    return Expected(**text, size=size, chunks=chunks, **{k: float(v) for k, v in numbers.items()},
                    runs=int(runs), unit=str(item.get("unit", "s")), transfer=transfer)  # fmt: skip


def check_results(
    records: Sequence[tuple[str, RunRecord]], baseline: BaselineFile, tolerance: float | None
) -> CheckReport:
    """Every point of ``records`` against ``baseline`` (see the module docstring)."""
    tol = baseline.tolerance if tolerance is None else tolerance
    expected = {p.key: p for p in baseline.points}
    jobs = {p.job: p.digest for p in baseline.points}
    rows: list[Checked] = []
    seen: set[tuple] = set()
    found = experiments(records)
    exps = [exp for _, exp in found]
    for transfer, exp in found:
        if exp.job not in jobs:
            raise UsageError(
                f"baseline {baseline.path} holds job(s) {', '.join(sorted(jobs))}; these results"
                f" ran job {exp.job}: save a baseline for it first"
            )
        digests = {p.digest for p in baseline.points if p.job == exp.job}
        if exp.digest not in digests:
            raise UsageError(
                f"baseline {baseline.path} was saved for another spec of job {exp.job} (digest"
                f" {', '.join(sorted(digests))}); these results ran spec {exp.digest}: the"
                " parameters differ"
            )
        saved = {p.transfer for p in baseline.points if p.job == exp.job and p.digest == exp.digest}
        if transfer not in saved:
            shown = ", ".join(sorted(t or "no inputs" for t in saved))
            raise UsageError(
                f"baseline {baseline.path} was saved for job {exp.job} with transfer {shown};"
                f" these results ran with transfer {transfer or 'no inputs'}: compare like with"
                " like (--transfer), or save a baseline for these"
            )
        for series in exp.series:
            for p in series.points:
                key = (exp.job, exp.mode, exp.axis, p.backend, p.size, p.chunks, transfer)
                seen.add(key)
                rows.append(_check_point(key, expected.get(key), p, tol))
    if not any(r.expected is not None for r in rows):
        raise UsageError(
            f"no point of these results is in baseline {baseline.path}: it holds"
            f" {', '.join(p.where for p in baseline.points)}"
        )
    for key, p in expected.items():
        if key not in seen and any(e.job == p.job for e in exps):
            rows.append(Checked(p.where, "not run", p, why="in the baseline, not in these results"))
    failures = [r for r in rows if r.status == "fail"]
    return CheckReport(tuple(rows), tol, baseline.path, failures)


def _check_point(key: tuple, expected: Expected | None, p, tol: float) -> Checked:
    where = f"{key[0]} {p.backend} x{p.size}" + (f" c{p.chunks}" if p.chunks is not None else "")
    where += f" ({key[-1]})" if key[-1] else ""
    t = p.time
    if expected is None:
        median = t.median if t else None
        return Checked(where, "new", None, median, why="not in the baseline")
    limit = expected.high * (1 + tol)
    if t is None:
        why = "; ".join(p.problems) or "no timed run verified"
        return Checked(where, "fail", expected, limit=limit, why=why)
    common = {"median": t.median, "low": t.ci_low, "high": t.ci_high, "limit": limit}
    if t.median > limit:
        why = (f"median {t.median:.4g} s is {t.median / expected.median:.3g}x the baseline's"
               f" {expected.median:.4g} s, above {limit:.4g} s (its upper bound"
               f" {expected.high:.4g} s + {tol:.0%})")  # fmt: skip
        return Checked(where, "fail", expected, why=why, **common)
    if t.median < expected.low * (1 - tol):
        why = (f"median {t.median:.4g} s is below the baseline's lower bound"
               f" {expected.low:.4g} s - {tol:.0%}: faster; save a new baseline?")  # fmt: skip
        return Checked(where, "faster", expected, why=why, **common)
    why = f"median {t.median:.4g} s within {limit:.4g} s"
    return Checked(where, "pass", expected, why=why, **common)
