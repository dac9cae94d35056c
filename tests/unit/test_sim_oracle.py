"""The oracle (canaryguard.sim.oracle): Wald's test with the baseline's rate known, and the
Neyman-Pearson bound on what any judge can catch by a given time; arithmetic by hand."""

from __future__ import annotations

import math
import random

import pytest

from canaryguard.sim.oracle import (
    Sprt,
    canary_requests_by,
    kl_bernoulli,
    most_powerful_catch,
    neyman_pearson,
    poisson_cells,
    simulate_sprt,
)
from canaryguard.sim.rollout import Streams, Traffic
from tests.unit.scenario import make_spec, spec_dict

ORACLE = Sprt(null=0.005, alternative=0.015, alpha=0.01)


def test_the_evidence_of_counts_is_their_log_likelihood_ratio() -> None:
    # 4 errors among 300: 4 ln 3 + 296 ln(0.985 / 0.995) = 4.394449 - 2.989925 = 1.404525.
    assert ORACLE.log_likelihood_ratio(300, 4) == pytest.approx(1.4045247, abs=1e-7)
    # Each error adds ln 3 = 1.098612, each success ln(0.985 / 0.995) = -0.010101.
    assert ORACLE.log_likelihood_ratio(1, 1) == pytest.approx(1.0986123, abs=1e-7)
    assert ORACLE.log_likelihood_ratio(1, 0) == pytest.approx(-0.0101011, abs=1e-7)
    assert ORACLE.log_likelihood_ratio(0, 0) == 0.0
    assert ORACLE.threshold == pytest.approx(4.6051702, abs=1e-7)  # ln 100


def test_a_request_of_a_3x_canary_adds_its_kl_divergence_on_average() -> None:
    # 0.015 ln 3 + 0.985 ln(0.985 / 0.995) = 0.0164792 - 0.0099495 = 0.0065296 nats.
    assert kl_bernoulli(0.015, 0.005) == pytest.approx(0.0065296, abs=1e-7)
    assert kl_bernoulli(0.015, 0.005) == pytest.approx(
        0.015 * ORACLE.log_likelihood_ratio(1, 1) + 0.985 * ORACLE.log_likelihood_ratio(1, 0)
    )
    assert kl_bernoulli(0.005, 0.005) == 0.0


def test_the_oracle_rolls_back_a_canary_failing_every_request_at_the_first_tick() -> None:
    spec = make_spec(spec_dict())  # 10% 60s, 50% 120s, 100% 120s; 30 s ticks
    outcome = simulate_sprt(
        spec, Sprt(0.001, 0.003), Traffic(200, 0.001, canary_factor=1000), random.Random(1)
    )
    # About 600 canary requests, all failed, by 30 s: 600 ln 3 is far past ln 100.
    assert (outcome.phase, outcome.seconds, outcome.weight) == ("RolledBack", 30, 10)


def test_the_oracle_promotes_a_canary_without_errors_after_the_holds() -> None:
    spec = make_spec(spec_dict())
    outcome = simulate_sprt(spec, Sprt(0.01, 0.03), Traffic(200, 0.0), random.Random(1))
    # Only successes: the evidence falls at every tick; holds 60 + 120 + 120 s.
    assert (outcome.phase, outcome.seconds, outcome.weight) == ("Promoted", 300, 100)


def test_the_oracle_sums_the_canary_counts_tick_by_tick_until_the_threshold() -> None:
    """Replays the same draws (same seed, same weights) and adds the evidence by hand: the
    oracle rolls back at the first tick the canary's running sum reaches ln(1 / alpha)."""
    spec = make_spec(spec_dict())
    sprt = Sprt(0.01, 0.03, alpha=0.01)
    for seed in range(20):
        traffic = Traffic(50, 0.01, canary_factor=3)
        outcome = simulate_sprt(spec, sprt, traffic, random.Random(seed))
        streams = Streams(traffic, random.Random(seed))
        evidence, expected = 0.0, ("Promoted", 300.0)
        for k in range(1, 11):
            weight = 10 if k <= 2 else 50 if k <= 6 else 100
            _, _, nc, xc = streams.draw(30 * (k - 1), 30 * k, weight)
            evidence += xc * math.log(3) + (nc - xc) * math.log(0.97 / 0.99)
            if evidence >= math.log(100):
                expected = ("RolledBack", 30.0 * k)
                break
        assert (outcome.phase, outcome.seconds) == expected


