"""Job specs: what to run, as frozen data, loaded from TOML and checked before anything runs.

A job file names one or more stages, each a workload and its parameters::

    description = "count the primes up to 1e9"

    [[stage]]
    workload = "primes"
    n = 1_000_000_000
    chunks = 64

A stage may also say ``name`` (default: the workload's name; names must be unique) and ``weak``,
the size parameter that grows with the worker count in weak scaling (default: the workload's).

``workload`` is a built-in name, the name an installed package registers, ``package.module:NAME``
or ``path/to/file.py:NAME``, relative to the job file (see :mod:`cluster_runner.workloads.naming`);
a stage keeps a file's absolute path. A job's own workloads are checked when it is loaded: their
worker functions must pickle by reference (:meth:`JobSpec.check_tasks`).

Any parameter can be overridden from the command line with ``--set KEY=VALUE`` (every stage that
has KEY) or ``--set STAGE.KEY=VALUE`` (one stage). Every fault in a file or an override becomes a
one-line :class:`~cluster_runner.errors.JobSpecError` that names the file, the stage and the key.

The file's shape is declared as pydantic models here (``_JobFile``, ``_StageKeys``), the
parameters by each workload (:meth:`~cluster_runner.workloads.base.Workload.params_model`); both
are checked by :func:`cluster_runner.validation.validate`. What a schema cannot say (unique stage
names, a weak parameter that is a size, no more chunks than items) is checked here and by the
workloads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from cluster_runner.errors import JobSpecError
from cluster_runner.graph import Graph
from cluster_runner.validation import STRICT_CONFIG, validate
from cluster_runner.workloads import REGISTRY, get_workload
from cluster_runner.workloads.base import Workload, call_hook
from cluster_runner.workloads.code import CodeSource, LateHook, check_by_reference
from cluster_runner.workloads.naming import FORMS, as_word, find_workload

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class StageSpec:
    """One stage of a job: a workload and its validated parameters."""

    name: str  # unique within the job; prefixes the stage's task keys
    workload: str  # a built-in or entry-point name, 'module:NAME' or '/abs/file.py:NAME'
    params: Mapping[str, Any] = field(default_factory=dict)  # validated, defaults filled in
    weak: str = ""  # parameter scaled with the worker count in weak scaling

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workload": self.workload,
            "weak": self.weak,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class JobSpec:
    """A whole job: its stages, in the order they run."""

    name: str
    description: str
    stages: tuple[StageSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "stages": [s.to_dict() for s in self.stages],
        }

    @property
    def digest(self) -> str:
        """A short hash of everything that determines the results: equal digests, same job."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def build_graph(self, live: Mapping[str, Mapping[str, Any]] | None = None) -> Graph:
        """The workload graph of every stage, in stage order.

        ``live`` holds each stage's parameters with its setup's values (:meth:`setup`); without
        it the stages are built from their parameters alone.
        """
        graph = Graph()
        for stage in self.stages:
            params = live[stage.name] if live is not None else stage.params
            found = find_workload(stage.workload)
            call_hook(f"{stage.name}/build", found.workload.build, graph, stage.name, params)
            if found.kind != "built-in" and live is not None:
                check_graph_tasks(graph.stage(stage.name), f"stage {stage.name!r} ({found.ref})")
        return graph

    @contextlib.contextmanager
    def setup(self) -> Iterator[dict[str, dict[str, Any]]]:
        """Enter every stage's setup (``Workload.setup``: a server its tasks fetch from) for the
        runs of this job; yield each stage's parameters with the values its setup made."""
        with contextlib.ExitStack() as stack:
            live = {}
            for stage in self.stages:
                setup = get_workload(stage.workload).setup
                context = call_hook(f"{stage.name}/setup", setup, stage.params)
                made = call_hook(f"{stage.name}/setup", stack.enter_context, context)
                live[stage.name] = {**stage.params, **dict(made or {})}
            yield live

    def check_tasks(self) -> None:
        """Refuse, in one line, a stage of the user's whose task functions would not pickle by
        reference (a lambda, a closure, a function of ``__main__``).

        A map-reduce declares its functions; any other user workload without a setup is built
        once, here, and each distinct function of its graph checked. (One with a setup is
        checked when its graph is built for a run.)
        """
        for stage in self.stages:
            found = find_workload(stage.workload)
            if found.kind == "built-in" or hasattr(found.workload, "task_functions"):
                continue  # the runner's own, or a map-reduce checked when it was found
            if type(found.workload).setup is not Workload.setup:
                continue
            graph = Graph()
            call_hook(f"{stage.name}/build", found.workload.build, graph, stage.name, stage.params)
            check_graph_tasks(graph, f"stage {stage.name!r} ({found.ref})")

    def with_overrides(self, assignments: Iterable[str]) -> JobSpec:
        """A copy with ``KEY=VALUE`` / ``STAGE.KEY=VALUE`` overrides applied and re-validated."""
        stages = [dict(s.params) for s in self.stages]
        for text in assignments:
            target, key, value = _parse_assignment(text)
            hit = False
            for stage, params in zip(self.stages, stages, strict=False):
                if target not in (None, stage.name):
                    continue
                if key in get_workload(stage.workload).param_names:
                    params[key] = value
                    hit = True
            if target is not None and target not in {s.name for s in self.stages}:
                raise JobSpecError(
                    f"--set {text!r}: no stage named {target!r} in job {self.name!r}"
                    f" (stages: {', '.join(s.name for s in self.stages)})"
                )
            if not hit:
                raise JobSpecError(
                    f"--set {text!r}: no stage of job {self.name!r} has a parameter {key!r}"
                )
        return replace(
            self,
            stages=tuple(
                _stage(s.workload, s.name, s.weak, params, f"--set (stage {s.name!r})")
                for s, params in zip(self.stages, stages, strict=False)
            ),
        )

    @property
    def uses_gpu(self) -> bool:
        """Whether any stage runs on a GPU (``device = "gpu"``)."""
        return any(s.params.get("device") == "gpu" for s in self.stages)

    def on_gpu(self) -> JobSpec:
        """The job with every array stage on the GPU (what ``--gpu`` asks for)."""
        if not any("device" in s.params for s in self.stages):
            raise JobSpecError(
                f"--gpu: job {self.name!r} has no array stage (array_means, dot) to run on a GPU"
            )
        return self.with_overrides(["device=gpu"])

    def scaled(self, factor: int) -> JobSpec:
        """The weak-scaling job for ``factor`` workers: each stage's weak parameter times factor."""
        stages = []
        for s in self.stages:
            if not s.weak:
                raise JobSpecError(
                    f"weak scaling: stage {s.name!r} has no size parameter to grow; name one"
                    ' with weak = "..." in the job (or weak= in the workload)'
                )
            params = dict(s.params)
            params[s.weak] = params[s.weak] * factor
            stages.append(_stage(s.workload, s.name, s.weak, params, f"weak x{factor} ({s.name})"))
        return replace(self, stages=tuple(stages))

    def warm_ups(self) -> tuple[Callable[[], object], ...]:
        """The warm-up hooks of the job's workloads, each once, in stage order: what a backend
        runs in the driver and on each worker at start-up (``BackendOptions.warm_up``).

        The user's code comes first (:meth:`code`: each a hook that makes the module importable
        there), then the workloads' own hooks, a user's by name (:class:`LateHook`), so that a
        worker can unpickle them before it has imported the user's module.
        """
        hooks: list[Callable[[], object]] = list(self.code())
        for stage in self.stages:
            found = find_workload(stage.workload)
            for hook in found.workload.warm_up:
                hooks.append(LateHook.of(hook) if found.code else hook)
        return tuple(dict.fromkeys(hooks))

    def code(self) -> tuple[CodeSource, ...]:
        """The user's modules and packages the job's tasks import: what a cluster is sent."""
        sources = (source for s in self.stages for source in find_workload(s.workload).code)
        return tuple({source.module: source for source in sources}.values())


