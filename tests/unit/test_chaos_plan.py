"""The fault campaign's plans and arithmetic (canaryguard_testbed.chaos, .crashpoints): what
is drawn from the seed, how outages are discounted from a rollback's delay, and how crash
points are armed. The campaign itself runs in tests/integration/test_chaos.py."""

import random
from pathlib import Path

import pytest

from canaryguard_testbed.chaos import Config, Outage, covered, plan_faults, plan_rollouts
from canaryguard_testbed.crashpoints import (
    AFTER_PAGE,
    AFTER_ROLLBACK_WEIGHTS,
    AFTER_WEIGHTS,
    CrashPoints,
)


def test_a_random_half_breaches_before_its_last_hold_could_end() -> None:
    config = Config(rollouts=51, seed=4)
    plans = plan_rollouts(config, random.Random(config.seed))
    breaching = [p for p in plans if p.breaching]
    assert len(breaching) == 25
    assert [p.index for p in plans] == list(range(51))
    for p in plans:
        assert (p.inject_after is None) == (not p.breaching)
        assert all(h in config.holds for h in p.holds) and p.window in config.windows
    for p in breaching:
        assert p.inject_after is not None and p.planned_step is not None
        # Promotion comes no earlier than every hold after creation; the failure starts
        # at least 6 s before that, in the step the plan names.
        assert 1.0 <= p.inject_after <= sum(p.holds) - 6.0
        assert sum(p.holds[: p.planned_step]) <= p.inject_after < sum(p.holds[: p.planned_step + 1])
        assert p.error_rate in config.error_rates
    # Breaches start at more than one step.
    assert len({p.planned_step for p in breaching}) > 1


def test_plans_are_the_seeds() -> None:
    config = Config(rollouts=20, seed=9)
    first = plan_rollouts(config, random.Random(9)), plan_faults(config, random.Random(9))
    again = plan_rollouts(config, random.Random(9)), plan_faults(config, random.Random(9))
    assert first == again
    assert plan_rollouts(config, random.Random(10)) != first[0]


def test_faults_are_counted_as_configured_and_in_time_order() -> None:
    config = Config(
        rollouts=10, kills=3, apiserver_restarts=2, prometheus_restarts=1, pagerduty_periods=4
    )
    faults = plan_faults(config, random.Random(1))
    kinds = [f.kind for f in faults]
    assert kinds.count("kill-operator") == 3
    assert kinds.count("restart-apiserver") == 2
    assert kinds.count("restart-prometheus") == 1
    pagerduty = [f for f in faults if f.kind == "pagerduty"]
    assert sorted(f.status for f in pagerduty) == [429, 429, 500, 500]
    assert all(f.retry_after for f in pagerduty if f.status == 429)
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    end = (config.rollouts - 1) * config.spacing + config.fault_tail
    assert all(2.0 <= f.at <= end for f in faults)
    assert all(config.down[0] <= f.down <= config.down[1] for f in faults if f.kind != "pagerduty")


@pytest.mark.parametrize(
    ("outages", "span", "expected"),
    [
        ([], (10, 20), 0.0),
        ([(0, 5)], (10, 20), 0.0),  # before the span
        ([(25, 30)], (10, 20), 0.0),  # after the span
        ([(12, 13), (25, 30)], (10, 20), 1.0),
        ([(12, 15)], (10, 20), 3.0),
        ([(5, 12), (18, 30)], (10, 20), 4.0),  # cut at both ends
        ([(12, 16), (14, 18)], (10, 20), 6.0),  # overlapping outages count once
        ([(11, 12), (11.5, 11.7), (13, 14)], (10, 20), 2.0),  # one inside another
    ],
)
def test_covered_counts_the_union_of_outages_within_the_span(
    outages: list[tuple[float, float]], span: tuple[float, float], expected: float
) -> None:
    records = [Outage("operator", "test", a, b) for a, b in outages]
    assert covered(records, *span) == pytest.approx(expected)


def test_a_crash_point_over_its_cap_is_disarmed() -> None:
    config = Config(
        crash_after_weights=0.1,
        crash_after_rollback_weights=0.5,
        crash_after_page=0.2,
        max_crashes_after_weights=1,
        max_crashes_after_rollback_weights=2,
        max_crashes_after_page=1,
    )
    points = config.crash_points(
        Path("crashes.jsonl"),
        {AFTER_WEIGHTS: 1, AFTER_ROLLBACK_WEIGHTS: 1},
        seed=5,
    )
    assert (points.after_weights, points.after_rollback_weights, points.after_page) == (
        0.0,
        0.5,
        0.2,
    )
    # The environment the operator process gets says the same.
    assert CrashPoints.from_env(points.env()) == points
    assert points.env()["CANARYGUARD_TESTBED_CRASH_SEED"] == "5"
    assert AFTER_PAGE == "after-page"


def test_crash_point_probabilities_are_checked() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        CrashPoints.from_env({"CANARYGUARD_TESTBED_CRASH_AFTER_PAGE": "2"})
    assert CrashPoints.from_env({}) == CrashPoints()
