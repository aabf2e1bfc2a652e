"""Every file in ``cluster_configs/`` is valid for the tool that reads it.

- Ray cluster launcher YAML (``ray-*.yaml``): Ray's own JSON schema, then the steps ``ray up``
  takes before it launches anything (``prepare_config``, ``validate_config``); no cloud call.
- Dask over SSH (``dask-ssh*.yaml``): bound to ``distributed.SSHCluster``'s signature, and its
  worker and scheduler options to those of Dask's worker and scheduler; nothing connects.
- dask-jobqueue (``dask-slurm*.yaml``, ``dask-pbs*.yaml``): a real ``SLURMCluster`` or
  ``PBSCluster`` built from the file with no workers, its scheduler on 127.0.0.1, and its job
  script checked for the directives the file asks for; nothing is submitted.
- ``runner cluster`` configs (``local-*.yaml``) and runner profiles (``*.toml``): the runner's
  own loaders, which are strict.
- Slurm jobs files (``slurm-*.yaml``, issue 19) by the runner's loader, and sbatch templates
  (``*.sbatch``) for fields the runner fills (``tests/test_slurm.py`` renders and submits them).

A file the tests do not know how to check fails :func:`test_every_file_is_checked`.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from cluster_runner.clusters.config import CLUSTER_ENGINES, load_cluster_config
from cluster_runner.clusters.profile import TLS_KEYS, load_profile
from cluster_runner.clusters.slurm_settings import load_slurm_jobs
from cluster_runner.errors import ClusterConfigError

from clusters import ROOT, listening_addresses

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIGS = ROOT / "cluster_configs"


def kind(path: Path) -> str | None:
    """Which tool reads ``path``, from its name."""
    name = path.name
    if path.suffix == ".toml":
        return "profile"
    if path.suffix == ".sbatch":
        return "sbatch-template"
    if path.suffix != ".yaml":
        return None
    if name.startswith("local-"):
        return "runner-cluster"
    if name.startswith("slurm-"):
        return "slurm-jobs"
    if name.startswith("ray-"):
        return "ray-launcher"
    if name.startswith("dask-ssh"):
        return "dask-ssh"
    if name.startswith(("dask-slurm", "dask-pbs")):
        return "dask-jobqueue"
    return None


FILES = sorted(p for p in CONFIGS.rglob("*") if p.is_file())


def of_kind(wanted: str) -> list:
    return [pytest.param(p, id=p.name) for p in FILES if kind(p) == wanted]


def test_every_file_is_checked():
    assert [p.name for p in FILES if kind(p) is None] == []
    kinds = {kind(p) for p in FILES}
    assert kinds == {"profile", "runner-cluster", "ray-launcher", "dask-ssh", "dask-jobqueue",
                     "slurm-jobs", "sbatch-template"}  # fmt: skip
    providers = {
        yaml.safe_load(p.read_text())["provider"]["type"]
        for p in FILES
        if kind(p) == "ray-launcher"
    }
    assert {"local", "aws"} <= providers


# --- Ray's cluster launcher -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def check_ray_launcher(config: dict, schema: dict) -> dict:
    """Ray's schema on the file as written, then on the config ``ray up`` would use."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))  # defaults merged, as `ray up` does
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("path", of_kind("ray-launcher"))
def test_ray_launcher_config_is_valid_for_ray_up(path, ray_schema):
    config = yaml.safe_load(path.read_text())
    prepared = check_ray_launcher(config, ray_schema)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    if config["provider"]["type"] == "local":
        provider = config["provider"]
        assert provider["head_ip"] and len(provider["worker_ips"]) >= 1
        # Documentation addresses (RFC 5737) or loopback: nothing real is named.
        for ip in [provider["head_ip"], *provider["worker_ips"]]:
            assert ip.startswith(("192.0.2.", "127.0.0.1")), ip
    # Token authentication on every node: the token file is copied and token mode is set.
    assert "~/.ray/auth_token" in config["file_mounts"]
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)


def test_ray_schema_check_rejects_a_misspelt_key(ray_schema):
    import jsonschema

    config = yaml.safe_load((CONFIGS / "ray-aws.yaml").read_text())
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        check_ray_launcher(config, ray_schema)


# --- Dask over SSH --------------------------------------------------------------------------


