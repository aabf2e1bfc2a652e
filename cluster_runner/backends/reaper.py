"""A watchdog that ends an engine's processes when the driver dies without closing the backend.

A driver that is killed (SIGKILL, the OOM killer) runs no cleanup, so every process it started
must end by itself. Most do: the local pool's workers (``PR_SET_PDEATHSIG``), Dask's worker
processes (their nanny's pipe), Ray's GCS, raylet and workers (Ray's own fate sharing). Ray's
dashboard and runtime-env agents do too, but only after trying for a minute to report the
raylet's death to a GCS that is already gone (``ray._private.utils.publish_error_to_driver``
waits 60 s).

:class:`Reaper` closes that gap. Started right after the engine, it is handed the engine's
processes (pid and start time, so that a pid the OS reuses later is never touched) and the read
end of a pipe whose only writer is the driver. It blocks on that pipe: a byte means the backend
closed normally (:meth:`Reaper.dismiss`) and it exits; end-of-file without one means the driver
died, and it kills whatever is left of those processes and their descendants, then exits. It
runs in a session of its own, so a terminal's Ctrl-C, which the driver handles, never reaches
it, and it polls nothing while it waits. It also removes the engine's private session folder
(Ray's sockets and logs), which would otherwise stay behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable

#: What the driver writes when it closed the engine itself.
_DISMISS = b"x"


def watcher(
    command: list[str], env: dict[str, str] | None = None, quiet: bool = False
) -> tuple[subprocess.Popen, int]:
    """Start ``command`` reading a pipe whose write end only the driver holds; the process
    and that end. The driver closes it to dismiss the watcher; its death closes it too, and
    the watcher, seeing end-of-file, does its work (a reaper ends processes, an allocation's
    watcher cancels Slurm jobs). The pipe is not inherited by processes started later."""
    read, write = os.pipe()
    try:
        process = subprocess.Popen(
            command,
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if quiet else None,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is the driver's to handle
        )
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    return process, write


class Reaper:
    """The driver's handle on a running reaper process."""

    def __init__(self, process: subprocess.Popen, pipe: int) -> None:
        self.process = process
        self._pipe = pipe  # the write end: the reaper sees EOF when the driver dies

    @classmethod
    def watch(cls, pids: Iterable[int], remove: str | None = None) -> Reaper | None:
        """Start a reaper for ``pids`` (those still running); ``None`` if there is none.

        ``remove`` is a folder of the engine's (a private session folder) that the reaper
        deletes after it has ended the processes, should the driver die.
        """
        import psutil

        targets = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                targets.append((pid, psutil.Process(pid).create_time()))
        if not targets:
            return None
        return cls(*watcher([sys.executable, "-m", __name__, json.dumps(targets), remove or ""]))

    def reap_now(self, timeout: float = 15.0) -> None:
        """Have the reaper end what is left of the engine now, as if the driver had died.

        For an engine that lost its head (Ray's GCS): ``ray.shutdown()`` then leaves the two
        agent processes, which would try for a minute to report to the GCS that is gone.
        """
        with contextlib.suppress(OSError):
            os.close(self._pipe)  # end-of-file without the dismissal byte
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def dismiss(self, timeout: float = 10.0) -> None:
        """Tell the reaper the engine was closed in order, and wait for it to exit."""
        with contextlib.suppress(OSError):
            os.write(self._pipe, _DISMISS)
        with contextlib.suppress(OSError):
            os.close(self._pipe)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


def reap(targets: list[tuple[int, float]]) -> list[int]:
    """SIGKILL the ``(pid, start time)`` processes still running, and their descendants."""
    import psutil

    doomed: dict[int, psutil.Process] = {}
    for pid, started in targets:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) > 0.01:
                continue  # the pid now belongs to another program
            doomed[pid] = proc
            for child in proc.children(recursive=True):
                doomed[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    for proc in doomed.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(list(doomed.values()), timeout=5.0)
    return sorted(doomed)


def main(argv: list[str]) -> int:
    targets = [(int(pid), float(started)) for pid, started in json.loads(argv[1])]
    remove = argv[2] if len(argv) > 2 else ""
    if sys.stdin.buffer.read(1) == _DISMISS:
        return 0
    reap(targets)
    if remove:
        import shutil

        shutil.rmtree(remove, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
