"""Tick-by-tick scenarios of the decision engine, with a fixed clock.

Base rollout (tests/unit/scenario.py): steps 10% for 60s, 50% for 120s, 100% for 120s; one SLO
`errors` (error rate, absolute margin 0.01, window 60s); minRequests 50; maxMetricsOutage 90s.
"""

from __future__ import annotations

import math

import pytest

from canaryguard.core import engine
from canaryguard.core.actions import SetWeights
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.paging import safe_dedup_key
from tests.unit.scenario import (
    BREACH,
    DOWN,
    FEW,
    HEALTHY,
    Rollout,
    at,
    cond,
    events,
    make_spec,
    obs,
    pages,
    spec_dict,
    weights,
)


def test_healthy_walk_to_promoted_with_exact_step_timing() -> None:
    r = Rollout()

    first = r.started()
    assert first.actions[0] == SetWeights(baseline=90, canary=10)
    assert events(first.actions) == [("Normal", "Started")]
    assert (r.status.phase, r.status.step_index, r.status.step_started_at) == (
        "Progressing",
        0,
        at(0),
    )

    assert r.tick(30).actions == ()
    assert r.tick(59.999).actions == ()  # hold 60s not over

    second = r.tick(60)
    assert weights(second.actions) == [(50, 50)]
    assert events(second.actions) == [("Normal", "StepAdvanced")]
    assert (r.status.step_index, r.status.canary_weight, r.status.step_started_at) == (
        1,
        50,
        at(60),
    )

    assert r.tick(179.999).actions == ()  # hold 120s from 60s
    assert weights(r.tick(180).actions) == [(0, 100)]
    assert r.tick(299.999).actions == ()

    done = r.tick(300)
    assert weights(done.actions) == []  # already at 100
    assert events(done.actions) == [("Normal", "Promoted")]
    assert r.status.phase == "Promoted"
    assert r.status.message == "promoted: canary at 100%"
    assert [h.action for h in r.status.history] == [
        "Started",
        "StepAdvanced",
        "StepAdvanced",
        "Promoted",
    ]

    later = r.tick(330, obs(BREACH))  # finished rollouts are not judged any more
    assert later.actions == ()
    assert r.status.phase == "Promoted"


def test_first_tick_does_not_judge() -> None:
    r = Rollout()
    result = r.tick(0, obs(BREACH))
    assert r.status.slos == ()
    assert pages(result.actions) == []


def test_breach_sustained_exactly_window_rolls_back_on_that_tick_and_not_earlier() -> None:
    r = Rollout()
    r.started()
    r.tick(30)
    assert r.tick(60, obs(BREACH)).actions == ()
    assert r.status.slos[0].breaching_since == at(60)
    assert r.tick(90, obs(BREACH)).actions == ()
    assert r.tick(119.999, obs(BREACH)).actions == ()
    assert r.status.phase == "Progressing"
    assert cond(r.status, "Healthy").status == "False"

    result = r.tick(120, obs(BREACH))

    assert [type(a).__name__ for a in result.actions] == ["SetWeights", "Page", "EmitEvent"]
    assert weights(result.actions) == [(100, 0)]
    assert events(result.actions) == [("Warning", "RolledBack")]
    assert r.status.phase == "RolledBack"
    assert r.status.canary_weight == 0
    rollback = r.status.rollback
    assert rollback is not None
    assert (rollback.reason, rollback.slo, rollback.at) == ("SLOBreach", "errors", at(120))
    assert (rollback.baseline, rollback.canary) == (0.01, 0.05)
    assert (rollback.margin, rollback.window, rollback.breaching_since) == (
        "absolute 0.01",
        "1m",
        at(60),
    )
    assert r.status.page is not None
    assert (r.status.page.state, r.status.page.attempts) == ("Pending", 0)
    assert r.status.page.dedup_key == "canaryguard/ml/scorer/scorer/v2@v2"


def test_zero_window_rolls_back_on_first_breach() -> None:
    data = spec_dict()
    data["analysis"]["slos"][0]["window"] = "0s"
    r = Rollout(make_spec(data))
    r.started()
    result = r.tick(30, obs(BREACH))
    assert weights(result.actions) == [(100, 0)]
    assert r.status.phase == "RolledBack"


