"""Nodes asked of Slurm for one sweep: ask, wait, watch, ask again, give back; never leave a job.

``runner scale --cluster PROFILE --nodes 1,2,4`` with a Slurm profile
(:mod:`.slurm_settings`) asks Slurm *once* for the largest size, 4 nodes, and times every point
on that allocation, restricted to k of its nodes (the runner's node sweep: each point connects
anew and chooses the first k nodes, see
:class:`~cluster_runner.backends.cluster.ClusterBackend`). Why not k jobs per point: one wait in
the queue instead of one per point (on a busy cluster, the waits dwarf the runs), and every
point timed on the same nodes, so that the node-to-node differences of a real cluster do not
pass for scaling. The price: the nodes a small point leaves idle are held meanwhile. (The
engines ask differently, as each does natively: Dask through dask-jobqueue, one job a node;
Ray one allocation of all the nodes, see :mod:`.slurm_dask` and :mod:`.slurm_ray`.)

:class:`Allocation` is the lifecycle both share:

- :meth:`~Allocation.acquire` submits, then waits at most the jobs file's ``wait`` seconds for
  the jobs to run and every worker or node to join; a job that does not start in time is one
  line that says what Slurm says of it (``PENDING (Resources)``);
- every job is named ``cr-XXXXXXXX``, a name made for this allocation, and a *reaper* (a small
  process in a session of its own, as :mod:`cluster_runner.backends.reaper`) holds the read end
  of a pipe whose only writer is the driver: if the driver dies (SIGKILL, the OOM killer), the
  pipe closes and the reaper cancels the jobs of that name, queued or running;
- while a run waits, :meth:`~Allocation.check` (in
  :data:`~cluster_runner.backends.cluster.RUN_WATCHES`) asks Slurm, every
  :data:`CHECK_EVERY_S` seconds, whether every job still runs; a job cancelled (``scancel``) or
  past its time limit ends the run with a
  :class:`~cluster_runner.errors.NodesLostError` naming the job, the node and Slurm's state,
  and the sweep (:func:`cluster_runner.sweeps.loop.run_sweep`) calls :meth:`prepare`, which asks
  for replacements, and retries the run once;
- :meth:`~Allocation.release` (also on Ctrl-C, by the ``with`` block) cancels the jobs and
  waits until Slurm no longer lists them.

:meth:`~Allocation.stamp` writes into every record the jobs and nodes of the members the point
used (``record.slurm``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cluster_runner.backends.reaper import watcher
from cluster_runner.clusters.processes import modified_environ, private_folder
from cluster_runner.clusters.slurm_conf import ENDED, cancel, client, job_states, jobs_named
from cluster_runner.clusters.slurm_settings import SlurmJobs
from cluster_runner.errors import ExecutionError, NodesLostError
from cluster_runner.results import RunRecord
from cluster_runner.results.records import SlurmPlacement

#: Seconds between two checks that the jobs still run, while a run waits.
CHECK_EVERY_S = 2.0
#: Seconds Slurm's controller may not answer before a waiting run counts its nodes as lost.
CONTROLLER_LOST_S = 60.0
#: Seconds release() waits for Slurm to stop listing the cancelled jobs.
RELEASE_WAIT_S = 60.0
#: What the driver writes to the reaper when it released the jobs itself.
_DISMISS = b"x"


@dataclass(frozen=True)
class Member:
    """Where one worker (Dask) or node (Ray) of the allocation runs."""

    job_id: str
    node: str


class Allocation(ABC):
    """Slurm jobs holding one sweep's nodes (see the module docstring)."""

    engine: str

    def __init__(
        self,
        jobs: SlurmJobs,
        env: dict[str, str],
        state_root: Path | str | None = None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        from cluster_runner.clusters.config import state_root as default_root

        self.jobs = jobs
        self.env = dict(env)  # SLURM_CONF of the runner's own Slurm; {} for the system's
        self.name = f"cr-{secrets.token_hex(4)}"  # every job's name: what the reaper cancels
        root = jobs.folder or default_root(state_root)
        self.folder = private_folder(Path(root).resolve() / "slurm-jobs" / self.name)
        self.say = say
        self.nodes = 0  # nodes asked for
        self.address: str | None = None  # the scheduler's or GCS's, once up
        self.driver_env: dict[str, str] = {}  # what a driver needs to join (Ray's token)
        self.members: dict[str, Member] = {}  # worker name (Dask) or node id (Ray) -> Member
        self.cluster_name: str | None = None
        self._reaper: subprocess.Popen | None = None
        self._pipe: int | None = None
        self._checked = 0.0
        self._silent_since: float | None = None  # since when the controller has not answered

    # --- the engine's part ------------------------------------------------------------------

    @abstractmethod
    def _submit(self, nodes: int) -> None:
        """Ask Slurm for ``nodes`` nodes (all of them, or those lost)."""

    @abstractmethod
    def _wait_until_up(self, deadline: float) -> None:
        """Wait until every worker or node has joined; set address, members, driver_env."""

    @abstractmethod
    def job_ids(self) -> list[str]:
        """The ids of the jobs submitted and not given back."""

    @abstractmethod
    def _replace(self, lost: list[str]) -> None:
        """Ask again for what the ended jobs ``lost`` held."""

    def _close(self) -> None:
        """The engine's own release, before the jobs are cancelled (default: nothing)."""

    def _scratch(self) -> list[str]:
        """Folders of the engine's on this machine that the reaper removes (default: none)."""
        return []

    # --- written once -------------------------------------------------------------------------

    def __enter__(self) -> Allocation:
        # Slurm's commands, and dask-jobqueue's calls of them, read SLURM_CONF from here.
        self._environ = modified_environ(self.env)
        self._environ.__enter__()
        try:
            self._start_reaper()
        except BaseException:
            self._environ.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            self.release()
        finally:
            self._environ.__exit__(None, None, None)
        if not isinstance(kind, type) or not issubclass(kind, Exception):
            shutil.rmtree(self.folder, ignore_errors=True)  # an error's logs stay, to be read

    def acquire(self, nodes: int) -> None:
        """Ask for ``nodes`` nodes and wait, within the jobs file's ``wait``, until all joined."""
        self.nodes = nodes
        began = time.monotonic()
        self._submit(nodes)
        self.say(f"slurm: asked for {nodes} node(s) for {self.engine} (jobs {self.name})")
        self._wait_until_up(began + self.jobs.wait)
        self.cluster_name = self._cluster_name()
        where = ", ".join(f"{m.node} (job {m.job_id})" for m in self.ordered())
        self.say(f"slurm: {nodes} node(s) up in {time.monotonic() - began:.1f} s: {where}")

    def check(self) -> None:
        """Raise :class:`NodesLostError` if a job of the allocation no longer runs (asked of
        Slurm at most every :data:`CHECK_EVERY_S` seconds)."""
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_S:
            return
        self._checked = now
        try:
            lost = self._ended()
        except ExecutionError as exc:  # the controller did not answer: a restart, or gone?
            self._silent_since = self._silent_since or now
            if now - self._silent_since >= CONTROLLER_LOST_S:
                raise NodesLostError(
                    f"Slurm's controller has not answered for {CONTROLLER_LOST_S:g} s ({exc});"
                    " the jobs holding the nodes cannot be known to run"
                ) from None
            return
        self._silent_since = None
        if lost:
            raise NodesLostError(lost[1])

    def lost(self) -> tuple[list[str], str] | None:
        """``(ended job ids, why in words)``, or None while every job runs (or while Slurm's
        controller does not answer: no proof that a job ended)."""
        try:
            return self._ended()
        except ExecutionError:
            return None

    def _ended(self) -> tuple[list[str], str] | None:
        ids = self.job_ids()
        states = job_states(ids, env=self.env)
        ended = [j for j in ids if j not in states or states[j][0] in ENDED]
        if not ended:
            return None
        words = "; ".join(self._ended_words(j, states.get(j)) for j in ended)
        return ended, words + "; the sweep asks Slurm for its nodes again"

    def _ended_words(self, job: str, state: tuple[str, str] | None) -> str:
        """``Slurm job 12 on n2 ended: CANCELLED`` (a job still completing is asked again for
        a few seconds, for the state it ends in: CANCELLED, TIMEOUT, ...)."""
        from cluster_runner.backends.cluster import natural_key

        nodes = sorted({m.node for m in self.members.values() if m.job_id == job}, key=natural_key)
        where = ",".join(nodes) or (state[1] if state and state[1] else "?")
        for _ in range(10):
            if state is None or state[0] != "COMPLETING":
                break
            time.sleep(0.5)
            state = job_states([job], env=self.env).get(job, state)
        what = "gone from the queue" if state is None else state[0]
        limit = " (its time limit)" if what == "TIMEOUT" else ""
        return f"Slurm job {job} on {where} ended: {what}{limit}"

    def prepare(self) -> None:
        """Before a size is timed (and before a run is retried): if a job ended, ask Slurm
        again for what it held, and wait for it within the jobs file's ``wait``."""
        found = self.lost()
        if found is None:
            return
        ended, words = found
        self.say(f"slurm: {words.split('; the sweep')[0]}: asking again")
        began = time.monotonic()
        self._replace(ended)
        self._wait_until_up(began + self.jobs.wait)
        where = ", ".join(f"{m.node} (job {m.job_id})" for m in self.ordered())
        self.say(f"slurm: nodes up again in {time.monotonic() - began:.1f} s: {where}")

    def ordered(self) -> list[Member]:
        """The members by node name (as records list them)."""
        from cluster_runner.backends.cluster import natural_key

        return sorted(self.members.values(), key=lambda m: natural_key(f"{m.node} {m.job_id}"))

    def release(self) -> None:
        """Give every job back (scancel) and wait until Slurm no longer lists them; dismiss the
        reaper. Safe to call twice."""
        try:
            with contextlib.suppress(Exception):  # the jobs are cancelled below in any case
                self._close()
            ids = self.job_ids()
            cancel(ids, name=self.name, env=self.env)
            deadline = time.monotonic() + RELEASE_WAIT_S
            while time.monotonic() < deadline and jobs_named(self.name, env=self.env):
                time.sleep(0.5)
        except ExecutionError as exc:  # Slurm's controller is gone: so are its jobs, or soon
            self.say(f"slurm: could not make sure the jobs {self.name} ended: {exc}")
        finally:
            self._dismiss()

    def stamp(self, record: RunRecord) -> RunRecord:
        """``record`` with the Slurm jobs and nodes of the members its point used."""
        from cluster_runner.backends.cluster import natural_key

        used = sorted(
            (self.members[name] for name in self._used(record) if name in self.members),
            key=lambda m: natural_key(f"{m.node} {m.job_id}"),
        )
        if not used:
            return record
        return replace(
            record,
            slurm=SlurmPlacement(
                job_ids=tuple(m.job_id for m in used),
                nodes=tuple(m.node for m in used),
                cluster=self.cluster_name,
            ),
        )

    @abstractmethod
    def _used(self, record: RunRecord) -> list[str]:
        """The members a record's backend used, by the names of :attr:`members`."""

    def _cluster_name(self) -> str | None:
        done = client(["scontrol", "show", "config"], env=self.env, check=False)
        for line in done.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ClusterName":
                return value.strip()
        return None

    def pending_words(self) -> str:
        """What Slurm says of the jobs not running yet, for a timeout's message."""
        try:
            done = client(
                ["squeue", "-h", "-n", self.name, "-o", "%i %T %r"], env=self.env, check=False
            )
        except ExecutionError as exc:
            return str(exc)
        rows = [" ".join(line.split()) for line in done.stdout.splitlines() if line.strip()]
        return "; ".join(rows) or "no job of the allocation is queued"

    # --- the reaper -------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        self._reaper, self._pipe = watcher(
            [sys.executable, "-m", __name__, self.name, str(self.folder), *self._scratch()],
            env={**os.environ, **self.env},
            quiet=True,
        )

    def _dismiss(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe, _DISMISS)
                os.close(self._pipe)
            self._pipe = None
        if self._reaper is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=10)
            self._reaper = None


