"""Tick-by-tick scenarios of the shadow phase, with a fixed clock.

Base rollout (tests/unit/scenario.py) plus `spec.shadow: {percent: 20, hold: 120s}`: before
step 1 (10% for 60s), 20% of the requests are mirrored to the canary for 120s while the
baseline serves everyone. One SLO `errors` (absolute margin 0.01, window 60s); minRequests
50; maxMetricsOutage 90s.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from canaryguard.core.actions import Action, SetWeights
from canaryguard.core.manual import REQUEST_ANNOTATION
from canaryguard.core.observations import Observations
from canaryguard.core.spec import SpecError, parse_spec
from canaryguard.core.status import Status
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
)


def shadow_spec(**shadow: Any) -> dict[str, Any]:
    data = spec_dict()
    data["shadow"] = {"percent": 20, "hold": "120s", **shadow}
    return data


def writes(actions: tuple[Action, ...]) -> list[tuple[int, int, int]]:
    """Every route write as (baseline, canary, mirror)."""
    return [(a.baseline, a.canary, a.mirror) for a in actions if isinstance(a, SetWeights)]


def test_healthy_shadow_mirrors_then_removes_the_mirror_and_starts_step_1() -> None:
    r = Rollout(make_spec(shadow_spec()))

    first = r.started()
    assert writes(first.actions) == [(100, 0, 20)]
    assert events(first.actions) == [("Normal", "ShadowStarted")]
    shadow = r.status.shadow
    assert shadow is not None
    assert (shadow.state, shadow.percent, shadow.started_at, shadow.ended_at) == (
        "Running",
        20,
        at(0),
        None,
    )
    assert (r.status.phase, r.status.step_index, r.status.canary_weight) == ("Progressing", None, 0)
    assert cond(r.status, "Progressing").reason == "Shadowing"
    assert r.status.message == (
        "shadow, 20% mirrored to the canary: holding until 2024-06-01T12:02:00Z"
    )

    assert r.tick(30).actions == ()
    assert r.status.slos[0].verdict == "healthy"
    assert r.tick(119.999).actions == ()  # hold 120s not over
    assert r.status.shadow is not None and r.status.shadow.running

    passed = r.tick(120)
    assert writes(passed.actions) == [(90, 10, 0)]  # one write: mirror gone, step 1 on
    assert events(passed.actions) == [("Normal", "ShadowPassed"), ("Normal", "StepAdvanced")]
    shadow = r.status.shadow
    assert shadow is not None
    assert (shadow.state, shadow.ended_at) == ("Passed", at(120))
    assert (r.status.step_index, r.status.canary_weight, r.status.step_started_at) == (
        0,
        10,
        at(120),
    )

    assert r.tick(179.999).actions == ()  # step 1 holds 60s from 120s
    assert writes(r.tick(180).actions) == [(50, 50, 0)]
    assert writes(r.tick(300).actions) == [(0, 100, 0)]
    assert events(r.tick(420).actions) == [("Normal", "Promoted")]
    assert [h.action for h in r.status.history] == [
        "ShadowStarted",
        "ShadowPassed",
        "StepAdvanced",
        "StepAdvanced",
        "StepAdvanced",
        "Promoted",
    ]


def test_shadow_hold_over_but_inconclusive_waits_for_evidence() -> None:
    r = Rollout(make_spec(shadow_spec()))
    r.started()
    assert r.tick(120, obs(FEW)).actions == ()
    assert r.status.slos[0].verdict == "inconclusive"
    assert cond(r.status, "Progressing").reason == "WaitingForEvidence"
    assert r.status.message.startswith(
        "shadow, 20% mirrored to the canary: waiting for evidence: errors:"
    )
    assert writes(r.tick(150).actions) == [(90, 10, 0)]
    assert r.status.shadow is not None and r.status.shadow.ended_at == at(150)


def test_sustained_breach_in_shadow_rolls_back_removes_the_mirror_and_pages() -> None:
    r = Rollout(make_spec(shadow_spec()))
    r.started()
    assert r.tick(30, obs(BREACH)).actions == ()
    assert r.status.slos[0].breaching_since == at(30)
    assert cond(r.status, "Progressing").reason == "Breaching"
    assert r.tick(89.999, obs(BREACH)).actions == ()

    result = r.tick(90, obs(BREACH))

    assert [type(a).__name__ for a in result.actions] == ["SetWeights", "Page", "EmitEvent"]
    assert writes(result.actions) == [(100, 0, 0)]
    assert events(result.actions) == [("Warning", "RolledBack")]
    assert r.status.phase == "RolledBack"
    shadow = r.status.shadow
    assert shadow is not None and (shadow.state, shadow.ended_at) == ("Failed", at(90))
    rollback = r.status.rollback
    assert rollback is not None
    assert (rollback.reason, rollback.slo, rollback.breaching_since) == (
        "SLOBreach",
        "errors",
        at(30),
    )
    assert rollback.message.startswith(
        "in shadow (mirror removed, no user was served by the canary): SLO errors breached "
        "for 1m (window 1m)"
    )
    [page] = pages(result.actions)
    assert "in shadow (no user served by the canary): SLO errors" in page.summary
    assert page.details["shadow"] is True
    assert page.details["stepIndex"] is None
    # Finished: the weights stay, only the undelivered page is asked for again.
    later = r.tick(120, obs(BREACH))
    assert (writes(later.actions), len(pages(later.actions))) == ([], 1)


def test_shadow_breach_set_to_event_rolls_back_without_paging() -> None:
    r = Rollout(make_spec(shadow_spec(onBreach="event")))
    r.started()
    r.tick(30, obs(BREACH))
    result = r.tick(90, obs(BREACH))
    assert writes(result.actions) == [(100, 0, 0)]
    assert pages(result.actions) == []
    assert events(result.actions) == [("Warning", "RolledBack")]
    assert (r.status.phase, r.status.page) == ("RolledBack", None)
    assert r.status.condition("Paged") is None


def test_on_breach_event_does_not_silence_breaches_after_the_shadow() -> None:
    r = Rollout(make_spec(shadow_spec(onBreach="event")))
    r.started()
    r.tick(120)  # shadow passed, step 1
    r.tick(130, obs(BREACH))
    result = r.tick(190, obs(BREACH))
    assert writes(result.actions) == [(100, 0, 0)]
    assert len(pages(result.actions)) == 1
    assert r.status.shadow is not None and r.status.shadow.state == "Passed"


def test_metrics_outage_never_passes_the_shadow_and_rolls_back_after_the_limit() -> None:
    r = Rollout(make_spec(shadow_spec()))
    r.started()
    assert events(r.tick(100, obs(DOWN)).actions) == [("Warning", "MetricsOutage")]
    assert r.tick(130, obs(DOWN)).actions == ()  # hold over, but no verdict: no pass
    assert r.status.shadow is not None and r.status.shadow.running
    assert cond(r.status, "Progressing").reason == "WaitingForMetrics"
    result = r.tick(190, obs(DOWN))  # 90s of outage
    assert writes(result.actions) == [(100, 0, 0)]
    assert len(pages(result.actions)) == 1
    assert r.status.rollback is not None and r.status.rollback.reason == "MetricsOutage"
    assert r.status.shadow is not None and r.status.shadow.state == "Failed"


def test_outcome_slos_are_skipped_in_shadow_and_judged_from_step_1() -> None:
    data = shadow_spec(skipSlos=["ctr"])
    data["analysis"]["slos"].append(
        {
            "name": "ctr",
            "query": {"template": 'sum(rate(clicks_total{version="{{ version }}"}[1m]))'},
            "direction": "LowerIsWorse",
            "margin": {"relative": 0.1},
            "window": "0s",
        }
    )
    r = Rollout(make_spec(data))
    first = r.started()
    [started] = [a for a in first.actions if getattr(a, "reason", "") == "ShadowStarted"]
    assert started.message.endswith("; not judged in shadow: ctr")  # type: ignore[union-attr]
    low_ctr = HEALTHY.__class__(baseline=0.3, canary=0.0, baseline_samples=900, canary_samples=100)
    assert r.tick(30, obs(HEALTHY, ctr=low_ctr)).actions == ()  # not a breach in shadow
    [errors, ctr] = r.status.slos
    assert (errors.verdict, ctr.verdict, ctr.breaching_since) == ("healthy", "skipped", None)
    assert ctr.reason.startswith("skipped in the shadow phase (spec.shadow.skipSlos)")
    assert cond(r.status, "Healthy").message == "all 1 SLOs healthy (ctr skipped in shadow)"

    passed = r.tick(120, obs(HEALTHY, ctr=low_ctr))
    assert writes(passed.actions) == [(90, 10, 0)]
    assert events(passed.actions)[0] == ("Normal", "ShadowPassed")
    # From step 1 on the click-through rate is judged: a window of 0s rolls back at once.
    result = r.tick(150, obs(HEALTHY, ctr=low_ctr))
    assert writes(result.actions) == [(100, 0, 0)]
    assert r.status.rollback is not None and r.status.rollback.slo == "ctr"
    assert not r.status.rollback.message.startswith("in shadow")


def test_mirror_removed_outside_is_set_again_while_shadowing() -> None:
    r = Rollout(make_spec(shadow_spec()))
    r.started()
    seen = Observations({"errors": HEALTHY}, routed_canary=0.0, routed_mirror=(0.0,))
    result = r.tick(30, seen)
    assert writes(result.actions) == [(100, 0, 20)]
    assert events(result.actions) == [("Warning", "MirrorReasserted")]
    as_decided = Observations({"errors": HEALTHY}, routed_canary=0.0, routed_mirror=(20.0,))
    assert r.tick(60, as_decided).actions == ()
    # Outside the shadow a mirror found is not touched by the guard.
    r.tick(120, as_decided)
    after = Observations({"errors": HEALTHY}, routed_canary=10.0, routed_mirror=(0.0,))
    assert r.tick(150, after).actions == ()


def test_restart_after_the_pass_write_whose_status_was_lost_rederives_the_decision() -> None:
    """The operator wrote weights 90/10 without mirror (shadow passed) and died before the
    status: the stored status still says shadowing at 0%. If the canary is still healthy the
    pass is decided again (the same write); if not, the canary's share is set back to 0 with
    the mirror, and the shadow goes on."""
    r = Rollout(make_spec(shadow_spec()))
    r.started()
    r.tick(60)
    stored = r.status
    lost_write = Observations({"errors": HEALTHY}, routed_canary=10.0, routed_mirror=(0.0,))
    again = r.tick(120, lost_write)
    assert writes(again.actions) == [(90, 10, 0)]
    assert r.status.step_index == 0

    r.status = stored
    lost_unsure = Observations({"errors": FEW}, routed_canary=10.0, routed_mirror=(0.0,))
    held = r.tick(120, lost_unsure)
    assert writes(held.actions) == [(100, 0, 20)]
    assert events(held.actions) == [("Warning", "WeightsReasserted")]
    assert r.status.shadow is not None and r.status.shadow.running


def test_restart_after_the_shadow_write_whose_status_was_lost_starts_the_shadow_again() -> None:
    r = Rollout(make_spec(shadow_spec()))
    first = r.started()
    r.status = Status()  # the status write was lost
    seen = Observations({"errors": HEALTHY}, routed_canary=0.0, routed_mirror=(20.0,))
    again = r.tick(5, seen)
    assert writes(again.actions) == writes(first.actions) == [(100, 0, 20)]
    assert r.status.shadow is not None and r.status.shadow.started_at == at(5)


def test_paused_shadow_does_not_pass_but_still_rolls_back() -> None:
    data = shadow_spec()
    r = Rollout(make_spec(data))
    r.started()
    data["paused"] = True
    r.spec = make_spec(data)
    assert events(r.tick(130).actions) == [("Normal", "Paused")]
    assert r.status.message == (
        "paused (spec.paused) in the shadow, 20% mirrored to the canary; users on the baseline"
    )
    r.tick(160, obs(BREACH))
    result = r.tick(220, obs(BREACH))
    assert writes(result.actions) == [(100, 0, 0)]
    assert r.status.phase == "RolledBack"


def test_unpaused_shadow_passes_when_healthy() -> None:
    data = shadow_spec(hold="60s")
    r = Rollout(make_spec(data))
    r.started()
    data["paused"] = True
    r.spec = make_spec(data)
    r.tick(90)
    data["paused"] = False
    r.spec = make_spec(data)
    result = r.tick(120)
    assert events(result.actions) == [
        ("Normal", "Resumed"),
        ("Normal", "ShadowPassed"),
        ("Normal", "StepAdvanced"),
    ]
    assert writes(result.actions) == [(90, 10, 0)]


def test_manual_promote_in_shadow_skips_it() -> None:
    data = shadow_spec()
    data = {
        "metadata": {"annotations": {REQUEST_ANNOTATION: '{"id": "r1", "action": "promote"}'}},
        "spec": data,
    }
    r = Rollout(make_spec(shadow_spec()))
    r.started()
    r.spec = parse_spec(data, namespace="ml", name="scorer")
    result = r.tick(30)
    assert writes(result.actions) == [(0, 100, 0)]
    assert r.status.phase == "Promoted"
    assert r.status.shadow is not None
    assert (r.status.shadow.state, r.status.shadow.ended_at) == ("Skipped", at(30))


def test_new_revision_in_shadow_starts_a_new_shadow() -> None:
    data = shadow_spec()
    r = Rollout(make_spec(data))
    r.started()
    data["revision"] = "build-2"
    r.spec = make_spec(data)
    result = r.tick(30)
    assert writes(result.actions) == [(100, 0, 20)]
    assert events(result.actions) == [("Normal", "RevisionChanged"), ("Normal", "ShadowStarted")]
    assert r.status.shadow is not None and r.status.shadow.started_at == at(30)


def test_no_shadow_before_metrics_can_be_read() -> None:
    r = Rollout(make_spec(shadow_spec()))
    result = r.tick(0, obs(DOWN))
    assert writes(result.actions) == []
    assert (r.status.phase, r.status.shadow) == ("Pending", None)


@pytest.mark.parametrize(
    ("shadow", "error"),
    [
        ({"percent": 0, "hold": "1m"}, "spec.shadow.percent: must be between 1 and 100, got 0"),
        ({"percent": 101, "hold": "1m"}, "spec.shadow.percent: must be between 1 and 100, got 101"),
        ({"hold": "1m"}, "spec.shadow.percent: required"),
        ({"percent": 10}, "spec.shadow.hold: required (how long the shadow is judged, e.g. 5m)"),
        ({"percent": 10, "hold": "soon"}, "spec.shadow.hold: "),
        (
            {"percent": 10, "hold": "1m", "onBreach": "email"},
            "spec.shadow.onBreach: must be one of page, event; got 'email'",
        ),
        (
            {"percent": 10, "hold": "1m", "skipSlos": ["ctr"]},
            "spec.shadow.skipSlos[0]: no SLO named 'ctr' in spec.analysis.slos",
        ),
        (
            {"percent": 10, "hold": "1m", "skipSlos": ["errors"]},
            "spec.shadow.skipSlos: must leave at least one SLO to judge the shadow on",
        ),
        ({"percent": 10, "hold": "1m", "mirror": "v2"}, "spec.shadow.mirror: unknown field"),
    ],
)
def test_bad_shadow_specs_are_refused_naming_the_field(shadow: dict[str, Any], error: str) -> None:
    data = spec_dict()
    data["shadow"] = shadow
    with pytest.raises(SpecError) as raised:
        make_spec(data)
    assert str(raised.value).startswith(error)


def test_shadow_defaults() -> None:
    shadow = make_spec(shadow_spec()).shadow
    assert shadow is not None
    assert (shadow.percent, shadow.hold.total_seconds(), shadow.on_breach, shadow.skip_slos) == (
        20,
        120.0,
        "page",
        (),
    )


def test_shadow_dropped_from_the_spec_while_running_ends_at_the_next_healthy_tick() -> None:
    data = shadow_spec(skipSlos=[])
    r = Rollout(make_spec(data))
    r.started()
    del data["shadow"]
    r.spec = make_spec(data)
    assert r.tick(30, obs(FEW)).actions == ()  # no evidence: no step, mirror kept
    assert r.status.shadow is not None and r.status.shadow.running
    result = r.tick(60)
    assert writes(result.actions) == [(90, 10, 0)]
    assert r.status.shadow is not None and r.status.shadow.state == "Passed"


def test_manual_abort_in_shadow_removes_the_mirror_and_marks_it_skipped() -> None:
    data = {
        "metadata": {"annotations": {REQUEST_ANNOTATION: '{"id": "r2", "action": "abort"}'}},
        "spec": shadow_spec(),
    }
    r = Rollout(make_spec(shadow_spec()))
    r.started()
    r.spec = parse_spec(data, namespace="ml", name="scorer")
    result = r.tick(30)
    assert writes(result.actions) == [(100, 0, 0)]
    assert pages(result.actions) == []  # an abort pages only when asked
    assert r.status.phase == "RolledBack"
    assert r.status.shadow is not None
    assert (r.status.shadow.state, r.status.shadow.ended_at) == ("Skipped", at(30))
    assert r.status.rollback is not None and r.status.rollback.reason == "Manual"
    assert not r.status.rollback.message.startswith("in shadow")


def test_a_confidence_slo_counts_its_evidence_over_the_shadow_and_then_over_step_1() -> None:
    from canaryguard.core.observations import SloObservation
    from canaryguard.core.sequential import Stratum
    from canaryguard.core.status import StratumRecord

    def counted(nb: float, xb: float, nc: float, xc: float) -> SloObservation:
        return SloObservation(xb / nb, xc / nc, nb, nc, counts=Stratum(nb, xb, nc, xc))

    data = shadow_spec()
    data["analysis"]["slos"][0] = {
        "name": "errors",
        "errorRate": {},
        "margin": {"relative": 0},
        "confidence": 0.99,
        "window": "30s",
    }
    r = Rollout(make_spec(data))
    r.started()
    # The shadow's stratum starts with the shadow (step_started_at is unset while shadowing).
    r.tick(60, obs(counted(6000, 30, 1200, 6)))
    assert r.status.slos[0].evidence == (StratumRecord(at(0), 0, 6000, 30, 1200, 6),)
    assert r.status.slos[0].verdict == "healthy"
    passed = r.tick(120, obs(counted(12000, 60, 2400, 12)))
    assert writes(passed.actions) == [(90, 10, 0)]
    # Step 1 begins its own stratum; the shadow's stays.
    r.tick(150, obs(counted(2700, 13, 300, 2)))
    assert r.status.slos[0].evidence == (
        StratumRecord(at(0), 0, 12000, 60, 2400, 12),
        StratumRecord(at(120), 10, 2700, 13, 300, 2),
    )


def test_a_canary_shown_worse_on_mirrored_traffic_fails_the_shadow() -> None:
    from canaryguard.core.observations import SloObservation
    from canaryguard.core.sequential import Stratum

    data = shadow_spec()
    data["analysis"]["slos"][0] = {
        "name": "errors",
        "errorRate": {},
        "margin": {"relative": 0},
        "confidence": 0.99,
        "window": "30s",
    }
    r = Rollout(make_spec(data))
    r.started()
    worse = Stratum(6000, 30, 1200, 60)  # 5% of mirrored requests failing against 0.5%
    r.tick(30, obs(SloObservation(0.005, 0.05, 6000, 1200, counts=worse)))
    assert r.status.slos[0].verdict == "breach"
    assert r.status.slos[0].breaching_since == at(30)
    failed = r.tick(60, obs(SloObservation(0.005, 0.05, 12000, 2400, counts=worse)))
    assert r.status.phase == "RolledBack"
    assert writes(failed.actions) == [(100, 0, 0)]
    assert r.status.shadow is not None and r.status.shadow.state == "Failed"


def mirrored(observations: Observations, percent: float) -> Observations:
    """The observations with the routes as found: baseline serving everyone, `percent`
    mirrored to the canary."""
    return replace(observations, routed_canary=0.0, routed_mirror=(percent,))


def breaching_shadow(**shadow: Any) -> Rollout:
    """A shadow breaching since 30 s (window 60 s), last judged at 60 s: its status as
    stored when the operator died after writing the rollback's route at 90 s."""
    r = Rollout(make_spec(shadow_spec(**shadow)))
    r.started()
    assert r.tick(30, mirrored(obs(BREACH), 20)).actions == ()
    assert r.tick(60, mirrored(obs(BREACH), 20)).actions == ()
    assert r.status.slos[0].breaching_since == at(30)
    return r