def test_breach_interrupted_by_one_healthy_tick_restarts_the_window() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    r.tick(90, obs(BREACH))
    r.tick(120, obs(HEALTHY))
    assert r.status.slos[0].breaching_since is None

    r.tick(150, obs(BREACH))
    assert r.status.slos[0].breaching_since == at(150)
    assert r.tick(180, obs(BREACH)).actions == ()
    assert r.tick(209.999, obs(BREACH)).actions == ()
    assert weights(r.tick(210, obs(BREACH)).actions) == [(100, 0)]
    assert r.status.rollback is not None and r.status.rollback.breaching_since == at(150)


@pytest.mark.parametrize("interruption", [FEW, DOWN], ids=["inconclusive", "unavailable"])
def test_inconclusive_or_unavailable_ticks_neither_reset_nor_end_a_breach(
    interruption: SloObservation,
) -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    r.tick(90, obs(interruption))
    assert r.status.slos[0].breaching_since == at(60)
    assert r.status.slos[0].verdict in ("inconclusive", "unavailable")
    # still counted from 60s: the breach at 120s is the sustained one
    assert weights(r.tick(120, obs(BREACH)).actions) == [(100, 0)]
    assert r.status.rollback is not None and r.status.rollback.breaching_since == at(60)


def test_an_inconclusive_tick_after_the_window_does_not_roll_back() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    assert r.tick(130, obs(FEW)).actions == ()  # only a breach tick rolls back
    assert r.status.phase == "Progressing"


def test_inconclusive_waits_with_a_condition_that_says_why() -> None:
    r = Rollout()
    r.started()
    result = r.tick(60, obs(FEW))  # hold over, but the canary has 12 requests
    assert result.actions == ()
    assert r.status.step_index == 0
    progressing = r.status.condition("Progressing")
    assert progressing is not None
    assert progressing.reason == "WaitingForEvidence"
    assert "errors: canary has 12 requests, needs 50" in progressing.message
    assert "canary has 12 requests, needs 50" in r.status.message
    assert cond(r.status, "Healthy").status == "Unknown"

    assert weights(r.tick(90, obs(HEALTHY)).actions) == [(50, 50)]


CANARY_SHORT = [
    FEW,
    SloObservation(0.01, None, 900, 900),
    SloObservation(0.01, math.inf, 900, 900),
    SloObservation(0.01, 0.01, 900, None),
    DOWN,
]
CANARY_SHORT_IDS = ["few-canary", "no-value", "inf", "samples-unknown", "down"]
BASELINE_SHORT = [
    SloObservation(0.01, 0.01, 12, 900),
    SloObservation(math.nan, 0.01, 900, 900),
    SloObservation(0.01, 0.01, None, 900),
]
BASELINE_SHORT_IDS = ["few-baseline", "nan-baseline", "baseline-samples-unknown"]


@pytest.mark.parametrize(
    "observation",
    CANARY_SHORT + BASELINE_SHORT,
    ids=CANARY_SHORT_IDS + BASELINE_SHORT_IDS,
)
def test_no_step_on_inconclusive_or_unavailable_data(observation: SloObservation) -> None:
    r = Rollout()
    r.started()
    r.tick(60)
    assert r.status.canary_weight == 50
    for t in (180, 210, 240):  # hold over, but no evidence on one side
        result = r.tick(t, obs(observation))
        assert weights(result.actions) == []
        assert r.status.slos[0].verdict in ("inconclusive", "unavailable")
    assert weights(r.tick(270, obs(HEALTHY)).actions) == [(0, 100)]


@pytest.mark.parametrize("observation", CANARY_SHORT, ids=CANARY_SHORT_IDS)
def test_no_promotion_without_canary_evidence(observation: SloObservation) -> None:
    r = Rollout()
    r.started()
    r.tick(60)
    r.tick(180)
    assert r.status.canary_weight == 100
    for t in (300, 330, 360):
        result = r.tick(t, obs(observation))
        assert weights(result.actions) == []
        assert ("Normal", "Promoted") not in events(result.actions)
        assert r.status.phase == "Progressing"
    assert events(r.tick(390, obs(HEALTHY)).actions)[-1] == ("Normal", "Promoted")


