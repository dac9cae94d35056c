"""Verdicts on one SLO: margins in both directions, limits, evidence, baseline 0, and the
baseline reference that judges the canary while the baseline has no traffic."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from canaryguard.core.judge import BaselineReference, judge, take_reference
from canaryguard.core.observations import SloObservation
from canaryguard.core.spec import Direction, ErrorRate, Margin, Query, Slo


def slo(
    absolute: float | None = None,
    relative: float | None = None,
    limit: float | None = None,
    direction: Direction = "HigherIsWorse",
    min_requests: int = 50,
) -> Slo:
    margin = None if absolute is None and relative is None else Margin(absolute, relative)
    return Slo(
        name="s",
        kind=ErrorRate(),
        min_requests=min_requests,
        direction=direction,
        margin=margin,
        limit=limit,
        window=timedelta(minutes=1),
    )


def seen(baseline: float | None, canary: float | None, n: float = 1000) -> SloObservation:
    return SloObservation(baseline, canary, n, n)


@pytest.mark.parametrize(
    ("rule", "baseline", "canary", "verdict"),
    [
        # absolute margin 0.01: worse by more than 0.01 breaches; exactly 0.01 does not
        (slo(absolute=0.01), 0.01, 0.021, "breach"),
        (slo(absolute=0.01), 0.001, 0.011, "healthy"),
        (slo(absolute=0.1), 1.0, 1.1, "healthy"),  # 1.1 - 1.0 is 0.10000000000000009
        (slo(absolute=0.01), 0.01, 0.019, "healthy"),
        (slo(absolute=0.01), 0.05, 0.0, "healthy"),  # better is never a breach
        # relative margin 50%
        (slo(relative=0.5), 0.02, 0.031, "breach"),
        (slo(relative=0.5), 0.02, 0.03, "healthy"),
        # both set: a breach must exceed both
        (slo(absolute=0.01, relative=0.5), 0.001, 0.005, "healthy"),  # +400% but only +0.004
        (slo(absolute=0.01, relative=0.5), 0.1, 0.12, "healthy"),  # +0.02 but only +20%
        (slo(absolute=0.01, relative=0.5), 0.01, 0.03, "breach"),  # +0.02 and +200%
        # absolute limit: beyond it breaches whatever the baseline does
        (slo(limit=0.05), 0.2, 0.06, "breach"),
        (slo(limit=0.05), 0.0, 0.05, "healthy"),
        (slo(absolute=0.5, limit=0.05), 0.04, 0.06, "breach"),  # within margin, beyond limit
        # lower is worse: signs flip
        (slo(absolute=0.02, direction="LowerIsWorse"), 0.05, 0.02, "breach"),
        (slo(absolute=0.02, direction="LowerIsWorse"), 0.05, 0.04, "healthy"),
        (slo(absolute=0.02, direction="LowerIsWorse"), 0.05, 0.5, "healthy"),
        (slo(relative=0.1, direction="LowerIsWorse"), 0.5, 0.44, "breach"),  # 12% lower
        (slo(relative=0.1, direction="LowerIsWorse"), 0.5, 0.46, "healthy"),  # 8% lower
        (slo(limit=0.9, direction="LowerIsWorse"), 0.8, 0.85, "breach"),  # below the floor
        # baseline 0: any worsening is infinitely large relatively
        (slo(relative=10.0), 0.0, 0.0001, "breach"),
        (slo(relative=10.0), 0.0, 0.0, "healthy"),
        (slo(absolute=0.01, relative=0.5), 0.0, 0.005, "healthy"),  # absolute still holds
        (slo(relative=0.1, direction="LowerIsWorse"), 0.0, -1.0, "breach"),
        # a negative baseline is compared by its size
        (slo(relative=0.5), -10.0, -4.0, "breach"),  # worse by 6, 60% of |b|
    ],
)
def test_verdicts(rule: Slo, baseline: float, canary: float, verdict: str) -> None:
    assert judge(rule, seen(baseline, canary)).verdict == verdict


@pytest.mark.parametrize(
    ("observation", "reason"),
    [
        (SloObservation(0.01, 0.01, 1000, 12), "canary has 12 requests, needs 50"),
        (SloObservation(0.01, 0.01, 3, 1000), "baseline has 3 requests, needs 50"),
        (SloObservation(0.01, 0.01, None, 1000), "baseline requests unknown (no data)"),
        (SloObservation(0.01, 0.01, 1000, math.nan), "canary requests unknown (no data)"),
        (SloObservation(None, 0.01, 1000, 1000), "no baseline value (empty result)"),
        (SloObservation(0.01, math.nan, 1000, 1000), "canary value is NaN"),
        (SloObservation(0.01, -math.inf, 1000, 1000), "canary value is infinite"),
    ],
)
def test_missing_evidence_is_inconclusive_and_says_why(
    observation: SloObservation, reason: str
) -> None:
    judgement = judge(slo(absolute=0.01), observation)
    assert (judgement.verdict, judgement.reason) == ("inconclusive", reason)


def test_too_few_requests_wins_over_a_missing_value() -> None:
    # An empty canary is explained by its traffic, not by its NaN.
    judgement = judge(slo(absolute=0.01), SloObservation(0.01, math.nan, 1000, 0))
    assert judgement.reason == "canary has 0 requests, needs 50"


def test_min_requests_zero_ignores_the_counts() -> None:
    judgement = judge(slo(absolute=0.01, min_requests=0), SloObservation(0.01, 0.05, None, None))
    assert judgement.verdict == "breach"


def test_query_slo_with_samples_template_speaks_of_samples() -> None:
    rule = Slo(
        name="q",
        kind=Query("x{v='{{ version }}'}", samples_template="n{v='{{ version }}'}"),
        min_requests=500,
        margin=Margin(absolute=1),
    )
    assert judge(rule, SloObservation(1, 1, 1000, 20)).reason == "canary has 20 samples, needs 500"


def test_unavailable_differs_from_no_data() -> None:
    failed = judge(slo(absolute=0.01), SloObservation.failed("HTTP 503"))
    assert (failed.verdict, failed.reason) == ("unavailable", "query failed: HTTP 503")
    assert judge(slo(absolute=0.01), None).verdict == "unavailable"
    assert judge(slo(absolute=0.01), seen(None, None)).verdict == "inconclusive"


def test_breach_reason_names_values_and_margins() -> None:
    judgement = judge(slo(absolute=0.01, relative=0.5, limit=0.05), seen(0.01, 0.08))
    assert judgement.reason == (
        "canary 0.08 vs baseline 0.01: worse by 0.07 (+700%), more than absolute 0.01, "
        "relative 50%; above the limit 0.05"
    )
    assert judgement.worse_by == pytest.approx(0.07)
    assert judgement.worse_by_relative == pytest.approx(7.0)


def test_healthy_reason_and_baseline_zero_reason() -> None:
    assert judge(slo(absolute=0.01), seen(0.01, 0.009)).reason == (
        "canary 0.009 vs baseline 0.01: not worse"
    )
    assert judge(slo(relative=0.5), seen(0.0, 0.2)).reason == (
        "canary 0.2 vs baseline 0: worse by 0.2 (baseline is 0), more than relative 50%"
    )


# --- the baseline has no traffic (canary at 100%) -------------------------------------------

T = datetime(2024, 6, 1, 12, 3, 10, tzinfo=UTC)
REF = BaselineReference(0.01, 900, T)
IDLE = SloObservation(None, 0.012, 0, 100)  # what a tick at 100% sees once the lookback empties


@pytest.mark.parametrize(
    ("rule", "canary", "verdict"),
    [
        (slo(absolute=0.01), 0.012, "healthy"),
        (slo(absolute=0.01), 0.021, "breach"),
        (slo(relative=0.5), 0.016, "breach"),
        (slo(absolute=0.5, limit=0.05), 0.06, "breach"),  # the limit still applies
        (slo(absolute=0.005, direction="LowerIsWorse"), 0.004, "breach"),
        (slo(absolute=0.005, direction="LowerIsWorse"), 0.2, "healthy"),
    ],
)
def test_an_idle_baseline_is_replaced_by_its_reference(
    rule: Slo, canary: float, verdict: str
) -> None:
    observation = SloObservation(None, canary, 0, 100)
    assert judge(rule, observation, REF, baseline_idle=True).verdict == verdict
    # without baseline_idle the same observation is inconclusive, as before
    assert judge(rule, observation, REF).verdict == "inconclusive"


def test_the_reason_names_the_reference_and_when_it_was_taken() -> None:
    healthy = judge(slo(absolute=0.01), IDLE, REF, baseline_idle=True)
    assert healthy.reason == (
        "canary 0.012 vs baseline reference 0.01 (from 2024-06-01T12:03:10Z): "
        "worse by 0.002 (+20%), within tolerance"
    )
    breach = judge(slo(absolute=0.01), SloObservation(None, 0.05, 0, 100), REF, baseline_idle=True)
    assert breach.reason.startswith("canary 0.05 vs baseline reference 0.01 (from ")
    assert breach.worse_by == pytest.approx(0.04)


def test_an_idle_baselines_current_values_are_ignored() -> None:
    # residual baseline traffic in the lookback: the reference (taken by the engine from that
    # same tick when it qualifies) is what counts
    observation = SloObservation(0.5, 0.012, 3, 100)
    assert judge(slo(absolute=0.01), observation, REF, baseline_idle=True).verdict == "healthy"


@pytest.mark.parametrize(
    ("observation", "reason"),
    [
        (SloObservation(None, 0.01, 0, 12), "canary has 12 requests, needs 50"),
        (SloObservation(None, 0.01, 0, None), "canary requests unknown (no data)"),
        (SloObservation(None, None, 0, 100), "no canary value (empty result)"),
        (SloObservation(None, math.nan, 0, 100), "canary value is NaN"),
    ],
)
def test_the_canary_still_needs_evidence_when_the_baseline_is_idle(
    observation: SloObservation, reason: str
) -> None:
    for reference in (REF, None):
        judgement = judge(slo(absolute=0.01), observation, reference, baseline_idle=True)
        assert (judgement.verdict, judgement.reason) == ("inconclusive", reason)


@pytest.mark.parametrize(
    ("rule", "canary", "verdict", "reason"),
    [
        (
            slo(limit=0.05),
            0.03,
            "healthy",
            "canary 0.03 (no baseline reference; judged by limit only): within the limit 0.05",
        ),
        (
            slo(absolute=0.01, limit=0.05),
            0.06,
            "breach",
            "canary 0.06 (no baseline reference; judged by limit only): above the limit 0.05",
        ),
        (
            slo(limit=0.9, direction="LowerIsWorse"),
            0.8,
            "breach",
            "canary 0.8 (no baseline reference; judged by limit only): below the limit 0.9",
        ),
        (
            slo(absolute=0.01),
            0.9,
            "healthy",
            "canary 0.9 (no baseline reference and no limit): healthy on the canary's "
            "evidence alone",
        ),
    ],
)
def test_without_a_reference_only_the_limit_judges(
    rule: Slo, canary: float, verdict: str, reason: str
) -> None:
    judgement = judge(rule, SloObservation(None, canary, 0, 100), None, baseline_idle=True)
    assert (judgement.verdict, judgement.reason) == (verdict, reason)


@pytest.mark.parametrize(
    ("observation", "taken"),
    [
        (SloObservation(0.0123456, 0.5, 900, 0), BaselineReference(0.01235, 900, T)),
        (SloObservation(0.01, None, 50, None), BaselineReference(0.01, 50, T)),  # exactly enough
        (SloObservation(0.01, 0.01, 49, 900), None),
        (SloObservation(0.01, 0.01, None, 900), None),
        (SloObservation(None, 0.01, 900, 900), None),
        (SloObservation(math.nan, 0.01, 900, 900), None),
        (SloObservation(math.inf, 0.01, 900, 900), None),
        (SloObservation(1.7976931348623157e308, 0.01, 900, 900), None),  # not storable
        (SloObservation.failed("HTTP 503"), None),
        (None, None),
    ],
)
def test_a_reference_is_taken_only_from_a_baseline_with_enough_evidence(
    observation: SloObservation | None, taken: BaselineReference | None
) -> None:
    assert take_reference(slo(absolute=0.01), observation, T) == taken


def test_min_requests_zero_takes_any_finite_baseline_as_reference() -> None:
    taken = take_reference(
        slo(absolute=0.01, min_requests=0), SloObservation(0.2, None, None, 0), T
    )
    assert taken == BaselineReference(0.2, None, T)
