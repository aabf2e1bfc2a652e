"""The reference check: how a result is verified when its workload has no oracle of its own.

The runner knows nothing of a user's code, so it cannot say what the right answer is. What it
can say is whether the answer depends on *how* it was computed: a result that changes with the
backend, the worker count or the order in which chunks finish is a bug (a race, a lost chunk,
an order-dependent reduce), and a scaling figure for it is worthless. So a workload whose
``verify`` returns None is checked against a **reference**: the same job and parameters run on
``serial`` (every task in the driver, one after another), whose digest the result must equal,
bit for bit, or agree with within the tolerance the workload declares (``rtol``, ``atol``; see
:func:`~cluster_runner.workloads.values.agree`).

Cheap. The reference is computed at most once per job and parameters: after the first run
that needs it, outside its clock (the backend under test is idle meanwhile); it costs one serial
run of the stage. Every record of a stage so checked keeps the reference (``reference`` in the
stage: its key, digest, display, small JSON value, and where it came from), and a later command
writing to the same results folder finds it there instead of computing it again
(:class:`ReferenceStore`).

Honest. The key of a reference is a digest of everything that decides the answer: the
workload's name and parameters, a digest of the user's source files (edit the code, and the
reference is computed afresh), and the Python and numpy versions. The record says how the run
was verified, in words (``bit for bit equal to the serial reference ...``), and where the
reference came from. What the check cannot see is said too: it catches results that depend on
the backend, not code that is wrong the same way everywhere (a workload's own ``verify`` is
for that); on ``serial`` itself it only shows that two runs agree.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cluster_runner.errors import ExecutionError
from cluster_runner.graph import Graph
from cluster_runner.workloads.base import ResultSummary, Verification, Workload, call_hook
from cluster_runner.workloads.naming import find_workload
from cluster_runner.workloads.values import agree, json_value

#: The backend a reference is computed on.
REFERENCE_BACKEND = "serial"


@dataclass(frozen=True)
class Reference:
    """A serial run's answer for one job stage and its parameters, as the records keep it."""

    key: str  # digest of the workload, its parameters, the user's code, Python and numpy
    digest: str  # of the reference's result bits (the workload's summary digest)
    display: str
    value: Any  # its JSON form, for a tolerance check in a later command; None if too large
    computed: str  # when (ISO 8601, UTC)
    seconds: float  # how long the serial run took
    where: str = ""  # the results file it was read from; "" when computed by this command
    exact: Any = field(default=None, compare=False, repr=False)  # the value itself, in memory

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "digest": self.digest,
            "display": self.display,
            "value": self.value,
            "backend": REFERENCE_BACKEND,
            "computed": self.computed,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "") -> Reference:
        return cls(
            key=str(data["key"]),
            digest=str(data["digest"]),
            display=str(data.get("display", "")),
            value=data.get("value"),
            computed=str(data.get("computed", "")),
            seconds=float(data.get("seconds") or 0.0),
            where=where,
        )

    @property
    def source(self) -> str:
        """Where it came from, in words."""
        if self.where:
            return f"the serial reference of {self.computed}, kept in {self.where}"
        return f"a serial reference run by this command ({self.seconds:.2f} s)"


class ReferenceStore:
    """References by key: those computed by this process, and those kept in ``folder``'s
    results files (read once, when a key is first missing)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._known: dict[str, Reference] = {}
        self._read = False

    def get(self, key: str) -> Reference | None:
        if key not in self._known and not self._read:
            self._read = True
            self._known = {**self._kept(), **self._known}
        return self._known.get(key)

    def put(self, reference: Reference) -> None:
        self._known[reference.key] = reference

    def read_from(self, folder: str | Path) -> None:
        """Also look in ``folder``'s results files for references not known yet."""
        self.folder, self._read = Path(folder), False

    def _kept(self) -> dict[str, Reference]:
        """The references records in the folder hold (lines that are not records are skipped:
        the report, not this, is where a malformed file is refused)."""
        found: dict[str, Reference] = {}
        if self.folder is None or not self.folder.is_dir():
            return found
        for path in sorted(self.folder.glob("*.jsonl")):
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if '"reference"' not in line:
                    continue
                try:
                    stages = json.loads(line).get("stages") or []
                    for stage in stages:
                        data = stage.get("reference")
                        if isinstance(data, dict) and stage.get("verified") is True:
                            ref = Reference.from_json(data, where=path.name)
                            found.setdefault(ref.key, ref)
                except (ValueError, TypeError, KeyError, AttributeError):
                    continue
        return found


