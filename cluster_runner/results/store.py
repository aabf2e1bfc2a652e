"""Results files: where run records are written as each run ends, and read back.

A results file holds one JSON object per line (JSON Lines), one per run, appended and
``fsync``-ed the moment the run ends, so a sweep that is interrupted, or a machine that loses
power, keeps every run that finished. Records are plain JSON: they are never pickled, and
reading one never runs code.

The format of a record, its types and the history of its versions live in
:mod:`cluster_runner.results.records`, next to :data:`SCHEMA_VERSION`.

A results file is only ever appended to. Its last line may be cut short by a crash or a power
loss (the writer died mid-write); readers skip such a line with a warning, and refuse any other
line that is not a record of this format, or that is one but malformed (:mod:`.schema`).

Where a file goes is decided here too, and only here: always directly in the ``--out`` folder,
named after the job and the backend with every character that could make a path (``/``,
``..``, a NUL) replaced (:func:`safe_name`). The folder is checked before anything starts
(:func:`check_out_dir`), and neither it nor the file is made until the first record is written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pydantic_core

from cluster_runner.errors import ResultsFileError
from cluster_runner.results.records import RECORD_FORMAT, SCHEMA_VERSION, RunRecord
from cluster_runner.results.schema import check_record
from cluster_runner.results.stages import Timeline


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


#: What a results file name keeps of a job's or a backend's name: letters, digits, ``._+-``.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
#: Longest name part kept in a results file name.
_NAME_MAX = 64


def safe_name(text: str, fallback: str = "job") -> str:
    """``text`` made into one plain file name part: no folder, no hidden file, no option.

    Every run of characters other than letters, digits and ``._+-`` becomes ``_``; dots,
    dashes and underscores at either end go (``../x`` cannot climb, ``-x`` is not an option,
    ``.x`` is not hidden); the rest is cut to :data:`_NAME_MAX` characters.
    """
    name = _UNSAFE.sub("_", text).lstrip("._-")[:_NAME_MAX].rstrip("._-")
    return name or fallback


def check_out_dir(out_dir: str | Path) -> Path:
    """The ``--out`` folder, checked before anything starts; one line if it cannot be used.

    It need not exist yet (it is made when the first record is written), but then the nearest
    folder above it that exists must be one we can write in.
    """
    text = str(out_dir)
    if not text.strip():
        raise ResultsFileError(
            "--out is empty: name a folder for the results file (the default is results)"
        )
    if "\x00" in text:
        raise ResultsFileError(f"--out {text!r} holds a NUL character: not a folder name")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ResultsFileError(f"--out {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ResultsFileError(f"--out {path}: this user cannot write in that folder")
        return path
    above = path.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        raise ResultsFileError(
            f"--out {path} cannot be made: {above} is not a folder this user can write in"
        )
    return path


def results_path(out_dir: str | Path, job: str, backend: str) -> Path:
    """A fresh file name in ``out_dir`` for one command's records, checked (see
    :func:`check_out_dir`); always directly in ``out_dir``, whatever the names hold."""
    folder = check_out_dir(out_dir)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{safe_name(job)}-{safe_name(backend, 'backend')}-{stamp}-{new_id()[:6]}.jsonl"
    path = folder / name
    assert path.parent == folder and os.sep not in name
    return path


class ResultsWriter:
    """Appends records to a JSON Lines file, each fsync-ed before ``append`` returns.

    The file (and its folder) is made when the first record is written, so that a command that
    fails before any run (a cluster that does not answer) leaves no empty results file. Each
    record is written with one ``write`` to a file opened for appending; if the write fails
    (the disk is full, a file size limit), what it wrote is cut off again, so that the file ends
    with the last whole record and stays readable, and the error is one line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._fd: int | None = None
        self._size = 0  # bytes of whole records in the file
        self._made = False  # this writer created the file

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            made = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise ResultsFileError(
                f"cannot write results to {self.path}: {why} (choose another --out)"
            ) from None
        self._fd, self._made = fd, made
        self._size = os.fstat(fd).st_size
        return fd

    def append(self, record: RunRecord | Mapping[str, Any]) -> None:
        """Write one record (a mapping is read as a record's JSON first, so that what is written
        is always a record) and make it durable before returning."""
        if not isinstance(record, RunRecord):
            record = RunRecord.from_json(record)
        line = json.dumps(_finite(record.to_json()), sort_keys=True, default=_jsonable)
        data = (line + "\n").encode("utf-8")
        fd = self._fd if self._fd is not None else self._open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)  # the file ends with the last whole record again
            kept = f"the {self.count} record(s) written before are kept" if self.count else ""
            raise ResultsFileError(
                f"cannot write results to {self.path}: {exc.strerror or exc}; this run's record"
                f" is lost{', ' + kept if kept else ''} (free some space or choose another --out)"
            ) from None
        self._size += len(data)
        self.count += 1

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)
        if self._made and self.count == 0:  # nothing was written: leave no empty file
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays as plain JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as ``null``: JSON has no NaN, and a reader must
    never meet one (a measurement that is not a number was not measured)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_records(paths: Iterable[str | Path], *, timelines: bool = True) -> Iterator[RunRecord]:
    """Every record of the given files (or of the ``*.jsonl`` files in given folders).

    Read one line at a time (issue 16: a report over 100,000 runs must not hold the file): a
    caller that keeps no record holds one at a time. A last line that is cut short (the writer
    died mid-line: the start of a JSON object, or zeros) is skipped with a warning; any other
    line that is not one of our records makes the file "not ours", a one-line error; a line of
    ours that is malformed (see :mod:`.schema`) is refused in one line naming the file, the line
    and the field. ``timelines=False`` leaves the stages' timelines out of the records (checked,
    not kept), for readers that only count and time runs.
    """
    for path in results_files(paths):
        for number, line, last in _lines(path):
            if not line.strip():
                continue
            try:
                yield record_of(line, f"{path}:{number}", timelines=timelines)
            except _CutShort:
                if not (last and _cut_short(line)):
                    raise ResultsFileError(
                        f"{path}:{number} is not JSON: not a results file of cluster-runner"
                    ) from None
                warnings.warn(f"{path}:{number}: skipped a truncated last line", stacklevel=2)


