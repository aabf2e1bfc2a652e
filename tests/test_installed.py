"""The runner as a user gets it: a wheel installed into a fresh virtualenv, run from elsewhere.

Issue 17: after ``pip install .`` and ``cd /tmp``, ``runner jobs`` found nothing and
``--job primes`` failed, because the wheel held no job specs. These tests build the wheel once
(``pip wheel --no-build-isolation``: hatchling comes with the test extra, so nothing is
downloaded), install it without its dependencies into a virtualenv made here, and run that
virtualenv's ``runner`` from a temporary directory outside the repository.

The virtualenv has no pip and no packages of its own: a ``.pth`` line puts this interpreter's
site-packages (numpy, numba, Dask, ...) after its own, so the installed wheel, not the checkout,
is what ``import cluster_runner`` finds (the checkout's editable-install hook is a ``.pth`` file
of that site-packages, which a ``.pth`` line does not process). Each test checks that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.installed


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A virtualenv with the wheel of this checkout installed (not editable); its folder."""
    base = tmp_path_factory.mktemp("installed")
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(wheels), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("cluster_runner-*.whl")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False, symlinks=os.name != "nt")
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    return env_dir


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working directory outside the repository, with its own kernel cache folder."""
    work = tmp_path / "work"
    work.mkdir()
    assert ROOT not in work.resolve().parents
    return work


def runner(env_dir: Path, cwd: Path, *args: str, timeout: float = 240):
    """The installed ``runner``, run from ``cwd`` with an environment that names no checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RUNNER_"))}
    env.update(
        XDG_CACHE_HOME=str(cwd.parent / "cache"),  # this test's own kernel cache
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("NUMBA_CACHE_DIR", None)
    return subprocess.run(
        [str(env_dir / "bin" / "runner"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_the_package_comes_from_the_wheel_with_its_data(installed, elsewhere):
    python = installed / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import cluster_runner; print(cluster_runner.__file__)"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    package = Path(where).parent
    assert installed in package.parents, where
    shipped = {p.name for p in (package / "data" / "jobs").glob("*.toml")}
    assert shipped == {p.name for p in (ROOT / "jobs").glob("*.toml")}
    configs = {p.name for p in (package / "data" / "cluster_configs").iterdir()}
    assert configs == {p.name for p in (ROOT / "cluster_configs").iterdir() if p.is_file()}


def test_jobs_lists_the_built_in_jobs_from_anywhere(installed, elsewhere):
    done = runner(installed, elsewhere, "jobs", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert {job["name"] for job in listing} == {p.stem for p in (ROOT / "jobs").glob("*.toml")}
    assert {job["from"] for job in listing} == {"built-in"}
    assert all(installed in Path(job["file"]).parents for job in listing)
    table = runner(installed, elsewhere, "jobs")
    assert table.returncode == 0, table.stderr
    assert all(job["name"] in table.stdout for job in listing)


def test_submit_primes_runs_and_caches_kernels_where_the_user_can_write(installed, elsewhere):
    done = runner(installed, elsewhere, "submit", "--job", "primes", "--workers", "2", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout holds the JSON document alone
    assert report["ok"] and [r["status"] for r in report["runs"]] == ["verified"]
    assert (elsewhere / report["results_file"]).is_file()
    assert Path(report["results_file"]).parts[0] == "results"
    assert "verified" in done.stderr  # the lines for people went to stderr
    cache = elsewhere.parent / "cache" / "cluster-runner" / "numba"
    assert list(cache.rglob("*.nbi")), "the sieve's compiled kernels are not in the user cache"
    assert not list(installed.rglob("*.nbi")), "numba wrote its cache into the installation"


def test_submit_driver_data_shares_the_drivers_array_from_anywhere(installed, elsewhere):
    done = runner(installed, elsewhere, "submit", "--job", "driver_data", "--backend", "local",
                  "--workers", "2", "--set", "size_mb=4", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert run["status"] == "verified"
    assert run["stages"][0]["transfer"]["method"] == "shared memory"


def test_submit_full_on_dask_from_anywhere(installed, elsewhere):
    done = runner(installed, elsewhere, "submit", "--job", "full", "--backend", "dask",
                  "--workers", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "all stages verified" in done.stdout
    assert "dashboard: http://127.0.0.1:" in done.stdout
    assert list((elsewhere / "results").glob("full-dask-*.jsonl"))


def test_init_copies_editable_jobs_that_override_the_built_in_ones(installed, elsewhere):
    done = runner(installed, elsewhere, "init", "project")
    assert done.returncode == 0, done.stderr
    project = elsewhere / "project"
    assert {p.name for p in (project / "jobs").glob("*.toml")} == {
        p.name for p in (ROOT / "jobs").glob("*.toml")
    }
    spec = project / "jobs" / "primes.toml"
    text = spec.read_text()
    edited = "\n".join(
        "n = 1_000_003" if line.startswith("n =") else line for line in text.splitlines()
    )
    assert edited != text
    spec.write_text(edited + "\n")
    ran = runner(installed, project, "submit", "--job", "primes", "--backend", "serial", "--json")
    assert ran.returncode == 0, ran.stderr
    record = json.loads(ran.stdout)["runs"][0]
    assert record["status"] == "verified"
    assert record["job"]["stages"][0]["params"]["n"] == 1_000_003
    listed = json.loads(runner(installed, project, "jobs", "--json").stdout)
    primes = next(job for job in listed if job["name"] == "primes")
    assert primes["from"] == "./jobs" and primes["overrides"] == ["built-in"]
