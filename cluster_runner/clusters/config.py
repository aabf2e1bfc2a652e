"""``runner cluster`` configs: a local multi-node cluster on 127.0.0.1, as data.

A config is a small YAML file (``cluster_configs/local-dask.yaml``)::

    engine: dask        # dask: a `dask scheduler` and `dask worker` processes
    nodes: 2            # worker processes (dask) or nodes, the head included (ray)
    threads: 1          # dask: threads per worker   (ray: `cpus` per node)
    port: 0             # scheduler or GCS port on 127.0.0.1; 0 picks a free one

It only says *what* to run (:class:`LocalClusterSpec`); :mod:`.dask_local` and
:mod:`.ray_local` know *how*. Where a running cluster keeps its state (address, pids, logs,
Ray's token) is not part of the config, so that one config can be brought up in several places:
``STATE_ROOT/NAME``, where ``STATE_ROOT`` is ``--state-dir``, ``$RUNNER_STATE_DIR`` or
``TMPDIR/cluster-runner-UID``, and ``NAME`` the config's ``name`` (its file name by default).
``runner submit --cluster`` finds the address there, through a profile (:mod:`.profile`).

Every mistake is one :class:`~cluster_runner.errors.ClusterConfigError` line naming the file
and the key.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from cluster_runner.errors import ClusterConfigError
from cluster_runner.limits import MAX_PROCESSES
from cluster_runner.paths import search_dirs
from cluster_runner.validation import STRICT_CONFIG, Boolean, Integer, Number, validate

#: Folder under which each cluster started by ``runner cluster up`` keeps its state.
STATE_DIR_ENV = "RUNNER_STATE_DIR"
#: The engines ``runner cluster`` can start on this machine.
CLUSTER_ENGINES = ("dask", "ray", "slurm")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class LocalClusterSpec:
    """A multi-node cluster of one engine on 127.0.0.1; one comment a field."""

    name: str  # names its state folder; default: the config file's name without .yaml
    engine: str  # "dask" or "ray"
    nodes: int = 2  # dask: worker processes, one node each; ray: nodes, the head included
    per_node: int = 1  # dask: threads per worker (key `threads`); ray: CPUs per node (`cpus`)
    port: int = 0  # the scheduler's (dask) or GCS's (ray) port on 127.0.0.1; 0: a free one
    dashboard: bool = False  # dask: serve the scheduler's dashboard, on 127.0.0.1
    timeout: float = 180.0  # seconds the cluster has to come up
    source: Path | None = None  # the file it was read from


def _state_name(value: Any) -> Any:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError("must be letters, digits, '.', '_' or '-'")
    return value


def _at_most(value: int) -> int:
    if value > MAX_PROCESSES:
        raise ValueError(
            f"must be at most {MAX_PROCESSES} (the runner starts no more processes on one machine)"
        )
    return value


class _Engine(BaseModel):
    """The one key read first: which engine's keys the rest of the file may use."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    engine: Literal[CLUSTER_ENGINES]  # type: ignore[valid-type]


class ClusterConfigFile(BaseModel):
    """The keys of a config that every engine takes, as the file spells them."""

    model_config = STRICT_CONFIG
    engine: Literal[CLUSTER_ENGINES]  # type: ignore[valid-type]
    name: Annotated[str, BeforeValidator(_state_name)] | None = None
    nodes: Annotated[Integer, AfterValidator(_at_most)] = Field(2, ge=1)
    port: Integer = Field(0, ge=0, le=65535)
    timeout: Number = Field(180.0, ge=1.0, le=86400.0, allow_inf_nan=False)


class DaskClusterConfig(ClusterConfigFile):
    threads: Annotated[Integer, AfterValidator(_at_most)] = Field(1, ge=1)  # per `dask worker`
    dashboard: Boolean = False


class RayClusterConfig(ClusterConfigFile):
    cpus: Annotated[Integer, AfterValidator(_at_most)] = Field(1, ge=1)  # CPUs a Ray node offers