def test_a_shadow_rollback_whose_status_was_lost_is_recorded_once_the_mirror_is_found_gone() -> (
    None
):
    """The rollback's route write (100/0, mirror removed) landed, then the operator died
    before the status. The restarted operator comes after the lookback: the canary, with no
    mirrored requests, is inconclusive. The breach never cleared and had run its window, so
    the rollback is recorded and paged, with the values last judged, instead of the mirror
    being set again."""
    r = breaching_shadow()
    result = r.tick(300, mirrored(obs(FEW), 0))

    assert writes(result.actions) == [(100, 0, 0)]  # no mirror set again
    assert events(result.actions) == [("Warning", "RolledBack")]
    assert [type(a).__name__ for a in result.actions] == ["SetWeights", "Page", "EmitEvent"]
    assert (r.status.phase, r.status.canary_weight) == ("RolledBack", 0)
    shadow = r.status.shadow
    assert shadow is not None and (shadow.state, shadow.ended_at) == ("Failed", at(300))
    rollback = r.status.rollback
    assert rollback is not None
    assert (rollback.reason, rollback.slo, rollback.breaching_since, rollback.canary) == (
        "SLOBreach",
        "errors",
        at(30),
        BREACH.canary,
    )
    assert rollback.message.startswith(
        "in shadow (mirror removed, no user was served by the canary): SLO errors breached "
        "for 4m30s (window 1m)"
    )
    [page] = pages(result.actions)
    assert "in shadow (no user served by the canary): SLO errors" in page.summary
    assert page.details["shadow"] is True
    assert cond(r.status, "Progressing").reason == "RolledBack"
    assert [h.action for h in r.status.history] == ["ShadowStarted", "RolledBack"]
    # Recorded once: the next tick writes nothing and posts nothing.
    later = r.tick(330, mirrored(obs(FEW), 0))
    assert (writes(later.actions), events(later.actions)) == ([], [])


