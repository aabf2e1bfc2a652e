"""Print the measured coverage of cluster-runner's intervals at every repeat count (issue 14).

Synthetic timings: log-normal with a 10% spread, 5% of runs slowed 1.5-3x (as
``tests/test_intervals.py`` draws them). For each repeat count n (both sides n in a comparison):

- median: the order-statistic interval's stated level and how often it covered the true median;
- ratio: the Hodges-Lehmann interval of A/B (A 1.3x slower) and how often it covered 1.3;
- false diff: how often ``compare`` called two samples of one distribution different
  (the verdict's nominal rate is 5%).

Usage: ``python scripts/coverage_table.py [--draws 4000] [--max-repeats 30] [--seed 0]``
"""

from __future__ import annotations

import argparse

import numpy as np

from cluster_runner.analysis import intervals

SIGMA, OUTLIER_SHARE, SLOWDOWN = 0.10, 0.05, (1.5, 3.0)


def draw(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    x = scale * np.exp(rng.normal(0.0, SIGMA, shape))
    return np.where(rng.random(shape) < OUTLIER_SHARE, x * rng.uniform(*SLOWDOWN, shape), x)


def row(n: int, draws: int, rng: np.random.Generator, median: float) -> tuple[float, ...]:
    lower, upper, level = intervals.median_ranks(n)
    x = np.sort(draw(rng, (draws, n)), axis=1)
    med_cov = np.mean((x[:, lower - 1] <= median) & (median <= x[:, upper - 1]))
    k, ratio_level = intervals.shift_rank(n, n)
    d = np.sort(np.log(draw(rng, (draws, n, 1), 1.3) / draw(rng, (draws, 1, n))).reshape(draws, -1))
    ratio_cov = np.mean((d[:, k - 1] <= np.log(1.3)) & (np.log(1.3) <= d[:, -k]))
    d0 = np.sort(np.log(draw(rng, (draws, n, 1)) / draw(rng, (draws, 1, n))).reshape(draws, -1))
    k0, level0 = intervals.shift_rank(n, n, 1 - intervals.ALPHA)
    false = np.mean((d0[:, k0 - 1] > 0) | (d0[:, -k0] < 0)) if level0 >= 0.95 else 0.0
    return level, med_cov, ratio_level, ratio_cov, false


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--max-repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    median = float(np.median(draw(np.random.default_rng(12345), (4_000_000,))))
    print(f"{args.draws} draws per row; nominal level {intervals.NOMINAL:.0%}")
    print(" n | median stated  measured | ratio stated  measured | false diff (<= 5%)")
    for n in range(1, args.max_repeats + 1):
        level, med_cov, ratio_level, ratio_cov, false = row(n, args.draws, rng, median)
        print(
            f"{n:2d} | {level:13.1%} {med_cov:9.1%} | {ratio_level:12.1%} {ratio_cov:9.1%} |"
            f" {false:8.1%}"
        )


if __name__ == "__main__":
    main()
