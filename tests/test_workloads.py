"""Each workload's result against its oracle, and the oracles against each other."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cluster_runner.backends import BackendOptions, create_backend
from cluster_runner.jobspec import parse_job
from cluster_runner.runs.job import run_job
from cluster_runner.workloads import get_workload
from cluster_runner.workloads.arrays import dot_chunk, row_means_chunk
from cluster_runner.workloads.base import split
from cluster_runner.workloads.primes import KNOWN_PI, prime_count_oracle
from cluster_runner.workloads.sieve import base_primes


def simple_sieve_count(n: int) -> int:
    return len(base_primes(n))


@pytest.mark.parametrize("n", [2, 3, 10, 97, 100, 1_000, 65_537, 1_000_003])
def test_lucy_oracle_agrees_with_a_plain_sieve(n):
    assert prime_count_oracle(n) == simple_sieve_count(n)


@pytest.mark.parametrize("n", sorted(KNOWN_PI))
def test_lucy_oracle_reproduces_the_known_powers_of_ten(n):
    assert prime_count_oracle(n) == KNOWN_PI[n]


def _run_stage(toml: str):
    job = parse_job(toml)
    with create_backend("serial", BackendOptions()) as serial:
        (record,) = [r.to_json() for r in run_job(job, serial)]
    return record["stages"][0]


@pytest.mark.parametrize("n,chunks", [(10, 3), (100, 100), (10**6, 13), (2_345_678, 9)])
def test_primes_stage_counts_exactly(n, chunks):
    stage = _run_stage(f'[[stage]]\nworkload = "primes"\nn = {n}\nchunks = {chunks}\n')
    assert stage["verified"]
    assert stage["result"] == simple_sieve_count(n)


def test_primes_verification_uses_the_known_table_for_powers_of_ten():
    verification = get_workload("primes").verify({"n": 10**7, "chunks": 4}, 664_579)
    assert verification.ok and "known value" in verification.method
    assert not get_workload("primes").verify({"n": 10**7, "chunks": 4}, 664_580).ok


def test_wrong_prime_count_fails_verification_off_the_table():
    workload = get_workload("primes")
    assert workload.verify({"n": 123_457, "chunks": 2}, simple_sieve_count(123_457)).ok
    assert not workload.verify({"n": 123_457, "chunks": 2}, simple_sieve_count(123_457) - 1).ok


def test_array_means_are_the_row_means_of_the_seeded_array():
    params = {"rows": 50, "cols": 7, "chunks": 4, "seed": 3, "device": "cpu"}
    stage = _run_stage(
        '[[stage]]\nworkload = "array_means"\nrows = 50\ncols = 7\nchunks = 4\nseed = 3\n'
    )
    assert stage["verified"]
    # The whole array, drawn chunk by chunk exactly as the tasks draw it, but in one go.
    rows = []
    for i, (start, stop) in enumerate(split(50, 4)):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(3, spawn_key=(i, 0))))
        rows.append(rng.random((stop - start, 7)))
    expected = np.concatenate(rows).mean(axis=1)
    workload = get_workload("array_means")
    value = np.concatenate(
        [row_means_chunk(3, i, b - a, 7) for i, (a, b) in enumerate(split(50, 4))]
    )
    np.testing.assert_allclose(value, expected, rtol=1e-15)
    assert workload.verify(params, value).ok


def test_array_means_verification_catches_a_corrupted_chunk_and_a_biased_mean():
    workload = get_workload("array_means")
    params = {"rows": 4_000, "cols": 50, "chunks": 1, "seed": 5, "device": "cpu"}
    good = row_means_chunk(5, 0, 4_000, 50)
    assert workload.verify(params, good).ok
    corrupted = good.copy()
    corrupted[17] += 1e-12
    assert not workload.verify(params, corrupted).ok
    assert not workload.verify(params, good[:-1]).ok


def test_dot_is_the_dot_product_of_the_seeded_vectors():
    n, chunks, seed = 10_001, 3, 9
    value = get_workload("dot")
    partials = []
    xs, ys = [], []
    for i, (a, b) in enumerate(split(n, chunks)):
        partials.append(dot_chunk(seed, i, b - a))
        for stream, out in ((0, xs), (1, ys)):
            rng = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(i, stream)))
            )
            out.append(rng.random(b - a))
    exact = float(np.dot(np.concatenate(xs), np.concatenate(ys)))
    total = math.fsum(partials)
    assert total == pytest.approx(exact, rel=1e-12)
    assert value.verify(
        {"n": n, "chunks": chunks, "seed": seed, "device": "cpu"}, (total, np.array(partials))
    ).ok


def test_dot_verification_catches_a_wrong_partial_and_a_wrong_sum():
    workload = get_workload("dot")
    params = {"n": 100_000, "chunks": 1, "seed": 1, "device": "cpu"}
    partial = dot_chunk(1, 0, 100_000)
    assert workload.verify(params, (partial, np.array([partial]))).ok
    assert not workload.verify(params, (partial, np.array([partial + 1e-9]))).ok
    assert not workload.verify(params, (partial + 1.0, np.array([partial]))).ok
    far = 100_000 / 4 + 50 * math.sqrt(100_000 * 7 / 144)
    assert not workload.verify(params, (far, np.array([far]))).ok


def test_array_data_do_not_depend_on_the_generate_block_size(monkeypatch):
    from cluster_runner.workloads import arrays

    before = row_means_chunk(4, 2, 300, 1_000), dot_chunk(4, 2, 70_000)
    monkeypatch.setattr(arrays, "BLOCK_ELEMENTS", 1_000)
    after = row_means_chunk(4, 2, 300, 1_000), dot_chunk(4, 2, 70_000)
    assert np.array_equal(before[0], after[0])
    assert after[1] == pytest.approx(before[1], rel=1e-13)


# --- driver_rows: an array made in the driver, given to every chunk (issue 21) --------------


@pytest.mark.parametrize(
    "rows,cols,chunks",
    [(1, 1, 1), (50, 7, 4), (1000, 3, 1000), (8192, 1, 64), (300, 1024, 7), (9, 4097, 2)],
)
def test_row_bands_of_a_c_contiguous_array_have_the_whole_arrays_means_bit_for_bit(
    rows, cols, chunks
):
    """What the driver_rows oracle relies on (its module docstring): a band's row means are the
    whole array's, bit for bit, whatever the band's size and wherever its memory lies."""
    from cluster_runner.workloads.driver_rows import band_means

    array = np.random.default_rng(rows + cols).random((rows, cols))
    expected = array.mean(axis=1)
    bands = np.concatenate([band_means(a, b, array) for a, b in split(rows, chunks)])
    assert np.array_equal(bands, expected)
    # the same bytes at an address 8 bytes off a cache line, read-only (a shared-memory view)
    raw = bytearray(array.nbytes + 8)
    moved = np.frombuffer(memoryview(raw)[8:], dtype=np.float64).reshape(rows, cols)
    moved[:] = array
    moved.flags.writeable = False
    assert np.array_equal(
        np.concatenate([band_means(a, b, moved) for a, b in split(rows, chunks)]), expected
    )


@pytest.mark.parametrize("size_mb,cols,chunks", [(1, 1024, 1), (1, 1000, 7), (2, 33, 64)])
def test_driver_rows_stage_returns_the_driver_arrays_row_means_bit_for_bit(size_mb, cols, chunks):
    stage = _run_stage(
        f'[[stage]]\nworkload = "driver_rows"\nsize_mb = {size_mb}\ncols = {cols}\n'
        f"chunks = {chunks}\nseed = 11\n"
    )
    assert stage["verified"], stage["verification"]
    assert stage["verification"].startswith("bit for bit equal")
    # The oracle made independently here: the same seeded array, averaged whole.
    rows = size_mb * 2**20 // (8 * cols)
    whole = np.random.default_rng(11).random((rows, cols))
    assert stage["result"] == pytest.approx(float(whole.mean(axis=1).mean()), rel=1e-12)
    assert stage["tasks"] == chunks + 1
    transfer = stage["transfer"]
    assert transfer["inputs"] == 1 and transfer["input_bytes"] >= whole.nbytes
    assert transfer["method"] == "by reference" and transfer["sent_bytes"] == 0


def test_driver_rows_verification_catches_a_changed_mean_and_a_short_result():
    from cluster_runner.workloads.driver_rows import driver_array

    workload = get_workload("driver_rows")
    params = {"size_mb": 1, "cols": 100, "chunks": 3, "seed": 4}
    good = driver_array(1, 100, 4).mean(axis=1)
    assert workload.verify(params, good).ok
    changed = good.copy()
    changed[17] = np.nextafter(changed[17], 1.0)  # one unit in the last place
    outcome = workload.verify(params, changed)
    assert not outcome.ok and "1 of 1,310 row means differ" in outcome.method
    assert not workload.verify(params, good[:-1]).ok
    assert not workload.verify(params, list(good)).ok


def test_driver_rows_keeps_one_array_and_does_not_remake_it_for_the_same_parameters():
    from cluster_runner.workloads import driver_rows

    first = driver_rows.driver_array(1, 64, 0)
    assert driver_rows.driver_array(1, 64, 0) is first
    assert not first.flags.writeable  # the oracle reads it after the runs
    other = driver_rows.driver_array(1, 64, 1)
    assert other is not first and not np.array_equal(other, first)
    assert driver_rows._held[1] is other  # the first one was let go
    assert driver_rows.driver_array(1, 64, 0) is not first  # made again, equal
    assert np.array_equal(driver_rows.driver_array(1, 64, 0), first)


@pytest.mark.parametrize(
    "override,message",
    [
        ("size_mb=0", "size_mb must be >= 1, got 0"),
        ("size_mb=2000000", "size_mb must be <= 1e+06, got 2000000"),
        ("cols=200000", "one row of 200,000 columns takes 1.53 MiB, more than size_mb (1)"),
        ("chunks=200", "chunks (200) must not exceed the array's rows (128 rows of 1,024"),
        ("chunks=0", "chunks must be >= 1, got 0"),
        ("seed=-1", "seed must be >= 0, got -1"),
    ],
)
def test_driver_rows_bad_parameters_are_one_line_and_exit_2(override, message, capsys, tmp_path):
    from cluster_runner.cli import main

    args = ["submit", "--job", "driver_data", "--backend", "serial", "--out", str(tmp_path)]
    assert main([*args, "--set", "size_mb=1", "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("runner: error: ") and message in err[0], err
    assert not any(tmp_path.iterdir())


def test_driver_rows_larger_than_the_drivers_memory_is_refused_before_it_is_made(monkeypatch):
    from cluster_runner import limits
    from cluster_runner.errors import JobSpecError

    monkeypatch.setattr(limits.Machine, "here", classmethod(lambda cls: cls(2, 100 * 2**20)))
    toml = '[[stage]]\nworkload = "driver_rows"\nsize_mb = {}\nchunks = 4\n'
    parse_job(toml.format(50))  # 50 MiB and its copy fit in 100 MiB
    with pytest.raises(JobSpecError, match=r"size_mb = 51 makes a 51 MiB array in the driver"):
        parse_job(toml.format(51))


def test_submit_job_driver_data_verifies_and_records_what_moved(tmp_path):
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cluster_runner", "submit", "--job", "driver_data", "--backend",
         "serial", "--set", "size_mb=2", "--out", str(tmp_path), "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert run["status"] == "verified"
    assert run["job"]["stages"][0]["params"] == {
        "size_mb": 2, "cols": 1024, "chunks": 64, "seed": 2026
    }  # fmt: skip
    (stage,) = run["stages"]
    assert stage["workload"] == "driver_rows" and stage["tasks"] == 65
    assert stage["verification"].startswith("bit for bit equal")
    assert stage["transfer"]["input_bytes"] >= 2 * 2**20


def test_driver_rows_on_the_local_pool_shared_or_copied_gives_the_serial_bits():
    job = parse_job('[[stage]]\nworkload = "driver_rows"\nsize_mb = 2\ncols = 100\nchunks = 8\n')
    with create_backend("serial", BackendOptions()) as serial:
        (reference,) = run_job(job, serial)
    with create_backend("local", BackendOptions(workers=2)) as pool:
        runs = {mode: run_job(job, pool, transfer=mode)[0] for mode in ("share", "copy")}
    for mode, record in runs.items():
        (stage,) = record.stages
        assert record.status == "verified", stage.result.verification
        assert stage.result.digest == reference.stages[0].result.digest, mode
    assert runs["share"].stages[0].transfer.method == "shared memory"
    assert runs["copy"].stages[0].transfer.method == "pickled with every task"