def test_a_lost_shadow_rollback_set_to_event_is_recorded_without_a_page() -> None:
    r = breaching_shadow(onBreach="event")
    result = r.tick(300, mirrored(obs(FEW), 0))
    assert writes(result.actions) == [(100, 0, 0)]
    assert pages(result.actions) == []
    assert events(result.actions) == [("Warning", "RolledBack")]
    assert (r.status.phase, r.status.page) == ("RolledBack", None)
    assert r.status.shadow is not None and r.status.shadow.state == "Failed"


def test_a_lost_shadow_rollback_still_in_the_lookback_is_decided_again() -> None:
    """Back while the canary's mirrored errors are still in the lookback: the breach is
    seen, and the rollback is decided again from it (one write, one page)."""
    r = breaching_shadow()
    result = r.tick(95, mirrored(obs(BREACH), 0))
    assert writes(result.actions) == [(100, 0, 0)]
    assert len(pages(result.actions)) == 1
    assert r.status.rollback is not None
    assert r.status.rollback.message.startswith(
        "in shadow (mirror removed, no user was served by the canary): SLO errors breached "
        "for 1m5s (window 1m)"
    )


def test_a_mirror_removed_before_the_breach_ran_its_window_is_set_again() -> None:
    """Removed by hand 30 s into a 60 s window: no rollback was decided, so the mirror is set
    again and the breach run is kept; the canary is judged on it again."""
    r = breaching_shadow()
    result = r.tick(75, mirrored(obs(FEW), 0))
    assert writes(result.actions) == [(100, 0, 20)]
    assert events(result.actions) == [("Warning", "MirrorReasserted")]
    assert r.status.phase == "Progressing"
    assert r.status.shadow is not None and r.status.shadow.running
    assert r.status.slos[0].breaching_since == at(30)
    # Judged on the mirror again, the breach goes on and rolls back.
    result = r.tick(90, mirrored(obs(BREACH), 20))
    assert writes(result.actions) == [(100, 0, 0)]
    assert r.status.phase == "RolledBack"