def load_job(path: str | Path, overrides: Iterable[str] = ()) -> JobSpec:
    """Read, validate and override a job file; raise :class:`JobSpecError` on any fault.

    Workload files are found relative to the job file's folder.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobSpecError(f"job file {path} does not exist (see 'runner jobs')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobSpecError(f"job file {path} cannot be read: {exc}") from None
    job = parse_job(text, name=path.stem, where=str(path), base=path.parent)
    job = job.with_overrides(overrides) if overrides else job
    job.check_tasks()
    return job


def parse_job(
    text: str, name: str = "job", where: str = "job", base: str | Path | None = None
) -> JobSpec:
    """Validate the TOML text of a job spec (see the module docstring for its form).

    ``base`` is the folder workload files are relative to (default: the current one).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobSpecError(f"{where}: not valid TOML: {exc}") from None
    except ValueError:  # an integer of more than 4300 digits (sys.int_info)
        raise JobSpecError(f"{where}: a value has more digits than a number may have") from None
    job = validate(_JobFile, data, where=where, error=JobSpecError, describe=_describe_job)
    stages: list[StageSpec] = []
    for number, raw in enumerate(job.stage, start=1):
        keys = validate(
            _StageKeys,
            raw,
            where=where,
            error=JobSpecError,
            describe=functools.partial(_describe_stage, number, raw),
        )
        found = find_workload(keys.workload, base)
        stage_name = keys.name or found.name
        if any(s.name == stage_name for s in stages):
            raise JobSpecError(
                f"{where}: two stages are named {stage_name!r}; give one a different name = ..."
            )
        params = keys.model_extra or {}
        stages.append(
            _stage(found.ref, stage_name, keys.weak, params, f"{where}: stage {stage_name!r}")
        )
    for key, value in (("name", job.name or name), ("description", job.description)):
        _refuse_control(where, key, value)
    return JobSpec(name=job.name or name, description=job.description, stages=tuple(stages))