class _CutShort(ResultsFileError):
    """A line that is not JSON: a truncated last line, or not a results file at all."""


def record_of(line: str, where: str, *, timelines: bool = True) -> RunRecord:
    """The record one line of a results file holds, checked (see :func:`read_records`);
    ``where`` (``FILE:LINE``) starts every error's words."""
    try:
        record = _load(line)
    except RecursionError:
        raise ResultsFileError(f"{where} nests too deeply to be a cluster-runner record") from None
    except json.JSONDecodeError:
        raise _CutShort(f"{where} is not JSON: not a results file of cluster-runner") from None
    except ValueError:  # an integer of more than 4300 digits (sys.int_info)
        raise ResultsFileError(
            f"{where} holds a number too long to read: not a cluster-runner record"
        ) from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ResultsFileError(f"{where} is not a cluster-runner record")
    version = record.get("schema_version", 0)
    if type(version) is int and version > SCHEMA_VERSION:
        raise ResultsFileError(
            f"{where} has schema version {record['schema_version']}, newer than this runner"
            f" reads ({SCHEMA_VERSION}): upgrade cluster-runner"
        )
    check_record(record, where)
    try:
        if not timelines:
            for stage in record.get("stages") or ():
                if isinstance(stage, dict) and stage.get("timeline") is not None:
                    # Checked, then dropped: a malformed timeline is refused either way.
                    Timeline.from_json(stage.pop("timeline"))
        return RunRecord.from_json(record)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ResultsFileError(
            f"{where} is not a complete cluster-runner record ({type(exc).__name__}: {exc})"
        ) from None


def _load(line: str) -> Any:
    """The JSON value of ``line``.

    pydantic-core's parser (jiter) reads a record in half the time ``json`` takes (issue 16);
    where it refuses a line (``NaN``, a control character, a lone surrogate, a number too long,
    a syntax error, deep nesting), ``json`` reads it, so that what is accepted and the words of
    every error stay exactly as they were.
    """
    try:
        return pydantic_core.from_json(line, allow_inf_nan=False)
    except ValueError:
        return json.loads(line)


def _lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """``(number, line, is the last)`` for each line of ``path``, read as they are needed.

    Lines end where ``str.splitlines`` ends them (a results file written by us has ``\n``
    only; a file edited by hand may hold others), so that line numbers are the same as when
    the whole file was read at once.
    """
    try:
        with open(path, encoding="utf-8", newline="") as file:
            number, pending = 0, None
            for raw in file:
                for line in raw.splitlines():
                    if pending is not None:
                        number += 1
                        yield number, pending, False
                    pending = line
            if pending is not None:
                yield number + 1, pending, True
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"cannot read results file {path}: {exc}") from None


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
