"""Node-count sweeps on real multi-node clusters on 127.0.0.1: Dask, then Ray.

Each cluster has two nodes of one single-threaded worker each, started here and ended here by
pid (Dask: a scheduler and two ``dask worker`` processes; Ray: its own test ``Cluster`` of a
head and a second node). The sweep connects to it (``--address``), times the job on 1 node
and then on 2 without restarting the cluster, and the records must show that the 1-node
point's tasks all ran on one node, and that the 2-node point used both.

The clusters come from :mod:`clusters` (the same scripts users start them with), which checks
on the way out that none of their processes is left.
"""

from __future__ import annotations

import pytest

from cluster_runner.jobspec import parse_job
from cluster_runner.sweeps.loop import run_sweep
from cluster_runner.sweeps.plan import plan_sweep

import clusters

pytestmark = pytest.mark.cluster

#: Chunk tasks of 10-20 ms each: long enough that two idle nodes both get some.
JOB = """
[[stage]]
workload = "dot"
n = 8_000_000
chunks = 8
seed = 3
"""


@pytest.fixture(scope="module")
def dask_cluster():
    """A scheduler and two one-worker nodes, each its own ``dask worker`` process."""
    with clusters.dask_cluster(workers=2) as running:
        yield running.address


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node and a second node, one CPU each, on 127.0.0.1, with a shared token."""
    with clusters.ray_cluster(nodes=2) as running, pytest.MonkeyPatch.context() as patch:
        for name, value in running.env.items():
            patch.setenv(name, value)  # the in-process driver needs the cluster's token
        yield running.address


def _sweep(backend: str, address: str) -> dict[int, list[dict]]:
    plan = plan_sweep(
        parse_job(JOB, name="nodes"), [backend], workers=[1], nodes=[1, 2], address=address
    )
    records: list[dict] = []
    outcome = run_sweep(
        plan, warmup=1, repeat=2, timeout=120, on_record=lambda r: records.append(r.to_json())
    )
    assert outcome.ok, [(r["status"], r["error"]) for r in records]
    return {k: [r for r in records if r["labels"]["nodes"] == k] for k in (1, 2)}


def _used(records: list[dict], what: str) -> set[str]:
    return {name for r in records for stage in r["stages"] for name in stage[what]}


def _check_node_sweep(points: dict[int, list[dict]], node: str) -> None:
    """``node`` is the placement field that names a node: Dask restricts a sweep to k workers
    (on one host they share a host name), Ray to k Ray nodes."""
    one, two = points[1], points[2]
    assert len(one) == len(two) == 3  # a warm-up and two timed runs each
    assert all(r["status"] == "verified" for r in one + two)
    assert [r["backend"]["workers"] for r in one + two] == [1] * 3 + [2] * 3
    assert len(_used(one, node)) == 1, _used(one, node)
    assert len(_used(one, "nodes_used")) == 1, _used(one, "nodes_used")
    assert len(_used(two, node)) == 2, _used(two, node)


def test_dask_node_sweep_runs_the_one_node_point_on_one_node(dask_cluster):
    from distributed import Client

    with Client(dask_cluster, timeout=60) as client:
        before = set(client.scheduler_info()["workers"])
    points = _sweep("dask", dask_cluster)
    _check_node_sweep(points, node="workers_used")
    for record in points[2]:  # the work is shared out, not left where the first input is
        (stage,) = record["stages"]
        assert min(stage["workers_used"].values()) >= stage["tasks"] // 3, stage["workers_used"]
    with Client(dask_cluster, timeout=60) as client:
        assert set(client.scheduler_info()["workers"]) == before  # not restarted


def test_ray_node_sweep_runs_the_one_node_point_on_one_node(ray_cluster):
    import ray

    _check_node_sweep(_sweep("ray", ray_cluster), node="nodes_used")
    assert not ray.is_initialized()  # the backend disconnected; the cluster is still ours
