"""The controller closing the loop: revision r1 rolls back and pages; r2 is promoted and the
controller resolves r1's incident with the same dedup key, after writing the intent, so an
operator killed mid-send sends it again; a dry run moves no weight and pages nobody.

The scenario's rollout: steps 10% (hold 60 s), 50% (120 s), 100% (120 s); one SLO `errors`
with a 60 s window; paging through PagerDuty.
"""

from __future__ import annotations

import pytest

from canaryguard.core.paging import DEFAULT_EVENTS_URL, DeliveryOutcome
from canaryguard.runtime.controller import Controller
from tests.unit.fakes import FakePager, InjectedFault, World
from tests.unit.scenario import BREACH, HEALTHY, obs, spec_dict

KEY_R1 = "canaryguard/ml/scorer/r1"


def edit_spec(world: World, **changes: object) -> None:
    """A spec edit, as kubectl apply makes it: a new generation."""
    obj = world.kube.objects[("ml", "scorer")]
    obj["spec"].update(changes)
    obj["metadata"]["generation"] += 1


def r1_rolled_back(world: World) -> Controller:
    controller = world.controller()
    for second in (0, 30, 60):
        world.tick(controller, second, obs(HEALTHY))
    for second in (90, 120, 150):
        world.tick(controller, second, obs(BREACH))
    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    assert world.pager.dedup_keys == [KEY_R1]
    return controller


def r2_up_to_its_last_hold(world: World, controller: Controller) -> None:
    edit_spec(world, revision="r2")
    # The tick that finds the finished r1 replaced queries the metrics and starts r2 at once.
    world.tick(controller, 200, obs(HEALTHY))
    assert world.kube.status()["stepIndex"] == 0
    assert "MetricsOutage" not in [r for _, r in world.kube.reasons()]
    for second in (260, 380):
        world.tick(controller, second, obs(HEALTHY))
    assert world.kube.status()["previousIncident"]["state"] == "Open"
    assert world.router.weights() == [(0, 100)]


def test_the_next_revision_promoted_resolves_the_incident_after_recording_the_intent() -> None:
    data = spec_dict()
    data["revision"] = "r1"
    world = World(data)
    controller = r1_rolled_back(world)
    r2_up_to_its_last_hold(world, controller)

    world.tick(controller, 500, obs(HEALTHY))

    assert world.pager.resolves == [(DEFAULT_EVENTS_URL, "routing-key-0123", KEY_R1)]
    status = world.kube.status()
    assert status["phase"] == "Promoted"
    incident = status["previousIncident"]
    assert (incident["state"], incident["dedupKey"], incident["resolvedBy"]) == (
        "Resolved",
        KEY_R1,
        "r2",
    )
    assert incident["resolvedAt"] == "2024-06-01T12:08:20Z"
    # The intent was written before the resolve went out, the result after.
    order = world.journal.of("status", "resolve")
    states = [(p.get("previousIncident") or {}).get("state") for p in world.kube.patches[-2:]]
    assert states == ["Resolving", "Resolved"]
    assert order[-3:] == [
        ("status", "Promoted", "None"),
        ("resolve", KEY_R1),
        ("status", "Promoted", "None"),
    ]
    assert ("Normal", "IncidentResolved") in world.kube.reasons()
    assert ("Normal", "ResolvingIncident") in world.kube.reasons()

    world.tick(controller, 530, obs(HEALTHY))
    assert len(world.pager.resolves) == 1


def test_an_operator_killed_while_resolving_sends_the_resolve_again_after_restart() -> None:
    data = spec_dict()
    data["revision"] = "r1"
    world = World(data)
    controller = r1_rolled_back(world)
    r2_up_to_its_last_hold(world, controller)

    world.pager = FakePager(InjectedFault("operator killed mid-send"), journal=world.journal)
    with pytest.raises(InjectedFault):
        world.tick(world.controller(), 500, obs(HEALTHY))
    stored = world.kube.status()
    assert (stored["phase"], stored["previousIncident"]["state"]) == ("Promoted", "Resolving")

    world.pager = FakePager(journal=world.journal)
    world.tick(world.controller(), 530, obs(HEALTHY))

    assert [key for _, _, key in world.pager.resolves] == [KEY_R1]
    assert world.kube.status()["previousIncident"]["state"] == "Resolved"


def test_a_dry_run_breach_moves_no_weight_and_pages_nobody() -> None:
    data = spec_dict()
    data["dryRun"] = True
    world = World(data)
    controller = world.controller()
    for second in (0, 30, 60):
        world.tick(controller, second, obs(HEALTHY))
    for second in (90, 120, 150):
        world.tick(controller, second, obs(BREACH))

    status = world.kube.status()
    assert status["phase"] == "RolledBack"
    assert status["dryRun"] is True
    assert status["message"].startswith("dry run: rolled back")
    assert world.router.writes == []
    assert world.pager.triggers == [] and world.pager.resolves == []
    assert world.kube.secret_reads == []  # the routing key is not even read
    reasons = [r for _, r in world.kube.reasons()]
    assert reasons == ["Started", "WouldAdvance", "WouldRollBack"]


def test_two_rolled_back_revisions_then_a_promoted_one_resolve_both_incidents_once() -> None:
    """r1 rolled back (incident A), r2 rolled back (incident B), r3 promoted: both are
    resolved, each with its own dedup key; A's first resolve fails (503 after retries) and is
    sent again at a later tick while the rollout stays Promoted; B is never sent twice."""
    data = spec_dict()
    data["revision"] = "r1"
    world = World(data)
    controller = r1_rolled_back(world)
    edit_spec(world, revision="r2")
    world.tick(controller, 200, obs(HEALTHY))
    for second in (230, 260, 290):
        world.tick(controller, second, obs(BREACH))
    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    key_r2 = status["page"]["dedupKey"]
    assert world.pager.dedup_keys == [KEY_R1, key_r2]

    edit_spec(world, revision="r3")
    for second in (400, 460, 580):
        world.tick(controller, second, obs(HEALTHY))
    status = world.kube.status()
    assert status["olderIncidents"] == [
        {"dedupKey": KEY_R1, "revision": "r1", "state": "Open", "attempts": 0}
    ]
    assert status["previousIncident"]["dedupKey"] == key_r2
    world.pager = FakePager(
        DeliveryOutcome.EXHAUSTED, DeliveryOutcome.DELIVERED, journal=world.journal
    )
    controller = world.controller()  # on the new pager (everything it needs is stored)

    world.tick(controller, 700, obs(HEALTHY))

    assert [key for _, _, key in world.pager.resolves] == [KEY_R1, key_r2]
    status = world.kube.status()
    assert status["phase"] == "Promoted"
    assert status["previousIncident"]["state"] == "Resolved"
    (older,) = status["olderIncidents"]
    assert (older["state"], older["failures"], older["retryAt"]) == (
        "Resolving",
        1,
        "2024-06-01T12:11:45Z",
    )

    world.tick(controller, 730, obs(HEALTHY))
    world.tick(controller, 760, obs(HEALTHY))

    assert [key for _, _, key in world.pager.resolves] == [KEY_R1, key_r2, KEY_R1]
    status = world.kube.status()
    assert [i["state"] for i in [*status["olderIncidents"], status["previousIncident"]]] == [
        "Resolved",
        "Resolved",
    ]
    assert status["phase"] == "Promoted"