def test_every_slo_must_be_healthy_to_advance() -> None:
    data = spec_dict()
    data["analysis"]["slos"].append(
        {"name": "p99", "latency": {"quantile": 0.99}, "margin": {"relative": 0.2}}
    )
    r = Rollout(make_spec(data))
    r.started()
    slow_but_unsure = SloObservation(100, 100, 900, 3)
    assert r.tick(60, obs(HEALTHY, p99=slow_but_unsure)).actions == ()
    assert weights(r.tick(90, obs(HEALTHY, p99=SloObservation(100, 110, 900, 900))).actions) == [
        (50, 50)
    ]


def test_a_missing_observation_counts_as_unavailable() -> None:
    r = Rollout()
    r.started()
    result = r.tick(30, Observations({}))
    assert r.status.slos[0].verdict == "unavailable"
    assert r.status.metrics_outage_since == at(30)
    assert events(result.actions) == [("Warning", "MetricsOutage")]


def test_outage_holds_weights_then_rolls_back_after_max_metrics_outage() -> None:
    r = Rollout()
    r.started()
    start = r.tick(30, obs(DOWN))
    assert events(start.actions) == [("Warning", "MetricsOutage")]
    assert r.status.metrics_outage_since == at(30)
    assert cond(r.status, "MetricsAvailable").status == "False"
    assert r.tick(60, obs(DOWN)).actions == ()  # hold is over, but weights never move forward
    assert r.status.canary_weight == 10
    assert r.tick(119.999, obs(DOWN)).actions == ()

    result = r.tick(120, obs(DOWN))  # 90s of outage

    assert weights(result.actions) == [(100, 0)]
    assert len(pages(result.actions)) == 1
    assert events(result.actions) == [("Warning", "RolledBack")]
    rollback = r.status.rollback
    assert rollback is not None
    assert (rollback.reason, rollback.slo, rollback.window, rollback.breaching_since) == (
        "MetricsOutage",
        "errors",
        "1m30s",
        at(30),
    )
    assert "connection refused" in rollback.message


def test_a_short_outage_clears_its_start_when_metrics_return() -> None:
    r = Rollout()
    r.started()
    r.tick(30, obs(DOWN))
    back = r.tick(60, obs(HEALTHY))
    assert r.status.metrics_outage_since is None
    assert ("Normal", "MetricsRecovered") in events(back.actions)
    assert weights(back.actions) == [(50, 50)]  # hold over and healthy: progress resumes
    r.tick(90, obs(DOWN))
    assert r.status.metrics_outage_since == at(90)  # a new outage counts from its own start
    assert r.tick(179.999, obs(DOWN)).actions == ()
    assert r.status.phase == "Progressing"


def test_outage_then_pause_and_auto_resume() -> None:
    r = Rollout(make_spec(spec_dict(onMetricsOutage="pause")))
    r.started()
    r.tick(30, obs(DOWN))
    r.tick(60, obs(DOWN))

    paused = r.tick(120, obs(DOWN))
    assert events(paused.actions) == [("Warning", "Paused")]
    assert weights(paused.actions) == []
    assert (r.status.phase, r.status.paused_reason) == ("Paused", "MetricsOutage")
    assert r.status.rollback is None
    assert r.tick(150, obs(DOWN)).actions == ()

    back = r.tick(180, obs(HEALTHY))
    assert events(back.actions) == [
        ("Normal", "MetricsRecovered"),
        ("Normal", "Resumed"),
        ("Normal", "StepAdvanced"),  # the hold (from 0s) ran on during the pause
    ]
    assert (r.status.phase, r.status.paused_reason) == ("Progressing", None)
    assert r.status.metrics_outage_since is None
    assert r.status.canary_weight == 50


def test_available_slos_are_still_judged_during_an_outage() -> None:
    data = spec_dict()
    data["analysis"]["slos"].append(
        {"name": "p99", "latency": {"quantile": 0.99}, "margin": {"relative": 0.2}}
    )
    r = Rollout(make_spec(data))
    r.started()
    r.tick(30, obs(BREACH, p99=DOWN))
    result = r.tick(90, obs(BREACH, p99=DOWN))  # 60s of errors breach, 60s of outage
    assert weights(result.actions) == [(100, 0)]
    assert r.status.rollback is not None and r.status.rollback.reason == "SLOBreach"


