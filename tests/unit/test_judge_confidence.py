"""SLOs with `confidence`: verdicts on the evidence since the analysis began, the parser's
rules for the field, and tick-by-tick accumulation of strata in the engine and status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from canaryguard.core import sequential
from canaryguard.core.judge import judge
from canaryguard.core.observations import SloObservation
from canaryguard.core.sequential import GRID, Stratum
from canaryguard.core.spec import Direction, ErrorRate, Margin, Slo, SpecError
from canaryguard.core.status import StratumRecord, status_from_dict
from tests.unit.scenario import Rollout, at, make_spec, obs, spec_dict


def slo(
    absolute: float | None = None,
    relative: float | None = 0.0,
    limit: float | None = None,
    direction: Direction = "HigherIsWorse",
    min_requests: int = 50,
) -> Slo:
    return Slo(
        name="errors",
        kind=ErrorRate(),
        min_requests=min_requests,
        direction=direction,
        margin=Margin(absolute, relative),
        limit=limit,
        window=timedelta(minutes=1),
        confidence=0.99,
    )


# A lookback observation the judge ignores with confidence (but for the limit).
LOOKBACK = SloObservation(0.005, 0.006, 3000, 150)
WORSE = (Stratum(9500, 48, 500, 8), Stratum(7500, 37, 2500, 38))  # canary ~3x
EQUAL = (Stratum(9500, 48, 500, 3), Stratum(7500, 37, 2500, 12))


def e_value_above(strata: tuple[Stratum, ...], rho0: float) -> float:
    """The e-value by the binomial formula, independently of the module."""
    total = 0.0
    for g in GRID:
        product = 1.0
        for s in strata:
            t1 = s.canary_requests * rho0 * g / (s.canary_requests * rho0 * g + s.baseline_requests)
            t0 = s.canary_requests * rho0 / (s.canary_requests * rho0 + s.baseline_requests)
            x, y = s.canary_events, s.baseline_events
            product *= (t1 / t0) ** x * ((1 - t1) / (1 - t0)) ** y
        total += product
    return total / len(GRID)


def test_any_worsening_breaches_when_shown_and_is_healthy_when_not() -> None:
    assert e_value_above(WORSE, 1.0) >= 100 > e_value_above(EQUAL, 1.0)
    breach = judge(slo(), LOOKBACK, strata=WORSE)
    assert breach.verdict == "breach"
    assert "shown worse by more than absolute" not in breach.reason
    assert "canary 46/3000 vs baseline 85/17000" in breach.reason
    assert breach.reason.endswith("shown worse by more than relative 0%")
    assert breach.worse_by == pytest.approx(
        (475 * (8 / 500 - 48 / 9500) + 1875 * (38 / 2500 - 37 / 7500)) / 2350
    )
    healthy = judge(slo(), LOOKBACK, strata=EQUAL)
    assert healthy.verdict == "healthy"
    assert healthy.reason.endswith("not shown worse")


def test_a_positive_margin_needs_the_data_to_rule_the_regression_out() -> None:
    # Little data: a 50% worsening is neither shown nor ruled out.
    few = (Stratum(9500, 48, 500, 3),)
    verdict = judge(slo(relative=0.5), LOOKBACK, strata=few)
    assert verdict.verdict == "inconclusive"
    assert "neither shown worse nor within relative 50%" in verdict.reason
    # Much data at equal rates: ruled out.
    many = (Stratum(500_000, 2500, 500_000, 2480),)
    ruled_out = judge(slo(relative=0.5), LOOKBACK, strata=many)
    assert (ruled_out.verdict, ruled_out.reason.endswith("shown within relative 50%")) == (
        "healthy",
        True,
    )
    # The 3x canary is shown beyond 50% too.
    assert judge(slo(relative=0.5), LOOKBACK, strata=WORSE).verdict == "breach"
    assert e_value_above(WORSE, 1.5) >= 100


def test_an_absolute_margin_is_a_floor_on_the_estimated_difference() -> None:
    # Shown worse in ratio; the estimated difference is
    # (475 * (8/500 - 48/9500) + 1875 * (38/2500 - 37/7500)) / 2350 = 0.01040.
    within = judge(slo(absolute=0.011), LOOKBACK, strata=WORSE)
    assert within.verdict == "healthy"
    assert within.reason.endswith("estimate within absolute 0.011, relative 0%")
    assert judge(slo(absolute=0.0103), LOOKBACK, strata=WORSE).verdict == "breach"


def test_lower_is_worse_tests_the_ratio_below() -> None:
    # The canary flags a third as often as the baseline.
    strata = (Stratum(9000, 270, 1000, 10), Stratum(5000, 150, 5000, 50))
    assert judge(slo(direction="LowerIsWorse"), LOOKBACK, strata=strata).verdict == "breach"
    assert judge(slo(), LOOKBACK, strata=strata).verdict == "healthy"  # HigherIsWorse: better


def test_evidence_needs_min_requests_since_the_analysis_began() -> None:
    strata = (Stratum(900, 4, 30, 0), Stratum(800, 4, 15, 0))
    verdict = judge(slo(), LOOKBACK, strata=strata)
    assert (verdict.verdict, verdict.reason) == (
        "inconclusive",
        "canary has 45 requests since the analysis began, needs 50",
    )
    assert judge(slo(min_requests=45), LOOKBACK, strata=strata).verdict == "healthy"
    none = judge(slo(), LOOKBACK, strata=())
    assert none.verdict == "inconclusive"


def test_the_limit_still_judges_the_lookback_value_and_failures_stay_unavailable() -> None:
    beyond = SloObservation(0.005, 0.07, 3000, 150)
    assert judge(slo(limit=0.05), beyond, strata=EQUAL).verdict == "breach"
    failed = judge(slo(), SloObservation.failed("timeout"), strata=WORSE)
    assert failed.verdict == "unavailable"


@pytest.mark.parametrize(
    ("edit", "field", "problem"),
    [
        ({"confidence": 1.0}, "confidence", "must be between 0.5 and 0.9999"),
        ({"confidence": 0.3}, "confidence", "must be between 0.5 and 0.9999"),
        (
            {"latency": {"quantile": 0.99}, "errorRate": None, "confidence": 0.99},
            "confidence",
            "needs counts",
        ),
        ({"margin": None, "limit": 0.05, "confidence": 0.99}, "confidence", "needs a margin"),
        (
            {"direction": "LowerIsWorse", "margin": {"relative": 1}, "confidence": 0.99},
            "margin.relative",
            "must be below 1",
        ),
    ],
)
def test_the_parser_refuses_confidence_where_it_cannot_work(
    edit: dict[str, Any], field: str, problem: str
) -> None:
    data = spec_dict()
    slo_data = data["analysis"]["slos"][0]
    for key, value in edit.items():
        if value is None:
            slo_data.pop(key, None)
        else:
            slo_data[key] = value
    with pytest.raises(SpecError) as caught:
        make_spec(data)
    assert str(caught.value).startswith(f"spec.analysis.slos[0].{field}: {problem}")


def test_a_query_with_samples_takes_confidence() -> None:
    data = spec_dict()
    data["analysis"]["slos"][0] = {
        "name": "errors",
        "query": {
            "template": 'sum(rate(flagged{v="{{ version }}"}[{{ lookback }}]))',
            "samplesTemplate": 'sum(increase(scored{v="{{ version }}"}[{{ lookback }}]))',
        },
        "direction": "LowerIsWorse",
        "margin": {"relative": 0.2},
        "confidence": 0.995,
    }
    assert make_spec(data).analysis.slos[0].confidence == 0.995


def counted(nb: float, xb: float, nc: float, xc: float) -> SloObservation:
    return SloObservation(xb / nb, xc / nc, nb, nc, counts=Stratum(nb, xb, nc, xc))


def confident_rollout() -> Rollout:
    data = spec_dict()
    data["analysis"]["slos"][0] = {
        "name": "errors",
        "errorRate": {},
        "margin": {"relative": 0},
        "confidence": 0.99,
        "window": "30s",
    }
    return Rollout(make_spec(data))


def test_strata_accumulate_per_step_and_survive_the_status_round_trip() -> None:
    r = confident_rollout()
    r.started()  # step 0 (10%) from t=0
    r.tick(30, obs(counted(2700, 13, 300, 2)))
    assert r.status.slos[0].evidence == (StratumRecord(at(0), 10, 2700, 13, 300, 2),)
    # the same step: its record is replaced by the counts since the step began
    r.tick(60, obs(counted(5400.4, 27, 599.6, 3)))  # counts are whole numbers in status
    assert r.status.slos[0].evidence == (StratumRecord(at(0), 10, 5400, 27, 600, 3),)
    assert (r.status.step_index, r.status.step_started_at) == (1, at(60))  # healthy: advanced
    r.tick(90, obs(counted(1500, 8, 1500, 7)))
    assert r.status.slos[0].evidence == (
        StratumRecord(at(0), 10, 5400, 27, 600, 3),
        StratumRecord(at(60), 50, 1500, 8, 1500, 7),
    )
    stored = r.status.to_dict()["slos"][0]["evidence"]
    assert stored[1] == {
        "since": "2024-06-01T12:01:00Z",
        "weight": 50,
        "baselineRequests": 1500,
        "baselineEvents": 8,
        "canaryRequests": 1500,
        "canaryEvents": 7,
    }
    assert status_from_dict(r.status.to_dict()).slos[0].evidence == r.status.slos[0].evidence


def test_a_regression_shown_on_the_accumulated_evidence_rolls_back_after_its_window() -> None:
    r = confident_rollout()
    r.started()
    # Step 0 alone does not show it (2 errors of 300 against 13 of 2700) ...
    assert r.tick(30, obs(counted(2700, 13, 300, 2))).status.slos[0].verdict == "healthy"
    r.tick(60, obs(counted(5400, 27, 600, 6)))
    assert r.status.step_index == 1
    # ... step 1 adds 28 errors to 8: e-value 158 >= 100 at 90 s; window 30 s: rolled back
    # at 120 s.
    assert r.tick(90, obs(counted(1500, 8, 1500, 28))).status.slos[0].verdict == "breach"
    assert r.status.slos[0].breaching_since == at(90)
    assert r.tick(120, obs(counted(3000, 15, 3000, 47))).status.phase == "RolledBack"
    assert r.status.rollback is not None and r.status.rollback.slo == "errors"
    assert r.status.rollback.margin == "relative 0% shown at 99% confidence"


def test_a_shared_degradation_at_a_weight_change_is_not_blamed_on_the_canary() -> None:
    r = confident_rollout()
    r.started()
    r.tick(30, obs(counted(2700, 14, 300, 1)))
    r.tick(60, obs(counted(5400, 27, 600, 3)))
    # At 50%, both versions fail 3% of requests: within the step, not worse.
    for t, n in ((90, 1500), (120, 3000), (150, 4500)):
        assert r.tick(t, obs(counted(n, 0.03 * n, n, 0.03 * n))).status.slos[0].verdict == (
            "healthy"
        )
    assert r.status.phase == "Progressing"
    # Pooled over both steps instead, the canary looks 1.65x worse, and shown so.
    pooled = Stratum(5400 + 4500, 27 + 135, 600 + 4500, 3 + 135)
    assert sequential.rate_ratio([pooled]) == pytest.approx((138 / 5100) / (162 / 9900))
    assert sequential.shown([pooled], 1.0, "above", 0.99)


def test_at_100_percent_without_any_step_beside_the_baseline_the_limit_judges() -> None:
    idle = SloObservation(None, 0.07, 0, 3000)
    alone = (Stratum(0, 0, 3000, 210),)
    verdict = judge(slo(limit=0.05), idle, None, baseline_idle=True, strata=alone)
    assert (verdict.verdict, verdict.reason) == (
        "breach",
        "canary 0.07 (no baseline reference; judged by limit only): above the limit 0.05",
    )
    fine = SloObservation(None, 0.01, 0, 3000)
    assert judge(slo(), fine, None, baseline_idle=True, strata=alone).verdict == "healthy"
    # With earlier steps beside the baseline, their evidence judges at 100% too.
    assert judge(slo(), fine, None, baseline_idle=True, strata=(*WORSE, *alone)).verdict == (
        "breach"
    )
