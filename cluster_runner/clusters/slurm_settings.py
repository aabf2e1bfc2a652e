"""Slurm jobs files: what ``runner scale --cluster PROFILE --nodes 1,2`` asks Slurm for, as data.

A runner profile with ``slurm = "FILE.yaml"`` (``cluster_configs/slurm-dask.toml``) names one
of these YAML files. It says which engine runs in the jobs, which Slurm to ask, how long to
wait, and the engine's own job settings::

    engine: dask              # dask: dask-jobqueue's SLURMCluster, one job a node
    slurm: local-slurm.yaml   # the runner's own Slurm (runner cluster up); omit on a real one
    wait: 180                 # seconds the jobs have to start and their workers to join
    jobqueue:                 # keyword arguments of dask_jobqueue.SLURMCluster
      queue: debug
      cores: 1

    engine: ray               # ray: one allocation, Ray's head and workers (an sbatch template)
    partition: debug
    cpus: 1                   # CPUs each Ray node offers (--cpus-per-task)
    walltime: "00:30:00"
    node_ip: 127.0.0.1        # the address every Ray node listens on; auto: the node's own

It only says *what* to ask for (:class:`SlurmJobs`); :mod:`.slurm_dask` and :mod:`.slurm_ray`
know how. Every mistake is one :class:`~cluster_runner.errors.ClusterConfigError` line naming
the file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cluster_runner.clusters.config import read_engine_yaml
from cluster_runner.errors import ClusterConfigError, UsageError
from cluster_runner.validation import STRICT_CONFIG, Integer, Number

#: A Slurm time limit as sbatch takes it: ``MM``, ``HH:MM:SS``, ``D-HH:MM`` and so on.
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
#: dask-jobqueue keys the runner sets itself (the job name marks the jobs it must cancel).
_RUNNER_KEYS = ("job_name", "n_workers", "log_directory")


class _Engine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    engine: Literal["dask", "ray"]


class SlurmJobsFile(BaseModel):
    """The keys every Slurm jobs file takes."""

    model_config = STRICT_CONFIG
    engine: Literal["dask", "ray"]
    slurm: str | None = None  # a `runner cluster` config of engine slurm; None: the system's
    wait: Number = Field(300.0, ge=1.0, le=86400.0, allow_inf_nan=False)
    folder: str | None = None  # job scripts, logs, Ray's token: shared with the nodes


class DaskSlurmFile(SlurmJobsFile):
    jobqueue: dict[str, Any] = Field(default_factory=dict)  # SLURMCluster's keyword arguments


class RaySlurmFile(SlurmJobsFile):
    partition: str | None = None
    cpus: Integer = Field(1, ge=1, le=4096)
    walltime: str = "00:30:00"
    node_ip: str = "127.0.0.1"
    port: Integer = Field(0, ge=0, le=65535)
    object_store_mb: Integer = Field(200, ge=75, le=10**7)
    template: str | None = None  # an sbatch template of one's own (default: ray-slurm.sbatch)
    directives: list[str] = Field(default_factory=list)  # more #SBATCH lines, e.g. --exclusive
    prologue: list[str] = Field(default_factory=list)  # shell lines first: module load, venv


_MODELS: dict[str, type[SlurmJobsFile]] = {"dask": DaskSlurmFile, "ray": RaySlurmFile}


@dataclass(frozen=True)
class SlurmJobs:
    """A checked Slurm jobs file; one comment a field."""

    path: Path  # the file it was read from
    engine: str  # dask or ray
    slurm: Path | None  # the runner's own Slurm's config; None: the system's Slurm
    wait: float  # seconds the jobs have to start and their workers or nodes to join
    folder: Path | None  # where job scripts, logs and Ray's token go; None: the state folder
    settings: dict[str, Any] = field(default_factory=dict)  # the engine's own keys


def load_slurm_jobs(path: Path | str) -> SlurmJobs:
    """Read and check a Slurm jobs file (YAML): the engine first, then its keys."""
    path = Path(path)
    engine, model = read_engine_yaml(path, _MODELS, _Engine)
    settings = model.model_dump(exclude={"engine", "slurm", "wait", "folder"})
    if engine == "dask":
        taken = sorted(set(settings["jobqueue"]) & set(_RUNNER_KEYS))
        if taken:
            raise ClusterConfigError(
                f"{path}: jobqueue.{taken[0]} is set by the runner (it names and counts the"
                " jobs it must cancel): leave it out"
            )
    elif not _WALLTIME.match(settings["walltime"]):
        raise ClusterConfigError(
            f"{path}: walltime {settings['walltime']!r} is not a Slurm time limit"
            " (e.g. 30, 00:30:00, 1-00:00)"
        )
    slurm = None
    if model.slurm is not None:
        from cluster_runner.clusters.config import load_cluster_config

        slurm = (path.parent / Path(model.slurm).expanduser()).resolve()
        if not slurm.is_file():
            raise ClusterConfigError(f"{path}: 'slurm': no such file {slurm}")
        if load_cluster_config(slurm).engine != "slurm":
            raise ClusterConfigError(f"{path}: 'slurm' {slurm} is not a Slurm cluster config")
    template = settings.get("template")
    if template is not None:
        found = (path.parent / Path(template).expanduser()).resolve()
        if not found.is_file():
            raise ClusterConfigError(f"{path}: 'template': no such file {found}")
        settings["template"] = str(found)
    return SlurmJobs(
        path=path,
        engine=engine,
        slurm=slurm,
        wait=float(model.wait),
        folder=Path(model.folder).expanduser() if model.folder else None,
        settings=settings,
    )


def slurm_env(jobs: SlurmJobs, state_root: Path | str | None = None) -> dict[str, str]:
    """The environment Slurm's commands need for ``jobs``: the local Slurm's ``SLURM_CONF``
    (it must be up), or nothing for the system's Slurm."""
    if jobs.slurm is None:
        return {}
    from cluster_runner.clusters import engine_module
    from cluster_runner.clusters.config import load_cluster_config, state_folder

    spec = load_cluster_config(jobs.slurm)
    module = engine_module("slurm")
    state = module.status(state_folder(spec, state_root))
    if state is None or not module.healthy(state):
        raise UsageError(
            f"the Slurm of {jobs.slurm} is not up; start it with: runner cluster up --config"
            f" {jobs.slurm}"
        )
    return module.driver_env(state)
