"""What makes records one experiment, and the refusal to mix two that are not.

One report compares runs of *one experiment*: the same job (by the digest of its spec before
any weak scaling or chunk override), the same mode and axis, the same driver machine, the same
injected fault, for each backend the same cluster, and for runs with driver inputs the same
``--transfer`` mode (issue 21: sharing and copying are what such a sweep compares, in two
reports or in ``runner compare``). :func:`check_one_experiment` refuses
anything else with one line (:class:`~cluster_runner.errors.MixedResultsError`) that names the
two files and *what differs*: for two job specs, the parameters that differ (``n = 1e9`` against
``n = 1e10``), not two digests that a reader cannot compare (issue 14).

:func:`labels_of` gives a record's place in its experiment, with the defaults of a plain
``runner submit`` record (no sweep labels: a strong sweep over workers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cluster_runner.errors import MixedResultsError
from cluster_runner.results import RunRecord, SweepLabels


@dataclass(frozen=True)
class PointLabels:
    """A record's place in its experiment, with the defaults of a plain ``submit`` record."""

    mode: str
    axis: str
    size: int
    nodes: int | None
    chunks: int | None
    factor: int
    device: str
    base_digest: str
    baseline: str | None  # the sweep's --baseline, when it gave one
    precision: float | None  # the sweep's --precision target, when it gave one


def labels_of(record: RunRecord) -> PointLabels:
    """A record's sweep labels; a ``submit`` record (no labels) reads as a strong sweep over
    workers, and a label an older sweep did not write takes the same default."""
    labels = record.labels or SweepLabels()

    def given(value, default):
        return default if value is None else value

    return PointLabels(
        mode=given(labels.mode, "strong"),
        axis=given(labels.axis, "workers"),
        size=given(labels.size, labels.workers or record.backend.workers),
        nodes=labels.nodes,
        chunks=labels.chunks,
        factor=given(labels.factor, 1),
        device=given(labels.device, "gpu" if record.job.uses_gpu else "cpu"),
        base_digest=given(labels.base_digest, record.job.digest),
        baseline=labels.baseline,
        precision=labels.precision,
    )


def machine_of(record: RunRecord) -> str:
    """The driver machine in one line: host, CPUs, CPU model, memory, Python."""
    env = record.environment

    def shown(value) -> str:
        return "?" if value is None else str(value)

    memory = env.memory_bytes or 0
    return (
        f"{shown(env.hostname)}: {shown(env.cpu_logical)} CPUs"
        f" ({shown(env.cpu_model)}), {memory / 2**30:.0f} GiB,"
        f" Python {shown(env.python)}"
    )


def cpus_of(record: RunRecord) -> int | None:
    """The CPUs the workers of a run could use: the driver's, when the backend started its own
    engine on this machine (the CPUs it may run on, as its affinity allows); None for an
    existing cluster (``--address``), whose workers are what its pre-flight found."""
    if record.backend.address is not None:
        return None
    env = record.environment
    counts = [c for c in (env.cpu_affinity, env.cpu_logical) if c]
    return min(counts) if counts else None


def check_one_experiment(tagged: Iterable[tuple[str, RunRecord]]) -> None:
    """Raise :class:`MixedResultsError` unless every record belongs to the first's experiment."""
    check = OneExperiment()
    for source, record in tagged:
        check.add(source, record)


class OneExperiment:
    """:func:`check_one_experiment` one record at a time, for records read as a stream (issue
    16: a report keeps no record it has counted): the first record, and one cluster a backend."""

    def __init__(self) -> None:
        self.first: tuple[str, RunRecord] | None = None
        self._want: dict[str, str] = {}
        self._inputs: tuple = ()  # what the first's identity was made of
        self.clusters: dict[str, tuple[str, str | None]] = {}  # backend -> (source, address)
        self.transfer: tuple[str, str] | None = None  # (source, mode) of the first with inputs

    def add(self, source: str, record: RunRecord, labels: PointLabels | None = None) -> None:
        """Raise :class:`MixedResultsError` if ``record`` is not of the first's experiment
        (``labels``: the record's own, when the caller has made them)."""
        labels = labels or labels_of(record)
        env = record.environment
        inputs = (
            *(record.job.name, labels.base_digest, labels.mode, labels.axis, record.fault),
            *(env.hostname, env.cpu_logical, env.cpu_model, env.memory_bytes, env.python),
        )
        if self.first is None:
            self.first, self._want = (source, record), _identity(record, labels)
            self._inputs = inputs
        mode = transfer_of(record)
        if inputs == self._inputs:  # what _identity is made of: the same words (issue 16)
            self.add_cluster(record.backend.name, source, record.backend.address)
            if mode is not None:
                self.add_transfer(source, mode)
            return
        source0, record0 = self.first
        have = _identity(record, labels)
        for name, value in self._want.items():
            if have[name] == value:
                continue
            if name == "job":
                mine, theirs = job_difference(record0, record)
                raise MixedResultsError(
                    f"refusing to mix results of different experiments: {source0} has job"
                    f" {mine}, {source} has {theirs}; report them separately"
                )
            raise MixedResultsError(
                f"refusing to mix results of different experiments: {source0} has {name}"
                f" {value}, {source} has {name} {have[name]}; report them separately"
            )
        self.add_cluster(record.backend.name, source, record.backend.address)
        if mode is not None:
            self.add_transfer(source, mode)

    def add_transfer(self, source: str, mode: str) -> None:
        """Raise :class:`MixedResultsError` if runs with driver inputs moved them another way
        (``--transfer``) before. Runs without inputs, or failed before any stage, say nothing."""
        if self.transfer is None:
            self.transfer = (source, mode)
        elif self.transfer[1] != mode:
            first, was = self.transfer
            raise MixedResultsError(
                f"refusing to mix results of different experiments: {first} has transfer {was},"
                f" {source} has transfer {mode}; report them separately, or runner compare them"
            )

    def add_cluster(self, backend: str, source: str, address: str | None) -> None:
        """Raise :class:`MixedResultsError` if ``backend`` ran on another cluster before."""
        seen = self.clusters.setdefault(backend, (source, address))
        if seen[1] != address:
            raise MixedResultsError(
                f"refusing to mix results of different clusters: {backend} ran on"
                f" {seen[1] or 'its own local cluster'} in {seen[0]} and on"
                f" {address or 'its own local cluster'} in {source}; report them separately"
            )


