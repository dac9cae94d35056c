"""Dry run, tick by tick: every decision judged and recorded, named for what it would have
done, and no weight set, no page sent.

Base rollout (tests/unit/scenario.py): steps 10% for 60s, 50% for 120s, 100% for 120s; one SLO
`errors` (error rate, absolute margin 0.01, window 60s); minRequests 50; maxMetricsOutage 90s;
paging through PagerDuty. Here with `dryRun: true`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from canaryguard.core import engine, messages
from canaryguard.core.actions import EmitEvent, Page, Resolve, SetWeights
from canaryguard.core.manual import REQUEST_ANNOTATION
from canaryguard.core.observations import Observations
from canaryguard.core.spec import Spec, parse_spec
from canaryguard.core.status import Status, status_from_dict
from tests.unit.scenario import (
    BREACH,
    DOWN,
    HEALTHY,
    T0,
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
from tests.unit.test_engine_properties import Tick, specs, ticks


def dry_spec(**analysis: object) -> dict[str, object]:
    data = spec_dict(**analysis)
    data["dryRun"] = True
    return data


def no_traffic_actions(result_actions: tuple[object, ...]) -> bool:
    return not any(isinstance(a, SetWeights | Page | Resolve) for a in result_actions)


def test_a_dry_run_walks_the_schedule_with_would_advance_and_would_promote_and_sets_no_weight() -> (
    None
):
    r = Rollout(make_spec(dry_spec()))
    # Someone routes 30% to the canary by hand: a dry run neither guards nor changes that.
    routed = 30.0

    def seen(observation: object = HEALTHY) -> Observations:
        return Observations({"errors": observation}, routed_canary=routed)  # type: ignore[dict-item]

    first = r.tick(0, seen())
    assert weights(first.actions) == []
    assert events(first.actions) == [("Normal", "Started")]
    assert (r.status.phase, r.status.step_index, r.status.canary_weight) == ("Progressing", 0, 10)
    assert r.status.dry_run is True
    assert r.status.to_dict()["dryRun"] is True
    assert r.status.message.startswith("dry run: ")

    assert r.tick(30, seen()).actions == ()  # an unchanged world: nothing decided, nothing said
    advanced = r.tick(60, seen())
    assert no_traffic_actions(advanced.actions)
    assert events(advanced.actions) == [("Normal", "WouldAdvance")]
    assert (r.status.step_index, r.status.canary_weight, r.status.step_started_at) == (
        1,
        50,
        at(60),
    )
    assert r.tick(179.999, seen()).actions == ()
    assert events(r.tick(180, seen()).actions) == [("Normal", "WouldAdvance")]
    assert r.tick(299.999, seen()).actions == ()

    done = r.tick(300, seen())
    assert no_traffic_actions(done.actions)
    assert events(done.actions) == [("Normal", "WouldPromote")]
    assert r.status.phase == "Promoted"
    assert r.status.message == "dry run: promoted: canary at 100%"
    progressing = cond(r.status, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "WouldPromote")
    assert progressing.message == "dry run: every step held with all SLOs healthy"
    assert [(h.action, h.canary_weight) for h in r.status.history] == [
        ("Started", 10),
        ("WouldAdvance", 50),
        ("WouldAdvance", 100),
        ("WouldPromote", 100),
    ]
    assert all(h.message.startswith("dry run: ") for h in r.status.history)
    assert cond(r.status, "Healthy").status == "True"
    assert r.status.condition("Traffic") is None  # the routed 30% was never compared


def test_a_sustained_breach_in_a_dry_run_is_recorded_as_would_roll_back_without_a_page() -> None:
    r = Rollout(make_spec(dry_spec()))
    r.started()
    r.tick(30)
    assert r.tick(60, obs(BREACH)).actions == ()
    assert r.status.slos[0].breaching_since == at(60)
    assert r.tick(119.999, obs(BREACH)).actions == ()

    result = r.tick(120, obs(BREACH))

    assert [type(a).__name__ for a in result.actions] == ["EmitEvent"]
    assert events(result.actions) == [("Warning", "WouldRollBack")]
    assert pages(result.actions) == [] and weights(result.actions) == []
    assert r.status.phase == "RolledBack"
    assert r.status.page is None
    assert r.status.condition("Paged") is None
    rollback = r.status.rollback
    assert rollback is not None
    assert (rollback.reason, rollback.slo, rollback.at, rollback.breaching_since) == (
        "SLOBreach",
        "errors",
        at(120),
        at(60),
    )
    assert (rollback.baseline, rollback.canary) == (0.01, 0.05)
    assert r.status.message == "dry run: " + messages.rolled_back(rollback)
    progressing = cond(r.status, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "WouldRollBack")
    assert progressing.message == "dry run: " + rollback.message
    assert r.status.history[-1].action == "WouldRollBack"
    assert r.status.history[-1].message == "dry run: " + rollback.message

    # Finished: later ticks neither judge nor page, and write nothing.
    assert r.tick(150, obs(BREACH)).actions == ()
    assert r.tick(600, obs(BREACH)).actions == ()


def test_a_dry_run_at_its_last_step_judges_against_the_baseline_still_serving() -> None:
    """Its 100% step was never routed: the baseline's current values judge, not a reference
    kept from earlier steps (the baseline's own evidence is there)."""
    r = Rollout(make_spec(dry_spec()))
    r.started()
    r.tick(60)
    r.tick(180)
    assert r.status.canary_weight == 100
    # The baseline worsened as much as the canary: against the current baseline, healthy.
    both_worse = BREACH.__class__(
        baseline=0.05, canary=0.05, baseline_samples=900, canary_samples=100
    )
    r.tick(210, obs(both_worse))
    assert r.status.slos[0].verdict == "healthy"
    assert r.status.slos[0].reason == "canary 0.05 vs baseline 0.05: not worse"


def test_a_metrics_outage_in_a_dry_run_would_roll_back_and_pages_nobody() -> None:
    r = Rollout(make_spec(dry_spec()))
    r.started()
    assert events(r.tick(30, obs(DOWN)).actions) == [("Warning", "MetricsOutage")]
    result = r.tick(120, obs(DOWN))
    assert events(result.actions) == [("Warning", "WouldRollBack")]
    assert no_traffic_actions(result.actions)
    assert r.status.rollback is not None and r.status.rollback.reason == "MetricsOutage"
    assert r.status.page is None


def test_a_manual_abort_in_a_dry_run_would_roll_back_and_moves_nothing() -> None:
    data = dry_spec()
    r = Rollout(make_spec(data))
    r.started()
    body = {
        "metadata": {
            "namespace": "ml",
            "name": "scorer",
            "annotations": {REQUEST_ANNOTATION: '{"id": "r1", "action": "abort", "page": true}'},
        },
        "spec": data,
    }
    r.spec = parse_spec(body)
    result = r.tick(30)
    assert no_traffic_actions(result.actions)
    assert events(result.actions) == [("Warning", "WouldRollBack")]
    assert r.status.phase == "RolledBack" and r.status.page is None


def test_turning_dry_run_off_starts_the_schedule_again_and_moves_weights_from_step_one() -> None:
    data = dry_spec()
    r = Rollout(make_spec(data))
    r.started()
    r.tick(60)
    assert (r.status.step_index, r.status.canary_weight) == (1, 50)

    data["dryRun"] = False
    r.spec = make_spec(data)
    result = r.tick(90, Observations({"errors": HEALTHY}, routed_canary=0.0))

    assert events(result.actions) == [("Normal", "RevisionChanged"), ("Normal", "Started")]
    assert r.status.history[-2].message == (
        "spec.dryRun turned off: the schedule starts again at step 1 and moves weights"
    )
    assert weights(result.actions) == [(90, 10)]
    assert (r.status.phase, r.status.step_index, r.status.canary_weight) == ("Progressing", 0, 10)
    assert (r.status.dry_run, r.status.step_started_at) == (False, at(90))
    assert not r.status.message.startswith("dry run")
    # From now on the routed weights are guarded again: raised by hand, set back down.
    raised = r.tick(120, Observations({"errors": HEALTHY}, routed_canary=40.0))
    assert weights(raised.actions) == [(90, 10)]


def test_turning_dry_run_on_mid_rollout_starts_again_and_leaves_the_weights_alone() -> None:
    data = spec_dict()
    r = Rollout(make_spec(data))
    r.started()
    r.tick(60)
    assert r.status.canary_weight == 50

    data["dryRun"] = True
    r.spec = make_spec(data)
    result = r.tick(90, Observations({"errors": HEALTHY}, routed_canary=50.0))
    assert events(result.actions) == [("Normal", "RevisionChanged"), ("Normal", "Started")]
    assert no_traffic_actions(result.actions)
    assert r.status.history[-2].message == (
        "dry run: spec.dryRun turned on: weights are left as they are; the schedule starts again"
    )
    assert (r.status.step_index, r.status.canary_weight, r.status.dry_run) == (0, 10, True)


@settings(max_examples=150, deadline=None)
@given(specs(), ticks(plausible=True), st.lists(st.sampled_from([None, 0.0, 20.0, 100.0])))
def test_a_dry_run_never_sets_a_weight_never_pages_and_says_so_whatever_it_sees(
    spec: Spec, stream: list[Tick], routed: list[float | None]
) -> None:
    spec = replace(spec, dry_run=True)
    status = Status()
    now = T0
    for index, (gap, paused, observations, request) in enumerate(stream):
        now += timedelta(seconds=gap)
        share = routed[index % len(routed)] if routed else None
        seen = replace(observations, routed_canary=share)
        result = engine.tick(replace(spec, paused=paused, request=request), status, seen, now)
        assert no_traffic_actions(result.actions)
        assert result.status.page is None
        assert result.status.dry_run is True
        for action in result.actions:
            assert isinstance(action, EmitEvent) and action.message.startswith("dry run: ")
        assert {"StepAdvanced", "Promoted", "RolledBack"}.isdisjoint(
            a.reason for a in result.actions if isinstance(a, EmitEvent)
        )
        stored = json.loads(json.dumps(result.status.to_dict(), allow_nan=False))
        status = status_from_dict(stored)
        assert status.to_dict() == result.status.to_dict()


def test_a_dry_run_with_a_shadow_phase_never_sets_the_mirror() -> None:
    data = dry_spec()
    data["shadow"] = {"percent": 20, "hold": "120s"}
    r = Rollout(make_spec(data))
    results = [r.started(), r.tick(30), r.tick(60, obs(BREACH)), r.tick(120, obs(BREACH))]
    assert all(no_traffic_actions(result.actions) for result in results)
    assert r.status.phase == "RolledBack"
    assert r.status.dry_run
