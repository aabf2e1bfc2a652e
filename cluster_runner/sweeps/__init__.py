"""Scaling sweeps: which points to time and in which order (:mod:`.plan`), and the loop that times
them (:mod:`.loop`).

A sweep times one job at several *sizes* on one or more backends. The size is what the sweep
varies (its *axis*):

``workers``
    Each backend is brought up at each worker count in turn (the local pool's size, a Dask
    LocalCluster's workers, Ray's CPUs) and closed before the next.
``nodes``
    On an existing cluster (``--address``) the cluster is left as it is, and each point
    restricts the graph to k of its nodes (``BackendOptions.nodes``; each backend says what a
    node is: Dask restricts tasks to k workers, Ray to k nodes by a node-id label selector). A
    new client connects for each k; the cluster is never restarted.
``chunks``
    Granularity: the task count of every stage (``chunks=``) at fixed workers, to find where
    per-task overhead starts to cost more than the work.

``strong`` mode keeps the problem fixed; ``weak`` multiplies each stage's weak parameter by the
size (:meth:`JobSpec.scaled`), so the work per worker stays constant (Gustafson);
``throughput`` keeps one worker or node count and grows the problem instead (one ``--vary``
parameter is then the axis).

Any parameter (issue 19). ``--vary NAME=V1,V2`` times every size at each value, several
``--vary`` as their product or, with ``--zip``, in pairs (:mod:`.vary`); the values are part of
each point and of its records. ``--resume FILE`` times only the rounds a results file lacks
(:mod:`.resume`). A sweep on nodes a batch scheduler gives has a
:class:`~cluster_runner.sweeps.loop.SweepProvider` (:mod:`cluster_runner.clusters.slurm_sweep`).

Order, against drift. On a shared machine the speed of the machine drifts while a sweep runs.
All backends of one size are started together (each start timed on its own, and reported
apart from the run times); after the warm-up runs, their timed runs alternate, one run of each
backend (and of each chunk count) per round: A B A B ..., so drift hits every backend alike.
Different sizes cannot be interleaved the same way, as an embedded Ray can only be started
once per process at a time. The cost: idle engines of the other backends stay up while one
runs; their background work (heartbeats) lands on every backend's runs alike.

Pre-flight. Before timing a size, each backend's :meth:`~Backend.preflight` must find the
expected workers (and nodes) up and idle; a backend that does not is not timed at that size,
and a ``skipped`` record saying why is written in place of its runs. The CPU load of processes
outside the sweep is sampled too, and recorded (``other_load``): a busy machine is reported,
not refused, since on a shared machine it may never be idle.

Usage figures. The processes each backend started are noted, so that the CPU and memory of a
run (:mod:`cluster_runner.runs.monitor`) leave out the other backends kept up meanwhile.

Every record is handed to ``on_record`` the moment its run ends, so an interrupted sweep keeps
every run it finished; on Ctrl-C every backend started is closed on the way out.

Failures. A run that fails (its timeout passed, or workers were lost more often than the retry
budget allows) is recorded as ``failed``. With ``keep_going`` its point is dropped from the
later rounds and the sweep goes on; without it the sweep stops there, its backends closed, and
the run's error is raised to the caller (the CLI prints it in one line).
"""
