"""Manual `promote` and `abort` requests, tick by tick, with a fixed clock.

Base rollout as in test_engine.py: steps 10% for 60s, 50% for 120s, 100% for 120s; SLO
`errors` with a 60s window; paging configured. A request reaches the engine as
`Spec.request` (parsed from the `canaryguard.io/request` annotation).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from canaryguard.core import engine
from canaryguard.core.manual import InvalidRequest, ManualRequest, RequestAction
from canaryguard.core.status import status_from_dict
from tests.unit.scenario import (
    BREACH,
    DOWN,
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


def ask(r: Rollout, action: RequestAction, request_id: str = "req-1", **fields: Any) -> None:
    """Put a request on the rollout, as the annotation would."""
    request = ManualRequest(action=action, id=request_id, **fields)
    r.spec = replace(r.spec, request=request)


def kinds(result: engine.TickResult) -> list[str]:
    return [type(a).__name__ for a in result.actions]


def test_promote_mid_step_skips_the_rest_of_the_schedule() -> None:
    r = Rollout()
    r.started()
    r.tick(30)
    ask(r, "promote", by="alice", reason="validated offline")

    result = r.tick(45)

    assert kinds(result) == ["SetWeights", "EmitEvent"]
    assert weights(result.actions) == [(0, 100)]
    assert events(result.actions) == [("Normal", "ManualPromote")]
    s = r.status
    assert (s.phase, s.step_index, s.canary_weight, s.step_started_at) == (
        "Promoted",
        2,
        100,
        at(45),
    )
    assert s.rollback is None and s.page is None
    assert s.message == "promoted by hand (by alice): canary at 100%"
    assert s.last_request is not None
    assert (s.last_request.id, s.last_request.action, s.last_request.outcome) == (
        "req-1",
        "promote",
        "Promoted",
    )
    assert (s.last_request.by, s.last_request.at) == ("alice", at(45))
    entry = s.history[-1]
    assert (entry.action, entry.reason, entry.canary_weight) == ("ManualPromote", "Manual", 100)
    assert entry.message == (
        "manual promote by alice: validated offline (request req-1); canary 10% -> 100% at "
        "step 1/3, the rest of the schedule and its analysis skipped"
    )
    progressing = cond(s, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ManualPromote")

    # Finished: nothing is judged any more, and the same request is not carried out again.
    assert r.tick(75, obs(BREACH)).actions == ()
    assert r.status.phase == "Promoted"


def test_a_request_is_carried_out_before_analysis() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    ask(r, "promote")
    # The breach is sustained at 120s, but the person's decision comes first.
    result = r.tick(120, obs(BREACH))
    assert weights(result.actions) == [(0, 100)]
    assert pages(result.actions) == []
    assert r.status.phase == "Promoted"


def test_abort_without_page_rolls_back_and_pages_nobody() -> None:
    r = Rollout()
    r.started()
    r.tick(60)
    assert r.status.canary_weight == 50
    ask(r, "abort", by="bob", reason="bad offline eval")

    result = r.tick(75)

    assert kinds(result) == ["SetWeights", "EmitEvent"]
    assert weights(result.actions) == [(100, 0)]
    assert events(result.actions) == [("Warning", "ManualAbort")]
    s = r.status
    assert (s.phase, s.canary_weight, s.page) == ("RolledBack", 0, None)
    assert s.condition("Paged") is None
    rollback = s.rollback
    assert rollback is not None
    assert (rollback.reason, rollback.at, rollback.slo) == ("Manual", at(75), None)
    assert rollback.message == (
        "manual abort by bob: bad offline eval (request req-1); on-call not paged (not asked)"
    )
    assert s.message == f"rolled back: {rollback.message}"
    assert s.last_request is not None and s.last_request.outcome == "RolledBack"
    assert (s.history[-1].action, s.history[-1].reason) == ("ManualAbort", "Manual")
    assert cond(s, "Progressing").reason == "RolledBack"
    assert r.tick(105).actions == ()


def test_abort_with_page_pages_once_and_says_it_was_manual() -> None:
    r = Rollout()
    r.started()
    ask(r, "abort", by="bob", reason="customer complaints", page=True)

    result = r.tick(30)

    assert kinds(result) == ["SetWeights", "Page", "EmitEvent"]
    (page,) = pages(result.actions)
    assert page.summary == (
        "canaryguard rolled back ml/scorer revision scorer/v2@v2: manual abort by bob: "
        "customer complaints (request req-1); paging on-call as asked"
    )
    assert page.dedup_key == "canaryguard/ml/scorer/scorer/v2@v2"
    assert page.details["reason"] == "Manual"
    assert r.status.page is not None and r.status.page.state == "Pending"
    assert cond(r.status, "Paged").reason == "Pending"

    # Like any rollback's page: asked for again while pending, never after delivery.
    assert pages(r.tick(60).actions) == [page]
    r.status = engine.record_page_result(r.status, True, False, None, at(61))
    assert r.tick(90).actions == ()


def test_abort_asking_for_a_page_without_paging_configured_says_so() -> None:
    data = spec_dict()
    del data["paging"]
    r = Rollout(make_spec(data))
    r.started()
    ask(r, "abort", page=True)
    result = r.tick(30)
    assert pages(result.actions) == []
    assert r.status.rollback is not None
    assert r.status.rollback.message.endswith("a page was asked for, but spec.paging is not set")
    assert "by an unnamed user: no reason given" in r.status.rollback.message


def test_the_same_request_is_carried_out_once_also_after_a_restart() -> None:
    r = Rollout()
    r.started()
    ask(r, "abort", page=True)
    r.tick(30)
    r.status = engine.record_page_result(r.status, True, False, None, at(31))
    before = r.status.to_dict()

    again = r.tick(60)

    assert again.actions == ()
    assert r.status.to_dict() == before
    # An operator restarted from the stored status sees the same request as handled.
    restarted = Rollout(r.spec)
    restarted.status = status_from_dict(json.loads(json.dumps(before)))
    assert restarted.status.last_request == r.status.last_request
    assert restarted.tick(90).actions == ()


def test_a_crash_before_the_status_write_carries_the_request_out_again_the_same_way() -> None:
    r = Rollout()
    r.started()
    r.tick(30)
    stored = r.status
    ask(r, "promote", request_id="p1")
    first = r.tick(45)
    r.status = stored  # the status patch never happened
    second = r.tick(46)
    assert first.actions == second.actions
    assert r.status.phase == "Promoted"


def test_a_new_request_id_is_a_new_request() -> None:
    r = Rollout()
    r.started()
    ask(r, "promote", request_id="p1")
    r.tick(30)
    ask(r, "abort", request_id="a1")
    result = r.tick(60)
    # Finished: recorded as handled, with an event that says it changed nothing.
    assert events(result.actions) == [("Normal", "RequestIgnored")]
    assert weights(result.actions) == []
    s = r.status
    assert s.phase == "Promoted"
    assert s.last_request is not None
    assert (s.last_request.id, s.last_request.outcome) == ("a1", "NoEffect")
    assert "has already finished (Promoted)" in s.last_request.message
    assert s.history[-1].action == "RequestIgnored"
    assert r.tick(90).actions == ()


def test_a_request_on_a_rolled_back_rollout_has_no_effect_and_a_pending_page_still_goes() -> None:
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    (page,) = pages(r.tick(120, obs(BREACH)).actions)
    ask(r, "promote")
    result = r.tick(150)
    assert events(result.actions) == [("Normal", "RequestIgnored")]
    assert pages(result.actions) == [page]  # the rollback's page is still being delivered
    assert r.status.phase == "RolledBack"
    assert r.status.rollback is not None and r.status.rollback.reason == "SLOBreach"


def test_abort_and_promote_act_on_a_paused_rollout() -> None:
    cases: list[tuple[RequestAction, str, int]] = [
        ("abort", "RolledBack", 0),
        ("promote", "Promoted", 100),
    ]
    for action, phase, weight in cases:
        r = Rollout()
        r.started()
        r.spec = make_spec({**spec_dict(), "paused": True})
        r.tick(30)
        assert r.status.phase == "Paused"
        ask(r, action)
        r.tick(60)
        assert (r.status.phase, r.status.canary_weight, r.status.paused_reason) == (
            phase,
            weight,
            None,
        )


def test_abort_during_a_metrics_outage_is_manual_and_needs_no_metrics() -> None:
    r = Rollout()
    r.started()
    r.tick(30, obs(DOWN))
    ask(r, "abort")
    assert engine.request_due(r.spec, r.status)
    result = r.tick(45, obs(DOWN))
    assert weights(result.actions) == [(100, 0)]
    assert r.status.rollback is not None and r.status.rollback.reason == "Manual"
    assert not engine.request_due(r.spec, r.status)


def test_a_request_before_the_first_tick_is_carried_out_at_once() -> None:
    r = Rollout()
    ask(r, "promote")
    result = r.started()
    assert weights(result.actions) == [(0, 100)]
    assert events(result.actions) == [("Normal", "ManualPromote")]
    assert (r.status.phase, r.status.revision) == ("Promoted", "scorer/v2@v2")
    assert "before the first step" in r.status.history[-1].message


def test_a_request_for_another_revision_or_object_has_no_effect() -> None:
    r = Rollout(replace(make_spec(), uid="uid-2"))
    r.started()
    ask(r, "abort", request_id="a1", revision="build-1")
    assert not engine.request_due(r.spec, r.status)
    result = r.tick(30)
    assert events(result.actions) == [("Normal", "RequestIgnored")]
    assert r.status.phase == "Progressing"
    assert r.status.last_request is not None
    assert "made for revision build-1; the rollout is at revision scorer/v2@v2" in (
        r.status.last_request.message
    )

    ask(r, "abort", request_id="a2", uid="uid-1")
    r.tick(40)
    assert r.status.phase == "Progressing"
    assert r.status.last_request is not None
    assert "made for another object of this name (uid uid-1)" in r.status.last_request.message

    ask(r, "abort", request_id="a3", uid="uid-2", revision="scorer/v2@v2")
    r.tick(50)
    assert r.status.phase == "RolledBack"


def test_a_new_revision_does_not_carry_out_the_old_request_again() -> None:
    r = Rollout()
    r.started()
    ask(r, "abort")
    r.tick(30)
    assert r.status.phase == "RolledBack"
    data = spec_dict()
    data["revision"] = "build-2"
    r.spec = replace(make_spec(data), request=r.spec.request)  # the annotation stays

    result = r.tick(60)

    assert events(result.actions) == [("Normal", "RevisionChanged"), ("Normal", "Started")]
    assert weights(result.actions) == [(90, 10)]
    assert r.status.phase == "Progressing"
    assert r.status.last_request is not None and r.status.last_request.id == "req-1"


def test_an_invalid_request_is_reported_once_and_the_rollout_goes_on() -> None:
    r = Rollout()
    r.started()
    bad = InvalidRequest("invalid-0123456789ab", "canaryguard.io/request: action: must be ...")
    r.spec = replace(r.spec, invalid_request=bad)

    result = r.tick(60)

    assert events(result.actions) == [("Warning", "InvalidRequest"), ("Normal", "StepAdvanced")]
    assert weights(result.actions) == [(50, 50)]
    s = r.status
    assert s.last_request is not None
    assert (s.last_request.id, s.last_request.outcome, s.last_request.action) == (
        "invalid-0123456789ab",
        "Rejected",
        None,
    )
    assert cond(s, "SpecValid").status == "True"
    assert r.tick(90).actions == ()

    # Corrected: a request like any other.
    r.spec = replace(r.spec, invalid_request=None)
    ask(r, "abort")
    assert weights(r.tick(120).actions) == [(100, 0)]