class SlurmClusterConfig(ClusterConfigFile):
    cpus: Annotated[Integer, AfterValidator(_at_most)] = Field(1, ge=1)  # CPUs a Slurm node offers


#: Engine -> the model of its config file.
CONFIG_MODELS: dict[str, type[ClusterConfigFile]] = {
    "dask": DaskClusterConfig,
    "ray": RayClusterConfig,
    "slurm": SlurmClusterConfig,  # issue 19: clusters/slurm_local.py
}


def configs_dirs() -> list[Path]:
    """Folders searched for a config or profile given by name: $RUNNER_CLUSTER_CONFIGS,
    ./cluster_configs, then the built-in ones (see :mod:`cluster_runner.paths`)."""
    return [entry.path for entry in search_dirs("cluster_configs")]


def find_file(value: str, suffix: str, what: str) -> Path:
    """A path (with or without ``suffix``), or a name in :func:`configs_dirs`.

    ``cluster_configs/local-dask``, ``cluster_configs/local-dask.toml`` and ``local-dask``
    all name ``cluster_configs/local-dask.toml`` when ``suffix`` is ``.toml``; a bare
    ``local-dask.toml`` is that file here, or else the one of that name in the folders.
    """
    path = Path(value).expanduser()
    candidates = [path] if path.suffix else [path.with_name(path.name + suffix), path]
    if os.sep not in value:
        named = [
            folder / (value if path.suffix else f"{value}{suffix}") for folder in configs_dirs()
        ]
        candidates = candidates + named if path.suffix else named + candidates
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ClusterConfigError(f"no {what} {value!r}: none of {where} exists")


def read_engine_yaml(
    path: Path, models: dict[str, Any], engines: type[BaseModel] | None = None
) -> tuple[str, Any]:
    """A YAML file of one engine's settings, checked: its ``engine`` first (by ``engines``, a
    model of that one key; default: every engine ``runner cluster`` starts), then the keys of
    ``models[engine]`` (an unknown key named with the engine's known ones); one line on error."""
    data = read_yaml(path)
    where = str(path)
    engine = validate(engines or _Engine, data, where=where, error=ClusterConfigError).engine

    def for_engine(detail: Any) -> str | None:
        if detail["type"] != "extra_forbidden":
            return None
        known = ", ".join(sorted(models[engine].model_fields))
        return f"unknown key {detail['loc'][0]!r} for engine {engine} (known: {known})"

    model = validate(
        models[engine], data, where=where, error=ClusterConfigError, describe=for_engine
    )
    return engine, model


def load_cluster_config(path: Path | str) -> LocalClusterSpec:
    """Read and check a ``runner cluster`` config (YAML): the engine first, then its keys."""
    path = Path(path)
    _, model = read_engine_yaml(path, CONFIG_MODELS)
    name = model.name or path.name.removesuffix(".yaml").removesuffix(".yml")
    return LocalClusterSpec(
        name=name,
        engine=model.engine,
        nodes=model.nodes,
        per_node=model.threads if model.engine == "dask" else model.cpus,
        port=model.port,
        dashboard=getattr(model, "dashboard", False),
        timeout=model.timeout,
        source=path,
    )


def state_root(root: Path | str | None = None) -> Path:
    """Where clusters keep their state: ``root``, $RUNNER_STATE_DIR or TMPDIR/cluster-runner-UID."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV]).expanduser()
    return Path(tempfile.gettempdir()) / f"cluster-runner-{os.getuid()}"


def state_folder(spec: LocalClusterSpec, root: Path | str | None = None) -> Path:
    """The folder of the cluster ``spec`` describes: its state file, logs and token."""
    return (state_root(root) / spec.name).resolve()


# --- reading files, shared with profiles ---------------------------------------------------


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, or one line saying what is wrong."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ClusterConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:  # an integer of more than 4300 digits (sys.int_info)
        raise ClusterConfigError(
            f"{path}: a value has more digits than a number may have"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ClusterConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ClusterConfigError(f"{path}: expected a mapping of keys to values at the top")
    return data
