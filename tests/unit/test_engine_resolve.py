"""Closing the loop with on-call, tick by tick: the incident a rolled-back revision paged for is
carried into the next revision and resolved (PagerDuty `resolve`, the same dedup key) when that
revision is promoted; the intent is recorded before it is sent, and it is sent again until
delivered.

Base rollout (tests/unit/scenario.py): steps 10% for 60s, 50% for 120s, 100% for 120s; one SLO
`errors` (window 60s); paging through PagerDuty. Revision r1 rolls back at 120 s; r2 follows.
"""

from __future__ import annotations

from typing import Any

from canaryguard.core import engine
from canaryguard.core.actions import Resolve
from canaryguard.core.manual import REQUEST_ANNOTATION
from canaryguard.core.spec import parse_spec
from canaryguard.core.status import IncidentStatus
from tests.unit.scenario import BREACH, HEALTHY, Rollout, at, events, make_spec, obs, spec_dict

KEY_R1 = "canaryguard/ml/scorer/r1"


def resolves(actions: tuple[object, ...]) -> list[str]:
    return [a.dedup_key for a in actions if isinstance(a, Resolve)]


def with_revision(revision: str, **changes: Any) -> dict[str, Any]:
    data = spec_dict()
    data["revision"] = revision
    data.update(changes)
    return data


def rolled_back_r1(delivered: bool = True) -> Rollout:
    """Revision r1 rolled back at 120 s (breaching from 60 s), its page delivered at 121 s."""
    r = Rollout(make_spec(with_revision("r1")))
    r.started()
    r.tick(60, obs(BREACH))
    r.tick(120, obs(BREACH))
    assert r.status.phase == "RolledBack"
    assert r.status.page is not None and r.status.page.dedup_key == KEY_R1
    if delivered:
        r.status = engine.record_page_result(r.status, True, False, None, at(121))
    return r


def promote_r2(r: Rollout, start: float = 200) -> engine.TickResult:
    """Revision r2 from `start`, healthy until promoted 300 s later; the promoting tick's
    result."""
    r.spec = make_spec(with_revision("r2"))
    restarted = r.tick(start)
    assert events(restarted.actions) == [("Normal", "RevisionChanged"), ("Normal", "Started")]
    assert resolves(restarted.actions) == []
    r.tick(start + 60)
    r.tick(start + 180)
    assert resolves(r.tick(start + 299.999).actions) == []
    return r.tick(start + 300)


def test_the_next_revision_promoted_resolves_the_earlier_incident_with_its_dedup_key() -> None:
    r = rolled_back_r1()

    r.spec = make_spec(with_revision("r2"))
    r.tick(200)
    assert r.status.previous_incident == IncidentStatus(KEY_R1, "r1")
    assert r.status.page is None and r.status.rollback is None
    assert r.status.to_dict()["previousIncident"] == {
        "dedupKey": KEY_R1,
        "revision": "r1",
        "state": "Open",
        "attempts": 0,
        "failures": None,
        "retryAt": None,
        "resolvedAt": None,
        "resolvedBy": None,
        "lastError": None,
    }
    r.tick(260)
    r.tick(380)
    promoted = r.tick(500)

    assert r.status.phase == "Promoted"
    assert resolves(promoted.actions) == [KEY_R1]
    assert events(promoted.actions) == [("Normal", "Promoted"), ("Normal", "ResolvingIncident")]
    incident = r.status.previous_incident
    assert incident == IncidentStatus(KEY_R1, "r1", state="Resolving", resolved_by="r2")
    assert r.status.history[-1].message == (
        f"revision r2 promoted: resolving the incident of rolled-back revision r1 "
        f"(dedup key {KEY_R1})"
    )

    done = engine.record_resolve_result(r.status, True, False, None, at(501), attempts=2)
    assert done.previous_incident == IncidentStatus(
        KEY_R1, "r1", state="Resolved", attempts=2, resolved_at=at(501), resolved_by="r2"
    )
    assert done.history[-1].action == "IncidentResolved"
    r.status = done
    assert r.tick(530).actions == ()
    assert r.tick(900).actions == ()


