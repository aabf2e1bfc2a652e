"""The graph walk, written once for every backend.

:func:`execute` runs a :class:`~cluster_runner.graph.Graph` on a started backend and returns the
values of its sinks and the trace of every task, as columns
(:class:`~cluster_runner.execution.traces.Traces`).

Two policies, chosen by the backend's ``native_dependencies`` flag, each calling exactly the
methods its kind of backend declares (:mod:`cluster_runner.backends.base`):

*Native* (a :class:`~cluster_runner.backends.base.GraphBackend`: Dask, Ray): ``submit`` every
task in topological order, passing upstream handles as arguments; the engine resolves them on
the workers. A map is expanded here, one :class:`~cluster_runner.graph.Task` at a time, so the
engine sees one engine task per graph task, as a user of that engine would submit them (its
per-task cost is what we measure on it), and a map's ref becomes its tasks' handles, spread in
place. The driver then ``gather``-s the sinks only, and reads every task's trace from the
traces that travelled along with the values; the engine says how many tasks it reran.

*Ready-driven* (a :class:`~cluster_runner.backends.base.PoolBackend`: serial, threads, local):
an executor knows nothing of dependencies, so a node becomes ready the moment the last node it
needs has finished (a map as a whole), with the values filled in. Ready work is sent with
``submit_batch``, in batches (:mod:`cluster_runner.execution.batching`: one message per batch,
sized from the task times measured so far), a few batches per worker at a time: single tasks
as a list, a map as slices of its arguments (a ``range`` slice is a few bytes, whatever its
length), so a fan-out of a million tasks costs the driver a few dozen messages, not a million
objects. A map's results go into one list, in index order, as the slices come back; a task
that uses the map gets that list, spread, when the last slice is in (so a reduce adds in chunk
order, whichever slice finished first), and the list is dropped once every node that uses it
has finished. Completions arrive through a queue fed by ``Future.add_done_callback``, which
costs O(1) per batch, where ``concurrent.futures.wait`` over all running futures would cost
O(running) per completion. If the pool breaks because a worker died, the backend replaces it
and every batch that was in flight is submitted again, each at most ``retries`` times; the
count of resubmitted tasks is reported. A task that raises fails the run with a
:class:`~cluster_runner.errors.TaskFailedError` that keeps the worker's traceback.

Every wait is bounded by the run's deadline.
"""

from __future__ import annotations

import bisect
import concurrent.futures as cf
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from cluster_runner.backends.base import Backend, GraphBackend, PoolBackend
from cluster_runner.backends.failures import timed_out, worker_lost
from cluster_runner.errors import RunnerError, TaskFailedError
from cluster_runner.execution.batching import BatchSizer
from cluster_runner.execution.inputs import InputTable, placed_inputs
from cluster_runner.execution.tasks import BatchOutput, run_batch, run_slice
from cluster_runner.execution.traces import Traces
from cluster_runner.graph import DataRef, Graph, MapRef, MapTask, Node, Ref, Task

if TYPE_CHECKING:
    from cluster_runner.results.stages import Transfer

#: Default number of tasks a run may resubmit after losing workers.
DEFAULT_RETRIES = 3


@dataclass
class GraphResult:
    """The sinks' values, the trace of every task, and how many tasks had to be rerun."""

    values: dict[str, Any]
    traces: Traces
    retried: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    transfer: Transfer | None = None  # what moved between driver and workers; None: no inputs


