"""Malformed input of every kind: one line on stderr, exit 2, nothing started, nothing sent.

One table (:data:`TABLE`): command-line flags, worker lists, job specs, cluster addresses,
TLS and fault options, and results files that are not ours (:data:`BAD_INPUT`, the first
round); then, from issue 15, non-finite and absurd numbers (:data:`NUMBERS`), more than the
machine holds (:data:`BOUNDS`), unusable paths (:data:`PATHS`), names and descriptions with
control characters (:data:`JOB_TEXT`), Ray addresses off this machine (:data:`ADDRESSES`),
cluster configs and profiles (:data:`CLUSTER_CONFIGS`, :data:`PROFILES`), and records that
carry our format tag but are malformed (:data:`RECORDS`). Each row runs the real command in
this process; it must fail before anything starts, with exit 2, one ``runner: error: ...`` line
naming the problem and no traceback, without opening a single network connection (checked
by watching ``socket.connect``: a refused remote address must not even be tried), and without
writing anything (the scratch folder the rows point ``--out`` and ``--state-dir`` into stays
empty).

Markup in a job's name or description (:data:`MARKUP`) is not refused: it is shown literally.

A property (hypothesis) adds the job-spec loader at the byte level: any file either loads into
a valid spec or raises the runner's own :class:`~cluster_runner.errors.JobSpecError`.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster_runner.cli import main
from cluster_runner.errors import JobSpecError
from cluster_runner.jobspec import load_job
from cluster_runner.limits import PER_CPU
from cluster_runner.results import RECORD_FORMAT, SCHEMA_VERSION

from conftest import ROOT

#: Files the rows name as {placeholders}, written by the ``files`` fixture.
FILES = {
    "not_toml": b'[[stage]\nworkload = "primes"\n',
    "unknown_workload": b'[[stage]]\nworkload = "fibonacci"\nn = 10\n',
    "no_stages": b'description = "nothing to run"\n',
    "unknown_key": b'colour = "red"\n[[stage]]\nworkload = "primes"\n',
    "junk_job": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
    "wrong_type": b'[[stage]]\nworkload = "primes"\nn = "lots"\n',
    "empty_jsonl": b"",
    "other_jsonl": b'{"name": "alice", "age": 7}\n{"name": "bob", "age": 9}\n',
    "junk_jsonl": b"\xff\xfe\x00junk\x81\x82\n\x00\x01\x02",
    "text_jsonl": b"hello\nworld\n",
    "newer_jsonl": (
        json.dumps({"format": RECORD_FORMAT, "schema_version": SCHEMA_VERSION + 1}) + "\n"
    ).encode(),
    "pem": b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n",
}

DASK = ["submit", "--backend", "dask"]
SCALE = ["scale", "--backend", "threads"]

#: (arguments, a part of the one-line message). {name} is the path of FILES[name]; {dir} an
#: empty folder.
BAD_INPUT = [
    # command-line flags
    (["submit", "--backend", "spark"], "'spark' is not one of"),
    (["submit", "--workers", "0"], "0 is not in the range x>=1"),
    (["submit", "--workers", "many"], "'many' is not a valid integer"),
    (["submit", "--repeat", "0"], "0 is not in the range x>=1"),
    (["submit", "--timeout", "-1"], "-1.0 is not in the range x>=0.001"),
    (["submit", "--retries", "-1"], "-1 is not in the range x>=0"),
    (["submit", "--start-method", "vfork"], "'vfork' is not one of"),
    (["submit", "--frobnicate"], "No such option '--frobnicate'"),
    (["sumbit"], "No such command 'sumbit'"),
    (["scale", "--backend", "local,spark"], "unknown backend 'spark'"),
    (["scale", "--backend", "local,local"], "lists a backend twice"),
    (["scale", "--mode", "sideways"], "'sideways' is not one of"),
    (["scale", "--chunks", "0"], "not a list of positive integers"),
    # worker lists
    ([*SCALE, "--workers", "1,,2"], "'1,,2' is not a list of positive integers"),
    ([*SCALE, "--workers", "0"], "'0' is not a list of positive integers"),
    ([*SCALE, "--workers", "-1"], "'-1' is not a list of positive integers"),
    ([*SCALE, "--workers", "a"], "'a' is not a list of positive integers"),
    ([*SCALE, "--workers", "1,1"], "lists a number twice"),
    ([*SCALE, "--workers", ""], "is not a list of positive integers"),
    ([*SCALE, "--nodes", "1,2"], "give its --address too"),
    # job specs and overrides
    (["submit", "--job", "jobs/none.toml"], "does not exist"),
    (["submit", "--job", "nosuchjob"], "no job named 'nosuchjob'"),
    (["submit", "--job", "{not_toml}"], "not valid TOML"),
    (["submit", "--job", "{unknown_workload}"], "fibonacci"),
    (["submit", "--job", "{no_stages}"], "no [[stage]] tables"),
    (["submit", "--job", "{unknown_key}"], "unknown key 'colour'"),
    (["submit", "--job", "{junk_job}"], "cannot be read"),
    (["submit", "--job", "{wrong_type}"], "n must be an integer, got 'lots'"),
    (["submit", "--set", "n=-5"], "n must be >= 2"),
    (["submit", "--set", "n"], "expected KEY=VALUE"),
    (["submit", "--set", "colour=red"], "has a parameter 'colour'"),
    (["submit", "--set", "nostage.n=5"], "no stage named 'nostage'"),
    # cluster addresses
    (["submit", "--backend", "local", "--address", "tcp://127.0.0.1:1"], "takes no --address"),
    ([*DASK, "--address", "tcp://"], "'tcp://' is not an address of the form"),
    ([*DASK, "--address", "tcp://host"], "'tcp://host' is not an address of the form"),
    ([*DASK, "--address", "http://x:1"], "'http://x:1' is not an address of the form"),
    ([*DASK, "--address", "tcp://127.0.0.1:0"], "port 0 is out of range"),
    ([*DASK, "--address", "tcp://127.0.0.1:99999"], "port 99999 is out of range"),
    ([*DASK, "--address", "tcp://192.0.2.1:8786"], "refusing plain tcp:// to the Dask"),
    ([*DASK, "--address", "192.0.2.1:8786"], "--insecure on a network you trust"),
    ([*DASK, "--address", "tcp://scheduler.example:8786"], "not on this machine"),
    (
        ["scale", "--backend", "dask", "--address", "tcp://192.0.2.1:8786", "--nodes", "1"],
        "refusing plain tcp:// to the Dask",
    ),
    (["submit", "--backend", "ray", "--address", "ray://x"], "'ray://x' is not an address"),
    (["submit", "--backend", "ray", "--address", "127.0.0.1:70000"], "port 70000 is out of"),
    # TLS
    ([*DASK, "--address", "tls://127.0.0.1:8786"], "is a TLS address: give --tls-ca-file"),
    ([*DASK, "--tls-cert", "{pem}"], "--tls-ca-file, --tls-key missing"),
    (
        [*DASK, "--tls-ca-file", "{pem}", "--tls-cert", "{pem}", "--tls-key", "{dir}/none.key"],
        "--tls-key {dir}/none.key: no such readable file",
    ),
    (
        [
            *DASK,
            "--address",
            "tcp://127.0.0.1:8786",
            "--tls-ca-file",
            "{pem}",
            "--tls-cert",
            "{pem}",
            "--tls-key",
            "{pem}",
        ],
        "is plain TCP but TLS files were given: use tls://127.0.0.1:8786",
    ),
    # faults
    (["submit", "--backend", "serial", "--inject-fault", "kill-worker"], "no worker to kill"),
    (
        ["scale", "--backend", "local,threads", "--inject-fault", "kill-worker"],
        "the threads backend runs tasks in the driver's own process",
    ),
    (["submit", "--inject-fault", "explode"], "'explode' is not 'kill-worker'"),
    # results files that are not ours
    (["report", "{empty_jsonl}"], "the results files hold no runs"),
    (["report", "{other_jsonl}"], "other.jsonl:1 is not a cluster-runner record"),
    (["report", "{junk_jsonl}"], "cannot read results file"),
    (["report", "{text_jsonl}"], "text.jsonl:1 is not JSON"),
    (["report", "{newer_jsonl}"], f"schema version {SCHEMA_VERSION + 1}, newer than this"),
    (["report", "{dir}/missing.jsonl"], "does not exist"),
    (["report", "{dir}"], "holds no *.jsonl results files"),
    (["report", "{not_toml}"], "is not JSON: not a results file of cluster-runner"),
]


# --- round two (issue 15) --------------------------------------------------------------------

#: More worker slots than this machine takes without --oversubscribe (4 per CPU).
TOO_MANY = str(PER_CPU * (os.cpu_count() or 1) + 1)
CLUSTER_UP = ["cluster", "up", "--state-dir", "{dir}/state", "--config"]

#: Non-finite and absurd numbers: never an OverflowError or a KeyError from an engine's timers.
NUMBERS = [
    (["submit", "--timeout", "inf"], "'inf' is not a finite number of seconds"),
    (["submit", "--timeout", "nan"], "'nan' is not a finite number of seconds"),
    (["submit", "--timeout", "-inf"], "'-inf' is not a finite number of seconds"),
    (["submit", "--timeout", "1e400"], "'1e400' is not a finite number of seconds"),
    (["submit", "--timeout", "Infinity"], "'Infinity' is not a finite number of seconds"),
    (["submit", "--timeout", "1e300"], "1e+300 is more than 2.592e+06 seconds"),
    (["submit", "--timeout", "0"], "0.0 is not in the range x>=0.001"),
    (["submit", "--timeout", "soon"], "'soon' is not a valid float"),
    (["submit", "--connect-timeout", "inf"], "'inf' is not a finite number of seconds"),
    (["submit", "--connect-timeout", "nan"], "'nan' is not a finite number of seconds"),
    (["submit", "--connect-timeout", "1e400"], "'1e400' is not a finite number of seconds"),
    (["submit", "--connect-timeout", "1e9"], "1e+09 is more than 86400 seconds"),
    (["submit", "--connect-timeout", "0"], "0.0 is not in the range x>=0.1"),
    ([*DASK, "--connect-timeout", "nan", "--address", "tcp://127.0.0.1:1"], "not a finite number"),
    (["scale", "--timeout", "nan"], "'nan' is not a finite number of seconds"),
    (["scale", "--connect-timeout", "-inf"], "'-inf' is not a finite number of seconds"),
    (["submit", "--retries", "100000000000"], "100000000000 is more than 1000"),
    (["submit", "--retries", "1" + "0" * 40], "is more than 1000"),
    (["submit", "--repeat", "1000000000"], "1000000000 is more than 100000"),
    (["submit", "--warmup", "1000000000"], "1000000000 is more than 100000"),
    (["scale", "--repeat", "1000000"], "1000000 is more than 100000"),
    (["submit", "--workers", "1" + "0" * 40], "and the runner starts at most 1024"),
    (["submit", "--set", "n=1e400"], "n must be an integer, got inf"),
    (["submit", "--set", "n=nan"], "n must be an integer, got nan"),
    (["submit", "--set", "n=inf"], "n must be an integer, got inf"),
    (["submit", "--set", "primes.n=-inf"], "n must be an integer, got -inf"),
    (["submit", "--set", "rows=1e400"], "rows must be an integer, got inf"),
    (["submit", "--set", "n=" + "9" * 5000], "has more digits than a number may have"),
    (["submit", "--job", "{long_number}"], "has more digits than a number may have"),
    ([*CLUSTER_UP, "{cfg_long_number}"], "has more digits than a number may have"),
    (["submit", "--cluster", "{profile_long_number}"], "has more digits than a number may have"),
    (["submit", "--job", "{inf_param}"], "n must be an integer, got inf"),
]

#: More than this machine (or any) holds: refused before a process starts.
BOUNDS = [
    (["submit", "--workers", "100000"], "asked for 100000 workers; this machine has"),
    (["submit", "--workers", "100000"], "even with --oversubscribe"),
    (["submit", "--workers", TOO_MANY], "use --oversubscribe to insist"),
    (["submit", "--backend", "threads", "--workers", "100000"], "asked for 100000 workers"),
    (["submit", "--backend", "threads", "--workers", TOO_MANY], "use --oversubscribe"),
    (["submit", "--backend", "dask", "--workers", "100000"], "asked for 100000 workers"),
    (["submit", "--backend", "dask", "--workers", TOO_MANY], "use --oversubscribe"),
    (["submit", "--backend", "ray", "--workers", "100000"], "asked for 100000 workers"),
    (["submit", "--backend", "ray", "--workers", TOO_MANY], "use --oversubscribe"),
    (["submit", "--workers", "2000", "--oversubscribe"], "at most 1024 on one machine"),
    (["submit", "--start-method", "spawn", "--workers", "5000"], "asked for 5000 workers"),
    ([*SCALE, "--workers", f"1,{TOO_MANY}"], f"asked for {TOO_MANY} workers"),
    (["scale", "--backend", "local,dask", "--workers", "1,100000"], "asked for 100000"),
    (
        [
            "scale",
            "--backend",
            "local",
            "--workers",
            "1,2",
            "--mode",
            "weak",
            "--job",
            "{big_weak}",
        ],
        "returns about",
    ),
    (
        ["submit", "--job", "array_means", "--set", "rows=10000000000", "--set", "cols=1"],
        "returns about 80 GB to the driver",
    ),
    (["submit", "--job", "{big_result}"], "holds it 2 times while it is gathered"),
    (["scale", "--job", "{big_result}", "--backend", "threads"], "returns about 80 GB"),
    ([*CLUSTER_UP, "{cfg_machine}"], "asked for 500 nodes; this machine has"),
    (
        [*CLUSTER_UP, "{cfg_machine}", "--oversubscribe", "--config", "{cfg_slots}"],
        "(2048 worker slots)",
    ),
]

#: Output paths the runner cannot use, refused before anything starts.
PATHS = [
    (["submit", "--out", ""], "is empty"),
    (["submit", "--out", "   "], "is empty"),
    (["scale", "--out", ""], "is empty"),
    (["submit", "--out", "a\x00b"], "holds a NUL character"),
    (["scale", "--out", "{dir}/x\x00y"], "holds a NUL character"),
    (["submit", "--out", "{pem}"], "is a file"),
    (["submit", "--out", "/dev/null/results"], "/dev/null is not a folder this user can write"),
    (["submit", "--out", "{pem}/results"], "is not a folder this user can write in"),
    ([*DASK, "--tls-ca-file", "a\x00b"], "holds a NUL character"),
    (["cluster", "status", "--config", "local-dask", "--state-dir", ""], "is empty"),
    (["cluster", "up", "--config", "local-dask", "--state-dir", "a\x00b"], "NUL character"),
    (["cluster", "down", "--config", "local-dask", "--state-dir", "{pem}"], "is a file"),
]

#: Names and descriptions with control characters: they name files and reach terminals.
JOB_TEXT = [
    (["submit", "--job", "{nul_name}"], "name holds the control character '\\x00'"),
    (["submit", "--job", "{esc_name}"], "name holds the control character '\\x1b'"),
    (["submit", "--job", "{newline_name}"], "name holds the control character '\\n'"),
    (["submit", "--job", "{esc_description}"], "description holds the control character"),
    (["submit", "--job", "{bell_description}"], "description holds the control character"),
    (["scale", "--job", "{nul_name}"], "name holds the control character"),
    (["submit", "--job", "{name_table}"], "name must be a non-empty string"),
]

#: Ray, like Dask, sends nothing unencrypted off this machine without --insecure.
RAY = ["submit", "--backend", "ray"]
ADDRESSES = [
    ([*RAY, "--address", "192.0.2.1:6379"], "refusing to connect to the Ray cluster at 192.0.2"),
    ([*RAY, "--address", "ray://192.0.2.1:10001"], "refusing to connect to the Ray cluster"),
    ([*RAY, "--address", "head.example:6379"], "which is not on this machine"),
    ([*RAY, "--address", "[2001:db8::1]:6379"], "pass --insecure on a network you trust"),
    ([*RAY, "--address", "10.0.0.7:6379"], "its token and your data would cross the network"),
    ([*RAY, "--address", "0.0.0.0:6379"], "refusing to connect to the Ray cluster"),
    ([*RAY, "--address", "auto"], "refusing to connect", {"RAY_ADDRESS": "192.0.2.9:6379"}),
    (
        ["scale", "--backend", "ray", "--address", "198.51.100.4:6379", "--nodes", "1"],
        "refusing to connect to the Ray cluster",
    ),
    (["submit", "--cluster", "{ray_remote_profile}"], "refusing to connect to the Ray cluster"),
    ([*DASK, "--address", "tcp://[2001:db8::1]:8786"], "refusing plain tcp:// to the Dask"),
    ([*DASK, "--address", "tcp://10.0.0.7:8786"], "refusing plain tcp:// to the Dask"),
    (["submit", "--cluster", "{dask_remote_profile}"], "refusing plain tcp:// to the Dask"),
]

#: ``runner cluster up`` configs: their keys' ranges and what the machine holds.
CLUSTER_CONFIGS = [
    ([*CLUSTER_UP, "{cfg_nodes_huge}"], "'nodes' must be at most 1024"),
    ([*CLUSTER_UP, "{cfg_threads_huge}"], "'threads' must be at most 1024"),
    ([*CLUSTER_UP, "{cfg_cpus_huge}"], "'cpus' must be at most 1024"),
    ([*CLUSTER_UP, "{cfg_timeout_inf}"], "'timeout' must be a number"),
    ([*CLUSTER_UP, "{cfg_timeout_nan}"], "'timeout' must be a number"),
    ([*CLUSTER_UP, "{cfg_nodes_float}"], "'nodes' must be an integer"),
    ([*CLUSTER_UP, "{cfg_name_path}"], "'name' must be letters, digits"),
    ([*CLUSTER_UP, "{cfg_name_nul}"], "'name' must be letters, digits"),
    ([*CLUSTER_UP, "{cfg_port_huge}"], "'port' must be an integer from 0 to 65535"),
    ([*CLUSTER_UP, "{cfg_list}"], "expected a mapping of keys to values"),
]

#: Runner profiles whose defaults are out of range for the options they fill.
PROFILES = [
    (["submit", "--cluster", "{profile_timeout_inf}"], "'defaults.timeout'"),
    (["submit", "--cluster", "{profile_connect_nan}"], "'defaults.connect_timeout'"),
    (["submit", "--cluster", "{profile_workers_huge}"], "asked for 100000 workers"),
    (["submit", "--cluster", "{profile_retries_huge}"], "'defaults.retries'"),
    (["submit", "--cluster", "{profile_insecure_threads}"], "applies to backend dask, ray"),
]


def _record(**changes: object) -> dict:
    """A well-formed record (what ``runner submit`` writes, trimmed), with ``changes``: a key
    ``a.b`` sets a nested field, a value :data:`DROP` removes it."""
    record = {
        "format": RECORD_FORMAT, "schema_version": SCHEMA_VERSION, "run_id": "r", "session": "s",
        "time": "2026-01-01T00:00:00+00:00",
        "job": {"name": "tiny", "digest": "0f", "description": "", "stages": [
            {"name": "primes", "workload": "primes", "weak": "n", "params": {"n": 1000}}]},
        "backend": {"name": "serial", "workers": 1, "nodes": 1, "version": "3.11",
                    "startup_s": 0.1, "extra": {}},
        "repeat": 0, "warmup": False, "status": "verified", "error": None, "wall_s": 0.5,
        "stages": [{"name": "primes", "workload": "primes", "tasks": 3, "wall_s": 0.5,
                    "result": 168, "display": "168", "digest": "d", "verified": True,
                    "retried": 0, "workers_used": {"w": 3}, "nodes_used": {"n": 3},
                    "busy_s": 0.4, "task_max_s": 0.2, "span_s": 0.5,
                    "usage": {"cpu_s": 0.5, "peak_rss_bytes": 100, "processes": 1}}],
        "labels": {"mode": "strong", "axis": "workers", "size": 1, "workers": 1, "factor": 1,
                   "base_digest": "0f", "round": 0, "point": "serial x1", "other_load": 1.0},
        "environment": {"python": "3.11", "cpu_logical": 2},
        "fault": None, "retried": 0,
        "usage": {"cpu_s": 0.5, "peak_rss_bytes": 100, "processes": 1},
    }  # fmt: skip
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        target = record
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        index = int(key) if isinstance(target, list) else key
        if value is DROP:
            del target[index]
        else:
            target[index] = value
    return record


DROP = object()
#: JSON's own spellings of non-finite numbers, which Python's json reads (and must not pass).
NAN, INF = float("nan"), float("inf")

#: (file name, the record's changes, a part of the message): records that carry our format
#: tag but are malformed. Every message names the file and the line.
RECORD_CASES = [
    ("no_job", {"job": DROP}, "missing required key 'job'"),
    ("no_backend", {"backend": DROP}, "missing required key 'backend'"),
    ("no_status", {"status": DROP}, "missing required key 'status'"),
    ("no_job_name", {"job.name": DROP}, "missing required key 'job.name'"),
    ("no_digest", {"job.digest": DROP}, "missing required key 'job.digest'"),
    ("no_backend_name", {"backend.name": DROP}, "missing required key 'backend.name'"),
    ("no_workers", {"backend.workers": DROP}, "missing required key 'backend.workers'"),
    ("no_tasks", {"stages.0.tasks": DROP}, "missing required key 'stages.tasks'"),
    ("no_cpu_s", {"usage.cpu_s": DROP}, "missing required key 'usage.cpu_s'"),
    ("version_string", {"schema_version": "1"}, "'schema_version' must be an integer >= 1"),
    ("version_true", {"schema_version": True}, "'schema_version' must be an integer"),
    ("version_zero", {"schema_version": 0}, "'schema_version' must be an integer >= 1, not 0"),
    ("version_float", {"schema_version": 1.5}, "not 1.5"),
    ("version_null", {"schema_version": None}, "not None"),
    ("zero_workers", {"backend.workers": 0}, "'backend.workers' must be an integer >= 1, not 0"),
    ("negative_workers", {"backend.workers": -4}, "not -4"),
    ("string_workers", {"backend.workers": "2"}, "not '2'"),
    ("bool_workers", {"backend.workers": True}, "not True"),
    ("float_workers", {"backend.workers": 2.0}, "not 2.0"),
    ("huge_workers", {"backend.workers": 10**30}, "'backend.workers' is a 100-bit integer"),
    ("huge_float_workers", {"backend.workers": 1e30}, "not 1e+30"),
    ("nan_wall", {"wall_s": NAN}, "'wall_s' is nan, not a finite number"),
    ("inf_wall", {"wall_s": INF}, "'wall_s' is inf, not a finite number"),
    ("negative_wall", {"wall_s": -1.0}, "'wall_s' must be a number > 0 and <= 1000000000"),
    ("zero_wall", {"wall_s": 0.0}, "not 0.0"),
    ("huge_wall", {"wall_s": 1e300}, "not 1e+300"),
    ("string_wall", {"wall_s": "fast"}, "not 'fast'"),
    ("nan_stage_wall", {"stages.0.wall_s": NAN}, "'stages.0.wall_s' is nan"),
    ("negative_stage_wall", {"stages.0.wall_s": -0.1}, "'stages.wall_s' must be >= 0, not -0.1"),
    ("negative_busy", {"stages.0.busy_s": -0.5}, "'stages.busy_s' must be >= 0"),
    ("negative_span", {"stages.0.span_s": -INF}, "'stages.0.span_s' is -inf"),
    ("nan_cpu", {"usage.cpu_s": NAN}, "'usage.cpu_s' is nan"),
    ("negative_rss", {"usage.peak_rss_bytes": -1}, "'usage.peak_rss_bytes' must be an integer"),
    ("negative_stage_cpu", {"stages.0.usage.cpu_s": -3.0}, "'stages.usage.cpu_s' must be >= 0"),
    ("bad_status", {"status": "exploded"}, "'status' must be one of verified, unverified"),
    ("number_status", {"status": 1}, "'status' must be one of"),
    ("deep_params", {"job.stages.0.params.x": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}, "nests deeper"),
    (
        "deep_environment",
        {
            "environment.x": {
                "a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": 1}}}}}}}}}}}
            }
        },
        "nests deeper than 12 levels",
    ),
    ("huge_param", {"job.stages.0.params.n": 10**100}, "is a 333-bit integer"),
    ("huge_extra", {"backend.extra.x": 2**64}, "'backend.extra.x' is a 65-bit integer"),
    ("nan_environment", {"environment.cpu_logical": NAN}, "'environment.cpu_logical' is nan"),
    ("job_list", {"job": []}, "'job' must be a table, not []"),
    ("backend_string", {"backend": "serial"}, "'backend' must be a table"),
    ("stages_table", {"stages": {}}, "'stages' must be a list, not {{}}"),
    ("stage_string", {"stages.0": "x"}, "'stages' must be a table"),
    ("labels_list", {"labels": [1]}, "'labels' must be a table"),
    ("zero_size", {"labels.size": 0}, "'labels.size' must be an integer >= 1, not 0"),
    ("bad_mode", {"labels.mode": "sideways"}, "'labels.mode' must be one of strong, weak"),
    ("negative_round", {"labels.round": -1}, "'labels.round' must be an integer >= 0"),
    ("nan_load", {"labels.other_load": NAN}, "'labels.other_load' is nan"),
    ("negative_retried", {"retried": -3}, "'retried' must be an integer >= 0, not -3"),
    ("negative_repeat", {"repeat": -1}, "'repeat' must be an integer >= 0"),
    ("string_warmup", {"warmup": "yes"}, "'warmup' must be true or false, not 'yes'"),
    ("empty_job_name", {"job.name": ""}, "'job.name' must be a string"),
    ("number_digest", {"job.digest": 5}, "'job.digest' must be a string, not 5"),
    ("negative_tasks", {"stages.0.workers_used": {"w": -1}}, "'stages.workers_used.w'"),
    ("float_tasks", {"stages.0.tasks": 3.5}, "'stages.tasks' must be an integer, not 3.5"),
    ("negative_phase", {"stages.0.phases": {"generate_s": -1.0}}, "'stages.phases.generate_s'"),
    ("number_error", {"error": 5}, "'error' must be a string, not 5"),
    ("list_fault", {"fault": ["kill"]}, "'fault' must be a string"),
    ("negative_startup", {"backend.startup_s": -2.0}, "'backend.startup_s' must be a number"),
    ("string_cold", {"cold": "yes"}, "'cold' must be true or false"),
]
#: Whole lines that are not a record one can even read.
RECORD_LINES = {
    "deep_array_jsonl": b'{"format": "cluster-runner/run", "x": ' + b"[" * 100_000 + b"]" * 100_000
    + b"}\n",
    "long_number_jsonl": b'{"format": "cluster-runner/run", "retried": ' + b"9" * 5000 + b"}\n",
    "third_line_jsonl": (json.dumps(_record()) + "\n") * 2 + json.dumps(_record(status=None))
    + "\n",
    "array_jsonl": b'["cluster-runner/run"]\n',
}  # fmt: skip
RECORDS = [
    (["report", f"{{{name}_jsonl}}"], (f"{name}.jsonl:1 is not a complete, well-formed", message))
    for name, _, message in RECORD_CASES
] + [
    (["report", "{deep_array_jsonl}"], "deep_array.jsonl:1 nests too deeply"),
    (["report", "{long_number_jsonl}"], "long_number.jsonl:1 holds a number too long to read"),
    (["report", "{third_line_jsonl}"], "third_line.jsonl:3 is not a complete, well-formed"),
    (["report", "{array_jsonl}"], "array.jsonl:1 is not a cluster-runner record"),
]

#: A stage that needs nothing more, after a job file's first lines.
PRIMES = b'[[stage]]\nworkload = "primes"\nn = 100\n'
#: Job and config files the rows of round two name.
MORE_FILES = {
    "inf_param": b'[[stage]]\nworkload = "primes"\nn = inf\n',
    "long_number": b'[[stage]]\nworkload = "primes"\nn = ' + b"9" * 5000 + b"\n",
    "cfg_long_number": b"engine: dask\nnodes: " + b"9" * 5000 + b"\n",
    "profile_long_number": b'backend = "local"\n[defaults]\nworkers = ' + b"9" * 5000 + b"\n",
    "big_result": b'[[stage]]\nworkload = "array_means"\nrows = 10_000_000_000\ncols = 1\n',
    "big_weak": (
        '[[stage]]\nworkload = "array_means"\ncols = 1\nchunks = 1\n'
        f"rows = {psutil.virtual_memory().available // 24 + 1}\n"  # fits at x1, not at x2
    ).encode(),
    "nul_name": b'name = "a\\u0000b"\n' + PRIMES,
    "esc_name": b'name = "\\u001b[31mred"\n' + PRIMES,
    "newline_name": b'name = "two\\nlines"\n' + PRIMES,
    "esc_description": b'description = "\\u001b]0;title\\u0007"\n' + PRIMES,
    "bell_description": b'description = "ding\\u0007"\n' + PRIMES,
    "name_table": b'name = ""\n' + PRIMES,
    "cfg_machine": b"engine: dask\nnodes: 500\n",
    "cfg_slots": b"engine: ray\nnodes: 2\ncpus: 1024\n",
    "cfg_nodes_huge": b"engine: dask\nnodes: 100000\n",
    "cfg_threads_huge": b"engine: dask\nthreads: 5000\n",
    "cfg_cpus_huge": b"engine: ray\ncpus: 100000\n",
    "cfg_timeout_inf": b"engine: ray\ntimeout: .inf\n",
    "cfg_timeout_nan": b"engine: dask\ntimeout: .nan\n",
    "cfg_nodes_float": b"engine: dask\nnodes: 2.5\n",
    "cfg_name_path": b"engine: dask\nname: ../../escape\n",
    "cfg_name_nul": b'engine: dask\nname: "a\\0b"\n',
    "cfg_port_huge": b"engine: ray\nport: 1e10\n",
    "cfg_list": b"- engine: dask\n",
    "ray_remote_profile": b'backend = "ray"\naddress = "192.0.2.1:6379"\ntoken_file = "token"\n',
    "dask_remote_profile": b'backend = "dask"\naddress = "tcp://192.0.2.1:8786"\n',
    "profile_timeout_inf": b'backend = "local"\n[defaults]\ntimeout = inf\n',
    "profile_connect_nan": b'backend = "local"\n[defaults]\nconnect_timeout = nan\n',
    "profile_workers_huge": b'backend = "local"\n[defaults]\nworkers = 100000\n',
    "profile_retries_huge": b'backend = "local"\n[defaults]\nretries = 1e12\n',
    "profile_insecure_threads": b'backend = "threads"\ninsecure = true\n',
}

TABLE = [*BAD_INPUT, *NUMBERS, *BOUNDS, *PATHS, *JOB_TEXT, *ADDRESSES, *CLUSTER_CONFIGS,
         *PROFILES, *RECORDS]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad-input")
    paths = {}
    every = {**FILES, **MORE_FILES, **RECORD_LINES}
    every.update({f"{name}_jsonl": (json.dumps(_record(**changes)) + "\n").encode()
                  for name, changes, _ in RECORD_CASES})  # fmt: skip
    for name, data in every.items():
        if name.endswith("_jsonl"):
            path = folder / f"{name[:-6]}.jsonl"
        elif name.startswith("cfg_"):
            path = folder / f"{name}.yaml"
        else:
            path = folder / f"{name}.toml"
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        paths[name] = str(path)
    (folder / "token").write_text("a-secret-token\n")
    (folder / "empty").mkdir()
    paths["dir"] = str(folder / "empty")
    return paths


@pytest.fixture
def no_connections(monkeypatch):
    """Record, and refuse, every TCP connection this process tries to open."""
    tried: list[object] = []

    def refuse(sock, address, *args):
        tried.append(address)
        raise OSError("a bad-input test must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return tried


def _row_id(row: tuple) -> str:
    return " ".join(row[0])[:60]


@pytest.mark.parametrize("row", TABLE, ids=[_row_id(row) for row in TABLE])
def test_bad_input_is_one_line_on_stderr_with_exit_2(
    row, files, no_connections, capsys, monkeypatch
):
    args, message, env = (*row, {})[:3]
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RUNNER_SUBMIT_OUT", files["dir"] + "/out")  # results would go here
    monkeypatch.setenv("RUNNER_SCALE_OUT", files["dir"] + "/out")
    monkeypatch.delenv("RUNNER_STATE_DIR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    connect = _spy_on_ray_connect(monkeypatch)
    args = [arg.format(**files) for arg in args]
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("runner: error: ")
    for part in (message,) if isinstance(message, str) else message:
        assert part.format(**files) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert no_connections == [], f"tried to connect to {no_connections}"
    assert connect == [], "asked Ray to connect"
    assert not any(Path(files["dir"]).iterdir()), "something was written (a results file?)"


def _spy_on_ray_connect(monkeypatch) -> list:
    """Record calls of the Ray backend's connect, which would read a token (if Ray is here)."""
    calls: list = []
    try:
        from cluster_runner.backends import ray as ray_backend
    except ImportError:
        return calls
    monkeypatch.setattr(ray_backend, "connect", lambda *a, **k: calls.append(a))
    return calls


