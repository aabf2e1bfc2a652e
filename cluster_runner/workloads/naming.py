"""How a job names a workload, and how the name becomes the workload object.

A stage's ``workload = ...`` is one of:

``"primes"``
    a word: a built-in workload (:data:`cluster_runner.workloads.REGISTRY`), else one that an
    installed package registers under the entry-point group ``cluster_runner.workloads``
    (``[project.entry-points."cluster_runner.workloads"] mywork = "mypkg.work:WORKLOAD"``);
``"package.module:NAME"``
    an importable module and an attribute of it (``NAME`` defaults to ``WORKLOAD``); a module
    that is not importable as it is is looked for next to the job file, then in the current
    folder (as ``python -m`` and ``uvicorn`` find a module of the folder they run in);
``"path/to/file.py:NAME"``
    a Python file, relative to the job file (or absolute). It is imported as the top-level
    module named after the file (``file``), its folder appended to ``sys.path``: the name a
    worker imports it by. A file whose name would shadow another module is refused.

The attribute may be a :class:`~cluster_runner.workloads.base.Workload` instance (a
:class:`~cluster_runner.workloads.simple.MapReduce` is one), a ``Workload`` subclass (made with
no arguments), or a chunk function decorated with
:func:`~cluster_runner.workloads.simple.workload`.

:func:`find_workload` returns a :class:`Found`: the workload, the name a stage keeps for it (a
file's absolute path, so that it means the same from any folder), where it came from, and the
user's code the workers must import (:class:`~cluster_runner.workloads.code.CodeSource`). Every
fault is one line (:class:`~cluster_runner.errors.JobSpecError`), raised before anything runs: a
file or module that does not exist or does not import (the last line of its error), a missing
attribute, an object that is not a workload, a worker function that would not pickle by
reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster_runner.errors import JobSpecError
from cluster_runner.workloads.base import Workload
from cluster_runner.workloads.code import CodeSource, code_source
from cluster_runner.workloads.simple import WORKLOAD_ATTRIBUTE, MapReduce, check_map_reduce

#: The entry-point group installed packages register their workloads under.
ENTRY_POINT_GROUP = "cluster_runner.workloads"
#: The attribute a module's workload is found under when a name gives none.
DEFAULT_ATTRIBUTE = "WORKLOAD"
#: How to name a workload, for messages.
FORMS = "a built-in name, 'package.module:NAME' or 'path/to/file.py:NAME'"


@dataclass(frozen=True)
class Found:
    """A workload, found: what a stage keeps, and what the listing and the workers need."""

    ref: str  # what the stage keeps: a word, 'module:NAME', or '/absolute/file.py:NAME'
    workload: Workload
    kind: str  # built-in, entry point, module or file
    origin: str  # where it came from, in words (a module, a package and version, a file)
    code: tuple[CodeSource, ...] = ()  # the user's code the workers must import

    @property
    def name(self) -> str:
        """A word naming the workload: a stage's default name."""
        return as_word(self.workload.name or self.ref)

    @property
    def code_digest(self) -> str:
        """Digest of the user's code (empty for the runner's own): part of a reference's key."""
        return "+".join(source.digest for source in self.code)


_FOUND: dict[str, Found] = {}


def find_workload(ref: str, base: str | Path | None = None) -> Found:
    """The workload ``ref`` names (see the module docstring); files are relative to ``base``."""
    ref = ref.strip()
    if not ref:
        raise JobSpecError(f"workload is empty; name one: {FORMS}")
    target, attribute = _split(ref)
    if _is_file(target):
        path = _absolute(target, base)
        canonical = f"{path}:{attribute}"
        if canonical not in _FOUND:
            module = _import_file(path)
            _FOUND[canonical] = _found(canonical, module, attribute, "file", str(path))
        return _FOUND[canonical]
    if ":" in ref or "." in target:
        canonical = f"{target}:{attribute}"
        if canonical not in _FOUND:
            module = _import_module(target, base)
            origin = getattr(module, "__file__", None) or target
            _FOUND[canonical] = _found(canonical, module, attribute, "module", origin)
        return _FOUND[canonical]
    return _by_word(ref)