def execute(
    graph: Graph,
    backend: Backend,
    timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    transfer: str = "share",
) -> GraphResult:
    """Run ``graph`` on ``backend``; raise a :class:`RunnerError` if it fails or times out.

    The graph's driver inputs are placed first (``transfer``: ``share`` or ``copy``, see
    :mod:`.inputs`) and released at the end, both inside the caller's clock; the result's
    ``transfer`` says what moved.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with placed_inputs(graph, backend, transfer) as inputs:
        if backend.native_dependencies:
            result = _execute_native(graph, cast(GraphBackend, backend), deadline, inputs)
        else:
            result = _Walk(graph, cast(PoolBackend, backend), deadline, retries, inputs).run()
    result.transfer = inputs.record() if inputs else None  # None: no driver inputs
    return result


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _execute_native(
    graph: Graph, backend: GraphBackend, deadline: float | None, inputs: InputTable
) -> GraphResult:
    handles: dict[int, Any] = {}  # id(node) -> its handle, or a map's list of handles

    def handle(ref: Ref) -> Any:
        node, index = graph.locate(ref.key)
        found = handles[id(node)]
        return found if index is None else found[index]

    def resolved(task: Task) -> list[Any]:
        args: list[Any] = []
        for arg in task.args:
            if isinstance(arg, Ref):
                args.append(handle(arg))
            elif isinstance(arg, MapRef):
                args.extend(handles[id(graph.locate(arg.key_of(0))[0])])
            elif isinstance(arg, DataRef):
                args.append(inputs.handle(arg.key))  # one task, one message
            else:
                args.append(arg)
        return args

    numbers: dict[str, int] = {}  # key -> task number, for the traces the engine returns
    for node in graph.nodes():
        if isinstance(node, MapTask):
            mine = handles[id(node)] = []
            for index in range(len(node)):
                task = node.task(index)
                numbers[task.key] = len(numbers)
                mine.append(backend.submit(task, resolved(task)))
        else:
            numbers[node.key] = len(numbers)
            handles[id(node)] = backend.submit(node, resolved(node))
    sinks = graph.sinks()
    gathered = backend.gather([handle(Ref(key)) for key in sinks], _remaining(deadline))
    if inputs:
        inputs.returned(o.value for o in gathered.outputs)  # only the sinks reach the driver
    seen: dict[str, Any] = {}
    for output in gathered.outputs:
        for trace in output.traces:
            seen.setdefault(trace.key, trace)
    return GraphResult(
        {k: o.value for k, o in zip(sinks, gathered.outputs, strict=False)},
        Traces.of(seen.values(), numbers.__getitem__),
        retried=gathered.retried,
    )


class _State:
    """The walk's state of one node: what it waits for, who waits for it, its value(s)."""

    __slots__ = (
        "cursor", "first", "keep", "left", "needs", "node", "pending_users", "queued", "redo",
        "size", "users", "value", "values", "waiting", "wrapped",
    )  # fmt: skip

    def __init__(self, node: Node, first: int) -> None:
        self.node = node
        self.first = first  # the number of its first task
        self.size = len(node) if isinstance(node, MapTask) else 1
        self.waiting = 0  # nodes it needs that have not finished
        self.users: list[_State] = []  # nodes that need it
        self.needs: list[_State] = []
        self.pending_users = 0  # users not finished yet: its values are kept until then
        self.keep = False  # a sink: its values are the run's result
        self.value: Any = None
        self.values: list[Any] | None = None  # a map's results, in index order
        self.cursor = 0  # a map's next index to send
        self.left = self.size  # tasks not finished
        self.redo: list[tuple[int, int]] = []  # a map's slices lost with a worker, to resend
        self.queued = False
        wrapped = node.wrapped if isinstance(node, MapTask) else {}
        self.wrapped = sorted(wrapped)  # a map's tasks that run alone (fault injection)

    @property
    def is_map(self) -> bool:
        return isinstance(self.node, MapTask)


@dataclass
class _Sent:
    """A batch in flight: a slice ``[a, b)`` of a map's state, or single tasks' states."""

    state: _State | None
    a: int = 0
    b: int = 0
    tasks: list[_State] | None = None

    def __len__(self) -> int:
        return len(self.tasks) if self.tasks is not None else self.b - self.a

    def first_key(self) -> str:
        if self.tasks is not None:
            return self.tasks[0].node.key
        node = cast(MapTask, cast(_State, self.state).node)
        return node.key_of(self.a)

    def attempt_keys(self) -> list[Any]:
        if self.tasks is not None:
            return [state.node.key for state in self.tasks]
        return [(id(self.state), self.a)]