def test_paused_rollout_does_not_progress_but_still_rolls_back() -> None:
    r = Rollout()
    r.started()
    r.spec = make_spec({**spec_dict(), "paused": True})

    paused = r.tick(30)
    assert events(paused.actions) == [("Normal", "Paused")]
    assert (r.status.phase, r.status.paused_reason) == ("Paused", "Spec")
    assert r.tick(60).actions == ()  # hold over, all healthy, but paused
    assert r.status.canary_weight == 10

    r.tick(90, obs(BREACH))
    result = r.tick(150, obs(BREACH))
    assert weights(result.actions) == [(100, 0)]
    assert len(pages(result.actions)) == 1
    assert r.status.phase == "RolledBack"
    assert r.status.paused_reason is None


def test_unpausing_continues_with_the_hold_counted_from_the_step_start() -> None:
    r = Rollout()
    r.started()
    r.spec = make_spec({**spec_dict(), "paused": True})
    r.tick(30)
    r.spec = make_spec()
    result = r.tick(90)
    assert events(result.actions) == [("Normal", "Resumed"), ("Normal", "StepAdvanced")]
    assert r.status.canary_weight == 50


def test_paused_before_the_first_step_moves_no_traffic() -> None:
    r = Rollout(make_spec({**spec_dict(), "paused": True}))
    first = r.started()
    assert weights(first.actions) == []
    assert (r.status.phase, r.status.canary_weight) == ("Paused", None)
    assert r.tick(30).actions == ()
    r.spec = make_spec()
    assert weights(r.tick(60).actions) == [(90, 10)]
    assert r.status.step_started_at == at(60)


def test_lower_is_worse_business_slo_rolls_back_when_the_canary_flags_less_fraud() -> None:
    data = spec_dict()
    data["analysis"]["slos"] = [
        {
            "name": "fraud-flag-rate",
            "query": {"template": 'sum(rate(flagged{version="{{ version }}"}[{{ lookback }}]))'},
            "direction": "LowerIsWorse",
            "margin": {"absolute": 0.02},
            "window": "30s",
        }
    ]
    r = Rollout(make_spec(data))
    r.started()
    more_flags = SloObservation(0.05, 0.09, 900, 900)
    fewer_flags = SloObservation(0.05, 0.02, 900, 900)
    assert r.tick(30, Observations({"fraud-flag-rate": more_flags})).actions == ()
    assert r.status.slos[0].verdict == "healthy"
    r.tick(60, Observations({"fraud-flag-rate": fewer_flags}))
    assert r.status.slos[0].verdict == "breach"
    result = r.tick(90, Observations({"fraud-flag-rate": fewer_flags}))
    assert weights(result.actions) == [(100, 0)]


def test_a_new_revision_restarts_the_schedule_and_clears_the_rollback() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    r.tick(120, obs(BREACH))
    assert r.status.phase == "RolledBack"

    data = spec_dict()
    data["revision"] = "build-2"
    r.spec = make_spec(data)
    result = r.tick(150, obs(BREACH))

    assert events(result.actions) == [("Normal", "RevisionChanged"), ("Normal", "Started")]
    assert weights(result.actions) == [(90, 10)]
    assert pages(result.actions) == []
    s = r.status
    assert (s.phase, s.revision, s.step_index, s.step_started_at) == (
        "Progressing",
        "build-2",
        0,
        at(150),
    )
    assert (s.rollback, s.page, s.slos, s.metrics_outage_since) == (None, None, (), None)
    assert s.condition("Paged") is None
    assert [h.action for h in s.history][-3:] == ["RolledBack", "RevisionChanged", "Started"]


def test_a_new_revision_mid_rollout_sends_the_canary_back_to_step_zero() -> None:
    r = Rollout()
    r.started()
    r.tick(60)
    assert r.status.canary_weight == 50
    data = spec_dict()
    data["metrics"]["canaryVersion"] = "v3"  # derived revision changes
    r.spec = make_spec(data)
    assert weights(r.tick(90).actions) == [(90, 10)]
    assert r.status.revision == "scorer/v2@v3"


