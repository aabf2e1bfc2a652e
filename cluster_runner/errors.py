"""The runner's one error family.

Every failure the user can act on is a :class:`RunnerError`; the CLI prints its message as one
line on stderr and exits with :attr:`RunnerError.exit_code`, never with a traceback. Anything
else that escapes is a bug in the runner, and is allowed to show its traceback.

The tree is small on purpose (compare ``concurrent.futures.BrokenExecutor``):

- ``UsageError`` (exit 2): the user asked for something malformed or impossible: a bad job spec,
  override, worker list, address, or a backend or GPU that is not there. Nothing was run.
  Results files that are not ours, or that mix different experiments, are usage errors too;
  so are a malformed cluster config or runner profile, and a cluster that is already up.
- ``ExecutionError`` (exit 1): a run started and could not finish: a task raised, a worker was
  lost more often than the retry budget allows, or the run passed its timeout. A local cluster
  that did not come up, or whose processes did not all end, is one too.
"""

from __future__ import annotations


class RunnerError(Exception):
    """Base of every error the runner reports to the user as one line."""

    exit_code: int = 1


class UsageError(RunnerError):
    """Malformed or impossible input; nothing was run."""

    exit_code = 2


class JobSpecError(UsageError):
    """A job spec file or ``--set`` override is malformed or out of range."""


class BackendUnavailableError(UsageError):
    """The chosen backend (or the GPU stage) cannot be used: a package or device is missing."""


class ConnectError(UsageError):
    """A cluster address does not answer, or refuses us, within the connect timeout."""


class ClusterConfigError(UsageError):
    """A cluster config (``runner cluster``) or runner profile (``--cluster``) is malformed."""


class ResultsFileError(UsageError):
    """A results file is not one of ours, or cannot be read."""


class MixedResultsError(ResultsFileError):
    """Results of different experiments (job, mode, machine, cluster) were given to compare."""


class ExecutionError(RunnerError):
    """A run started but could not finish."""

    exit_code = 1


class TaskFailedError(ExecutionError):
    """A task raised an exception on a worker.

    Like ``concurrent.futures`` (which re-raises a worker's exception with a
    ``_RemoteTraceback`` as its cause), the error keeps what the worker knew:
    :attr:`key` is the task that raised, :attr:`remote_traceback` the worker's formatted
    traceback. It survives pickling, so every engine (a process pool's pipe, Dask's and Ray's
    serialisers) hands the driver the same object the worker raised. The CLI prints the message
    as one line, and the traceback too with ``--traceback`` (or ``RUNNER_TRACEBACK=1``); a
    failed run's record keeps it under ``error_traceback``.
    """

    def __init__(
        self, message: str, *, key: str | None = None, remote_traceback: str | None = None
    ) -> None:
        super().__init__(message)
        self.key = key
        self.remote_traceback = remote_traceback

    @classmethod
    def from_exception(cls, key: str, exc: BaseException) -> TaskFailedError:
        """The error for task ``key`` that raised ``exc``, with the traceback formatted here.

        Call it on the worker, inside the ``except`` block, where the traceback still exists.
        """
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        first = (str(exc).strip().splitlines() or [""])[0]
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return cls(f"task {key} failed: {detail}", key=key, remote_traceback=text)

    def __reduce__(self):  # keyword-only fields must survive pickling (engines pickle errors)
        return _rebuild_task_failed, (str(self), self.key, self.remote_traceback)


def _rebuild_task_failed(
    message: str, key: str | None, remote_traceback: str | None
) -> TaskFailedError:
    return TaskFailedError(message, key=key, remote_traceback=remote_traceback)


def traceback_of(exc: BaseException) -> str | None:
    """The worker traceback an error carries, if it (or an error it was raised from) has one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = getattr(current, "remote_traceback", None)
        if text:
            return text
        current = current.__cause__ or current.__context__
    return None


class RunTimeoutError(ExecutionError):
    """A run did not finish within its ``--timeout``."""


class WorkerLostError(ExecutionError):
    """Workers died and the lost tasks could not be rerun within the retry budget."""


class ClusterStartError(ExecutionError):
    """A cluster started on this machine did not come up, or did not go down (see its logs)."""


class NodesLostError(ExecutionError):
    """The nodes a run was using were taken away from outside the engine: a batch job of the
    sweep's was cancelled or passed its time limit (issue 19). A sweep asks the scheduler for
    them again and retries the run once, instead of stopping."""