def test_the_most_powerful_test_rejects_by_likelihood_ratio_and_randomises_the_last() -> None:
    # Likelihood ratios 20, 7.5 and 0.53: at 3% the first whole (1%), then half of the
    # second (2% of its 4%): power 0.2 + 0.3 / 2 = 0.35.
    cells = [(0.95, 0.5), (0.01, 0.2), (0.04, 0.3)]
    assert neyman_pearson(cells, 0.03) == pytest.approx(0.35)
    assert neyman_pearson(cells, 0.0) == 0.0
    assert neyman_pearson(cells, 1.0) == pytest.approx(1.0)


def test_poisson_cells_hold_the_joint_probabilities_of_errors_and_successes() -> None:
    cells = poisson_cells(3, 0.1, 0.3)
    # 1 error and 2 successes: Poisson(0.3) at 1 times Poisson(2.7) at 2 under the null,
    # Poisson(0.9) at 1 times Poisson(2.1) at 2 under the alternative.
    null = math.exp(-0.3) * 0.3 * math.exp(-2.7) * 2.7**2 / 2
    alternative = math.exp(-0.9) * 0.9 * math.exp(-2.1) * 2.1**2 / 2
    assert cells[1, 2] == pytest.approx((null, alternative))
    assert math.fsum(c[0] for c in cells.values()) == pytest.approx(1.0, abs=1e-12)
    assert math.fsum(c[1] for c in cells.values()) == pytest.approx(1.0, abs=1e-12)


def test_no_judge_catches_a_3x_canary_by_two_minutes_at_5_percent_of_50_per_second() -> None:
    """300 canary requests, 0.5% against 1.5%, alpha 1%. The errors alone (Poisson 1.5
    against 4.5) give, by hand: reject 6 or more (null 0.446%) and 5 with the chance that
    fills the 1% (0.554% / 1.412%): power 29.71% + 39.2% of 17.08% = 36.4%. Successes say a
    little more, so the bound is above that; and by the data-processing inequality it cannot
    be above what 300 requests' divergence (1.959 nats) allows."""
    bound = most_powerful_catch(300, 0.005, 0.015, 0.01)

    def pois(k: int, mean: float) -> float:
        return math.exp(-mean) * mean**k / math.factorial(k)

    null_6 = 1 - sum(pois(k, 1.5) for k in range(6))
    fill = (0.01 - null_6) / pois(5, 1.5)
    errors_only = 1 - sum(pois(k, 4.5) for k in range(6)) + fill * pois(5, 4.5)
    assert errors_only == pytest.approx(0.364, abs=5e-4)
    alpha = 0.01
    divergence = bound * math.log(bound / alpha) + (1 - bound) * math.log((1 - bound) / (1 - alpha))
    assert errors_only < bound < 0.5
    assert divergence <= 300 * kl_bernoulli(0.015, 0.005)


def test_the_canary_serves_the_schedules_weights_over_its_holds() -> None:
    spec = make_spec(spec_dict())  # 10% 60s, 50% 120s, 100% 120s
    assert canary_requests_by(spec, 100, 60) == pytest.approx(600)
    assert canary_requests_by(spec, 100, 90) == pytest.approx(600 + 1500)
    # After the last hold the canary keeps all the traffic.
    assert canary_requests_by(spec, 100, 400) == pytest.approx(600 + 6000 + 12000 + 10000)