def test_the_table_is_large_enough():
    assert len(BAD_INPUT) >= 20
    assert len(TABLE) >= 150
    assert len({(tuple(row[0]), row[1]) for row in TABLE}) == len(TABLE), "a row twice"


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("[bold]tiny[/bold]", "[red]not red[/red]"),
        ("tiny[/]", "[/]"),
        ("[link=https://example.com]click[/link]", "[blink]"),
        ("tiny", "[bold"),
        ("brackets", "a [b] c \\[d]"),
        ("x[", ":smile: [on red]"),
    ],
)
def test_markup_in_a_jobs_name_or_description_is_shown_literally(name, description, tmp_path):
    """Rich markup in user text is text: no MarkupError, no style, no link, the exact words."""
    job = tmp_path / "job.toml"
    job.write_text(
        f"name = {json.dumps(name)}\ndescription = {json.dumps(description)}\n"
        '[[stage]]\nworkload = "primes"\nn = 10000\nchunks = 2\n'
    )
    from click.testing import CliRunner

    from cluster_runner.cli import cli

    result = CliRunner().invoke(
        cli, ["submit", "--job", str(job), "--backend", "serial", "--out", str(tmp_path / "o")],
        auto_envvar_prefix="RUNNER",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{name}: {description} (1 stage)" in result.output
    (path,) = (tmp_path / "o").glob("*.jsonl")  # its file name made from the name, inside --out
    assert path.parent == tmp_path / "o" and "[" not in path.name and "/" not in path.name


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_job_file_loads_or_raises_job_spec_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.toml"
        path.write_bytes(data)
        try:
            job = load_job(path)
        except JobSpecError as exc:
            assert "\n" not in str(exc)
            return
    assert job.stages and job.build_graph().sinks()


@pytest.mark.parametrize(("backend", "module"), [("dask", "distributed"), ("ray", "ray")])
def test_missing_engine_names_the_extra_to_install(backend, module, tmp_path):
    """A backend whose engine is not installed: one line naming the pip extra, exit 2."""
    import sys

    from clusters import driver_env, run_watched

    code = (
        f"import sys; sys.modules[{module!r}] = None;"
        "from cluster_runner.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    out = run_watched(
        [sys.executable, "-c", code, "submit", "--job", str(ROOT / "jobs" / "full.toml"),
         "--backend", backend, "--out", str(tmp_path)],
        env=driver_env(), cwd=tmp_path,
    )  # fmt: skip
    assert out[0] == 2
    lines = out[2].strip().splitlines()
    assert len(lines) == 1, out[2]
    assert f"pip install 'cluster-runner[{backend}]'" in lines[0]
