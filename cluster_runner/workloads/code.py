"""The user's code, as the workers need it: which module to ship, and whether it pickles.

Every engine sends a task's function to a worker *by reference*: the module's name and the
function's qualified name, which the worker imports. That works for the runner's own workloads
(installed with the runner), and for a user's code only if (1) each function can be found by
that name, which rules out lambdas, closures and functions of ``__main__``
(:func:`check_by_reference`), and (2) the worker can import the module.

A :class:`CodeSource` is (2): a module or package of the user's that lives outside the installed
packages, where it lives on the driver's machine, and a digest of its source. It is also a
warm-up hook (a picklable callable of no arguments, see
:class:`~cluster_runner.backends.base.BackendOptions`), which makes the module importable where
it runs: the pool backends run it in each worker at start-up, so their workers import the
user's file from the driver's folder whatever their start method. An engine that reaches
another machine ships the code instead (Dask: a worker plugin that uploads it; Ray: the job's
``runtime_env`` ``py_modules``), and leaves these hooks out of its workers' warm-ups; see
:mod:`cluster_runner.backends.shipping`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import pickle
import site
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cluster_runner.errors import JobSpecError

#: Most source files a package's digest reads; a larger tree is hashed by its file list and sizes.
_MAX_FILES = 2_000


@dataclass(frozen=True)
class CodeSource:
    """A user's module (a ``.py`` file) or top-level package (a folder), as the driver has it."""

    module: str  # its top-level import name: what pickled functions refer to
    path: str  # the .py file or the package folder, on the driver's machine
    digest: str  # sha256 of its source files, so that a change of code is seen

    @property
    def root(self) -> str:
        """The folder to put on ``sys.path`` for ``import module`` to find it."""
        return str(Path(self.path).parent)

    @property
    def is_package(self) -> bool:
        return Path(self.path).is_dir()

    def __call__(self) -> None:
        """Make the module importable in this process, and import it (a warm-up hook)."""
        if self.module in sys.modules:
            return
        if self.root not in sys.path and os.path.isdir(self.root):
            sys.path.append(self.root)
        importlib.import_module(self.module)

    def describe(self) -> str:
        kind = "package" if self.is_package else "file"
        return f"{self.module} ({kind} {self.path}, sha256 {self.digest[:12]})"


def installed_roots() -> tuple[str, ...]:
    """Folders of the standard library and of installed packages: code there is not shipped."""
    paths = sysconfig.get_paths()
    roots = {paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(getattr(site, "getsitepackages", list)())
    roots.add(getattr(site, "getusersitepackages", str)())
    return tuple(sorted(os.path.realpath(r) for r in roots if r))


def code_source(module: ModuleType | str) -> CodeSource | None:
    """The :class:`CodeSource` of the top-level package or module holding ``module``; None for
    the runner's own code, the standard library and installed packages (a cluster has those
    installed, as it has numpy), and for what has no single source on disk."""
    name = module if isinstance(module, str) else module.__name__
    top = name.partition(".")[0]
    if top in ("cluster_runner", "__main__", "builtins") or top not in sys.modules:
        return None
    found = sys.modules[top]
    paths = list(getattr(found, "__path__", []) or [])
    if paths:
        if len(paths) != 1:
            return None  # a namespace package spread over several folders
        where = Path(paths[0])
    elif getattr(found, "__file__", None):
        where = Path(found.__file__)
        if where.suffix != ".py":
            return None  # an extension module: compiled, installed
    else:
        return None
    real = os.path.realpath(where)
    if any(real == root or real.startswith(root + os.sep) for root in installed_roots()):
        return None
    return CodeSource(module=top, path=str(where), digest=source_digest(where))


def source_digest(path: Path) -> str:
    """sha256 of a ``.py`` file, or of every ``.py`` file of a package folder (sorted by path)."""
    hasher = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        for file in files[:_MAX_FILES]:
            hasher.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
        for file in files[_MAX_FILES:]:
            hasher.update(f"{file.relative_to(path)}:{file.stat().st_size}".encode())
    else:
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def check_by_reference(func: Any, what: str, where: str) -> None:
    """Refuse, in one line, a task function that a worker could not import by its name.

    ``what`` names the function's role (``the chunk function``), ``where`` the workload.
    """
    if isinstance(func, functools.partial):
        check_by_reference(func.func, what, where)
        return
    if not callable(func):
        raise JobSpecError(f"{where}: {what} is {type(func).__name__} {func!r}, not a function")
    name = getattr(func, "__qualname__", None)
    module = getattr(func, "__module__", None)
    if name is None or module is None:  # an instance with __call__: its class must be found
        check_by_reference(type(func), what, where)
        return
    label = f"{what} {name}"
    fix = "define it with def at the top level of a module"
    if "<lambda>" in name:
        raise JobSpecError(f"{where}: {label} is a lambda, which workers cannot import; {fix}")
    if "<locals>" in name:
        outer = name.split(".<locals>")[0]
        raise JobSpecError(
            f"{where}: {label} is defined inside {outer}() (a closure), which workers cannot"
            f" import; {fix}"
        )
    if module == "__main__":
        raise JobSpecError(
            f"{where}: {label} is defined in __main__ (the script being run), which workers"
            " cannot import; move it into a module or file and name that in the job"
        )
    found: Any = sys.modules.get(module)
    for part in name.split("."):
        found = getattr(found, part, None)
    if found is not func:
        raise JobSpecError(
            f"{where}: {label} is not what {module}.{name} names (was it replaced, or decorated"
            " without functools.wraps?), so workers cannot import it by name"
        )
    try:
        pickle.dumps(func, protocol=4)
    except Exception as exc:  # pickle raises several kinds
        raise JobSpecError(f"{where}: {label} does not pickle: {exc}") from None


@dataclass(frozen=True)
class LateHook:
    """A user's warm-up hook, pickled as its module and name and looked up when called.

    A worker unpickles all warm-up hooks at once, before the :class:`CodeSource` among them has
    made the user's module importable; this one only needs the module when it runs.
    """

    module: str
    name: str

    @classmethod
    def of(cls, func: Callable[[], object]) -> LateHook:
        return cls(func.__module__, func.__qualname__)

    def __call__(self) -> object:
        found: Any = importlib.import_module(self.module)
        for part in self.name.split("."):
            found = getattr(found, part)
        return found()
