"""Where the runner finds job specs and cluster configs, and where it keeps compiled kernels.

**Job specs and cluster configs by name.** ``--job NAME`` and ``--cluster``/``--config NAME``
search these folders in order; the first file of that name wins:

1. the folders named by ``$RUNNER_JOBS_DIR`` (job specs) or ``$RUNNER_CLUSTER_CONFIGS``
   (cluster configs and profiles), several separated by ``os.pathsep``;
2. ``./jobs`` or ``./cluster_configs`` in the current directory (``runner init`` makes them);
3. the built-in ones, shipped inside the package: ``cluster_runner/data/`` in an installed wheel
   (``pyproject.toml`` force-includes the repository's ``jobs/`` and ``cluster_configs/`` there),
   or the repository's own folders when the package runs from a source checkout.

A local file with a built-in's name therefore overrides it, and a new name adds to them, from
any directory, as in the issue 17 report (``pip install .``, ``cd /tmp``, ``runner jobs`` found
nothing). Messages say where the runner looked (:func:`describe`).

**Compiled kernels.** The sieve is compiled by numba with ``cache=True``. Left alone, numba
writes its cache beside the source file when that folder is writable (a virtualenv's
site-packages) and in a per-user folder otherwise, so one install could compile in every
process that cannot write where another wrote. :func:`use_kernel_cache` names one per-user
folder instead (``NUMBA_CACHE_DIR``, unless the user set it), in this process and, through the
environment, in every worker process the runner starts, so a kernel is compiled once per user
and machine and only loaded (a few tenths of a second) everywhere after.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cluster_runner.errors import JobSpecError

#: Folders searched first for ``--job NAME`` (``os.pathsep``-separated).
JOBS_DIR_ENV = "RUNNER_JOBS_DIR"
#: Folders searched first for a cluster config or profile given by name.
CONFIGS_DIR_ENV = "RUNNER_CLUSTER_CONFIGS"
#: numba's own variable for its cache folder; the runner sets it when the user has not.
KERNEL_CACHE_ENV = "NUMBA_CACHE_DIR"

#: Kind of file -> (its folder's name, the variable that adds folders before it).
KINDS = {"jobs": ("jobs", JOBS_DIR_ENV), "cluster_configs": ("cluster_configs", CONFIGS_DIR_ENV)}

_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class SearchDir:
    """One folder the runner searches, and where it came from (for messages and listings)."""

    path: Path
    source: str  # "$RUNNER_JOBS_DIR", "./jobs" or "built-in"

    def shown(self) -> str:
        """The folder as messages show it: ``./jobs``, ``/x (from $RUNNER_JOBS_DIR)``,
        ``the built-in ones (/...)``; ``(missing)`` when it does not exist."""
        if self.source.startswith("$"):
            where = f"{self.path} (from {self.source})"
        elif self.source == "built-in":
            where = f"the built-in ones ({self.path})"
        else:
            where = self.source
        return where if self.path.is_dir() else f"{where} (missing)"


def builtin_dir(kind: str) -> Path | None:
    """The folder of built-in files of ``kind`` ("jobs" or "cluster_configs"), if there is one.

    In a wheel they are package data (``cluster_runner/data/KIND``); in a source checkout the
    package sits beside the repository's own folders, which are their source.
    """
    folder = KINDS[kind][0]
    packaged = _PACKAGE / "data" / folder
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent / folder
    if checkout.is_dir() and (_PACKAGE.parent / "pyproject.toml").is_file():
        return checkout
    return None


def search_dirs(kind: str) -> list[SearchDir]:
    """The folders searched for files of ``kind``, in order, each once (see the module doc)."""
    folder, env = KINDS[kind]
    dirs = [
        SearchDir(Path(part).expanduser(), f"${env}")
        for part in os.environ.get(env, "").split(os.pathsep)
        if part.strip()
    ]
    dirs.append(SearchDir(Path(folder), f"./{folder}"))
    builtin = builtin_dir(kind)
    if builtin is not None:
        dirs.append(SearchDir(builtin, "built-in"))
    unique: list[SearchDir] = []
    seen: set[Path] = set()
    for entry in dirs:
        key = entry.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique


def describe(kind: str) -> str:
    """Where the runner looks for ``kind``, in words: ``./jobs, then built-in (/...)``."""
    return ", then ".join(entry.shown() for entry in search_dirs(kind))


def search_order_help(kind: str) -> str:
    """The search order as ``--help`` states it, without paths that depend on the directory."""
    folder, env = KINDS[kind]
    return f"${env}, then ./{folder}, then the built-in ones"


# --- job specs by name --------------------------------------------------------------------


def jobs_dirs() -> list[Path]:
    """Folders searched for ``--job NAME``: $RUNNER_JOBS_DIR, ./jobs, then the built-in jobs."""
    return [entry.path for entry in search_dirs("jobs")]


def resolve_job(value: str) -> Path:
    """A job file path, or the name of a job in :func:`jobs_dirs` (``primes``)."""
    path = Path(value).expanduser()
    if path.exists() or path.suffix == ".toml" or os.sep in value:
        if not path.is_file():
            found = find_job(path.stem)
            hint = f"; did you mean --job {path.stem} ({found})?" if found is not None else ""
            raise JobSpecError(f"job file {value} does not exist{hint} (see 'runner jobs')")
        return path
    found = find_job(value)
    if found is not None:
        return found
    raise JobSpecError(
        f"no job named {value!r}: looked in {describe('jobs')}"
        " (see 'runner jobs', or give a path to a .toml file)"
    )


def find_job(name: str) -> Path | None:
    """``NAME.toml`` in the first of :func:`jobs_dirs` that has it, or None."""
    for folder in jobs_dirs():
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def job_names() -> list[str]:
    """Every job name ``--job NAME`` finds, each once, sorted (for shell completion)."""
    names = set()
    for folder in jobs_dirs():
        if folder.is_dir():
            names.update(path.stem for path in folder.glob("*.toml"))
    return sorted(names)


# --- compiled kernels -----------------------------------------------------------------------


def user_cache_dir() -> Path:
    """This user's cache folder for the runner: XDG on Linux, the platform's own elsewhere."""
    home = Path.home()
    if sys.platform == "darwin":
        base = home / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "cluster-runner"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def kernel_cache_dir() -> Path | None:
    """Where compiled kernels go: ``$NUMBA_CACHE_DIR``, else the user's cache folder, else a
    per-user folder under TMPDIR; None when none of them can be written."""
    given = os.environ.get(KERNEL_CACHE_ENV)
    if given:
        return Path(given)
    try:
        preferred = user_cache_dir() / "numba"
    except RuntimeError:  # no home directory (Path.home() cannot tell)
        preferred = None
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    fallback = Path(tempfile.gettempdir()) / f"cluster-runner-{user}" / "numba"
    for folder in (preferred, fallback):
        if folder is not None and _writable(folder):
            return folder
    return None


def use_kernel_cache() -> Path | None:
    """Point numba's cache at :func:`kernel_cache_dir`, here and in the processes started later.

    Call before the ``@njit(cache=True)`` decorators run: numba picks a function's cache folder
    when it is decorated. Setting the variable (rather than only ``numba.config``) is what
    carries the folder to worker processes, which inherit the driver's environment.
    """
    folder = kernel_cache_dir()
    if folder is None:
        return None  # numba's own choice: beside the source, or its per-user folder
    if os.environ.get(KERNEL_CACHE_ENV) != str(folder):
        os.environ[KERNEL_CACHE_ENV] = str(folder)
    if "numba" in sys.modules:
        from numba.core import config

        config.reload_config()  # numba read its variables when it was imported
    return folder
