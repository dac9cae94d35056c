"""Fail-safe traffic (DESIGN.md rule 8), tick by tick: the canary's share rises only by a
judged step or a manual promote; a share raised outside is set back, one lowered outside is
respected and reported; and no traffic goes to a canary whose metrics cannot be read. Also
failures made visible: page retries that back off across ticks, failed ticks said once."""

from __future__ import annotations

from dataclasses import replace

from canaryguard.core import engine
from canaryguard.core.observations import Observations
from tests.unit.scenario import (
    BREACH,
    DOWN,
    FEW,
    HEALTHY,
    Rollout,
    at,
    cond,
    events,
    obs,
    pages,
    weights,
)


def routed(share: float, observations: Observations | None = None) -> Observations:
    """This tick's observations, with the canary's share the router has now."""
    return replace(observations or obs(HEALTHY), routed_canary=share)


def test_a_rollout_whose_metrics_cannot_be_read_does_not_start() -> None:
    r = Rollout()
    first = r.tick(0, routed(0, obs(DOWN)))
    assert weights(first.actions) == []
    assert events(first.actions) == [("Warning", "MetricsOutage")]
    assert r.status.phase == "Pending"
    assert r.status.canary_weight is None
    assert cond(r.status, "Progressing").reason == "WaitingForMetrics"
    assert cond(r.status, "MetricsAvailable").status == "False"
    # Still down: nothing new is said, nothing moves.
    assert r.tick(30, routed(0, obs(DOWN))).actions == ()
    # Answered: the first step applies, and the outage is over.
    started = r.tick(60, routed(0))
    assert weights(started.actions) == [(90, 10)]
    assert ("Normal", "Started") in events(started.actions)
    assert r.status.metrics_outage_since is None
    assert r.status.step_started_at is not None and r.status.phase == "Progressing"


def test_a_missing_slo_answer_also_keeps_the_canary_at_zero() -> None:
    r = Rollout()
    assert weights(r.tick(0, routed(0, Observations())).actions) == []
    assert r.status.phase == "Pending"


def test_a_share_raised_outside_is_set_back_down() -> None:
    r = Rollout()
    r.started()
    result = r.tick(30, routed(30))
    assert weights(result.actions) == [(90, 10)]
    assert events(result.actions) == [("Warning", "WeightsReasserted")]
    assert cond(r.status, "Traffic").reason == "Reasserted"
    # Back as decided: the condition says so, no action.
    assert r.tick(45, routed(10)).actions == ()
    assert cond(r.status, "Traffic").reason == "AsDecided"


def test_a_share_lowered_outside_is_respected_and_holds_the_rollout() -> None:
    r = Rollout()
    r.started()  # step 1: 10% held 60 s
    lowered = r.tick(60, routed(0))  # hold over, all healthy: would advance to 50%
    assert weights(lowered.actions) == []
    assert events(lowered.actions) == [("Warning", "WeightsLowered")]
    assert cond(r.status, "Traffic").status == "False"
    assert cond(r.status, "Progressing").reason == "WeightsLowered"
    assert r.status.canary_weight == 10
    assert r.tick(90, routed(0)).actions == ()  # reported once
    # Restored by the person: the schedule goes on from where it was.
    assert weights(r.tick(120, routed(10)).actions) == [(50, 50)]


def test_a_sustained_breach_still_rolls_back_a_held_rollout() -> None:
    r = Rollout()
    r.started()
    r.tick(30, routed(5, obs(BREACH)))
    result = r.tick(90, routed(5, obs(BREACH)))
    assert weights(result.actions) == [(100, 0)]
    assert r.status.phase == "RolledBack"


def test_the_stored_weight_is_not_reasserted_after_a_lost_rollback_write() -> None:
    """The rollback's 100/0 reached the router, its status did not: the status still says
    50%, the router 0%. Inconclusive or healthy ticks neither re-assert nor advance."""
    r = Rollout()
    r.started()
    r.tick(60, routed(10))  # -> 50%
    for second, seen in ((90, FEW), (120, HEALTHY), (300, HEALTHY)):
        assert weights(r.tick(second, routed(0, obs(seen))).actions) == []
    assert r.status.canary_weight == 50


