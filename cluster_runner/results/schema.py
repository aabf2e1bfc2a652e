"""What a record read back from a results file must look like before anything computes with it.

A results file is input like any other: it may have been edited, cut, merged or made by hand,
and a line that carries our format tag is not therefore well formed. Without a check, the
report meets the problem deep in its arithmetic, as a traceback (a missing key, a string where
a version number goes, zero workers, a number of 400 digits, arrays nested ten thousand deep), or
worse, quietly (a ``NaN`` or negative wall time, printed back as ``NaN``). So every line is
checked here first, and a malformed one is refused in one line naming the file, the line and
the field (:func:`check_record`).

The checks, declared once as pydantic models beside the record types they mirror
(:mod:`.records`, :mod:`.stages`):

- the keys :meth:`~cluster_runner.results.records.RunRecord.from_json` needs are there
  (the job's name and digest, the backend's name and workers, the status); every other
  field may be absent, as it is in records older runners wrote, and unknown fields pass (a
  newer runner of the same schema version may add some);
- each field has its type (``true`` is not a number, ``"1"`` is not a version) and range:
  counts are integers from 0 (workers and nodes from 1), times and CPU seconds are finite and
  not negative, and no number is absurd (:data:`MAX_SECONDS`, :data:`MAX_PERCENT`, and no
  integer beyond 64 bits);
- the free-form parts (parameters, results, the engine's extras, the environment) nest at most
  :data:`MAX_DEPTH` deep and hold only finite numbers of at most 64 bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from cluster_runner.errors import ResultsFileError
from cluster_runner.validation import Number, validate

#: Largest percentage (a CPU load, a precision target) a record may hold: 100 % of 10,000 CPUs.
MAX_PERCENT = 1e6
#: Largest time in seconds a record may hold (about 30 years).
MAX_SECONDS = 1e9
#: How deep the JSON of a record may nest (a record nests 4 deep; parameters are flat).
MAX_DEPTH = 12
#: The largest integer JSON may hold anywhere in a record.
_MAX_INT = 2**63

_CONFIG = ConfigDict(extra="allow", frozen=True)

Text = Annotated[str, Strict()]
Flag = Annotated[bool, Strict()]
Count = Annotated[int, Strict(), Field(ge=0)]  # at most 2**63: see free_form_problem
Positive = Annotated[int, Strict(), Field(ge=1)]
Seconds = Annotated[Number, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]


def maybe_seconds(more_than_zero: bool = False) -> Any:
    """An optional time field, its bounds on the field (so that errors say them)."""
    low = {"gt": 0} if more_than_zero else {"ge": 0}
    return Field(None, le=MAX_SECONDS, allow_inf_nan=False, **low)


class _Model(BaseModel):
    model_config = _CONFIG


class UsageModel(_Model):
    cpu_s: Seconds
    peak_rss_bytes: Count
    processes: Count = 0
    interval_s: Number | None = maybe_seconds()
    scope: Text | None = None


class TransferModel(_Model):
    mode: Literal["share", "copy"] = "share"
    method: Text = ""
    inputs: Count = 0
    input_bytes: Count = 0
    put_bytes: Count = 0
    put_s: Seconds = 0.0
    sent_bytes: Count = 0
    messages: Count = 0
    returned_bytes: Count = 0


class StageModel(_Model):
    name: Text = ""
    workload: Text = ""
    tasks: Count
    wall_s: Number | None = maybe_seconds()
    display: Text = ""
    digest: Text = ""
    verified: Flag = False
    verification: Text = ""
    retried: Count = 0
    usage: UsageModel | None = None
    workers_used: dict[str, Count] = {}
    nodes_used: dict[str, Count] = {}
    busy_s: Seconds = 0.0
    task_max_s: Seconds = 0.0
    span_s: Seconds = 0.0
    phases: dict[str, Seconds] | None = None
    devices_used: dict[str, Count] | None = None
    transfer: TransferModel | None = None


class JobStageModel(_Model):
    name: Text = ""
    workload: Text = ""
    weak: Text = ""
    params: dict[str, Any] = {}


class JobModel(_Model):
    name: Annotated[str, Strict(), Field(min_length=1)]
    digest: Text
    description: Text = ""
    stages: list[JobStageModel] = []


class BackendModel(_Model):
    name: Annotated[str, Strict(), Field(min_length=1)]
    workers: Positive
    version: Text = ""
    nodes: Count = 1
    address: Text | None = None
    start_method: Text | None = None
    dashboard: Text | None = None
    startup_s: Number | None = maybe_seconds()
    warmup_s: Number | None = maybe_seconds()
    extra: dict[str, Any] = {}


class LabelsModel(_Model):
    mode: Literal["strong", "weak", "throughput"] | None = None
    # workers, nodes, chunks, or (throughput mode, issue 19) the --vary parameter that grows
    axis: Annotated[str, Strict(), Field(min_length=1, max_length=200)] | None = None
    size: Annotated[int, Strict()] | None = Field(None, ge=1)
    workers: Annotated[int, Strict()] | None = Field(None, ge=1)
    nodes: Annotated[int, Strict()] | None = Field(None, ge=1)
    chunks: Annotated[int, Strict()] | None = Field(None, ge=1)
    factor: Annotated[int, Strict()] | None = Field(None, ge=1)
    device: Text | None = None
    base_digest: Text | None = None
    round: Annotated[int, Strict()] | None = Field(None, ge=0)
    point: Text | None = None
    other_load: Number | None = Field(None, ge=0, le=MAX_PERCENT, allow_inf_nan=False)
    baseline: Text | None = None
    precision: Number | None = Field(None, ge=0, le=MAX_PERCENT, allow_inf_nan=False)
    params: dict[str, Any] = {}  # issue 19: the --vary values of the point


class SlurmModel(_Model):
    """Issue 19: the Slurm jobs and nodes a run's point used."""

    job_ids: list[Text] = []
    nodes: list[Text] = []
    cluster: Text | None = None


