"""Ray on Slurm: one allocation of all the sweep's nodes, Ray's head and workers started in it.

:class:`RayAllocation` fills the sbatch template (``cluster_configs/ray-slurm.sbatch``, or the
jobs file's ``template``) and submits it: one job of ``nodes`` nodes, the head on the first, a
Ray node on each of the others (:mod:`.slurm_ray_node`, Ray's ``ray start --block`` pattern on
the address given). The allocation's folder holds the template as submitted, Ray's token for
this allocation (0600), the job's log, and a file per Ray node naming its Slurm node and job.
The driver waits until every node has written its file and the GCS counts them alive, then
connects (``--address``, the token in ``RAY_AUTH_TOKEN_PATH``) and sweeps k of the nodes.

A job that ends (cancelled, past its time limit) takes the whole Ray cluster with it, the GCS
included: :meth:`RayAllocation._replace` submits the allocation again, on the same GCS port, so
that the sweep's address stays what it was.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cluster_runner.clusters.processes import write_private
from cluster_runner.clusters.ray_local import free_port
from cluster_runner.clusters.slurm_alloc import Allocation, Member
from cluster_runner.clusters.slurm_conf import ENDED, cancel, client, job_states
from cluster_runner.errors import ClusterConfigError, ClusterStartError
from cluster_runner.results import RunRecord

_FIELD = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
#: The fields an sbatch template may name, ``{{ nodes }}``; each filled by the runner.
TEMPLATE_FIELDS = (
    "job_name", "nodes", "cpus", "walltime", "directives", "prologue", "folder", "token_file",
    "temp_dir", "python", "pythonpath", "node_ip", "port", "object_store_mb",
)  # fmt: skip


def default_template() -> Path:
    """The runner's own sbatch template (``cluster_configs/ray-slurm.sbatch``)."""
    from cluster_runner.paths import search_dirs

    for entry in search_dirs("cluster_configs"):
        candidate = entry.path / "ray-slurm.sbatch"
        if candidate.is_file():
            return candidate
    raise ClusterConfigError("the built-in sbatch template ray-slurm.sbatch is missing")


def render(template: str, values: dict[str, Any], source: Path | str = "template") -> str:
    """``template`` with every ``{{ name }}`` replaced by ``values[name]``; an unknown name is a
    one-line error naming it and the fields there are."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join(sorted(values))
            raise ClusterConfigError(f"{source}: unknown field {{{{ {name} }}}} (known: {known})")
        return str(values[name])

    return _FIELD.sub(fill, template)


class RayAllocation(Allocation):
    """Ray's head and nodes in one Slurm allocation (see the module docstring)."""

    engine = "ray"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._job: str | None = None
        self._port = 0
        self._submitted = 0
        self.token_file = self.folder / "auth_token"
        self.temp_dir = f"/tmp/rcr-{self.name[3:]}"  # short: Ray's socket paths

    def _values(self, nodes: int) -> dict[str, Any]:
        s = self.jobs.settings
        directives = [f"#SBATCH --partition={s['partition']}"] if s.get("partition") else []
        directives += [f"#SBATCH {d}" for d in s.get("directives", [])]
        root = str(Path(__file__).resolve().parents[2])
        values = {
            "job_name": self.name,
            "nodes": nodes,
            "cpus": s["cpus"],
            "walltime": s["walltime"],
            "directives": "\n".join(directives),
            "prologue": "\n".join(s.get("prologue", [])),
            "folder": self.folder,
            "token_file": self.token_file,
            "temp_dir": self.temp_dir,
            "python": sys.executable,
            "pythonpath": root,
            "node_ip": s["node_ip"],
            "port": self._port,
            "object_store_mb": s["object_store_mb"],
        }
        assert set(values) == set(TEMPLATE_FIELDS)
        return values

    def _submit(self, nodes: int) -> None:
        (self.folder / "logs").mkdir(mode=0o700, exist_ok=True)
        if not self.token_file.exists():
            write_private(self.token_file, secrets.token_hex(32))
        self._port = self._port or self.jobs.settings["port"] or free_port()
        source = Path(self.jobs.settings.get("template") or default_template())
        script = render(source.read_text(), self._values(nodes), source)
        self._submitted += 1
        path = self.folder / f"ray-{self._submitted}.sbatch"
        write_private(path, script)
        done = client(["sbatch", "--parsable", str(path)], env=self.env)
        self._job = done.stdout.strip().split(";")[0]

    def _wait_until_up(self, deadline: float) -> None:
        assert self._job is not None
        while True:
            state = job_states([self._job], env=self.env).get(self._job, ("GONE", ""))[0]
            if state in ENDED or state == "GONE":
                raise ClusterStartError(
                    f"the Ray job {self._job} ended before its nodes were up ({state}); see"
                    f" {self.folder / 'logs' / f'ray-{self._job}.out'}"
                )
            nodes = self._node_files()
            if len(nodes) >= self.nodes and self._alive(nodes) >= self.nodes:
                break
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{len(nodes)} of {self.nodes} Ray node(s) up within {self.jobs.wait:g} s;"
                    f" Slurm says: {self.pending_words()}"
                )
            time.sleep(0.5)
        head = json.loads((self.folder / f"head-{self._job}.json").read_text())
        self.address = head["address"]
        self.driver_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}
        self.members = {n["node_id"]: Member(n["job"], n["node"]) for n in nodes}

    def _node_files(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted((self.folder / "nodes").glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being written
            if data.get("job") == self._job:
                found.append(data)
        return found

    def _alive(self, nodes: list[dict[str, Any]]) -> int:
        """How many of ``nodes`` the GCS counts alive (asked with the allocation's token)."""
        from cluster_runner.clusters.ray_local import connected_nodes

        head = self.folder / f"head-{self._job}.json"
        if not head.exists():
            return 0
        address = json.loads(head.read_text())["address"]
        try:
            alive = connected_nodes(
                {"address": address, "token_file": str(self.token_file)}, timeout=5.0
            )
        except Exception:  # the GCS is still starting
            return 0
        ids = {line.split()[0] for line in alive}
        return sum(n["node_id"] in ids for n in nodes)

    def job_ids(self) -> list[str]:
        return [self._job] if self._job else []

    def _replace(self, lost: list[str]) -> None:
        cancel(lost, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the port is free once the old job's GCS is gone
            states = job_states(lost, env=self.env)
            if all(states.get(j, ("GONE",))[0] not in ("RUNNING", "COMPLETING") for j in lost):
                break
            time.sleep(0.5)
        self.members = {}
        self._submit(self.nodes)

    def release(self) -> None:
        try:
            super().release()
        finally:
            # Ray's session folder on this machine (the nodes' own, on a real cluster, go with
            # the job's temporary space).
            if Path(self.temp_dir).is_dir() and Path(self.temp_dir).owner() == _me():
                shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _scratch(self) -> list[str]:
        return [self.temp_dir]

    def _used(self, record: RunRecord) -> list[str]:
        return [str(n) for n in record.backend.extra.get("node_ids") or []]


def _me() -> str:
    import getpass

    return getpass.getuser()


__all__ = ["RayAllocation", "default_template", "render"]
