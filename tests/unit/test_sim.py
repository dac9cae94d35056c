"""The simulator (canaryguard.sim): Poisson draws, traffic counts and the engine loop, from
seeded generators, with expectations that hold by construction."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from canaryguard.sim.poisson import poisson
from canaryguard.sim.rollout import (
    Outcome,
    Streams,
    ThresholdPolicy,
    Traffic,
    simulate,
    simulate_threshold,
)
from tests.unit.scenario import make_spec, spec_dict


@pytest.mark.parametrize("mean", [0.3, 4.0, 25.0, 3000.0])
def test_poisson_draws_have_the_mean_and_variance_of_a_poisson(mean: float) -> None:
    rng = random.Random(7)
    draws = [poisson(rng, mean) for _ in range(20_000)]
    # Five standard errors: the mean's is sqrt(mean / n); the variance's about
    # mean * sqrt(2 / n) (plus the fourth cumulant, mean, over n).
    assert abs(statistics.fmean(draws) - mean) < 5 * math.sqrt(mean / 20_000)
    spread = math.sqrt((2 * mean**2 + mean) / 20_000)
    assert abs(statistics.pvariance(draws) - mean) < 5 * spread
    assert min(draws) >= 0


def test_poisson_of_nothing_is_zero_and_draws_repeat_with_the_seed() -> None:
    assert poisson(random.Random(1), 0.0) == 0
    assert [poisson(random.Random(3), 50) for _ in range(3)] == [
        poisson(random.Random(3), 50) for _ in range(3)
    ]


def test_streams_split_requests_by_weight_and_errors_by_rate() -> None:
    streams = Streams(Traffic(rps=100, baseline_error=0.01, canary_factor=3), random.Random(5))
    totals = [0, 0, 0, 0]
    for k in range(200):
        for i, value in enumerate(streams.draw(30 * k, 30 * (k + 1), 25)):
            totals[i] += value
    nb, xb, nc, xc = totals
    # 600,000 requests in all: 75% / 25%; errors 1% and 3% of them.
    assert abs(nb - 450_000) < 5 * math.sqrt(450_000)
    assert abs(nc - 150_000) < 5 * math.sqrt(150_000)
    assert abs(xb - 4500) < 5 * math.sqrt(4500)
    assert abs(xc - 4500) < 5 * math.sqrt(4500)


def test_a_shared_degradation_starts_after_the_weight_is_reached_and_ends() -> None:
    traffic = Traffic(rps=100, baseline_error=0.0, shared_error=0.5, shared_after=60)
    streams = Streams(traffic, random.Random(2))
    assert streams.draw(0, 30, 25)[1] == 0  # no errors before 50%
    assert streams.draw(30, 60, 50)[1] == 0  # reached 50% at 30 s: starts at 90 s
    assert streams.draw(60, 90, 50)[1] == 0
    assert streams.draw(90, 120, 50)[1] > 0
    assert streams.draw(390, 420, 50)[1] == 0  # five minutes later it is over


def slo_dict(**fields: object) -> dict[str, object]:
    return {"name": "errors", "errorRate": {}, "window": "60s", "lookback": "60s", **fields}


def test_the_engine_promotes_an_identical_canary_after_the_holds() -> None:
    spec = make_spec(spec_dict(slos=[slo_dict(margin={"relative": 0}, confidence=0.99)]))
    outcome = simulate(spec, Traffic(rps=200, baseline_error=0.0), random.Random(1))
    # No errors at all: never shown worse, so healthy at every tick; holds 60 + 120 + 120 s.
    assert (outcome.phase, outcome.seconds, outcome.weight) == ("Promoted", 300, 100)


def test_the_engine_rolls_back_a_canary_failing_every_request() -> None:
    spec = make_spec(spec_dict(slos=[slo_dict(margin={"absolute": 0.01})]))
    traffic = Traffic(rps=200, baseline_error=0.001, canary_factor=1000)
    outcome = simulate(spec, traffic, random.Random(1))
    # Breach from the first judged tick (30 s), window 60 s: rolled back at 90 s at 10%.
    assert (outcome.phase, outcome.seconds, outcome.weight) == ("RolledBack", 90, 10)


def test_the_threshold_policy_adds_up_failed_checks() -> None:
    spec = make_spec(spec_dict(slos=[slo_dict(margin={"absolute": 0.01})]))
    always = simulate_threshold(
        spec, ThresholdPolicy(0.01, 3), Traffic(200, 0.001, 1000), random.Random(1)
    )
    assert (always.phase, always.seconds) == ("RolledBack", 90)  # checks at 30, 60, 90 s
    never = simulate_threshold(spec, ThresholdPolicy(0.01, 3), Traffic(200, 0.0), random.Random(1))
    assert (never.phase, never.seconds) == ("Promoted", 300)


def test_slos_without_simulated_errors_see_both_versions_equal() -> None:
    latency = {"name": "p99", "latency": {"quantile": 0.99}, "margin": {"absolute": 0}}
    spec = make_spec(spec_dict(slos=[slo_dict(margin={"absolute": 0.01}), latency]))
    outcome = simulate(spec, Traffic(rps=200, baseline_error=0.0), random.Random(1))
    assert (outcome.phase, outcome.seconds) == ("Promoted", 300)


def test_looking_every_tick_keeps_false_alarms_within_the_bound() -> None:
    """Ville's inequality in practice: identical versions, rates that jump when the split
    changes (a shared degradation), 40 looks; the stratified e-value ever reaches 1/alpha in
    at most alpha of the runs (plus three standard errors), while the same counts pooled
    across the two splits cross far more often."""
    from canaryguard.core.sequential import Stratum, log_e_value

    alpha, runs = 0.05, 1000
    rng = random.Random(11)
    stratified = pooled = 0
    for _ in range(runs):
        strata: list[list[float]] = []
        crossed_s = crossed_p = False
        for look in range(40):
            share, rate = (0.05, 0.005) if look < 10 else (0.5, 0.03)
            if look in (0, 10):
                strata.append([0.0, 0.0, 0.0, 0.0])
            nb, nc = 1500 * (1 - share), 1500 * share
            s = strata[-1]
            s[0] += nb
            s[1] += poisson(rng, nb * rate)
            s[2] += nc
            s[3] += poisson(rng, nc * rate)
            as_strata = [Stratum(*x) for x in strata]
            whole = Stratum(*(sum(x[i] for x in strata) for i in range(4)))
            crossed_s |= log_e_value(as_strata, 1.0, "above") >= math.log(1 / alpha)
            crossed_p |= log_e_value([whole], 1.0, "above") >= math.log(1 / alpha)
        stratified += crossed_s
        pooled += crossed_p
    assert stratified / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert pooled / runs > 0.5


def test_an_outcome_says_when_it_ended_against_the_shared_degradation() -> None:
    spec = make_spec(spec_dict(slos=[slo_dict(margin={"absolute": 0.01})]))
    traffic = Traffic(rps=200, baseline_error=0.0, shared_error=0.5, shared_after=60)
    outcome = simulate_threshold(spec, ThresholdPolicy(0.01, 3), traffic, random.Random(1))
    # 50% from the tick at 60 s, so both versions fail half their requests over 120-420 s;
    # checks at 150, 180 and 210 s fail: rolled back while it lasts.
    assert (outcome.phase, outcome.seconds, outcome.degraded) == ("RolledBack", 210, (120, 420))
    assert outcome.against_degradation() == "during"
    failing = Traffic(rps=200, baseline_error=0.001, canary_factor=1000, shared_error=0.5)
    early = simulate_threshold(spec, ThresholdPolicy(0.01, 3), failing, random.Random(1))
    assert (early.seconds, early.degraded, early.against_degradation()) == (90, None, "before")
    assert Outcome("RolledBack", 120, 50, (120, 420)).against_degradation() == "before"
    assert Outcome("RolledBack", 420, 50, (120, 420)).against_degradation() == "during"
    assert Outcome("RolledBack", 450, 100, (120, 420)).against_degradation() == "after"