def _named(func) -> set[str]:
    params = inspect.signature(func).parameters.values()
    return {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def check_ssh_cluster(data: dict) -> None:
    """Raise TypeError or ValueError unless ``SSHCluster(**data)`` would accept ``data``."""
    from distributed import Nanny, Scheduler, SpecCluster, SSHCluster, Worker

    ssh = inspect.signature(SSHCluster)
    named = _named(SSHCluster)
    ssh.bind(**{k: v for k, v in data.items() if k in named})
    rest = {k: v for k, v in data.items() if k not in named}
    # SSHCluster passes the rest on to SpecCluster, with workers, scheduler and name set.
    inspect.signature(SpecCluster).bind(workers={}, scheduler={}, name="SSHCluster", **rest)
    hosts = data["hosts"]
    if len(hosts) < 2 or not all(isinstance(h, str) for h in hosts):
        raise ValueError("hosts: a scheduler host and at least one worker host")
    connect = data.get("connect_options", {})
    if isinstance(connect, list) and len(connect) != len(hosts):
        raise ValueError("connect_options: one mapping per host")
    # SSH's worker launcher takes n_workers itself and passes the rest to the worker class.
    worker_keys = _named(Nanny) | _named(Worker) | {"n_workers"}
    unknown = set(data.get("worker_options", {})) - worker_keys
    if unknown:
        raise TypeError(f"unknown worker_options {sorted(unknown)}")
    unknown = set(data.get("scheduler_options", {})) - _named(Scheduler)
    if unknown:
        raise TypeError(f"unknown scheduler_options {sorted(unknown)}")


@pytest.mark.parametrize("path", of_kind("dask-ssh"))
def test_dask_ssh_config_fits_sshcluster(path):
    data = yaml.safe_load(path.read_text())
    check_ssh_cluster(data)
    assert all(h.startswith("192.0.2.") for h in data["hosts"])  # documentation addresses


def test_ssh_check_rejects_a_misspelt_option():
    data = yaml.safe_load((CONFIGS / "dask-ssh.yaml").read_text())
    data["worker_options"]["nthread"] = data["worker_options"].pop("nthreads")
    with pytest.raises(TypeError, match="nthread"):
        check_ssh_cluster(data)
    with pytest.raises(TypeError):
        check_ssh_cluster({**yaml.safe_load((CONFIGS / "dask-ssh.yaml").read_text()), "hostz": 1})


# --- dask-jobqueue ---------------------------------------------------------------------------


def _expected_directives(path: Path, data: dict) -> list[str]:
    if "slurm" in path.name:
        return [
            f"#SBATCH -p {data['queue']}",
            f"#SBATCH -A {data['account']}",
            f"#SBATCH --cpus-per-task={data['cores']}",
            f"#SBATCH -t {data['walltime']}",
            *[f"#SBATCH {d}" for d in data.get("job_extra_directives", [])],
        ]
    return [
        f"#PBS -q {data['queue']}",
        f"#PBS -A {data['account']}",
        f"#PBS -l {data['resource_spec']}",
        f"#PBS -l walltime={data['walltime']}",
    ]


@pytest.mark.parametrize("path", of_kind("dask-jobqueue"))
def test_jobqueue_config_builds_the_job_script_it_describes(path, tmp_path):
    from dask_jobqueue import PBSCluster, SLURMCluster

    data = yaml.safe_load(path.read_text())
    kwargs = dict(data)
    # The scheduler jobqueue starts here listens on loopback only, with no dashboard.
    kwargs["scheduler_options"] = {
        **data.get("scheduler_options", {}),
        "host": "127.0.0.1",
        "port": 0,
        "dashboard": False,
        "dashboard_address": "127.0.0.1:0",
    }
    if "log_directory" in kwargs:
        kwargs["log_directory"] = str(tmp_path / "logs")
    cls = SLURMCluster if "slurm" in path.name else PBSCluster
    children = set(psutil.Process().children(recursive=True))
    with cls(n_workers=0, **kwargs) as cluster:  # n_workers=0: no job is submitted
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert listening_addresses([psutil.Process()]) <= {"127.0.0.1"}
        assert set(psutil.Process().children(recursive=True)) == children  # no sbatch/qsub
    lines = script.splitlines()
    for directive in _expected_directives(path, data):
        assert directive in lines, (directive, script)
    for line in data.get("job_script_prologue", []):
        assert line in lines
    assert f"--nworkers {data['processes']}" in script
    assert f"--nthreads {data['cores'] // data['processes']}" in script
    assert f"--interface {data['interface']}" in script


# --- the runner's own files -----------------------------------------------------------------


@pytest.mark.parametrize("path", of_kind("runner-cluster"))
def test_runner_cluster_config_loads(path):
    spec = load_cluster_config(path)
    assert spec.engine in CLUSTER_ENGINES and spec.nodes >= 2  # multi-node: what it is for
    assert spec.name == path.stem


@pytest.mark.parametrize("path", of_kind("slurm-jobs"))
def test_slurm_jobs_file_loads_and_names_the_runner_slurm(path):
    jobs = load_slurm_jobs(path)
    assert jobs.engine in ("dask", "ray") and jobs.wait >= 1
    assert jobs.slurm is None or load_cluster_config(jobs.slurm).engine == "slurm"


@pytest.mark.parametrize("path", of_kind("sbatch-template"))
def test_sbatch_template_names_only_fields_the_runner_fills(path):
    import re

    from cluster_runner.clusters.slurm_ray import TEMPLATE_FIELDS

    fields = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", path.read_text()))
    assert fields and fields <= set(TEMPLATE_FIELDS), fields - set(TEMPLATE_FIELDS)


@pytest.fixture
def configs_copy(tmp_path) -> Path:
    """cluster_configs/ copied, with an empty file at every path a profile names but the
    repository does not ship (a TLS profile's certificates are the user's own)."""
    folder = tmp_path / "cluster_configs"
    shutil.copytree(CONFIGS, folder)
    for profile in folder.glob("*.toml"):
        data = tomllib.loads(profile.read_text())
        names = [data.get("cluster"), data.get("token_file"), *data.get("tls", {}).values()]
        for name in filter(None, names):
            target = profile.parent / Path(name).expanduser()
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("")
    return folder


@pytest.mark.parametrize("path", of_kind("profile"))
def test_runner_profile_loads(path, configs_copy):
    profile = load_profile(configs_copy / path.relative_to(CONFIGS))
    assert [profile.address, profile.cluster, profile.slurm].count(None) == 2  # exactly one
    data = tomllib.loads(path.read_text())
    assert profile.extra == {
        TLS_KEYS[k]: str((profile.path.parent / v).resolve())
        for k, v in data.get("tls", {}).items()
    }
    if profile.cluster is not None:
        assert load_cluster_config(profile.cluster).engine == profile.backend


def test_tls_profile_without_its_files_is_refused_naming_the_key():
    with pytest.raises(ClusterConfigError) as caught:
        load_profile(CONFIGS / "dask-tls.toml")
    message = str(caught.value)
    assert "dask-tls.toml" in message and "'tls.ca_file'" in message and "\n" not in message