def _by_word(name: str) -> Found:
    from cluster_runner import workloads

    if name in workloads.REGISTRY:
        module = importlib.import_module(workloads.REGISTRY[name])
        return _found(name, module, DEFAULT_ATTRIBUTE, "built-in", module.__name__)
    if name in _FOUND:
        return _FOUND[name]
    points = entry_points()
    if name not in points:
        known = [*workloads.REGISTRY, *sorted(points)]
        raise JobSpecError(
            f"unknown workload {name!r} (known: {', '.join(known)}; or name a module or file:"
            " 'package.module:NAME', 'path/to/file.py:NAME')"
        )
    point = points[name]
    dist = getattr(point, "dist", None)
    origin = f"{dist.name} {dist.version} ({point.value})" if dist else point.value
    where = f"entry point {name!r} of {origin}"
    try:
        obj = point.load()
    except Exception as exc:
        raise JobSpecError(f"{where} does not import: {last_line(exc)}") from None
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    _FOUND[name] = _from_object(name, obj, where, "entry point", origin, module)
    return _FOUND[name]


def entry_points() -> dict[str, Any]:
    """The workloads installed packages register, by name (not loaded)."""
    from importlib.metadata import entry_points as installed

    return {point.name: point for point in installed(group=ENTRY_POINT_GROUP)}


def _split(ref: str) -> tuple[str, str]:
    """``target`` and ``attribute`` of ``target[:attribute]`` (a Windows drive's colon stays)."""
    target, sep, attribute = ref.rpartition(":")
    if sep and attribute and all(part.isidentifier() for part in attribute.split(".")):
        return target, attribute
    if sep and not attribute:
        raise JobSpecError(f"workload {ref!r} ends with ':'; name the attribute: {FORMS}")
    return ref, DEFAULT_ATTRIBUTE


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _absolute(target: str, base: str | Path | None) -> Path:
    try:
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = Path(base or ".") / path
        path = Path(os.path.abspath(path))
        exists = path.is_file()
    except (OSError, ValueError) as exc:
        raise JobSpecError(f"workload file {target!r} cannot be read: {exc}") from None
    if not exists:
        relative = f" (relative to {base})" if base and not Path(target).is_absolute() else ""
        raise JobSpecError(f"workload file {target} does not exist{relative}")
    if path.suffix != ".py":
        raise JobSpecError(f"workload file {target} is not a Python file (.py)")
    return path


def _import_file(path: Path) -> Any:
    """Import ``path`` as the top-level module named after it, its folder on ``sys.path``."""
    name = path.stem
    if not name.isidentifier():
        fixed = as_word(name)
        raise JobSpecError(
            f"workload file {path}: {name!r} is not a Python module name; rename the file"
            f" (e.g. {fixed}.py), since workers import it by that name"
        )
    loaded = sys.modules.get(name)
    if loaded is not None:
        if _same_file(getattr(loaded, "__file__", None), path):
            return loaded
        raise JobSpecError(
            f"workload file {path}: a module named {name!r} is already imported from"
            f" {getattr(loaded, '__file__', None) or 'built in'}; rename the file"
        )
    spec = _spec(name)
    if spec is not None and not _same_file(spec.origin, path):
        raise JobSpecError(
            f"workload file {path} would be imported as {name!r}, which is already the module"
            f" at {spec.origin or 'a built-in'}; rename the file"
        )
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:
        if added:
            sys.path.remove(folder)
        raise JobSpecError(f"workload file {path} does not import: {last_line(exc)}") from None