def test_page_is_emitted_again_while_pending_and_never_after_delivered() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    first = pages(r.tick(120, obs(BREACH)).actions)
    assert len(first) == 1

    again = r.tick(150)  # e.g. after an operator restart, nothing was delivered
    assert again.actions == tuple(first)  # the very same page, nothing else

    r.status = engine.record_page_result(r.status, False, False, "HTTP 503", at(151))
    assert r.status.page is not None
    assert (r.status.page.state, r.status.page.attempts, r.status.page.last_error) == (
        "Pending",
        1,
        "HTTP 503",
    )
    assert pages(r.tick(180).actions) == first

    r.status = engine.record_page_result(r.status, True, False, None, at(181))
    assert r.status.page is not None
    assert (r.status.page.state, r.status.page.attempts) == ("Delivered", 2)
    assert r.status.page.delivered_at == at(181)
    assert r.status.page.last_error is None
    assert cond(r.status, "Paged").status == "True"
    assert r.tick(210).actions == ()


def test_page_is_not_emitted_again_after_a_permanent_failure() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    r.tick(120, obs(BREACH))
    r.status = engine.record_page_result(r.status, False, True, "HTTP 400 invalid key", at(121))
    assert r.status.page is not None and r.status.page.state == "Failed"
    assert cond(r.status, "Paged").reason == "Failed"
    assert r.tick(150).actions == ()
    # a late result for a page that is no longer pending changes nothing
    assert engine.record_page_result(r.status, True, False, None, at(160)) == r.status


def test_page_summary_and_details_explain_the_rollback() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    (page,) = pages(r.tick(120, obs(BREACH)).actions)
    assert page.severity == "critical"
    assert page.summary == (
        "canaryguard rolled back ml/scorer revision scorer/v2@v2: SLO errors canary 0.05 vs "
        "baseline 0.01, beyond absolute 0.01 for 1m (since 2024-06-01T12:01:00Z)"
    )
    assert page.details["slo"] == "errors"
    assert page.details["slos"][0]["verdict"] == "breach"
    assert "breached for 1m" in page.details["explanation"]


def test_rollback_without_paging_configured_sends_no_page() -> None:
    data = spec_dict()
    del data["paging"]
    r = Rollout(make_spec(data))
    r.started()
    r.tick(60, obs(BREACH))
    result = r.tick(120, obs(BREACH))
    assert weights(result.actions) == [(100, 0)]
    assert pages(result.actions) == []
    assert r.status.page is None


@pytest.mark.parametrize(
    "setup",
    ["holding", "waiting", "breaching", "paused", "outage", "promoted", "rolled-back-delivered"],
)
def test_a_tick_that_changes_nothing_returns_the_same_status_and_no_actions(setup: str) -> None:
    r = Rollout()
    r.started()
    observation = {"waiting": FEW, "breaching": BREACH, "outage": DOWN}.get(setup, HEALTHY)
    if setup == "paused":
        r.spec = make_spec({**spec_dict(), "paused": True})
    if setup == "promoted":
        for t in (60, 180, 300):
            r.tick(t)
    if setup == "rolled-back-delivered":
        r.tick(60, obs(BREACH))
        r.tick(120, obs(BREACH))
        r.status = engine.record_page_result(r.status, True, False, None, at(121))
    t = 10 if setup == "holding" else 400
    r.tick(t, obs(observation))
    before = r.status.to_dict()

    result = r.tick(t + 1, obs(observation))

    assert result.actions == ()
    assert result.status.to_dict() == before


def test_condition_transition_time_moves_only_when_its_status_flips() -> None:
    r = Rollout()
    r.started()
    r.tick(30, obs(FEW))
    r.tick(40, obs(SloObservation(0.01, 0.01, 900, 20)))  # still inconclusive, new message
    healthy = r.status.condition("Healthy")
    assert healthy is not None
    assert (healthy.status, healthy.last_transition_time) == ("Unknown", at(30))
    assert "20 requests" in healthy.message
    r.tick(50)
    assert cond(r.status, "Healthy").last_transition_time == at(50)