def _refuse_control(where: str, key: str, value: str) -> None:
    """A job's name and description are shown on terminals and name files: no NUL, no escape
    sequences, no other control characters (tabs and newlines in a description are fine)."""
    allowed = "\t\n" if key == "description" else ""
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c not in allowed), None)
    if bad is not None:
        raise JobSpecError(f"{where}: {key} holds the control character {bad!r}; remove it")


def _stage_name(value: Any) -> Any:
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError("must be a word")
    return value


class _JobFile(BaseModel):
    """A job file's top level: ``name``, ``description`` and the ``[[stage]]`` tables."""

    model_config = STRICT_CONFIG
    name: str | None = Field(None, min_length=1)
    description: str = ""
    stage: list[dict[str, Any]] = Field(min_length=1)


class _StageKeys(BaseModel):
    """A stage's own keys; every other key of its table is a parameter of its workload."""

    model_config = ConfigDict(extra="allow", frozen=True)
    workload: str
    name: Annotated[str, BeforeValidator(_stage_name)] | None = None
    weak: str = ""


def _describe_job(detail: Any) -> str:
    """A job file's error in the words the runner has always used."""
    loc = detail["loc"]
    if detail["type"] == "extra_forbidden":
        return f"unknown key {loc[0]!r} (allowed: name, description, [[stage]])"
    if loc[0] == "stage" and len(loc) > 1:
        return f"stage {loc[1] + 1} must be a table ([[stage]])"
    if loc[0] == "stage":
        return (
            f'no [[stage]] tables; add one with workload = "primes"'
            f" (workloads: {', '.join(REGISTRY)})"
        )
    if loc[0] == "name":
        return "name must be a non-empty string"
    return "description must be a string"


def _describe_stage(number: int, raw: Mapping[str, Any], detail: Any) -> str:
    """A stage's error in the words the runner has always used, naming the stage."""
    field = detail["loc"][0]
    if field == "workload":
        return f"stage {number} needs workload = {FORMS} (built in: {', '.join(REGISTRY)})"
    workload = raw.get("workload")
    if field == "name":
        example = as_word(workload) if isinstance(workload, str) else "primes"
        return f"stage {number}: name must be a word such as {example!r}, got {raw['name']!r}"
    return f"stage {raw.get('name', workload)!r}: weak must be a parameter name"


def _stage(workload: str, name: str, weak: str, params: Mapping[str, Any], where: str) -> StageSpec:
    spec = get_workload(workload)
    values = spec.validate(params, where)
    weak = weak or spec.weak_param
    if weak and (
        weak not in values
        or not isinstance(values[weak], int)
        or isinstance(values[weak], bool)
        or weak in ("chunks", "seed")
    ):
        raise JobSpecError(f"{where}: weak = {weak!r} is not a size parameter of {spec.name!r}")
    return StageSpec(name=name, workload=workload, params=values, weak=weak)


def check_graph_tasks(graph: Graph, where: str) -> None:
    """Refuse a graph with a task function a worker could not import by name (one line)."""
    seen: set[int] = set()
    for task in graph.nodes():  # a map's tasks share one function: checked once (issue 16)
        if id(task.func) not in seen:
            seen.add(id(task.func))
            check_by_reference(task.func, f"the function of task {task.key}", where)


def _parse_assignment(text: str) -> tuple[str | None, str, Any]:
    """Split ``[STAGE.]KEY=VALUE``; VALUE is read as a TOML value, else as a bare string."""
    if "=" not in text:
        raise JobSpecError(f"--set {text!r}: expected KEY=VALUE, e.g. --set n=1000000000")
    lhs, raw = (part.strip() for part in text.split("=", 1))
    target, _, key = lhs.rpartition(".")
    if not key or not raw:
        raise JobSpecError(f"--set {text!r}: expected KEY=VALUE, e.g. --set n=1000000000")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except ValueError:  # an integer of more than 4300 digits (sys.int_info)
        raise JobSpecError(
            f"--set {lhs}=...: the value has more digits than a number may have"
        ) from None
    return (target or None), key, value
