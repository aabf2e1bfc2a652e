"""The words of a failed run, written once for every backend: timeouts, lost workers, task errors.

Engines report the same few failures each in their own way (a ``KilledWorker``, a
``WorkerCrashedError``, a ``BrokenProcessPool``; a pickled exception, a ``RayTaskError``
wrapping one). The backends map them to the runner's error family with the helpers here, so
that the user reads one wording whatever the engine, and so that a task's own error reaches the
driver as the :class:`~cluster_runner.errors.TaskFailedError` the worker raised, with the
worker's traceback (:func:`task_failed`), never rebuilt from ``str(exc)``.
"""

from __future__ import annotations

import traceback

from cluster_runner.errors import RunTimeoutError, TaskFailedError, WorkerLostError

#: What a lost worker most often means, said in every worker-lost message.
LOST_WHY = "out of memory, or a crash in the task?"


def one_line(exc: BaseException, *, first_only: bool = False, limit: int = 300) -> str:
    """An exception's message on one line for an error message: its first line only, or all of
    it with the whitespace collapsed; at most ``limit`` characters; the type's name if empty."""
    text = str(exc).strip()
    if first_only:
        text = (text.splitlines() or [""])[0]
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def timed_out(
    running: int, *, after: float | None = None, example: str | None = None
) -> RunTimeoutError:
    """The error of a run that passed ``--timeout`` with ``running`` tasks in flight."""
    when = f" after {after:g} s" if after is not None else ""
    instance = f", e.g. {example}" if example else ""
    return RunTimeoutError(
        f"run timed out{when}: {running} task(s) still running{instance}"
        " (raise --timeout or use more chunks)"
    )


def worker_lost(
    task: str,
    times: int | None,
    retries: int | None,
    *,
    holder: str = "worker",
    note: str | None = None,
    detail: str | None = None,
) -> WorkerLostError:
    """The error of a ``task`` lost with its worker more often than the retry budget allows.

    ``times`` is how often it was lost, where the engine says; ``retries`` the budget
    (``--retries``), where known; ``note`` where the budget comes from if not from us,
    ``detail`` what the engine said.
    """
    often = f"{times} time(s), more than" if times is not None else "more often than"
    budget = f"--retries {retries} allows" if retries is not None else "--retries allows"
    why = f"{note}; {LOST_WHY}" if note else LOST_WHY
    said = f" {detail}" if detail else ""
    return WorkerLostError(f"{task} was lost with its {holder} {often} {budget} ({why}{said})")


def task_failed(
    exc: BaseException, subject: str, key: str | None = None, remote: str | None = None
) -> TaskFailedError:
    """The error of a task that raised ``exc``, as the engine handed it back.

    A :class:`TaskFailedError` (raised on the worker by
    :func:`~cluster_runner.execution.tasks.call_timed`, with the worker's traceback) is returned
    as it is. Anything else (an error raised outside the task's function, by the engine's own
    code on the worker) is named after ``subject`` and keeps its traceback: ``remote``, the
    engine's text of it, or else the traceback the engine attached to the exception.
    """
    if isinstance(exc, TaskFailedError):
        return exc
    text = remote or "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return TaskFailedError(
        f"{subject} failed: {type(exc).__name__}: {one_line(exc, first_only=True)}",
        key=key,
        remote_traceback=text,
    )
