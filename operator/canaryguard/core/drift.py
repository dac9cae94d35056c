"""Prediction drift as a distribution: the population stability index (PSI) of the canary's
score histogram against the baseline's.

The rule in words. Each version's classic Prometheus histogram gives, per `le` bound, how
many scores fell at or below it over the lookback (the `increase` of its cumulative `_bucket`
series). Only the bounds both versions export are used, so two histograms whose buckets
differ are compared on their common, coarser bins. The cumulative counts are made
non-decreasing (a running maximum: `increase` extrapolates each series on its own, which can
leave a higher bucket a hair below a lower one) and differenced into bins; the first bin is
everything at or below the lowest bound. Each bin's share is smoothed so that an empty bin
does not make the index infinite:

    p_i = (n_i / N + EPSILON) / (1 + k * EPSILON)        (k bins, N = sum of n_i)

which still sums to 1. Then, with p the baseline's shares and q the canary's,

    PSI = sum over bins of (q_i - p_i) * ln(q_i / p_i)

which is 0 for identical distributions and grows as they part; 0.1 is commonly read as a
small shift and 0.2 as a significant one. A side with no observation at all has no
distribution: no PSI (None).

Small samples inflate the index even between identical distributions: about
(k - 1) * (1 / N_baseline + 1 / N_canary) for large samples, more for small ones (sparse bins
meet the smoothing); `bench/bench_drift.py` measures it. `minRequests` must keep it well below
the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

EPSILON = 1e-4


def bins(cumulative: Mapping[float, float]) -> list[float]:
    """Per-bin counts from cumulative bucket counts keyed by their `le` bound (+Inf as
    `math.inf`), lowest bound first: made non-decreasing, then differenced."""
    counts: list[float] = []
    below = 0.0
    for bound in sorted(cumulative):
        value = cumulative[bound]
        level = max(below, value if math.isfinite(value) else below)
        counts.append(level - below)
        below = level
    return counts


def shares(counts: Sequence[float], epsilon: float = EPSILON) -> list[float] | None:
    """The smoothed share of each bin (see the module's docstring); None without any count."""
    total = sum(counts)
    if not total > 0:
        return None
    k = len(counts)
    return [(n / total + epsilon) / (1 + k * epsilon) for n in counts]


def psi(
    baseline: Sequence[float], canary: Sequence[float], epsilon: float = EPSILON
) -> float | None:
    """The PSI of the canary's bin counts against the baseline's (same bins, same order);
    None when either side has no count at all or there are fewer than two bins."""
    if len(baseline) != len(canary):
        raise ValueError("baseline and canary must have the same bins")
    if len(baseline) < 2:
        return None
    p, q = shares(baseline, epsilon), shares(canary, epsilon)
    if p is None or q is None:
        return None
    return sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))


def histogram_psi(
    baseline: Mapping[float, float], canary: Mapping[float, float], epsilon: float = EPSILON
) -> tuple[float | None, float, float]:
    """(PSI, baseline count, canary count) of two cumulative histograms keyed by `le`, over
    the bounds both have; counts are those at the highest shared bound (the +Inf bucket when
    both export it, as classic histograms do)."""
    shared = sorted(set(baseline) & set(canary))
    b = bins({bound: baseline[bound] for bound in shared})
    c = bins({bound: canary[bound] for bound in shared})
    return psi(b, c, epsilon), sum(b), sum(c)


def parse_le(text: str | None) -> float | None:
    """A bucket's `le` label as a bound (`+Inf` as infinity); None when it is not one."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value