def transfer_of(record: RunRecord) -> str | None:
    """How a run's driver inputs travelled (``share`` or ``copy``, ``--transfer``); None when
    no stage had any (a workload that makes its data in the tasks, a record before issue 21)."""
    return record.transfer_mode


def job_difference(a: RunRecord, b: RunRecord) -> tuple[str, str]:
    """How two records' jobs differ, in words: ``("primes with n = 1e9", "n = 1e10")``.

    The parameters are compared as the job was given, before the sweep changed them: a weak
    sweep's scaled parameter is divided back by its factor, and a granularity sweep's
    ``chunks`` (and a GPU variant's ``device``) are what the sweep varies, not the job. When no
    parameter differs (another description, say), the spec digests are all there is to name.
    """
    if a.job.name != b.job.name:
        return a.job.name, f"job {b.job.name}"
    pa, pb = _given_params(a), _given_params(b)
    keys = sorted(k for k in pa.keys() | pb.keys() if pa.get(k, _ABSENT) != pb.get(k, _ABSENT))
    if not keys:
        da, db = labels_of(a).base_digest, labels_of(b).base_digest
        return f"{a.job.name} (spec digest {da})", f"spec digest {db}"
    one_stage = len({k.split(".", 1)[0] for k in pa.keys() | pb.keys()}) == 1
    show = [k.split(".", 1)[1] if one_stage else k for k in keys]

    def side(params: Mapping[str, Any]) -> str:
        return ", ".join(
            f"{name} = {_value_text(params.get(key, _ABSENT))}"
            for name, key in zip(show, keys, strict=True)
        )

    return f"{a.job.name} with {side(pa)}", side(pb)


_ABSENT = object()


def given_params(record: RunRecord) -> dict[str, Any]:
    """``stage.param -> value`` of the job as given (see :func:`_given_params`)."""
    return _given_params(record)


def value_text(value: Any) -> str:
    """A parameter as a person writes it (see :func:`_value_text`)."""
    return _value_text(value)


def _given_params(record: RunRecord) -> dict[str, Any]:
    """``stage.param -> value`` of the job as given, before weak scaling and sweep overrides."""
    labels = labels_of(record)
    out = {}
    for stage in record.job.stages:
        for key, value in stage.params.items():
            if key == "device" or (key == "chunks" and labels.axis == "chunks"):
                continue
            scaled = labels.mode == "weak" and key == stage.weak and labels.factor != 1
            if scaled and isinstance(value, int | float) and not isinstance(value, bool):
                value = value / labels.factor
                value = int(value) if float(value).is_integer() else value
            out[f"{stage.name}.{key}"] = value
    return out


def _value_text(value: Any) -> str:
    """A parameter as a person writes it: ``1e9`` for 1,000,000,000, ``2.5e10``, ``64``."""
    if value is _ABSENT:
        return "(not set)"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return repr(value)
    if value != 0 and abs(value) >= 10_000 and float(value).is_integer():
        digits = f"{abs(int(value)):d}"
        mantissa = digits.rstrip("0")
        if len(mantissa) <= 3:
            exponent = len(digits) - 1
            head = mantissa[0] + (f".{mantissa[1:]}" if len(mantissa) > 1 else "")
            return f"{'-' if value < 0 else ''}{head}e{exponent}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _identity(record: RunRecord, labels: PointLabels | None = None) -> dict[str, str]:
    """What must match for two records to belong to one report, as ``name: value``."""
    labels = labels or labels_of(record)
    return {
        "job": f"{record.job.name} (spec digest {labels.base_digest})",
        "mode": labels.mode,
        "axis": labels.axis,
        "machine": machine_of(record),
        "injected fault": record.fault or "none",
    }
