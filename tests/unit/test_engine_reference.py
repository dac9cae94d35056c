"""Tick-by-tick scenarios of the baseline reference: at 100% the baseline gets no traffic, so
once its lookback empties the canary is judged against the baseline's last good value.

Base rollout (tests/unit/scenario.py): steps 10% for 60s, 50% for 120s, 100% (hold varies);
SLO `errors` (error rate, absolute margin 0.01, window 60s, lookback 1m); minRequests 50.
"""

from __future__ import annotations

import json
from typing import Any

from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.status import SloStatus, status_from_dict
from tests.unit.scenario import (
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

# What a tick at 100% sees once the lookback holds no baseline traffic.
IDLE = SloObservation(baseline=None, canary=0.012, baseline_samples=0, canary_samples=100)
IDLE_BREACH = SloObservation(None, 0.05, 0, 100)
IDLE_FEW = SloObservation(None, 0.012, 0, 12)
# The first tick at 100%: the lookback still holds some of the baseline's traffic.
RESIDUAL = SloObservation(0.0105, 0.012, 400, 600)


def long_last_step(hold: str = "10m", **slo: Any) -> dict[str, Any]:
    data = spec_dict()
    data["steps"][2]["hold"] = hold
    data["analysis"]["slos"][0].update(slo)
    return data


def only_step_100(**slo: Any) -> dict[str, Any]:
    data = spec_dict()
    data["steps"] = [{"weight": 100, "hold": "120s"}]
    data["analysis"]["slos"][0] = {"name": "errors", "errorRate": {}, "window": "60s", **slo}
    return data


def walk_to_100(r: Rollout) -> None:
    """Start, 10% -> 50% at 60s, 50% -> 100% at 180s; all healthy with baseline evidence."""
    r.started()
    for t in (30, 60, 90, 120, 150):
        r.tick(t)
    assert weights(r.tick(180).actions) == [(0, 100)]


def errors(r: Rollout) -> SloStatus:
    return r.status.slos[0]


def test_a_last_step_held_longer_than_the_lookback_promotes_on_time() -> None:
    r = Rollout(make_spec(long_last_step("10m")))
    walk_to_100(r)
    # taken at 30s (the first judged tick), not moved by later ticks with the same values
    assert (errors(r).baseline_reference, errors(r).baseline_reference_samples) == (0.01, 900)
    assert errors(r).baseline_reference_at == at(30)

    assert r.tick(210, obs(RESIDUAL)).actions == ()  # the baseline still qualifies: new reference
    assert (errors(r).baseline_reference, errors(r).baseline_reference_at) == (0.0105, at(210))

    r.tick(240, obs(IDLE))
    state = errors(r)
    assert (state.verdict, state.baseline, state.baseline_samples) == ("healthy", None, 0)
    assert state.reason == (
        "canary 0.012 vs baseline reference 0.0105 (from 2024-06-01T12:03:30Z): worse by "
        "0.0015 (+14.3%), within tolerance"
    )
    assert (state.baseline_reference, state.baseline_reference_at) == (0.0105, at(210))
    healthy = cond(r.status, "Healthy")
    assert healthy.status == "True"
    assert "baseline idle (no traffic at 100%)" in healthy.message
    assert "vs baseline reference 0.0105" in healthy.message

    stable = r.status.to_dict()
    for t in range(270, 780, 30):  # 9 minutes with an empty baseline lookback
        assert r.tick(t, obs(IDLE)).actions == ()
        assert r.status.to_dict() == stable  # an unchanged world writes nothing
        assert r.status.phase == "Progressing"

    done = r.tick(780, obs(IDLE))  # 10m after 100% was applied
    assert events(done.actions) == [("Normal", "Promoted")]
    assert weights(done.actions) == []
    assert r.status.phase == "Promoted"
    (promoted,) = [h for h in r.status.history if h.action == "Promoted"]
    assert "vs baseline reference 0.0105 (from 2024-06-01T12:03:30Z)" in promoted.message


def test_a_regression_at_100_against_the_reference_rolls_back_after_the_window() -> None:
    r = Rollout(make_spec(long_last_step("10m")))
    walk_to_100(r)
    r.tick(240, obs(IDLE))
    assert r.tick(270, obs(IDLE_BREACH)).actions == ()
    state = errors(r)
    assert (state.verdict, state.breaching_since) == ("breach", at(270))
    assert state.reason == (
        "canary 0.05 vs baseline reference 0.01 (from 2024-06-01T12:00:30Z): worse by 0.04 "
        "(+400%), more than absolute 0.01"
    )
    assert cond(r.status, "Healthy").reason == "Breach"
    assert r.tick(300, obs(IDLE_FEW)).actions == ()  # inconclusive: the breach run goes on
    assert errors(r).breaching_since == at(270)
    assert r.tick(329.999, obs(IDLE_BREACH)).actions == ()

    result = r.tick(330, obs(IDLE_BREACH))

    assert weights(result.actions) == [(100, 0)]
    assert events(result.actions) == [("Warning", "RolledBack")]
    assert r.status.phase == "RolledBack"
    rollback = r.status.rollback
    assert rollback is not None
    assert (rollback.slo, rollback.baseline, rollback.canary) == ("errors", 0.01, 0.05)
    assert (rollback.baseline_reference_at, rollback.breaching_since) == (at(30), at(270))
    assert "vs baseline reference 0.01 (from 2024-06-01T12:00:30Z)" in rollback.message
    assert r.status.message == (
        "rolled back: errors canary 0.05 vs baseline reference 0.01 "
        "(from 2024-06-01T12:00:30Z) for 1m"
    )
    (page,) = pages(result.actions)
    assert page.summary == (
        "canaryguard rolled back ml/scorer revision scorer/v2@v2: SLO errors canary 0.05 vs "
        "baseline reference 0.01 (from 2024-06-01T12:00:30Z), beyond absolute 0.01 for 1m "
        "(since 2024-06-01T12:04:30Z)"
    )
    assert page.details["baselineReferenceAt"] == "2024-06-01T12:00:30Z"


def test_the_canary_still_needs_evidence_at_100() -> None:
    r = Rollout(make_spec(long_last_step("2m")))
    walk_to_100(r)
    for t in (300, 330):  # hold over
        assert r.tick(t, obs(IDLE_FEW)).actions == ()
        assert errors(r).verdict == "inconclusive"
    progressing = cond(r.status, "Progressing")
    assert progressing.reason == "WaitingForEvidence"
    assert "errors: canary has 12 requests, needs 50" in progressing.message
    assert events(r.tick(360, obs(IDLE)).actions) == [("Normal", "Promoted")]


def test_a_baseline_short_of_evidence_never_becomes_the_reference() -> None:
    r = Rollout()
    r.started()
    r.tick(30)
    taken = (errors(r).baseline_reference, errors(r).baseline_reference_at)
    assert taken == (0.01, at(30))
    for observation in (
        SloObservation(0.5, 0.01, 49, 900),  # too few requests
        SloObservation(None, 0.01, 900, 900),  # no value
        SloObservation(float("nan"), 0.01, 900, 900),
        SloObservation.failed("HTTP 503"),
    ):
        r.tick(45, obs(observation))
        assert (errors(r).baseline_reference, errors(r).baseline_reference_at) == taken
    r.tick(50, obs(SloObservation(0.02, 0.02, 50, 900)))  # exactly minRequests: taken
    assert (errors(r).baseline_reference, errors(r).baseline_reference_samples) == (0.02, 50)
    assert errors(r).baseline_reference_at == at(50)


def test_no_reference_and_a_limit_judges_by_the_limit_only() -> None:
    r = Rollout(make_spec(only_step_100(margin={"absolute": 0.001}, limit=0.05)))
    assert weights(r.started().actions) == [(0, 100)]
    r.tick(30, obs(IDLE))
    state = errors(r)
    assert (state.verdict, state.baseline_reference) == ("healthy", None)
    assert state.reason == (
        "canary 0.012 (no baseline reference; judged by limit only): within the limit 0.05"
    )

    r.tick(60, obs(SloObservation(None, 0.06, 0, 100)))
    assert errors(r).verdict == "breach"
    assert errors(r).reason.endswith(
        "(no baseline reference; judged by limit only): above the limit 0.05"
    )
    result = r.tick(120, obs(SloObservation(None, 0.06, 0, 100)))
    assert weights(result.actions) == [(100, 0)]
    rollback = r.status.rollback
    assert rollback is not None
    assert (rollback.baseline, rollback.canary, rollback.baseline_reference_at) == (
        None,
        0.06,
        None,
    )
    assert r.status.message == (
        "rolled back: errors canary 0.06 (no baseline reference; judged by limit only) for 1m"
    )


def test_no_reference_and_a_limit_promotes_within_the_limit() -> None:
    r = Rollout(make_spec(only_step_100(limit=0.05)))
    r.started()
    for t in (30, 60, 90):
        assert r.tick(t, obs(IDLE)).actions == ()
    assert events(r.tick(120, obs(IDLE)).actions) == [("Normal", "Promoted")]


def test_no_reference_and_no_limit_is_healthy_on_canary_evidence_and_says_so() -> None:
    r = Rollout(make_spec(only_step_100(margin={"absolute": 0.001})))
    r.started()
    r.tick(30, obs(SloObservation(None, 0.3, 0, 100)))
    state = errors(r)
    assert state.verdict == "healthy"
    assert state.reason == (
        "canary 0.3 (no baseline reference and no limit): healthy on the canary's evidence alone"
    )
    assert "no baseline reference and no limit" in cond(r.status, "Healthy").message
    assert r.tick(60, obs(IDLE_FEW)).actions == ()  # evidence is still required
    assert errors(r).verdict == "inconclusive"
    done = r.tick(120, obs(IDLE))
    assert events(done.actions) == [("Normal", "Promoted")]


def test_references_survive_the_status_round_trip() -> None:
    r = Rollout(make_spec(long_last_step("10m")))
    walk_to_100(r)
    r.tick(210, obs(RESIDUAL))
    stored = json.loads(json.dumps(r.status.to_dict()))
    item = stored["slos"][0]
    assert (item["baselineReference"], item["baselineReferenceSamples"]) == (0.0105, 400)
    assert item["baselineReferenceAt"] == "2024-06-01T12:03:30Z"
    r.status = status_from_dict(stored)  # e.g. an operator restart
    r.tick(240, obs(IDLE))
    assert errors(r).verdict == "healthy"
    assert "vs baseline reference 0.0105" in errors(r).reason


def test_a_new_revision_clears_the_references() -> None:
    data = only_step_100()
    data["analysis"]["slos"][0]["margin"] = {"absolute": 0.001}
    r = Rollout(make_spec(data))
    r.started()
    r.tick(30, obs(RESIDUAL))  # the lookback still holds the baseline's traffic
    assert errors(r).baseline_reference == 0.0105
    data["revision"] = "build-2"
    r.spec = make_spec(data)
    restarted = r.tick(60, obs(RESIDUAL))
    assert events(restarted.actions) == [("Normal", "RevisionChanged"), ("Normal", "Started")]
    assert r.status.slos == ()
    r.tick(90, obs(SloObservation(None, 0.3, 0, 100)))
    assert errors(r).baseline_reference is None
    assert "no baseline reference and no limit" in errors(r).reason


def test_each_slo_keeps_its_own_reference() -> None:
    data = long_last_step("2m")
    data["analysis"]["slos"].append(
        {"name": "p99", "latency": {"quantile": 0.99}, "margin": {"relative": 0.2}}
    )
    r = Rollout(make_spec(data))
    r.started()
    r.tick(30, obs(HEALTHY, p99=SloObservation(100, 105, 900, 100)))
    r.tick(60, obs(HEALTHY, p99=SloObservation(100, 105, 900, 100)))
    r.tick(90, obs(HEALTHY, p99=SloObservation(300, 105, 10, 100)))  # p99's baseline too thin
    r.tick(180, obs(HEALTHY, p99=SloObservation(110, 115, 900, 100)))
    assert r.status.canary_weight == 100
    r.tick(210, Observations({"errors": IDLE, "p99": SloObservation(None, 140, 0, 100)}))
    by_name = {slo.name: slo for slo in r.status.slos}
    references = {
        name: (slo.baseline_reference, slo.baseline_reference_at) for name, slo in by_name.items()
    }
    assert references == {"errors": (0.01, at(30)), "p99": (110, at(180))}
    assert by_name["p99"].verdict == "breach"  # 140 vs 110 is +27%, more than 20%
    assert by_name["errors"].verdict == "healthy"