class RecordModel(_Model):
    """A run record as a results file holds it (see :mod:`.records` for the meaning)."""

    format: Literal["cluster-runner/run"]
    schema_version: Positive = 1
    run_id: Text = ""
    session: Text = ""
    time: Text = ""
    job: JobModel
    backend: BackendModel
    repeat: Count = 0
    warmup: Flag = False
    status: Literal["verified", "unverified", "failed", "skipped"]
    error: Text | None = None
    wall_s: Number | None = maybe_seconds(more_than_zero=True)  # a ratio's denominator
    stages: list[StageModel] = []
    labels: LabelsModel = LabelsModel()
    environment: dict[str, Any] = {}
    fault: Text | None = None
    retried: Count = 0
    usage: UsageModel | None = None
    error_traceback: Text | None = None
    cold: Flag = False
    slurm: SlurmModel | None = None


def check_record(data: Mapping[str, Any], where: str) -> None:
    """Raise a one-line :class:`ResultsFileError` if ``data`` is not a well-formed record.

    ``where`` (``FILE:LINE``) starts the message.
    """
    prefix = f"{where} is not a complete, well-formed cluster-runner record"
    problem = free_form_problem(data)
    if problem is not None:
        raise ResultsFileError(f"{prefix}: {problem}")
    validate(RecordModel, data, where=prefix, error=ResultsFileError)


def free_form_problem(value: Any) -> str | None:
    """What makes ``value`` (parsed JSON) unfit anywhere in a record, or None.

    Too deep a nesting, a non-finite number, an integer beyond 64 bits. Iterative, so that a
    value nested deeper than Python's recursion limit is judged, not crashed on; a long list
    of integers only (a stage's timeline) is judged in one pass of builtins.
    """
    if type(value) in (dict, list) and _fine(value, 0):
        return None  # the usual case, judged without making a path (see _fine)
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{path or 'the record'} nests deeper than {MAX_DEPTH} levels"
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, float) and not math.isfinite(item):
            return f"{path!r} is {item!r}, not a finite number"
        if isinstance(item, int) and abs(item) > _MAX_INT:
            return f"{path!r} is a {item.bit_length()}-bit integer, too large for a record"
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, list):
            long_ints = len(item) > 8 and all(type(v) is int for v in item)
            if long_ints and max(map(abs, item)) <= _MAX_INT:
                continue  # else each is judged below, and a bad one named
            stack.extend((v, f"{path}.{i}", depth + 1) for i, v in enumerate(item))
    return None


def _fine(value: Any, depth: int) -> bool:
    """Whether :func:`free_form_problem` would find nothing in ``value``, a dict or a list at
    ``depth``: the same rules, one loop a container, no path made. A report reads 100,000
    records (issue 16), and naming a path for every value cost 70 us a record, the most of any
    step of reading one; a record with a problem is judged again, by the walk that names it.
    """
    items = value.values() if type(value) is dict else value
    if not items:
        return True
    if depth >= MAX_DEPTH:  # its items would sit deeper than MAX_DEPTH
        return False
    if type(value) is list:  # a timeline's lists of numbers or names: at C speed
        kinds = set(map(type, items))
        if kinds == {int}:
            return max(items) <= _MAX_INT and min(items) >= -_MAX_INT
        if kinds == {str}:
            return True
    for item in items:
        kind = type(item)
        if kind is float:
            if item - item != 0.0:  # inf - inf and nan - nan are nan
                return False
        elif kind is int:
            if item > _MAX_INT or item < -_MAX_INT:
                return False
        elif (kind is dict or kind is list) and not _fine(item, depth + 1):
            return False
    return True
