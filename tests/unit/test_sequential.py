"""The anytime-valid test for two rates (core.sequential): exact values by hand or by a
second formula (the binomial's own probabilities), the martingale property the guarantee
rests on, and stratification against a degradation shared by both versions."""

from __future__ import annotations

import math

import pytest

from canaryguard.core import sequential
from canaryguard.core.sequential import GRID, Stratum


def binomial_lr(x: int, y: int, nc: float, nb: float, rho: float, rho0: float) -> float:
    """The likelihood ratio as the ratio of two binomial probabilities of x canary events
    among x + y, the canary's probability theta = nc*rho / (nc*rho + nb)."""

    def pmf(theta: float) -> float:
        return math.comb(x + y, x) * theta**x * (1 - theta) ** y

    return pmf(nc * rho / (nc * rho + nb)) / pmf(nc * rho0 / (nc * rho0 + nb))


def test_one_canary_event_with_equal_traffic_by_hand() -> None:
    # theta(2) = 2/3 against theta(1) = 1/2: the ratio is (2/3) / (1/2) = 4/3.
    strata = [Stratum(100, 0, 100, 1)]
    assert sequential.log_likelihood_ratio(strata, 2.0, 1.0) == pytest.approx(math.log(4 / 3))
    # One baseline event instead: (1/3) / (1/2) = 2/3.
    strata = [Stratum(100, 1, 100, 0)]
    assert sequential.log_likelihood_ratio(strata, 2.0, 1.0) == pytest.approx(math.log(2 / 3))


@pytest.mark.parametrize(
    ("x", "y", "nc", "nb", "rho0"),
    [(3, 40, 500, 9500, 1.0), (12, 30, 2500, 7500, 1.5), (0, 7, 300, 700, 1.0), (9, 0, 50, 50, 2)],
)
def test_e_value_is_the_grid_average_of_binomial_likelihood_ratios(
    x: int, y: int, nc: float, nb: float, rho0: float
) -> None:
    strata = [Stratum(nb, y, nc, x)]
    above = sum(binomial_lr(x, y, nc, nb, rho0 * g, rho0) for g in GRID) / len(GRID)
    below = sum(binomial_lr(x, y, nc, nb, rho0 / g, rho0) for g in GRID) / len(GRID)
    assert math.exp(sequential.log_e_value(strata, rho0, "above")) == pytest.approx(above)
    assert math.exp(sequential.log_e_value(strata, rho0, "below")) == pytest.approx(below)


def test_strata_multiply() -> None:
    one, two = Stratum(9500, 40, 500, 4), Stratum(5000, 20, 5000, 31)
    for rho in (0.5, 1.7, 3.0):
        assert sequential.log_likelihood_ratio([one, two], rho, 1.0) == pytest.approx(
            math.log(
                binomial_lr(4, 40, 500, 9500, rho, 1) * binomial_lr(31, 20, 5000, 5000, rho, 1)
            )
        )


def test_no_events_and_idle_versions_are_no_evidence() -> None:
    strata = [Stratum(1000, 0, 1000, 0), Stratum(0, 0, 800, 5), Stratum(700, 3, 0, 0)]
    assert sequential.log_e_value(strata, 1.0, "above") == pytest.approx(0.0)
    assert sequential.rate_ratio(strata) is None
    assert sequential.rate_difference([Stratum(0, 0, 800, 5)]) is None


@pytest.mark.parametrize(
    ("events", "share", "rho0"), [(10, 0.05, 1.0), (40, 0.5, 1.0), (25, 0.25, 1.5)]
)
def test_the_e_value_has_mean_one_under_the_null_and_less_beyond_it(
    events: int, share: float, rho0: float
) -> None:
    """The martingale property behind Ville's inequality: over every split of `events` events
    between the versions, weighted by its probability, the e-value averages exactly 1 under
    rho0 and below 1 for a rho on the null's side."""
    nc, nb = 1000 * share, 1000 * (1 - share)

    def mean(rho: float) -> float:
        theta = nc * rho / (nc * rho + nb)
        return sum(
            math.comb(events, x)
            * theta**x
            * (1 - theta) ** (events - x)
            * math.exp(sequential.log_e_value([Stratum(nb, events - x, nc, x)], rho0, "above"))
            for x in range(events + 1)
        )

    assert mean(rho0) == pytest.approx(1.0, rel=1e-9)
    assert mean(rho0 * 0.8) < 1.0


def test_stratification_keeps_a_shared_degradation_from_looking_like_the_canary() -> None:
    # Step 1, canary 5%: both at 0.5%. Step 2, canary 50%: both at 3% (an upstream outage).
    step1, step2 = Stratum(9500, 47, 500, 2), Stratum(5000, 150, 5000, 150)
    # Mantel-Haenszel by hand: (2*9500/10000 + 150*5000/10000) / (47*500/10000 + 75).
    assert sequential.rate_ratio([step1, step2]) == pytest.approx(76.9 / 77.35)
    assert not sequential.shown([step1, step2], 1.0, "above", 0.99)
    # The same counts pooled as one period: canary 152/5500 vs baseline 197/14500, "2x worse".
    pooled = Stratum(14500, 197, 5500, 152)
    assert sequential.rate_ratio([pooled]) == pytest.approx((152 * 14500) / (197 * 5500))
    assert sequential.shown([pooled], 1.0, "above", 0.99)


def test_rate_difference_by_hand() -> None:
    # weights 500*9500/10000 = 475 and 2500; differences 0.01 - 0.005 and 0.02 - 0.01.
    strata = [Stratum(9500, 47.5, 500, 5), Stratum(5000, 50, 5000, 100)]
    expected = (475 * 0.005 + 2500 * 0.01) / (475 + 2500)
    assert sequential.rate_difference(strata) == pytest.approx(expected)


def test_a_3x_canary_is_shown_worse_and_an_equal_one_is_not() -> None:
    worse = [Stratum(9500, 48, 500, 8), Stratum(7500, 37, 2500, 38)]
    equal = [Stratum(9500, 48, 500, 3), Stratum(7500, 37, 2500, 12)]
    assert sequential.shown(worse, 1.0, "above", 0.99)
    assert not sequential.shown(equal, 1.0, "above", 0.99)
    assert not sequential.shown(equal, 1.0, "below", 0.99)
    # ruling out 3x needs less evidence than ruling out 1x: the equal canary is shown below 3x
    assert sequential.shown(equal, 3.0, "below", 0.99)


def test_bounds_are_where_the_test_flips_and_bracket_the_estimate() -> None:
    strata = [Stratum(9500, 48, 500, 8), Stratum(7500, 37, 2500, 38)]
    low = sequential.bound(strata, "above", 0.99)
    high = sequential.bound(strata, "below", 0.99)
    estimate = sequential.rate_ratio(strata)
    assert estimate is not None
    assert 1.0 < low < estimate < high
    assert sequential.shown(strata, low * 0.999, "above", 0.99)
    assert not sequential.shown(strata, low * 1.001, "above", 0.99)
    assert sequential.shown(strata, high * 1.001, "below", 0.99)
    assert not sequential.shown(strata, high * 0.999, "below", 0.99)
    assert sequential.bound([], "above", 0.99) == 0.0
    assert sequential.bound([], "below", 0.99) == math.inf