class _Walk:
    """The ready-driven walk of one graph on one pool backend (see the module docstring)."""

    def __init__(
        self,
        graph: Graph,
        backend: PoolBackend,
        deadline: float | None,
        retries: int,
        inputs: InputTable,
    ) -> None:
        self.graph, self.backend, self.deadline, self.retries = graph, backend, deadline, retries
        self.inputs = inputs
        self.counting = bool(inputs)  # results' bytes are counted for graphs with inputs
        nodes = graph.nodes()
        self.states = [_State(node, graph.first_number(i)) for i, node in enumerate(nodes)]
        self.by_id = {id(node): state for node, state in zip(nodes, self.states, strict=True)}
        for state in self.states:
            for needed in graph.requires(state.node):
                dep = self.by_id[id(needed)]
                state.waiting += 1
                state.needs.append(dep)
                dep.users.append(state)
                dep.pending_users += 1
        self.sinks = graph.sinks()
        for key in self.sinks:
            self.by_id[id(graph.locate(key)[0])].keep = True
        self.ready: deque[_State] = deque()
        self.ready_tasks = 0
        for state in self.states:
            if state.waiting == 0:
                self._make_ready(state)
        self.traces = Traces(graph.key_of)
        self.done: queue.SimpleQueue[cf.Future] = queue.SimpleQueue()
        self.running: dict[cf.Future, _Sent] = {}
        self.attempts: dict[Any, int] = {}
        self.sizer = BatchSizer(backend.info().workers)
        self.retried = self.batches = 0

    def _make_ready(self, state: _State) -> None:
        if state.is_map and state.values is None:
            state.values = [None] * state.size
        self.ready.append(state)
        state.queued = True
        self.ready_tasks += state.size

    # --- values -------------------------------------------------------------------------

    def _resolved(self, args: tuple[Any, ...], message: dict[str, Any] | None = None) -> list[Any]:
        """``args`` with refs replaced by values and inputs by their handles; ``message``
        holds the handles its message carries already (an input travels once a message)."""
        out: list[Any] = []
        for arg in args:
            if isinstance(arg, DataRef):
                message = {} if message is None else message
                if arg.key not in message:
                    message[arg.key] = self.inputs.handle(arg.key)
                out.append(message[arg.key])
            elif isinstance(arg, Ref):
                node, index = self.graph.locate(arg.key)
                state = self.by_id[id(node)]
                out.append(state.value if index is None else state.values[index])  # type: ignore[index]
            elif isinstance(arg, MapRef):
                out.extend(self.by_id[id(self.graph.locate(arg.key_of(0))[0])].values)  # type: ignore[arg-type]
            else:
                out.append(arg)
        return out

    # --- sending ------------------------------------------------------------------------

    def dispatch(self) -> None:
        while self.ready and len(self.running) < self.sizer.max_in_flight:
            size = self.sizer.size(self.ready_tasks)
            head = self.ready[0]
            if head.is_map:
                sent, future = self._send_slice(head, size)
            else:
                states = []
                while self.ready and not self.ready[0].is_map and len(states) < size:
                    states.append(self.ready.popleft())
                    states[-1].queued = False
                    if self._alone(states[-1]):
                        break
                sent = _Sent(None, tasks=states)
                message: dict[str, Any] = {}
                work = [
                    (s.node.key, s.node.func, self._resolved(cast(Task, s.node).args, message))
                    for s in states
                ]
                future = self._submit(run_batch, work)
            self.ready_tasks -= len(sent)
            self.batches += 1
            self.running[future] = sent
            future.add_done_callback(self.done.put)

    def _send_slice(self, state: _State, size: int) -> tuple[_Sent, cf.Future]:
        node = cast(MapTask, state.node)
        if state.redo:
            a, b = state.redo.pop()
        else:
            a = state.cursor
            b = min(a + (1 if self._alone(state) else size), state.size)
            at = bisect.bisect_left(state.wrapped, a)
            if at < len(state.wrapped) and state.wrapped[at] < b:
                b = a + 1 if state.wrapped[at] == a else state.wrapped[at]
            state.cursor = b
        if state.cursor == state.size and not state.redo:
            self.ready.popleft()
            state.queued = False
        sent = _Sent(state, a, b)
        if b - a == 1 and a in node.wrapped:
            task = node.task(a)
            return sent, self._submit(run_batch, [(task.key, task.func, self._resolved(task.args))])
        shared = self._resolved(node.shared)
        name = (node.key, a, node.digits)
        return sent, self._submit(run_slice, node.func, node.args[a:b], node.star, shared, name)

    def _alone(self, state: _State) -> bool:
        """Whether each of this node's tasks goes in a message of its own: one that copies a
        driver input (``--transfer copy``), so that the input travels with every task."""
        if self.inputs.mode != "copy" or not self.inputs:
            return False
        node = state.node
        args = node.shared if isinstance(node, MapTask) else node.args
        return any(isinstance(arg, DataRef) for arg in args)

    def _submit(self, run: Any, *args: Any) -> cf.Future:
        try:
            return self.backend.submit_batch(run, *args)
        except cf.BrokenExecutor as exc:  # a worker died since the last completion
            future: cf.Future = cf.Future()  # lost with the pool, like the batches in flight
            future.set_exception(exc)
            return future

    # --- receiving ----------------------------------------------------------------------

    def run(self) -> GraphResult:
        try:
            self.dispatch()
            while self.running:
                try:
                    future = self.done.get(timeout=_remaining(self.deadline))
                except queue.Empty:
                    self.backend.abort_running()
                    example = next(iter(self.running.values())).first_key()
                    in_flight = sum(map(len, self.running.values()))
                    raise timed_out(in_flight, example=example) from None
                sent = self.running.pop(future, None)
                if sent is None:
                    continue  # a future of a pool that was replaced
                try:
                    output = future.result()
                except cf.BrokenExecutor as exc:
                    self._lost(sent, exc)
                    continue
                except RunnerError:
                    raise
                except Exception as exc:  # not raised by a task (they raise TaskFailedError)
                    raise TaskFailedError.from_exception(sent.first_key(), exc) from exc
                self._finish(sent, output)
                self.dispatch()
        finally:
            for future in self.running:
                future.cancel()
        values = {}
        for key in self.sinks:
            node, index = self.graph.locate(key)
            state = self.by_id[id(node)]
            values[key] = state.value if index is None else state.values[index]  # type: ignore[index]
        return GraphResult(
            values, self.traces, retried=self.retried, extra={"batches": self.batches}
        )

    def _finish(self, sent: _Sent, output: BatchOutput) -> None:
        finished: list[_State] = []
        if sent.tasks is not None:
            for state, value in zip(sent.tasks, output.values, strict=True):
                state.value = value
                state.left = 0
            self.traces.add_batch([s.first for s in sent.tasks], output)
            finished = sent.tasks
        else:
            state = cast(_State, sent.state)
            state.values[sent.a : sent.b] = output.values  # type: ignore[index]
            state.left -= sent.b - sent.a
            self.traces.add_batch(range(state.first + sent.a, state.first + sent.b), output)
            if state.left == 0:
                finished = [state]
        self.sizer.record(len(output.values), output.busy)
        if self.counting:  # ~170 ns a value: only for graphs with driver inputs
            self.inputs.returned(output.values)
        for state in finished:
            for user in state.users:
                user.waiting -= 1
                if user.waiting == 0:
                    self._make_ready(user)
            for needed in state.needs:  # its inputs are no longer needed by it
                needed.pending_users -= 1
                if needed.pending_users == 0 and not needed.keep:
                    needed.value = needed.values = None

    def _lost(self, sent: _Sent, exc: BaseException) -> None:
        """A worker died (killed, out of memory, segfault): every batch in flight is lost with
        the pool. Replace the pool and send them again, each at most ``retries`` times, as Dask
        and Ray do with their own retries."""
        lost = [sent, *self.running.values()]
        for batch in lost:
            for key in batch.attempt_keys():
                self.attempts[key] = self.attempts.get(key, 0) + 1
        worst = max(lost, key=lambda b: max(self.attempts[k] for k in b.attempt_keys()))
        times = max(self.attempts[k] for k in worst.attempt_keys())
        if times > self.retries:
            self.backend.restart()  # a fresh pool for the next run
            raise worker_lost(
                f"task {worst.first_key()}", times, self.retries, detail=type(exc).__name__
            ) from None
        self.retried += sum(map(len, lost))
        self.running.clear()
        self.backend.restart()
        for batch in reversed(lost):
            if batch.tasks is not None:
                for state in reversed(batch.tasks):
                    self.ready.appendleft(state)
                    state.queued = True
            else:
                state = cast(_State, batch.state)
                state.redo.append((batch.a, batch.b))
                if not state.queued:
                    self.ready.appendleft(state)
                    state.queued = True
            self.ready_tasks += len(batch)
        self.dispatch()
