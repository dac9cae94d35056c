"""How large the PSI of two samples of one score distribution is: the noise floor a drift
SLO's threshold must clear, against the sample size (minRequests).

Draws PAIRS pairs of samples of N scores each from the test bed's fraud model (its score
histogram's 20 buckets plus +Inf), computes their PSI with the operator's own function, and
prints the mean, the 95th percentile and the largest, beside the large-sample approximation
(k - 1) * (1/N + 1/N). Seeded: the same figures every run.

    .venv/bin/python bench/bench_drift.py [PAIRS]
"""

from __future__ import annotations

import bisect
import random
import statistics
import sys

from canaryguard.core.drift import psi
from canaryguard_testbed.fraudmodel import fraud_score, random_transaction
from canaryguard_testbed.modelserver import SCORE_BUCKETS

SIZES = (300, 600, 800, 2000, 5000)


def histogram(scores: list[float]) -> list[float]:
    """Counts per bin of the model server's score buckets (and +Inf)."""
    counts = [0.0] * (len(SCORE_BUCKETS) + 1)
    for score in scores:
        counts[bisect.bisect_left(SCORE_BUCKETS, score)] += 1
    return counts


def main(pairs: int) -> None:
    rng = random.Random(1)
    bins = len(SCORE_BUCKETS)  # +Inf is always empty here: scores are at most 1
    print(f"PSI of two samples of one distribution, {pairs} pairs per size, {bins} bins")
    print(f"{'N per side':>10} {'mean':>7} {'p95':>7} {'max':>7} {'(k-1)*2/N':>10}")
    for n in SIZES:
        values = []
        for _ in range(pairs):
            a = histogram([fraud_score(random_transaction(rng)) for _ in range(n)])
            b = histogram([fraud_score(random_transaction(rng)) for _ in range(n)])
            value = psi(a, b)
            assert value is not None
            values.append(value)
        values.sort()
        p95 = values[int(0.95 * (len(values) - 1))]
        approx = (bins - 1) * 2 / n
        mean = statistics.mean(values)
        print(f"{n:>10} {mean:>7.3f} {p95:>7.3f} {values[-1]:>7.3f} {approx:>10.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