#: The references of this process: what :func:`~cluster_runner.runs.job.run_job` uses when its
#: caller gives none (so a sweep computes each reference once).
PROCESS_STORE = ReferenceStore()


def reference_key(workload_ref: str, params: Mapping[str, Any]) -> str:
    """The key of the reference of a stage: equal keys, the same answer expected."""
    found = find_workload(workload_ref)
    payload = {
        "workload": workload_ref,
        "params": dict(params),
        "code": found.code_digest,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "numpy": np.__version__,
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def compute_reference(
    key: str,
    graph: Graph,
    workload: Workload,
    params: Mapping[str, Any],
    timeout: float | None,
) -> Reference:
    """Run one stage's graph on ``serial`` in the driver: its reference."""
    from cluster_runner.backends.base import BackendOptions
    from cluster_runner.backends.serial import SerialBackend
    from cluster_runner.execution.walk import execute
    from cluster_runner.results import now

    began = time.perf_counter()
    try:
        with SerialBackend(BackendOptions(workers=1)) as serial:
            result = execute(graph, serial, timeout=timeout)
    except ExecutionError as exc:  # the run on the backend passed; its reference did not
        raise ExecutionError(f"the serial reference run failed: {exc}") from exc
    seconds = time.perf_counter() - began
    (value,) = result.values.values()
    summary = call_hook("reference/summarize", workload.summarize, params, value)
    return Reference(
        key, summary.digest, summary.display, json_value(value), now(), seconds, exact=value
    )


def check(
    *,
    key: str,
    graph: Graph,
    workload: Workload,
    params: Mapping[str, Any],
    value: Any,
    summary: ResultSummary,
    store: ReferenceStore,
    backend: str,
    timeout: float | None = None,
) -> tuple[Verification, Reference]:
    """Verify ``value`` against the reference of its stage (computed now if none is known)."""
    rtol, atol = float(workload.rtol), float(workload.atol)
    exact = rtol == 0 and atol == 0
    reference = store.get(key)
    if reference is None or (not exact and reference.exact is None and reference.value is None):
        reference = compute_reference(key, graph, workload, params, timeout)
        store.put(reference)
    note = " (the same backend: this shows only that two runs agree)" if backend == "serial" else ""
    if summary.digest == reference.digest:
        method = f"bit for bit equal to {reference.source}, digest {reference.digest[:12]}{note}"
        return Verification(True, method, reference.value), reference
    if exact:
        method = (
            f"differs from {reference.source}: digest {summary.digest[:12]} against"
            f" {reference.digest[:12]} ({reference.display}); bit for bit expected (a workload"
            " whose result depends on the order of operations declares rtol/atol)"
        )
        return Verification(False, method, reference.value), reference
    if reference.exact is not None:
        problem = agree(value, reference.exact, rtol, atol)
    else:
        problem = agree(json_value(value), reference.value, rtol, atol)
    tolerance = f"rtol {rtol:g}, atol {atol:g}"
    if problem is None:
        method = f"equal within {tolerance} to {reference.source}{note}"
        return Verification(True, method, reference.value), reference
    method = f"differs from {reference.source} beyond {tolerance}: {problem}"
    return Verification(False, method, reference.value), reference


def kept(reference: Reference) -> Reference:
    """The reference as the record keeps it (its value in memory is not written)."""
    return replace(reference, exact=None)
