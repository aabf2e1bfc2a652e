"""How many ready tasks to send to a pool worker in one message (auto-batching, as joblib does).

Every message to a process pool costs the driver and the worker tens of microseconds of
pickling, pipe traffic and bookkeeping: more than a small task's own work. On a machine whose
cores the workers keep busy the driver's share counts twice: measured on 2 cores, each batch
cost the driver's three threads (main, the pool's manager, its queue feeder) about 300 us of
CPU, taken from a worker. Sending tasks in batches divides that cost by the batch size, at the
price of load balance when batches are too coarse. :class:`BatchSizer` picks the size from
what it has measured:

- until the first tasks finish it knows nothing, so batches hold one task each;
- then a batch holds about :data:`TARGET_BATCH_S` seconds of work, judged from the mean time
  of the tasks finished so far, so the per-message cost stays well under 1 % of the work;
- and never more than a fair share of the tasks waiting, ``ready / (2 x workers)``: the
  *factoring* rule (Hummel, Schonberg and Flynn, "Factoring: a method for scheduling
  parallel loops", CACM 1992), which hands out half of what is left in equal pieces, so
  batches shrink geometrically and the last ones are small enough that no worker idles
  while another finishes a long batch.

The driver keeps at most :meth:`BatchSizer.max_in_flight` batches in the pool (two per worker:
one running, one queued behind it), so a worker never waits for the driver, and the sizer
keeps learning from the tasks that finish.

Measured with ``scripts/bench_speedup.py`` (pi(1e9), 64 chunks of about 1 ms, 2 workers on
2 cores, 21 runs each): a fair share of ``ready / (4 x workers)`` and 10 ms batches sent 23
batches a run and reached a speedup of 1.61; factoring and 50 ms, 15 batches and 1.72 (a plain
process pool handed one message per worker reaches 1.85 to 1.93 on the same runs).
"""

from __future__ import annotations

import math

#: Seconds of work one batch should hold once task times are known.
TARGET_BATCH_S = 0.05
#: A fair share is the ready tasks split into this many pieces per worker (factoring: 2).
SHARES_PER_WORKER = 2


class BatchSizer:
    """The batch size for the next dispatch, learnt from the tasks finished so far."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.tasks_timed = 0
        self.seconds = 0.0

    @property
    def max_in_flight(self) -> int:
        """Batches to keep in the pool: one running and one queued per worker."""
        return 2 * self.workers

    def record(self, tasks: int, busy_s: float) -> None:
        """Learn from ``tasks`` finished tasks that kept a worker busy for ``busy_s`` in all."""
        self.tasks_timed += tasks
        self.seconds += busy_s

    def size(self, ready: int) -> int:
        """How many of ``ready`` waiting tasks the next batch should take."""
        if not self.tasks_timed or ready <= 1:
            return 1
        mean = self.seconds / self.tasks_timed
        by_time = TARGET_BATCH_S / mean if mean > 0 else ready
        fair = math.ceil(ready / (SHARES_PER_WORKER * self.workers))
        return max(1, min(int(by_time), fair, ready))
