"""The process-tree monitor counts children's CPU and memory, and leaves out what it is told to."""

from __future__ import annotations

import subprocess
import sys
import time

from cluster_runner.runs.monitor import TreeMonitor

MIB = 2**20

#: Holds 300 MiB of touched (resident) memory until killed.
HOLD_MEMORY = (
    "import sys, time; block = b'x' * (300 * 2**20); print('ready', flush=True); time.sleep(60)"
)
#: Burns 0.3 s of CPU, then idles a little so the monitor sees its last CPU time, then exits.
BURN_CPU = "import time\nwhile time.process_time() < 0.3:\n    pass\ntime.sleep(0.4)\n"


def test_cpu_of_a_child_born_and_dead_within_the_span_is_counted():
    with TreeMonitor(interval=0.05) as monitor:
        child = subprocess.Popen([sys.executable, "-c", BURN_CPU])
        child.wait(timeout=60)
    usage = monitor.result()
    assert usage["cpu_s"] >= 0.28  # the child's 0.3 s, give or take a clock tick
    assert usage["processes"] >= 2


def test_memory_of_a_child_is_counted_unless_it_is_excluded():
    child = subprocess.Popen([sys.executable, "-c", HOLD_MEMORY], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with TreeMonitor() as whole:
            time.sleep(0.15)
        with TreeMonitor(exclude=[child.pid]) as without:
            time.sleep(0.15)
    finally:
        child.kill()
        child.wait(timeout=30)
    difference = whole.result()["peak_rss_bytes"] - without.result()["peak_rss_bytes"]
    assert difference >= 290 * MIB
    assert without.result()["processes"] == whole.result()["processes"] - 1
