"""``runner scale --resume FILE`` (issue 19): a sweep cut off by Ctrl-C continues where it stopped,
and ends with the records one uninterrupted sweep writes, no round measured twice."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from clusters import driver_env, records_in
from conftest import runner_command

#: Slow enough a run (tens of ms) that Ctrl-C lands mid-sweep; --vary makes two variants.
SWEEP = [
    "scale", "--job", "primes", "--set", "n=60000000", "--backend", "serial,threads",
    "--workers", "1,2", "--vary", "chunks=2,4", "--repeat", "3", "--warmup", "1",
]  # fmt: skip


def _timed(records: list[dict]) -> Counter:
    """Measured rounds: ``(backend, size, variant, round) -> how many times``."""
    return Counter(
        (r["backend"]["name"], r["labels"]["size"], json.dumps(r["labels"].get("params")),
         r["labels"]["round"])
        for r in records
        if not r["warmup"] and r["status"] in ("verified", "unverified")
    )  # fmt: skip


def _lines(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    except OSError:
        return []


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*runner_command(), *args], capture_output=True, text=True, env=driver_env(), cwd=cwd,
        timeout=600,
    )  # fmt: skip


def _interrupted(folder: Path, after: int) -> Path:
    """The sweep, Ctrl-C'd once ``after`` timed runs are in its file; the file."""
    proc = subprocess.Popen(
        [*runner_command(), *SWEEP, "--out", str(folder)], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=driver_env(), cwd=folder,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            files = list(folder.glob("*.jsonl"))
            if files and sum(not r["warmup"] for r in _lines(files[0])) >= after:
                break
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        # 130; or, rarely, CPython ends itself by SIGINT after main() returned 130 (see
        # tests/test_slurm.py): a shell sees 130 both ways
        assert proc.wait(timeout=120) in (130, -signal.SIGINT), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (path,) = folder.glob("*.jsonl")
    return path


def after_digest(path: Path) -> str:
    return _lines(path)[0]["labels"]["base_digest"]


def test_a_resumed_sweep_ends_with_the_records_of_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    whole.mkdir()
    assert _run([*SWEEP, "--out", str(whole)], whole).returncode == 0
    expected = _timed(records_in(whole))
    assert set(expected.values()) == {1} and len(expected) == 6 * 3  # 6 points x 3 rounds

    cut = tmp_path / "cut"
    cut.mkdir()
    path = _interrupted(cut, after=5)
    before = _timed(_lines(path))
    assert 5 <= sum(before.values()) < len(expected)  # cut off partway

    done = _run([*SWEEP, "--out", str(tmp_path / "unused"), "--resume", str(path)], cut)
    assert done.returncode == 0, done.stderr
    assert f"resuming {path}:" in done.stdout
    after = _timed(_lines(path))
    assert after == expected  # every round once: none missing, none measured twice
    assert list(cut.glob("*.jsonl")) == [path]  # appended there, no new file
    assert not (tmp_path / "unused").exists()
    assert all(r["labels"]["base_digest"] == after_digest(path) for r in _lines(path))

    # Resumed again, nothing is left: nothing runs, nothing is written.
    size = path.stat().st_size
    again = _run([*SWEEP, "--resume", str(path)], cut)
    assert again.returncode == 0, again.stderr
    assert "6 point(s) complete there, 0 to time" in again.stdout
    assert path.stat().st_size == size


def test_resume_refuses_a_file_of_another_sweep_in_one_line(tmp_path):
    assert _run([*SWEEP[:4], "n=200000", "--backend", "threads", "--workers", "1",
                 "--repeat", "1", "--out", str(tmp_path)], tmp_path).returncode == 0  # fmt: skip
    (path,) = tmp_path.glob("*.jsonl")
    size = path.stat().st_size
    done = _run([*SWEEP, "--resume", str(path)], tmp_path)  # another --set n
    assert done.returncode == 2
    assert done.stderr.startswith(f"runner: error: --resume {path}: it holds another sweep: job")
    assert "another --set" in done.stderr and done.stderr.count("\n") == 1
    assert path.stat().st_size == size  # nothing appended
    folder = _run([*SWEEP, "--resume", str(tmp_path)], tmp_path)
    assert folder.returncode == 2 and folder.stderr.startswith("runner: error: ")


def test_resuming_a_file_not_there_yet_starts_the_sweep_there(tmp_path):
    path = tmp_path / "sweep" / "primes.jsonl"
    args = [*SWEEP[:4], "n=200000", "--backend", "threads", "--workers", "1,2", "--repeat", "2",
            "--resume", str(path), "--out", str(tmp_path / "unused")]  # fmt: skip
    first = _run(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "not there yet, the whole sweep goes there" in first.stdout
    assert sum(_timed(_lines(path)).values()) == 2 * 2
    second = _run(args, tmp_path)  # the same batch script, submitted again
    assert second.returncode == 0 and "2 point(s) complete there, 0 to time" in second.stdout
    assert sum(_timed(_lines(path)).values()) == 2 * 2
    assert not (tmp_path / "unused").exists()


def test_resume_refuses_a_file_whose_inputs_travelled_the_other_way(tmp_path):
    """Sharing and copying driver inputs are two sweeps (issue 21): a --transfer copy sweep
    does not append its runs to a file of shared ones, which no report could then read."""
    sweep = ["scale", "--job", "driver_data", "--set", "size_mb=1", "--set", "chunks=4",
             "--backend", "serial", "--workers", "1", "--repeat", "1", "--warmup", "0"]  # fmt: skip
    assert _run([*sweep, "--out", str(tmp_path)], tmp_path).returncode == 0
    (path,) = tmp_path.glob("*.jsonl")
    size = path.stat().st_size
    again = _run([*sweep, "--resume", str(path), "--repeat", "2"], tmp_path)
    assert again.returncode == 0, again.stderr  # the same --transfer (share): continued
    assert path.stat().st_size > size
    size = path.stat().st_size
    done = _run([*sweep, "--transfer", "copy", "--resume", str(path), "--repeat", "3"], tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "it holds another sweep: transfer share, this sweep transfer copy" in done.stderr
    assert path.stat().st_size == size  # nothing appended