def _spec(name: str) -> Any:
    """Where ``import name`` would find its module, or None (nowhere, or not to be known)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _import_module(target: str, base: str | Path | None = None) -> Any:
    if not all(part.isidentifier() for part in target.split(".")):
        raise JobSpecError(f"workload {target!r} is not a module name: {FORMS}")
    top = target.partition(".")[0]
    if top not in sys.modules and _spec(top) is None:
        for folder in dict.fromkeys(os.path.abspath(f) for f in (base or ".", ".")):
            here = Path(folder)
            if (here / f"{top}.py").is_file() or (here / top / "__init__.py").is_file():
                if folder not in sys.path:
                    sys.path.append(folder)  # as the job's folder: workers get it the same way
                break
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and target.startswith(exc.name):
            raise JobSpecError(
                f"no module named {target!r} (not installed, and not on sys.path; for a file,"
                f" write path/to/{target.rpartition('.')[2]}.py:NAME)"
            ) from None
        raise JobSpecError(f"module {target} does not import: {last_line(exc)}") from None
    except (Exception, SystemExit) as exc:
        raise JobSpecError(f"module {target} does not import: {last_line(exc)}") from None


def _found(ref: str, module: Any, attribute: str, kind: str, origin: str) -> Found:
    where = f"{_shown(ref)}" if kind != "built-in" else f"workload {ref!r}"
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            near = ", ".join(_workloads_in(module)) or "none"
            raise JobSpecError(
                f"{_shown(ref.rpartition(':')[0] or ref)} has no attribute {attribute!r}"
                f" (workloads in it: {near})"
            )
        obj = getattr(obj, part)
    return _from_object(ref, obj, where, kind, origin, module)


def _from_object(ref: str, obj: Any, where: str, kind: str, origin: str, module: Any) -> Found:
    workload = as_workload(obj, where)
    if not workload.name:
        workload.name = as_word(ref)
    if not workload.description and type(workload).__doc__ is not Workload.__doc__:
        workload.description = (type(workload).__doc__ or "").strip().split("\n")[0]
    if isinstance(workload, MapReduce):
        check_map_reduce(workload, where)
    return Found(ref, workload, kind, origin, code_of(workload, module))


def as_workload(obj: Any, where: str) -> Workload:
    """``obj`` as a workload, or a one-line refusal saying what it is and what would do."""
    if isinstance(obj, Workload):
        return obj
    if isinstance(obj, type) and issubclass(obj, Workload):
        try:
            return obj()
        except Exception as exc:
            raise JobSpecError(f"{where}: {obj.__name__}() failed: {last_line(exc)}") from None
    marked = getattr(obj, WORKLOAD_ATTRIBUTE, None)
    if isinstance(marked, Workload):
        return marked
    kind = type(obj).__name__
    what = "a function" if callable(obj) else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    raise JobSpecError(
        f"{where} is {what}, not a workload: decorate the chunk function with"
        " @workload(split=...), or name a MapReduce or a Workload"
    )


def code_of(workload: Workload, module: Any = None) -> tuple[CodeSource, ...]:
    """The user's modules a workload's tasks need on the workers (the runner's own excluded)."""
    names: list[str] = []
    if module is not None:
        names.append(module.__name__)
    names.append(type(workload).__module__)
    if isinstance(workload, MapReduce):
        names += [f.__module__ for f in (workload.chunk, workload.reduce, workload.split) if f]
    sources = (code_source(name) for name in dict.fromkeys(n for n in names if n))
    unique = {source.module: source for source in sources if source is not None}
    return tuple(unique.values())


def _workloads_in(module: Any) -> list[str]:
    found = []
    for key, value in sorted(vars(module).items()):
        if key.startswith("_"):
            continue
        marked = getattr(value, WORKLOAD_ATTRIBUTE, None) is not None
        mine = isinstance(value, type) and issubclass(value, Workload)
        if isinstance(value, Workload) or marked or (mine and value.__module__ == module.__name__):
            found.append(key)
    return found[:8]


def _same_file(a: str | None, b: Path) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def _shown(ref: str) -> str:
    return ref if ":" in ref or ref.endswith(".py") else f"module {ref}"


def as_word(text: str) -> str:
    """A word made of a workload's name or reference, for a stage's default name:
    ``dir/my-work.py:WORKLOAD`` -> ``my_work``, ``pkg.mod:pi`` -> ``pi``."""
    target, _, attribute = text.rpartition(":") if ":" in text else (text, "", "")
    if attribute and attribute != DEFAULT_ATTRIBUTE:
        text = attribute.rpartition(".")[2]
    elif _is_file(target):
        text = Path(target).stem
    else:
        text = target.rpartition(".")[2]
    word = re.sub(r"\W", "_", text) or "workload"
    return word if word.isidentifier() else f"w_{word}"


def last_line(exc: BaseException) -> str:
    """The last line of an exception as Python prints it (``NameError: name 'x' is not
    defined``); a syntax error's line number added."""
    lines = traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).strip().splitlines()
    last = text[-1].strip() if text else type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        last += f" (line {exc.lineno})"
    return last


def forget(refs: Iterable[str] = ()) -> None:
    """Drop cached workloads (all, or those named): a test that rewrites a file needs it."""
    for ref in list(refs) or list(_FOUND):
        _FOUND.pop(ref, None)
