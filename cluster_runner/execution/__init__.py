"""The graph walk: running a workload graph on a started backend, task by task or all at once.

- :mod:`.walk`: :func:`~.walk.execute`, the one walk every backend is driven by;
- :mod:`.batching`: how many ready tasks a pool backend gets in one message;
- :mod:`.tasks`: what runs on a worker: a task timed, traced, its error kept with its traceback;
- :mod:`.traces`: every task's trace as columns (start, end, worker), and its placement figures.
"""
