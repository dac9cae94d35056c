"""Anytime-valid evidence that the canary's event rate differs from the baseline's.

The data are counts per constant-weight period (a *stratum*: one step of the schedule): each
version's requests `n` and events `x` (errors, or the events of a count-ratio query). The
parameter is the rate ratio `rho = p_canary / p_baseline`.

Model and test (a mixture likelihood ratio, as in Lindon & Malek, "Anytime-Valid Inference
for Multinomial Count Data", NeurIPS 2022, for two Poisson counts):

- Given the requests, each version's events are Poisson (`n * p`). Conditioned on the events
  of a stratum, each event is the canary's with probability
  `theta(rho) = n_c * rho / (n_c * rho + n_b)`, independently: a binomial whose only
  unknown is `rho`, whatever the baseline rate is and whatever it does over time.
- For a null `rho0`, the likelihood ratio of an alternative `rho` over the events seen is
  `prod_k (rho / rho0) ** x_k * ((n_ck * rho0 + n_bk) / (n_ck * rho + n_bk)) ** (x_k + y_k)`:
  a nonnegative martingale with mean 1 under `rho0`, and a supermartingale under every
  `rho` on the other side of `rho0` from the alternative (the family has a monotone
  likelihood ratio). Strata multiply: each starts where the previous one ended.
- The e-value is its average over a fixed grid of alternatives `rho0 * g` (or `rho0 / g`),
  `g = 2 ** (i / 4)` for i = 1..16 (1.19x to 16x), equal weights. By Ville's inequality the
  chance that it *ever* reaches `1 / alpha` under the null is at most `alpha`: it may be
  looked at every tick, for as long as the rollout runs.

Stratifying by step keeps version apart from time: a degradation that hits both versions at
a weight change moves both rates within the stratum, not the canary's share of events.

Binomial events (an error per request) are less spread than Poisson ones; for one look the
test stays conservative (the conditional count is then hypergeometric, which is smaller in
convex order than the binomial, Hoeffding 1963); the sequential bound is proved for the
Poisson model, which is what error rates of a few percent are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Side = Literal["above", "below"]

# Alternatives as multiples of the null ratio: 2^(1/4) .. 2^4, equal prior weight each.
GRID: tuple[float, ...] = tuple(2 ** (i / 4) for i in range(1, 17))
_LOG_GRID = tuple(math.log(g) for g in GRID)
_BOUND_LO, _BOUND_HI = 1e-6, 1e6


@dataclass(frozen=True)
class Stratum:
    """One constant-weight period's counts: requests and events of each version."""

    baseline_requests: float
    baseline_events: float
    canary_requests: float
    canary_events: float

    def informative(self) -> bool:
        """Whether it can say anything about the ratio: both versions had requests."""
        return self.baseline_requests > 0 and self.canary_requests > 0


def log_likelihood_ratio(strata: Iterable[Stratum], rho: float, rho0: float) -> float:
    """log of the likelihood ratio of rate ratio `rho` against `rho0` over the strata."""
    total = 0.0
    for s in strata:
        if not s.informative():
            continue
        events = s.canary_events + s.baseline_events
        nc, nb = s.canary_requests, s.baseline_requests
        total += s.canary_events * math.log(rho / rho0)
        total += events * math.log((nc * rho0 + nb) / (nc * rho + nb))
    return total


def log_e_value(strata: Sequence[Stratum], rho0: float, side: Side) -> float:
    """log of the mixture e-value against the null "rho is `rho0` or on the other side",
    the alternatives lying `side` of `rho0` (above: the canary's rate is higher)."""
    logs = [
        log_likelihood_ratio(strata, rho0 * (g if side == "above" else 1 / g), rho0) for g in GRID
    ]
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs) / len(logs))


def shown(strata: Sequence[Stratum], rho0: float, side: Side, confidence: float) -> bool:
    """Whether the data show at `confidence` (anytime-valid) that rho lies `side` of rho0."""
    return log_e_value(strata, rho0, side) >= -math.log(1 - confidence)


def bound(strata: Sequence[Stratum], side: Side, confidence: float) -> float:
    """The one-sided confidence-sequence bound on rho: for side "above", the largest rho0
    that the data show rho to be above (a lower bound; 0 when none is shown), for "below"
    the smallest rho0 that rho is shown below (an upper bound; inf when none)."""
    lo, hi = math.log(_BOUND_LO), math.log(_BOUND_HI)
    if side == "above":
        if not shown(strata, math.exp(lo), side, confidence):
            return 0.0
        if shown(strata, math.exp(hi), side, confidence):
            return _BOUND_HI
    else:
        if not shown(strata, math.exp(hi), side, confidence):
            return math.inf
        if shown(strata, math.exp(lo), side, confidence):
            return _BOUND_LO
    # The e-value above rho0 falls as rho0 rises (and the one below rises): bisect.
    for _ in range(60):
        mid = (lo + hi) / 2
        if shown(strata, math.exp(mid), side, confidence) == (side == "above"):
            lo = mid
        else:
            hi = mid
    return math.exp(lo if side == "above" else hi)


def rate_ratio(strata: Iterable[Stratum]) -> float | None:
    """The Mantel-Haenszel estimate of rho over the strata (None: no event on either side;
    inf: events on the canary only)."""
    top = bottom = 0.0
    for s in strata:
        if not s.informative():
            continue
        total = s.canary_requests + s.baseline_requests
        top += s.canary_events * s.baseline_requests / total
        bottom += s.baseline_events * s.canary_requests / total
    if bottom == 0:
        return None if top == 0 else math.inf
    return top / bottom


def rate_difference(strata: Iterable[Stratum]) -> float | None:
    """The stratified difference of rates, canary minus baseline, with Mantel-Haenszel
    weights `n_c * n_b / (n_c + n_b)` (None without an informative stratum)."""
    top = weights = 0.0
    for s in strata:
        if not s.informative():
            continue
        nc, nb = s.canary_requests, s.baseline_requests
        weight = nc * nb / (nc + nb)
        top += weight * (s.canary_events / nc - s.baseline_events / nb)
        weights += weight
    return top / weights if weights else None
