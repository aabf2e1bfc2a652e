"""A user's own workload, through the real ``runner`` command (issue 13's acceptance).

The workload is a file in a temporary folder that is on no worker's ``sys.path`` (the driver
runs from another folder): a pure-Python Monte Carlo map-reduce with no ``verify`` of its own, so
the serial reference check decides. It runs verified, with one digest (the one computed here by
calling its functions directly), on serial, threads, the local pool, an embedded Dask cluster,
an embedded Ray instance, and a two-node Dask and Ray cluster on 127.0.0.1 reached by
``--address``: there the runner must ship the file (and, in a second job, a package of the
user's with a sibling module), and the workload itself refuses to run from the driver's folder
(the clusters' processes are started with ``MUST_BE_SHIPPED``, naming it).
``runner scale`` and ``runner report`` work on it; a workload that a tiny package, installed
into the environment for the test (a wheel made here, ``pip install --no-deps``), registers
under the entry-point group is listed by ``runner workloads`` and runs; every bad input is one
line and exit 2 with nothing run; a task that raises fails the run with its key and the
worker's traceback.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from cluster_runner.cli import main
from cluster_runner.workloads.naming import forget
from cluster_runner.workloads.values import digest_value

from clusters import (
    dask_cluster,
    driver_env,
    ray_cluster,
    ray_lock,
    records_in,
    run_watched,
    survivors,
)
from conftest import ROOT, runner_command

#: The cluster processes' variable that makes the workload refuse the driver's copy of itself.
GUARD = "MUST_BE_SHIPPED"

WORKLOAD = '''
"""Monte Carlo pi in pure Python, written by a user: no verify, so a serial reference decides."""
import os
import random

from cluster_runner import workload


def split(samples: int = 40_000, chunks: int = 6, seed: int = 3):
    base, extra = divmod(samples, chunks)
    return [(seed, i, base + (i < extra)) for i in range(chunks)]


def estimate(hits, samples):
    return {"pi": 4 * sum(hits) / samples, "hits": hits}


@workload(split=split, reduce=estimate, weak="samples")
def hits(seed, chunk, draws):
    guard = os.environ.get("MUST_BE_SHIPPED")
    if guard and os.path.abspath(__file__).startswith(guard + os.sep):
        raise RuntimeError(f"imported from the driver's folder {guard}, not shipped")
    rng = random.Random(seed * 1_000_003 + chunk)
    return sum(rng.random() ** 2 + rng.random() ** 2 < 1 for _ in range(draws))
'''

JOB = '[[stage]]\nworkload = "code/own_pi.py:hits"\nsamples = 40_000\n'

#: A package of the user's (not installed): ``ownpkg.sim:cubes``, which imports a sibling.
PACKAGE = {
    "__init__.py": "",
    "helpers.py": "def cube(k):\n    return k**3\n",
    "sim.py": """
import os
from cluster_runner import workload
from ownpkg.helpers import cube


def split(n: int = 200, chunks: int = 4):
    return [(i, n, chunks) for i in range(chunks)]


@workload(split=split, reduce=sum)
def cubes(index, n, chunks):
    guard = os.environ.get("MUST_BE_SHIPPED")
    if guard and os.path.abspath(__file__).startswith(guard + os.sep):
        raise RuntimeError(f"imported from the driver's folder {guard}, not shipped")
    return sum(cube(k) for k in range(index, n, chunks))