def test_a_resolve_not_delivered_before_a_crash_is_sent_again_by_the_next_tick() -> None:
    r = rolled_back_r1()
    promote_r2(r)
    # The operator died after writing Resolving and before (or while) sending it.
    assert r.status.previous_incident is not None
    assert r.status.previous_incident.state == "Resolving"
    again = r.tick(530)
    assert resolves(again.actions) == [KEY_R1]
    assert events(again.actions) == []  # the decision was taken before: no second event


def test_a_failed_resolve_backs_off_and_a_refused_one_is_never_sent_again() -> None:
    r = rolled_back_r1()
    promote_r2(r)
    r.status = engine.record_resolve_result(r.status, False, False, "HTTP 503", at(500))
    incident = r.status.previous_incident
    assert incident is not None
    assert (incident.state, incident.failures, incident.retry_at) == ("Resolving", 1, at(505))
    assert incident.last_error == "HTTP 503"
    assert resolves(r.tick(504.999).actions) == []
    assert resolves(r.tick(505).actions) == [KEY_R1]

    r.status = engine.record_resolve_result(r.status, False, True, "HTTP 400: invalid", at(506))
    incident = r.status.previous_incident
    assert incident is not None and incident.state == "Failed"
    assert r.status.history[-1].action == "ResolveFailed"
    assert r.tick(600).actions == ()


def test_a_page_still_pending_is_carried_since_it_may_have_reached_pagerduty() -> None:
    r = rolled_back_r1(delivered=False)
    assert resolves(promote_r2(r).actions) == [KEY_R1]


def test_a_page_pagerduty_refused_opened_no_incident_and_nothing_is_resolved() -> None:
    r = rolled_back_r1(delivered=False)
    r.status = engine.record_page_result(r.status, False, True, "HTTP 400", at(121))
    promoted = promote_r2(r)
    assert r.status.previous_incident is None
    assert resolves(promoted.actions) == []


def test_a_revision_replaced_before_its_end_keeps_the_incident_for_the_next_promotion() -> None:
    r = rolled_back_r1()
    r.spec = make_spec(with_revision("r2"))
    r.tick(200)
    r.tick(260)  # r2 at 50%, then replaced by r3 before any decision
    assert r.status.previous_incident == IncidentStatus(KEY_R1, "r1")
    promoted = promote_r2_as(r, "r3", 300)
    assert resolves(promoted.actions) == [KEY_R1]
    assert r.status.previous_incident is not None
    assert r.status.previous_incident.resolved_by == "r3"


def promote_r2_as(r: Rollout, revision: str, start: float) -> engine.TickResult:
    r.spec = make_spec(with_revision(revision))
    r.tick(start)
    r.tick(start + 60)
    r.tick(start + 180)
    return r.tick(start + 300)


def roll_back_as(r: Rollout, revision: str, start: float) -> str:
    """Revision `revision` from `start`, breaching from +60 s and rolled back at +120 s with
    its page delivered; its page's dedup key."""
    r.spec = make_spec(with_revision(revision))
    r.tick(start)
    r.tick(start + 60, obs(BREACH))
    r.tick(start + 120, obs(BREACH))
    assert r.status.phase == "RolledBack"
    assert r.status.page is not None
    r.status = engine.record_page_result(r.status, True, False, None, at(start + 121))
    return r.status.page.dedup_key


def test_a_next_revision_also_rolled_back_keeps_both_incidents_and_resolves_both() -> None:
    """r1 rolled back (incident A), r2 rolled back (incident B), r3 promoted: A and B are
    both resolved, each once, oldest first; B alone was resolved before."""
    r = rolled_back_r1()
    r2_key = roll_back_as(r, "r2", 200)
    assert r2_key == "canaryguard/ml/scorer/r2"
    # r2 is not promoted: r1's incident is still open and nothing is resolved.
    assert r.status.previous_incident == IncidentStatus(KEY_R1, "r1")
    r.spec = make_spec(with_revision("r3"))
    r.tick(400)
    assert r.status.older_incidents == (IncidentStatus(KEY_R1, "r1"),)
    assert r.status.previous_incident == IncidentStatus(r2_key, "r2")
    assert r.status.to_dict()["olderIncidents"] == [
        {"dedupKey": KEY_R1, "revision": "r1", "state": "Open", "attempts": 0}
    ]
    r.tick(460)
    r.tick(580)
    promoted = r.tick(700)

    assert resolves(promoted.actions) == [KEY_R1, r2_key]
    assert events(promoted.actions) == [
        ("Normal", "Promoted"),
        ("Normal", "ResolvingIncident"),
        ("Normal", "ResolvingIncident"),
    ]
    assert [i.state for i in r.status.incidents] == ["Resolving", "Resolving"]
    assert {i.resolved_by for i in r.status.incidents} == {"r3"}


