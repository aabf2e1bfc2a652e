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