def test_a_mirror_found_gone_with_a_breach_run_that_had_a_verdict_since_is_set_again() -> None:
    """The breach must have been the last verdict: one followed by an inconclusive tick
    (the mirror still there) was not what a rollback was decided on."""
    r = breaching_shadow()
    assert r.tick(90, mirrored(obs(FEW), 20)).actions == ()
    assert r.status.slos[0].breaching_since == at(30)
    result = r.tick(120, mirrored(obs(FEW), 0))
    assert writes(result.actions) == [(100, 0, 20)]
    assert events(result.actions) == [("Warning", "MirrorReasserted")]
    assert r.status.shadow is not None and r.status.shadow.running


def test_a_dry_run_shadow_never_records_a_rollback_from_its_missing_mirror() -> None:
    """A dry run never sets the mirror, so finding none says nothing about a lost write."""
    data = shadow_spec()
    data["dryRun"] = True
    r = Rollout(make_spec(data))
    r.started()
    r.tick(30, mirrored(obs(BREACH), 0))
    r.tick(60, mirrored(obs(BREACH), 0))
    result = r.tick(300, mirrored(obs(FEW), 0))
    assert r.status.phase == "Progressing"
    assert r.status.shadow is not None and r.status.shadow.running
    assert result.actions == ()
    # Nor is the mirror it never set posted as set again, tick after tick.
    assert [h.action for h in r.status.history] == ["ShadowStarted"]


def test_a_lost_pass_write_after_a_breach_run_is_not_taken_for_a_lost_rollback() -> None:
    """The breach run of 30 s was cleared by the healthy tick at 120 s that passed the
    shadow (90/10, mirror removed); that status was lost. Back after the lookback, the
    canary serving 10% is the pass's write, not a rollback's: it is set back to 0% with the
    mirror, and the shadow goes on."""
    r = breaching_shadow()
    lost_pass = Observations({"errors": FEW}, routed_canary=10.0, routed_mirror=(0.0,))
    result = r.tick(300, lost_pass)
    assert writes(result.actions) == [(100, 0, 20)]
    assert events(result.actions) == [("Warning", "WeightsReasserted")]
    assert r.status.phase == "Progressing"
    assert r.status.shadow is not None and r.status.shadow.running
    assert r.status.rollback is None