def test_history_keeps_the_last_twenty_decisions() -> None:
    r = Rollout()
    r.started()
    for n in range(15):  # 30 decisions: each pause and each resume
        r.spec = make_spec({**spec_dict(), "paused": True})
        r.tick(1 + 2 * n, obs(FEW))
        r.spec = make_spec()
        r.tick(2 + 2 * n, obs(FEW))
    assert len(r.status.history) == 20
    assert r.status.history[-1].action == "Resumed"
    assert r.status.history[-1].at == at(30)


def test_an_invalid_spec_holds_the_rollout_and_a_valid_one_resumes_it() -> None:
    r = Rollout()
    r.started()
    result = engine.invalid(r.status, "spec.steps[1].weight: must be between 1 and 100", at(30))
    assert events(result.actions) == [("Warning", "InvalidSpec")]
    assert weights(result.actions) == []
    s = result.status
    assert (s.phase, s.canary_weight) == ("Invalid", 10)
    assert cond(s, "SpecValid").status == "False"
    again = engine.invalid(s, "spec.steps[1].weight: must be between 1 and 100", at(60))
    assert again.actions == ()
    assert again.status.to_dict() == s.to_dict()

    r.status = s
    resumed = r.tick(90)
    assert events(resumed.actions) == [("Normal", "Resumed"), ("Normal", "StepAdvanced")]
    assert cond(r.status, "SpecValid").status == "True"


def test_an_invalid_spec_keeps_a_finished_phase() -> None:
    r = Rollout()
    r.started()
    for t in (60, 180, 300):
        r.tick(t)
    result = engine.invalid(r.status, "spec.paused: must be true or false", at(330))
    assert result.status.phase == "Promoted"
    assert cond(result.status, "SpecValid").status == "False"


def test_steps_removed_under_a_running_rollout_continue_from_the_last_one() -> None:
    r = Rollout()
    r.started()
    r.tick(60)
    r.tick(180)
    assert (r.status.step_index, r.status.canary_weight) == (2, 100)
    data = spec_dict()
    data["steps"] = [{"weight": 20, "hold": "30s"}, {"weight": 100, "hold": "30s"}]
    r.spec = make_spec(data)
    assert r.tick(190).actions == ()
    assert r.status.step_index == 1
    assert events(r.tick(210).actions) == [("Normal", "Promoted")]


def test_a_changed_weight_for_the_current_step_applies_after_its_hold() -> None:
    r = Rollout()
    r.started()
    data = spec_dict()
    data["steps"][0]["weight"] = 5
    r.spec = make_spec(data)
    assert r.tick(30).actions == ()
    result = r.tick(60)
    assert weights(result.actions) == [(95, 5)]
    assert r.status.step_started_at == at(60)


def test_dedup_key_is_stable_and_bounded() -> None:
    spec = make_spec()
    assert engine.dedup_key(spec, "r1") == engine.dedup_key(spec, "r1")
    assert engine.dedup_key(spec, "r1") != engine.dedup_key(spec, "r2")
    long_key = engine.dedup_key(spec, "x" * 300)
    assert len(long_key) <= 255
    assert long_key.startswith("canaryguard/")


def test_a_long_dedup_key_reaches_pagerduty_as_the_status_records_it() -> None:
    spec = make_spec()
    long_key = engine.dedup_key(spec, "x" * 300)

    # The adapter fits keys the same way, so it sends the key the status holds, unchanged.
    assert safe_dedup_key(long_key) == long_key
    assert long_key.startswith(f"canaryguard/{spec.namespace}/{spec.name}/x")
    assert engine.dedup_key(spec, "x" * 300 + "y") != long_key


def test_page_attempts_count_every_call_of_every_delivery() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    r.tick(120, obs(BREACH))
    r.status = engine.record_page_result(r.status, False, False, "HTTP 503", at(141), attempts=6)
    r.status = engine.record_page_result(r.status, True, False, None, at(151), attempts=3)
    assert r.status.page is not None
    assert (r.status.page.state, r.status.page.attempts) == ("Delivered", 9)
