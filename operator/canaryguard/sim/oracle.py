"""The best any judge could do: a yardstick for bench/bench_judge.py, not a shipped judge.

An *oracle* knows what no judge can: the baseline's error probability `p0`, exactly, and the
regression it is looking for, `p1` (say 3x). It judges the canary's requests alone with
Wald's sequential probability ratio test of the simple hypotheses "the canary fails with
probability p0" against "with p1": each canary request adds `ln(p1 / p0)` to the evidence
if it failed and `ln((1 - p1) / (1 - p0))` if it did not, and the rollout is rolled back at
the first tick the sum reaches `ln(1 / alpha)`. By Ville's inequality an identical canary
is rolled back with probability at most `alpha`, however long it runs; no lower boundary
(it never concludes "healthy" early: the schedule runs on). Looked at every tick only, as
the engine is. On average it needs the fewest canary requests there are, up to its
overshoot of the threshold: a test that rolls back every p1 canary in the end and at most
alpha of identical ones has gathered, on average over p1 canaries, an evidence of at least
ln(1 / alpha) when it rolls back (the data-processing inequality), at KL(p1 || p0) per
request on average (Wald's identity). That bounds the average; the bound below is on what
can be caught by a deadline.

A bound that holds for *every* judge (`most_powerful_catch`): whatever a judge does, its
rollback by time t is a test on the data seen by t. If it rolls back identical canaries by
t with probability at most alpha, the Neyman-Pearson lemma bounds its chance of having
rolled back a p1 canary by t by the power of the most powerful level-alpha test on those
data. The canary's errors and successes by t are independent Poisson counts with means
`m * p` and `m * (1 - p)`, `m` its expected requests by t (their totals are sufficient:
the likelihood ratio depends on nothing else); baseline requests say nothing
about the canary when p0 is known, and a judge that does not know p0 must also keep its
false rollbacks within alpha at the true p0, so the bound covers it too. A schedule that
holds a step longer than its hold gives the canary at most the traffic it gets when steps
advance on time (its requests are a thinning of those), so `canary_requests_by` with steps
on time bounds every judge on that schedule.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from canaryguard.core.spec import Spec
from canaryguard.sim.rollout import Outcome, Streams, Traffic, advance, time_limit


def kl_bernoulli(p: float, q: float) -> float:
    """Kullback-Leibler divergence of Bernoulli(p) from Bernoulli(q), in nats: the expected
    evidence one request of a p canary adds to the test of q against p."""
    total = 0.0
    if p > 0:
        total += p * math.log(p / q)
    if p < 1:
        total += (1 - p) * math.log((1 - p) / (1 - q))
    return total


@dataclass(frozen=True)
class Sprt:
    """Wald's test of the canary's error probability: `null` (the baseline's, known) against
    `alternative`, rolled back at evidence `ln(1 / alpha)`."""

    null: float
    alternative: float
    alpha: float = 0.01

    @property
    def threshold(self) -> float:
        return math.log(1 / self.alpha)

    def log_likelihood_ratio(self, requests: int, errors: int) -> float:
        """The evidence of `errors` failed requests among `requests`."""
        p0, p1 = self.null, self.alternative
        return errors * math.log(p1 / p0) + (requests - errors) * math.log((1 - p1) / (1 - p0))


def simulate_sprt(
    spec: Spec,
    sprt: Sprt,
    traffic: Traffic,
    rng: random.Random,
    max_seconds: float | None = None,
) -> Outcome:
    """The oracle on the simulator's streams (the same draws as the engine's and the
    threshold policy's for the same seed, while the weights agree), with the spec's
    schedule and interval: each step advances after its hold, the last is promoted."""
    interval = spec.analysis.interval.total_seconds()
    limit = time_limit(spec, max_seconds)
    streams = Streams(traffic, rng)
    index, started, evidence, k = 0, 0.0, 0.0, 0
    while True:
        k += 1
        now = k * interval
        weight = spec.steps[index].weight
        _, _, requests, errors = streams.draw(now - interval, now, weight)
        evidence += sprt.log_likelihood_ratio(requests, errors)
        if evidence >= sprt.threshold:
            return Outcome("RolledBack", now, weight, streams.degraded())
        step = advance(spec, index, started, now)
        if step is None:
            return Outcome("Promoted", now, weight, streams.degraded())
        index, started = step
        if now >= limit:
            return Outcome("Running", now, weight, streams.degraded())


def canary_requests_by(spec: Spec, rps: float, seconds: float) -> float:
    """The canary's expected requests in its first `seconds`, steps advancing on time (the
    most any judge on this schedule sees)."""
    total, start = 0.0, 0.0
    for step in spec.steps:
        end = start + step.hold.total_seconds()
        last = step is spec.steps[-1]
        span = (seconds if last else min(seconds, end)) - start
        if span <= 0:
            break
        total += rps * step.weight / 100 * span
        start = end
    return total


def neyman_pearson(cells: Iterable[tuple[float, float]], alpha: float) -> float:
    """The power of the most powerful level-`alpha` test between two distributions on the
    same outcomes, given each outcome's `(null, alternative)` probability: reject the
    outcomes of highest likelihood ratio until their null probability reaches alpha, the
    last one in part (a randomised test)."""
    ordered = sorted(cells, key=lambda c: math.inf if c[0] == 0 else c[1] / c[0], reverse=True)
    budget, power = alpha, 0.0
    for null, alternative in ordered:
        if null <= budget:
            budget -= null
            power += alternative
        else:
            power += alternative * budget / null
            break
    return power


def poisson_cells(
    requests: float, null: float, alternative: float
) -> dict[tuple[int, int], tuple[float, float]]:
    """The probability under each hypothesis of every (errors, successes) of a canary with
    `requests` expected requests, errors and successes independent Poisson counts, over a
    range wide enough that what lies outside is negligible under either."""
    m = requests

    def log_pmf(k: int, mean: float) -> float:
        return k * math.log(mean) - mean - math.lgamma(k + 1)

    top_errors = math.ceil(m * alternative + 12 * math.sqrt(m * alternative) + 30)
    spread = 12 * math.sqrt(m) + 30
    low = max(0, math.floor(m * (1 - alternative) - spread))
    high = math.ceil(m * (1 - null) + spread)
    cells = {}
    for x in range(top_errors + 1):
        e0, e1 = log_pmf(x, m * null), log_pmf(x, m * alternative)
        for y in range(low, high + 1):
            cells[x, y] = (
                math.exp(e0 + log_pmf(y, m * (1 - null))),
                math.exp(e1 + log_pmf(y, m * (1 - alternative))),
            )
    return cells


def most_powerful_catch(requests: float, null: float, alternative: float, alpha: float) -> float:
    """An upper bound on the chance that any judge rolling back at most `alpha` of canaries
    failing at `null` has rolled back one failing at `alternative`, when the canary has
    served `requests` requests on average: the Neyman-Pearson power on the canary's counts,
    plus the alternative's probability of the counts left out of the sum (so truncating
    can only raise it)."""
    cells = poisson_cells(requests, null, alternative).values()
    left_out = max(0.0, 1.0 - math.fsum(c[1] for c in cells))
    return min(1.0, neyman_pearson(cells, alpha) + left_out)
