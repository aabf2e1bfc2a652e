"""Shipping the user's code to a cluster's workers, which may not have it on disk.

A job's user code arrives as :class:`~cluster_runner.workloads.code.CodeSource` objects among
the backend's warm-up hooks (``BackendOptions.warm_up``; see ``JobSpec.warm_ups``): a module
file or a package folder on the driver's machine. Where the workers share the driver's disk and
start from its ``sys.path`` (the pool backends, the embedded Dask cluster, whose worker
processes are spawned from the driver), running those hooks in each worker is enough. A cluster
reached by ``--address`` may be other machines, so the code is sent:

- Dask: the two plugins ``Client.upload_file`` registers, per source, under a name of ours:
  ``UploadFile`` writes the file, or a zip of the package, into each worker's local directory
  and imports it (the scheduler keeps it for workers that join later, a restarted one), and
  ``SchedulerUploadFile`` does the same in the scheduler, which unpickles every graph it is
  sent, the user's functions among its tasks' arguments (without it: "Error during
  deserialization of the task graph"). :meth:`DaskShipment.withdraw` unregisters both when
  the backend closes, so that the cluster's later workers do not get them; the module stays
  imported in the processes that have it.
- Ray: the job's ``runtime_env`` lists the sources under ``py_modules``
  (:func:`ray_runtime_env`): Ray packs each into its object store, and every worker of the job
  (on any node) starts with them unpacked on its ``sys.path``. Ray workers never start from the
  driver's ``sys.path``, so the embedded instance gets its code the same way.

Either way the workers' warm-ups leave the sources out (:func:`worker_warm_ups`): run there,
they would import the code from the driver's folder, which a worker on another machine lacks.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cluster_runner.backends.failures import one_line
from cluster_runner.errors import ExecutionError
from cluster_runner.workloads.code import CodeSource

#: Prefix of the Dask worker plugins that carry the user's code.
PLUGIN_PREFIX = "cluster-runner-code"


def code_in(warm_up: Sequence[Callable[[], object]]) -> tuple[CodeSource, ...]:
    """The user's code among a backend's warm-up hooks."""
    return tuple(hook for hook in warm_up if isinstance(hook, CodeSource))


def worker_warm_ups(
    warm_up: Sequence[Callable[[], object]], shipped: bool
) -> tuple[Callable[[], object], ...]:
    """The hooks a worker runs: all of them, or, where the code is shipped, all but the code."""
    if not shipped:
        return tuple(warm_up)
    return tuple(hook for hook in warm_up if not isinstance(hook, CodeSource))


def describe(sources: Sequence[CodeSource]) -> list[str]:
    """What a record says was shipped."""
    return [source.describe() for source in sources]


def ray_runtime_env(env_vars: dict[str, str], sources: Sequence[CodeSource]) -> dict[str, Any]:
    """A Ray job's ``runtime_env``: its environment variables, and the user's code under
    ``py_modules`` (a ``.py`` file or a package folder each)."""
    if not sources:
        return {"env_vars": dict(env_vars)}
    return {"env_vars": dict(env_vars), "py_modules": [source.path for source in sources]}


class DaskShipment:
    """The user's code sent to a Dask cluster's workers as worker plugins, until withdrawn."""

    def __init__(self, sources: Sequence[CodeSource]) -> None:
        self.sources = tuple(sources)
        self.names: list[str] = []
        self._scratch: Path | None = None  # zips of packages, removed by withdraw()

    def send(self, client: Any) -> None:
        """Register the upload plugins of each source (each process imports it as it gets it)."""
        from distributed.diagnostics.plugin import SchedulerUploadFile, UploadFile

        for source in self.sources:
            name = f"{PLUGIN_PREFIX}-{source.module}-{source.digest[:12]}"
            path = self._file(source)
            try:
                self.names.append(name)  # withdrawn even if only one of the two got there
                client.register_plugin(SchedulerUploadFile(path), name=name)
                client.register_plugin(UploadFile(path), name=name)
            except Exception as exc:
                raise ExecutionError(
                    f"could not ship {source.describe()} to the Dask workers: {one_line(exc)}"
                    " (does it import there? its own imports must be installed on the workers)"
                ) from None

    def _file(self, source: CodeSource) -> str:
        """The file a worker gets: the module itself, or a zip holding the package folder."""
        if not source.is_package:
            return source.path
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="cluster-runner-code-"))
        target = self._scratch / f"{source.module}.zip"
        folder = Path(source.path)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    archive.write(file, Path(source.module) / file.relative_to(folder))
        return str(target)

    def withdraw(self, client: Any) -> None:
        """Unregister the plugins (workers that join later do not get them); remove zips."""
        names, self.names = self.names, []
        if client is not None and client.status == "running":
            undo = (client.unregister_worker_plugin, client.unregister_scheduler_plugin)
            for name in names:
                for unregister in undo:
                    # Not there (a send that failed half-way): nothing to undo.
                    with contextlib.suppress(Exception):
                        unregister(name)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
