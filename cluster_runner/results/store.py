"""Results files: where run records are written as each run ends, and read back.

A results file holds one JSON object per line (JSON Lines), one per run, appended and
``fsync``-ed the moment the run ends, so a sweep that is interrupted, or a machine that loses
power, keeps every run that finished. Records are plain JSON: they are never pickled, and
reading one never runs code.

The format of a record, its types and the history of its versions live in
:mod:`cluster_runner.results.records`, next to :data:`SCHEMA_VERSION`.

A results file is only ever appended to. Its last line may be cut short by a crash or a power
loss (the writer died mid-write); readers skip such a line with a warning, and refuse any other
line that is not a record of this format.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cluster_runner.errors import ResultsFileError
from cluster_runner.results.records import RECORD_FORMAT, SCHEMA_VERSION, RunRecord


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def results_path(out_dir: str | Path, job: str, backend: str) -> Path:
    """A fresh file name under ``out_dir`` for one command's records."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(out_dir) / f"{job}-{backend}-{stamp}-{new_id()[:6]}.jsonl"


class ResultsWriter:
    """Appends records to a JSON Lines file, each flushed and fsync-ed before ``append`` returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise ResultsFileError(
                f"cannot write results to {self.path}: {exc.strerror} (choose another --out)"
            ) from None
        self.count = 0

    def append(self, record: RunRecord | Mapping[str, Any]) -> None:
        """Write one record (a mapping is read as a record's JSON first, so that what is written
        is always a record) and make it durable before returning."""
        if not isinstance(record, RunRecord):
            record = RunRecord.from_json(record)
        line = json.dumps(record.to_json(), sort_keys=True, default=_jsonable)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays as plain JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_records(paths: Iterable[str | Path]) -> Iterator[RunRecord]:
    """Every record of the given files (or of the ``*.jsonl`` files in given folders).

    A last line that is cut short (the writer died mid-line: the start of a JSON object, or
    zeros) is skipped with a warning; any other line that is not one of our records makes the
    file "not ours", a one-line error.
    """
    for path in results_files(paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ResultsFileError(f"cannot read results file {path}: {exc}") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines) and _cut_short(line):
                    warnings.warn(f"{path}:{number}: skipped a truncated last line", stacklevel=2)
                    continue
                raise ResultsFileError(
                    f"{path}:{number} is not JSON: not a results file of cluster-runner"
                ) from None
            if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
                raise ResultsFileError(f"{path}:{number} is not a cluster-runner record")
            if record.get("schema_version", 0) > SCHEMA_VERSION:
                raise ResultsFileError(
                    f"{path}:{number} has schema version"
                    f" {record['schema_version']}, newer than this runner"
                    f" reads ({SCHEMA_VERSION}): upgrade cluster-runner"
                )
            try:
                typed = RunRecord.from_json(record)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ResultsFileError(
                    f"{path}:{number} is not a complete cluster-runner record"
                    f" ({type(exc).__name__}: {exc})"
                ) from None
            yield typed


def _cut_short(line: str) -> bool:
    """Whether a line that is not JSON looks like one of ours cut short by a crash: the start
    of a JSON object, or the zeros a file system may leave after a power loss."""
    return line.lstrip().startswith("{") or not line.strip("\x00 \t\r")


def results_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The files named, with each folder replaced by the ``*.jsonl`` files in it (sorted)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise ResultsFileError(f"{path} holds no *.jsonl results files")
            yield from found
        elif path.exists():
            yield path
        else:
            raise ResultsFileError(f"results file {path} does not exist")