def watching(allocation: Allocation) -> contextlib.AbstractContextManager:
    """Add ``allocation.check`` to the checks a waiting run makes, for the ``with`` block."""
    from cluster_runner.backends.cluster import RUN_WATCHES

    @contextlib.contextmanager
    def block():
        RUN_WATCHES.append(allocation.check)
        try:
            yield allocation
        finally:
            RUN_WATCHES.remove(allocation.check)

    return block()


def _reap(name: str, *paths: str) -> int:
    """The reaper: block on stdin; end-of-file without the dismissal byte means the driver died,
    so cancel every job called ``name``, queued or running, and, once they are gone, remove
    ``paths`` (the allocation's folder: its scripts, logs and token; Ray's session folder)."""
    try:
        data = sys.stdin.buffer.read(1)
    except (OSError, KeyboardInterrupt):
        data = b""
    if data == _DISMISS:
        return 0
    with contextlib.suppress(Exception):
        cancel(name=name)
        deadline = time.monotonic() + RELEASE_WAIT_S  # the jobs' processes end, then their files
        while time.monotonic() < deadline and jobs_named(name):
            time.sleep(0.5)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    return 0


def open_allocation(
    jobs: SlurmJobs, state_root: Path | str | None = None, say: Callable[[str], None] = print
) -> Allocation:
    """The allocation for ``jobs`` (Dask or Ray); enter it, then :meth:`Allocation.acquire`."""
    from cluster_runner.clusters.slurm_settings import slurm_env

    env = slurm_env(jobs, state_root)
    if jobs.engine == "dask":
        from cluster_runner.clusters.slurm_dask import DaskAllocation

        return DaskAllocation(jobs, env, state_root, say)
    from cluster_runner.clusters.slurm_ray import RayAllocation

    return RayAllocation(jobs, env, state_root, say)


__all__ = ["Allocation", "Member", "open_allocation", "watching"]

if __name__ == "__main__":
    sys.exit(_reap(sys.argv[1], *sys.argv[2:]))
