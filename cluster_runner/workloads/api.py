"""The public workload API: what a user's code imports to be measured by the runner.

Two levels, both exported from :mod:`cluster_runner` (``from cluster_runner import workload``):

- the simple one, a map-reduce of a few plain functions: :func:`workload` (a decorator on the
  chunk function) or :class:`MapReduce` (the same, as an object); see
  :mod:`cluster_runner.workloads.simple` for how each function is called;
- the full one, any graph: subclass :class:`Workload` and implement ``build(graph, stage,
  params)`` with :class:`Graph` (``graph.add(key, func, *args, stage=stage)``, which returns a
  :class:`Ref` that later tasks take as an argument); optionally ``verify``, ``summarize``,
  ``setup``, ``params`` (of :class:`Param`), ``weak_param``, ``rtol``/``atol``, ``warm_up``.

What stability means. :data:`WORKLOAD_API_VERSION` is ``MAJOR.MINOR``. Within a major version,
every name exported here, every documented argument and hook, and how each is called (the
order and meaning of their arguments, what a return value may be) stay as they are: a workload
written for 1.0 runs unchanged on every 1.x runner. A minor version only adds (a new optional
argument or hook, a new exported name); it is listed below. A change that could break a
workload bumps the major version, and what it replaces keeps working, with a
``DeprecationWarning``, for at least one minor release before it goes. Not covered: anything
not exported here (the runner's modules, the built-in workloads, the record format, which has
its own version, ``SCHEMA_VERSION``), and the exact words of messages.

History of :data:`WORKLOAD_API_VERSION`:

1.0. ``workload``, ``MapReduce``, ``Workload``, ``Param``, ``Verification``, ``ResultSummary``,
   ``Graph``, ``Ref``, ``summarize_value``; workloads named in job specs by built-in name,
   ``package.module:NAME``, ``path/to/file.py:NAME`` and the entry-point group
   ``cluster_runner.workloads``; a serial reference check for workloads without ``verify``.
1.1. Data the driver holds (issue 21): ``MapReduce(data=...)`` / ``workload(data=...)``, a
   function run in the driver whose value every chunk gets as its last argument; at the full
   level ``Graph.put(key, value, stage=...)``, which returns a :class:`DataRef` that tasks take
   as an argument (or a map in ``shared``). Inputs reach tasks read-only where they are numpy
   arrays, however they travel (``--transfer share`` or ``copy``).
"""

from __future__ import annotations

from cluster_runner.graph import DataRef, Graph, Ref
from cluster_runner.workloads.base import Param, ResultSummary, Verification, Workload
from cluster_runner.workloads.naming import ENTRY_POINT_GROUP
from cluster_runner.workloads.simple import MapReduce, workload
from cluster_runner.workloads.values import summarize_value

#: The version of this API (see the module docstring for what it promises, and its history).
WORKLOAD_API_VERSION = "1.1"

__all__ = [
    "ENTRY_POINT_GROUP",
    "WORKLOAD_API_VERSION",
    "DataRef",
    "Graph",
    "MapReduce",
    "Param",
    "Ref",
    "ResultSummary",
    "Verification",
    "Workload",
    "summarize_value",
    "workload",
]