def test_each_incident_s_resolve_is_recorded_by_its_key_and_a_failed_one_retried_alone() -> None:
    r = rolled_back_r1()
    r2_key = roll_back_as(r, "r2", 200)
    promote_r2_as(r, "r3", 400)
    r.status = engine.record_resolve_result(r.status, True, False, None, at(701), 1, r2_key)
    r.status = engine.record_resolve_result(r.status, False, False, "HTTP 503", at(701), 1, KEY_R1)
    older, newest = r.status.incidents
    assert (newest.dedup_key, newest.state, newest.resolved_at) == (r2_key, "Resolved", at(701))
    assert (older.dedup_key, older.state, older.retry_at) == (KEY_R1, "Resolving", at(706))
    assert r.status.phase == "Promoted"  # a resolve not delivered never holds the phase
    assert resolves(r.tick(705.999).actions) == []
    assert resolves(r.tick(706).actions) == [KEY_R1]  # the delivered one is never sent again
    r.status = engine.record_resolve_result(r.status, True, False, None, at(707), 1, KEY_R1)
    assert [i.state for i in r.status.incidents] == ["Resolved", "Resolved"]
    assert r.tick(800).actions == ()
    assert r.tick(2000).actions == ()


def test_more_than_ten_unresolved_incidents_drop_the_oldest_with_a_warning() -> None:
    """Each of r1..r11 rolled back: r12 tracks the ten newest; r1's is dropped with a
    Warning event and a history entry naming its key, and only the ten are resolved."""
    r = rolled_back_r1()
    keys = [KEY_R1]
    for n in range(2, 12):
        keys.append(roll_back_as(r, f"r{n}", 200 * n))
    r.spec = make_spec(with_revision("r12"))
    restarted = r.tick(3000)

    assert events(restarted.actions)[:2] == [
        ("Normal", "RevisionChanged"),
        ("Warning", "IncidentNotTracked"),
    ]
    note = [h for h in r.status.history if h.action == "IncidentNotTracked"]
    assert len(note) == 1 and KEY_R1 in note[0].message
    assert [i.dedup_key for i in r.status.incidents] == keys[1:]
    assert len(r.status.older_incidents) == 9
    r.tick(3060)
    r.tick(3180)
    assert resolves(r.tick(3300).actions) == keys[1:]


def test_a_manual_promote_of_the_next_revision_resolves_too() -> None:
    r = rolled_back_r1()
    data = with_revision("r2")
    r.spec = make_spec(data)
    r.tick(200)
    body = {
        "metadata": {
            "namespace": "ml",
            "name": "scorer",
            "annotations": {REQUEST_ANNOTATION: '{"id": "p1", "action": "promote"}'},
        },
        "spec": data,
    }
    r.spec = parse_spec(body)
    result = r.tick(230)
    assert r.status.phase == "Promoted"
    assert resolves(result.actions) == [KEY_R1]


def test_a_dry_run_promoted_resolves_nothing() -> None:
    r = rolled_back_r1()
    r.spec = make_spec(with_revision("r2", dryRun=True))
    r.tick(200)
    r.tick(260)
    r.tick(380)
    promoted = r.tick(500)
    assert r.status.phase == "Promoted"
    assert resolves(promoted.actions) == []
    assert r.status.previous_incident == IncidentStatus(KEY_R1, "r1")


def test_healthy_first_revision_has_no_incident_to_resolve() -> None:
    r = Rollout(make_spec(with_revision("r1")))
    r.started()
    r.tick(60, obs(HEALTHY))
    r.tick(180, obs(HEALTHY))
    promoted = r.tick(300, obs(HEALTHY))
    assert r.status.phase == "Promoted"
    assert resolves(promoted.actions) == []
    assert r.status.to_dict()["previousIncident"] is None
