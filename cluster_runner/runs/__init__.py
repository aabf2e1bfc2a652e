"""Job runs: a job on a started backend, its repeats, timing, verification and records.

- :mod:`.job`: :func:`~.job.run_job`, one record per run;
- :mod:`.monitor`: CPU time and peak memory of the driver's process tree while a run lasts;
- :mod:`.faults`: fault injection (``--inject-fault kill-worker``).
"""