""",
}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The workload's folder, its job file, the folder the driver runs in, and the digest."""
    root = tmp_path_factory.mktemp("own")
    code = root / "code"
    code.mkdir()
    (code / "own_pi.py").write_text(WORKLOAD)
    (root / "own.toml").write_text(JOB)
    (root / "ownpkg").mkdir()
    for name, text in PACKAGE.items():
        (root / "ownpkg" / name).write_text(text)
    (root / "own_pkg.toml").write_text('[[stage]]\nworkload = "ownpkg.sim:cubes"\n')
    elsewhere = tmp_path_factory.mktemp("driver")  # the driver's cwd: not the code's folder
    spec = importlib.util.spec_from_file_location("own_pi_here", code / "own_pi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    value = module.estimate([module.hits(*piece) for piece in module.split()], 40_000)
    return {
        "root": root,
        "job": root / "own.toml",
        "package_job": root / "own_pkg.toml",
        "code": code,
        "cwd": elsewhere,
        "digest": digest_value(value),
    }


def submit(
    own, out: Path, *args: str, env: dict | None = None, job: str = "job"
) -> tuple[int, str, list[dict]]:
    code, _, stderr, procs = run_watched(
        [*runner_command(), "submit", "--job", str(own[job]), "--out", str(out), *args],
        env={k: v for k, v in (env or driver_env()).items() if k != GUARD},
        cwd=own["cwd"],
    )
    assert not survivors(procs)
    return code, stderr, records_in(out)


def assert_verified_by_reference(record: dict, own: dict) -> dict:
    (stage,) = record["stages"]
    assert record["status"] == "verified", stage["verification"]
    assert stage["digest"] == own["digest"]
    assert stage["verification"].startswith("bit for bit equal to")
    assert stage["reference"]["digest"] == own["digest"]
    assert stage["reference"]["backend"] == "serial"
    return stage


EMBEDDED = [
    pytest.param("serial", [], id="serial"),
    pytest.param("threads", ["--workers", "2"], id="threads"),
    pytest.param("local", ["--workers", "2"], id="local"),
    pytest.param("dask", ["--workers", "2"], id="dask", marks=pytest.mark.cluster),
    pytest.param("ray", ["--workers", "2"], id="ray", marks=pytest.mark.cluster),
]


@pytest.mark.parametrize(("backend", "extra"), EMBEDDED)
def test_a_file_workload_runs_verified_with_one_digest_on_every_embedded_backend(
    own, tmp_path, backend, extra
):
    lock = ray_lock() if backend == "ray" else contextlib.nullcontext()
    with lock:
        code, stderr, records = submit(own, tmp_path, "--backend", backend, *extra)
    assert code == 0, stderr[-2000:]
    (record,) = records
    stage = assert_verified_by_reference(record, own)
    assert stage["name"] == "hits" and stage["tasks"] == 7  # six chunks and the reduce
    assert stage["workload"] == f"{own['code'] / 'own_pi.py'}:hits"
    if backend == "ray":  # Ray workers never share the driver's sys.path: shipped even here
        assert record["backend"]["extra"]["shipped"][0].startswith("own_pi (file ")


@pytest.mark.cluster
def test_a_file_and_a_package_are_shipped_to_a_dask_cluster_reached_by_address(
    own, tmp_path, monkeypatch
):
    monkeypatch.setenv(GUARD, str(own["root"]))  # the cluster's processes inherit it
    with dask_cluster(workers=2) as cluster:
        monkeypatch.delenv(GUARD)
        address = ["--backend", "dask", "--address", cluster.address]
        code, stderr, records = submit(own, tmp_path / "file", *address)
        package = submit(own, tmp_path / "package", *address, job="package_job")
        left = _plugins_left(cluster.address)
    assert code == 0, stderr[-2000:]
    assert not left  # the code's plugins were withdrawn: later workers do not get it
    (record,) = records
    assert_verified_by_reference(record, own)
    assert record["backend"]["extra"]["shipped"][0].startswith("own_pi (file ")
    assert_package_ran(package)


def assert_package_ran(outcome: tuple[int, str, list[dict]], shipped: bool = True) -> None:
    """The package job verified (its sibling module shipped with it), with the known sum."""
    code, stderr, records = outcome
    assert code == 0, stderr[-2000:]
    (record,) = records
    assert record["status"] == "verified"
    assert record["stages"][0]["result"] == sum(k**3 for k in range(200))
    assert record["stages"][0]["workload"] == "ownpkg.sim:cubes"
    if shipped:
        assert record["backend"]["extra"]["shipped"][0].startswith("ownpkg (package ")


def test_a_package_next_to_the_job_file_is_found_and_runs_on_the_local_pool(own, tmp_path):
    """``ownpkg.sim:cubes`` is not importable from the driver's folder: it is found next to the
    job file, and the pool's workers import it (and its sibling module) from there."""
    outcome = submit(own, tmp_path, "--backend", "local", "--workers", "2", job="package_job")
    assert_package_ran(outcome, shipped=False)


def _plugins_left(address: str) -> list[str]:
    """The runner's code plugins a Dask scheduler still holds, for workers or for itself."""
    from distributed import Client

    def held(dask_scheduler) -> list[str]:
        names = [*dask_scheduler.worker_plugins, *dask_scheduler.plugins]
        return [name for name in names if str(name).startswith("cluster-runner-code")]

    with Client(address, timeout=30) as client:
        return client.run_on_scheduler(held)


@pytest.mark.cluster
def test_a_file_and_a_package_are_shipped_to_a_ray_cluster_reached_by_address(
    own, tmp_path, monkeypatch
):
    monkeypatch.setenv(GUARD, str(own["root"]))
    with ray_cluster(nodes=2) as cluster:
        monkeypatch.delenv(GUARD)
        env = driver_env(cluster)
        address = ["--backend", "ray", "--address", cluster.address]
        code, stderr, records = submit(own, tmp_path / "file", *address, env=env)
        package = submit(own, tmp_path / "package", *address, env=env, job="package_job")
    assert code == 0, stderr[-2000:]
    (record,) = records
    assert_verified_by_reference(record, own)
    assert record["backend"]["nodes"] == 2
    assert record["backend"]["extra"]["shipped"][0].startswith("own_pi (file ")
    assert_package_ran(package)


def test_scale_and_report_work_on_a_file_workload(own, tmp_path):
    out = tmp_path / "sweep"
    code, _, stderr, procs = run_watched(
        [*runner_command(), "scale", "--job", str(own["job"]), "--backend", "threads,local",
         "--workers", "1,2", "--repeat", "1", "--warmup", "0", "--out", str(out)],
        env=driver_env(), cwd=own["cwd"],
    )  # fmt: skip
    assert not survivors(procs)
    assert code == 0, stderr[-2000:]
    records = records_in(out)
    assert len(records) == 4
    for record in records:
        assert_verified_by_reference(record, own)
    # one serial reference for the whole sweep, computed once
    assert len({r["stages"][0]["reference"]["computed"] for r in records}) == 1
    report = subprocess.run(
        [*runner_command(), "report", str(out), "--format", "csv"],
        capture_output=True, text=True, cwd=own["cwd"], env=driver_env(), timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    assert {(row["backend"], row["size"]) for row in rows} >= {
        ("threads", "1"),
        ("threads", "2"),
        ("local", "1"),
        ("local", "2"),
    }


# --- a workload an installed package registers by entry point --------------------------

ENTRY_POINT_MODULE = '''
"""Sums of cubes, from an installed package."""
from cluster_runner import workload


def split(n: int = 300, chunks: int = 3):
    return [(i, n, chunks) for i in range(chunks)]


def check(total, n):
    return total == (n * (n - 1) // 2) ** 2


@workload(split=split, reduce=sum, verify=check)
def cubes(index, n, chunks):
    return sum(k**3 for k in range(index, n, chunks))
'''


def _wheel(folder: Path, dist: str, package: str, entry: str) -> Path:
    """A pure-Python wheel of ``package`` registering ``entry`` (written by hand: no build
    backend, no network)."""
    stem = dist.replace("-", "_")
    info = f"{stem}-0.1.dist-info"
    files = {
        f"{package}/__init__.py": ENTRY_POINT_MODULE,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[cluster_runner.workloads]\n{entry} = {package}:cubes\n",
    }
    record = []
    for name, text in files.items():
        data = text.encode()
        sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={sha},{len(data)}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{stem}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A tiny package installed into this environment (pip, no dependencies); removed after."""
    tag = uuid.uuid4().hex[:8]
    dist, package, entry = f"cr-test-workloads-{tag}", f"cr_test_workloads_{tag}", f"cubes_{tag}"
    wheel = _wheel(tmp_path_factory.mktemp("wheel"), dist, package, entry)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-index", str(wheel)], check=True)
    try:
        yield {"dist": dist, "entry": entry, "package": package}
    finally:
        subprocess.run([*pip, "uninstall", "-y", dist], check=True)


def test_an_entry_point_workload_is_listed_and_runs(installed, tmp_path):
    listed = subprocess.run(
        [*runner_command(), "workloads", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=driver_env(), timeout=120,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    entries = {entry["ref"]: entry for entry in json.loads(listed.stdout)}
    mine = entries[installed["entry"]]
    assert mine["from"] == "entry point"
    assert mine["origin"].startswith(f"{installed['dist']} 0.1")
    assert [p["name"] for p in mine["params"]] == ["n", "chunks"]
    assert mine["verified_by"] == "its own verify"
    assert {"primes", "dot"} <= set(entries)  # the built-in ones are listed too
    job = tmp_path / "cubes.toml"
    job.write_text(f'[[stage]]\nworkload = "{installed["entry"]}"\nn = 1000\n')
    for backend in ("serial", "local"):
        out = tmp_path / backend
        code, _, stderr, procs = run_watched(
            [*runner_command(), "submit", "--job", str(job), "--backend", backend,
             "--workers", "2", "--out", str(out)],
            env=driver_env(), cwd=tmp_path,
        )  # fmt: skip
        assert not survivors(procs)
        assert code == 0, stderr[-2000:]
        (record,) = records_in(out)
        (stage,) = record["stages"]
        assert record["status"] == "verified"
        assert stage["result"] == (1000 * 999 // 2) ** 2
        assert "reference" not in stage  # its own verify decided


# --- bad input: one line, exit 2, nothing run ---------------------------------------------

#: File name -> source, for the bad-input rows.
BAD_FILES = {
    "does_not_import.py": "import os\nimport no_such_module_anywhere\n",
    "bad_syntax.py": "def split(n: int:\n    pass\n",
    "raises_on_import.py": "raise RuntimeError('the config file is missing')\n",
    "plain.py": "def chunk(x):\n    return x\n\nANSWER = 42\n",
    "lambda_chunk.py": "from cluster_runner import MapReduce\n"
    "def split(n: int = 4):\n    return list(range(n))\n"
    "WORKLOAD = MapReduce(lambda x: x, split=split)\n",
    "closure_chunk.py": "from cluster_runner import workload\n"
    "def split(n: int = 4):\n    return list(range(n))\n"
    "def make():\n    @workload(split=split)\n    def inner(x):\n        return x\n"
    "    return inner\nchunk = make()\n",
    "typed.py": "from cluster_runner import workload\n"
    "def split(n: int = 4, mode: str = 'a'):\n    return list(range(n))\n"
    "@workload(split=split)\ndef square(x):\n    return x * x\n",
    "my-work.py": "",
}

#: (workload, extra stage lines, a part of the one line). {dir} is the files' folder.
BAD_WORKLOADS = [
    ("does_not_import.py:W", "", "does not import: ModuleNotFoundError: No module named"),
    ("bad_syntax.py:W", "", "does not import: SyntaxError: invalid syntax (line 1)"),
    ("raises_on_import.py", "", "does not import: RuntimeError: the config file is missing"),
    ("plain.py:missing", "", "plain.py has no attribute 'missing' (workloads in it: none)"),
    ("plain.py:chunk", "", "plain.py:chunk is a function, not a workload"),
    ("plain.py:ANSWER", "", "plain.py:ANSWER is an int, not a workload"),
    ("lambda_chunk.py", "", "the chunk function <lambda> is a lambda"),
    ("closure_chunk.py:chunk", "", "make.<locals>.inner is defined inside make() (a closure)"),
    ("typed.py:square", "n = 1.5", "stage 'square': n must be an integer, got 1.5"),
    ("typed.py:square", "size = 3", "unknown parameter 'size' for workload 'square'"),
    ("typed.py:square", "mode = 7", "mode must be a string, got 7"),
    ("typed.py:square", 'weak = "mode"', "weak = 'mode' is not a size parameter"),
    ("none.py:x", "", "workload file none.py does not exist (relative to {dir})"),
    ("no_such_package.mod:W", "", "no module named 'no_such_package.mod'"),
    ("my-work.py:W", "", "'my-work' is not a Python module name; rename the file"),
    ("typed.py:", "", "ends with ':'; name the attribute"),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    """The files of the rows, run in this process: what they import is forgotten afterwards."""
    folder = tmp_path_factory.mktemp("bad")
    for name, text in BAD_FILES.items():
        (folder / name).write_text(text)
    path, modules = list(sys.path), set(sys.modules)
    yield folder
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(folder)):
            del sys.modules[name]
    forget()


@pytest.mark.parametrize(("ref", "lines", "words"), BAD_WORKLOADS)
def test_a_bad_workload_is_one_line_and_exit_2_before_anything_runs(
    bad_files, tmp_path, capsys, ref, lines, words
):
    job = bad_files / f"job-{uuid.uuid4().hex[:6]}.toml"
    job.write_text(f'[[stage]]\nworkload = "{ref}"\n{lines}\n')
    out = tmp_path / "out"
    code = main(["submit", "--job", str(job), "--backend", "local", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines_out = err.strip().splitlines()
    assert len(lines_out) == 1 and lines_out[0].startswith("runner: error: "), err
    assert words.format(dir=bad_files) in lines_out[0]
    assert "Traceback" not in err
    assert not out.exists()  # nothing ran, nothing was written


def test_a_chunk_function_of_main_is_refused_in_one_line(tmp_path):
    script = tmp_path / "my_script.py"
    script.write_text(
        "import sys\nfrom cluster_runner import workload\nfrom cluster_runner.cli import main\n"
        "def split(n: int = 4):\n    return list(range(n))\n"
        "@workload(split=split)\ndef square(x):\n    return x * x\n"
        "if __name__ == '__main__':\n    sys.exit(main(sys.argv[1:]))\n"
    )
    job = tmp_path / "main.toml"
    job.write_text('[[stage]]\nworkload = "__main__:square"\n')
    done = subprocess.run(
        [sys.executable, str(script), "submit", "--job", str(job), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=tmp_path, env=driver_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "runner: error: __main__:square: the chunk function square is defined in __main__ (the"
        " script being run), which workers cannot import; move it into a module or file and"
        " name that in the job"
    )
    assert not (tmp_path / "o").exists()


RAISES = """
from cluster_runner import workload


def split(n: int = 4):
    return list(range(n))


def cursed(x):
    if x == 2:
        raise ValueError(f"chunk {x} is cursed")
    return x


@workload(split=split)
def chunk(x):
    return cursed(x)
"""


def test_a_task_that_raises_fails_with_its_key_and_the_workers_traceback(tmp_path):
    (tmp_path / "raising_own.py").write_text(RAISES)
    job = tmp_path / "raises.toml"
    job.write_text('[[stage]]\nworkload = "raising_own.py:chunk"\n')
    out = tmp_path / "out"
    code, _, stderr, procs = run_watched(
        [*runner_command(), "--traceback", "submit", "--job", str(job), "--backend", "local",
         "--workers", "2", "--out", str(out)],
        env=driver_env(), cwd=ROOT,
    )  # fmt: skip
    assert not survivors(procs)
    assert code == 1
    first, *rest = stderr.strip().splitlines()
    assert first == "runner: error: task chunk/chunk-000002 failed: ValueError: chunk 2 is cursed"
    shown = "\n".join(rest)
    assert f'File "{tmp_path / "raising_own.py"}", line 11, in cursed' in shown
    (record,) = records_in(out)
    assert record["status"] == "failed"
    assert "in cursed" in record["error_traceback"]


def test_runner_workloads_lists_a_jobs_workloads_with_how_each_is_verified(capsys):
    examples = ROOT / "examples"
    code = main(
        ["workloads", str(examples / "wordcount.toml"), str(examples / "montecarlo_pi_numpy.toml"),
         "--json"]
    )  # fmt: skip
    assert code == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed["wordcount"]["verified_by"] == "its own verify"
    assert listed["wordcount"]["weak"] == "documents"
    assert listed["count_hits"]["verified_by"] == "a serial reference run"
    assert listed["count_hits"]["from"] == "file"
    assert listed["count_hits"]["origin"] == str(examples / "montecarlo_pi_numpy.py")
    params = {p["name"]: p for p in listed["count_hits"]["params"]}
    assert params["samples"] == {
        "name": "samples", "type": "int", "default": 50_000_000, "required": False,
        "minimum": None, "maximum": None, "choices": None, "help": "",
    }  # fmt: skip
    assert main(["workloads", "nosuch.py:x"]) == 2
    assert capsys.readouterr().err.startswith("runner: error: workload file nosuch.py does not")