def test_a_promoted_canary_lowered_by_hand_is_left_alone() -> None:
    r = Rollout()
    r.started()
    r.tick(60, routed(10))  # 50%
    r.tick(180, routed(50))  # 100%
    r.tick(300, routed(100))  # promoted
    assert r.status.phase == "Promoted"
    result = r.tick(330, routed(80))
    assert weights(result.actions) == []
    assert events(result.actions) == [("Warning", "WeightsLowered")]
    assert r.tick(360, routed(80)).actions == ()


def test_a_rolled_back_canary_given_traffic_by_hand_is_set_back_to_zero() -> None:
    r = Rollout()
    r.started()
    r.tick(30, routed(10, obs(BREACH)))
    r.tick(90, routed(10, obs(BREACH)))
    assert r.status.phase == "RolledBack"
    result = r.tick(120, routed(25))
    assert weights(result.actions) == [(100, 0)]
    assert events(result.actions) == [("Warning", "WeightsReasserted")]


def test_page_retries_back_off_across_ticks_to_a_cap() -> None:
    assert [engine.page_retry_delay(n).total_seconds() for n in (1, 2, 3, 4, 6, 7, 50)] == [
        5,
        10,
        20,
        40,
        160,
        300,
        300,
    ]


def test_an_undelivered_page_is_sent_again_only_when_its_retry_is_due() -> None:
    r = Rollout()
    r.started()
    r.tick(30, obs(BREACH))
    assert len(pages(r.tick(90, obs(BREACH)).actions)) == 1  # rolled back, paged
    r.status = engine.record_page_result(r.status, False, False, "HTTP 503", at(91))
    assert r.status.page is not None
    assert (r.status.page.failures, r.status.page.retry_at) == (1, at(96))
    assert pages(r.tick(95).actions) == []
    assert len(pages(r.tick(96).actions)) == 1
    r.status = engine.record_page_result(r.status, False, False, "timeout", at(100))
    assert r.status.page is not None and r.status.page.retry_at == at(110)
    assert pages(r.tick(105).actions) == []
    assert len(pages(r.tick(111).actions)) == 1
    r.status = engine.record_page_result(r.status, True, False, None, at(112))
    assert r.status.page is not None and r.status.page.state == "Delivered"
    assert pages(r.tick(400).actions) == []


def test_a_failed_tick_is_said_once_and_its_recovery_once() -> None:
    r = Rollout()
    r.started()
    first = engine.tick_failed(r.status, "api_503", "ApiException: HTTP 503", at(30))
    assert events(first.actions) == [("Warning", "TickFailed")]
    again = engine.tick_failed(first.status, "api_503", "ApiException: HTTP 503", at(60))
    assert again.actions == ()
    r.status = again.status
    recovered = r.tick(90)
    assert ("Normal", "TickRecovered") in events(recovered.actions)
    assert cond(r.status, "TickSucceeded").status == "True"
    assert ("Normal", "TickRecovered") not in events(r.tick(120).actions)


def test_a_breach_whose_rollback_status_was_lost_is_recorded_once_the_canary_is_pulled() -> None:
    """The rollback's 100/0 was written, then the operator died before the status: the
    stored status says 50% with a breach running since 90 s. A new operator starts after the
    lookback: the canary (at 0%) has no evidence, the SLO is inconclusive. The breach never
    cleared and had run its window, so the rollback is recorded and paged now, with the
    values last judged."""
    r = Rollout()
    r.started()
    r.tick(60, routed(10))  # -> 50%
    r.tick(90, routed(50, obs(BREACH)))  # breaching since 90 s (window 60 s)
    r.tick(120, routed(50, obs(BREACH)))
    result = r.tick(300, routed(0, obs(FEW)))  # after the crash, much later
    assert r.status.phase == "RolledBack"
    assert r.status.rollback is not None
    assert r.status.rollback.reason == "SLOBreach"
    assert r.status.rollback.breaching_since == at(90)
    assert r.status.rollback.canary == BREACH.canary
    assert len(pages(result.actions)) == 1
    assert ("Warning", "RolledBack") in events(result.actions)


def test_a_canary_pulled_by_hand_before_its_window_is_not_rolled_back() -> None:
    r = Rollout()
    r.started()
    r.tick(60, routed(10))
    r.tick(90, routed(50, obs(BREACH)))  # breaching since 90 s, window 60 s
    result = r.tick(120, routed(0, obs(FEW)))  # pulled by hand 30 s in
    assert r.status.phase == "Progressing"
    assert pages(result.actions) == []
    assert events(result.actions) == [("Warning", "WeightsLowered")]
