"""A rollback cut by a crash at each point of its sequence, through the controller on the
in-memory fakes, with an operator restarted afresh (nothing kept in memory).

A rollback is written in this order: its intent (the rollback's reason and evidence, the page
Pending, the phase and weight still those of the step), the weights 100/0 (and no mirror), the
status RolledBack, the page, the page's delivery. The SLO here has `window: 0s`, so the breach
that rolls back is judged on the very tick of the rollback and no stored verdict shows it: the
case the engine's re-derivation from a recorded breach could not cover (before the intent, the
restarted operator held the step at `WeightsLowered` with nobody paged, and in the shadow
phase set the mirror back and went on to promote the canary). Whatever the canary's verdicts
after the restart (breaching, healthy, inconclusive), the rollback completes: route 100/0 with
no mirror, phase RolledBack, the rollback's reason and values as decided, one incident.
"""

from __future__ import annotations

import pytest

from canaryguard.core.manual import REQUEST_ANNOTATION
from canaryguard.core.observations import SloObservation
from tests.unit.fakes import FakePager, InjectedFault, World
from tests.unit.scenario import BREACH, FEW, HEALTHY, obs, spec_dict

CRASH_POINTS = ["before-weights", "before-status", "before-page", "after-page"]
AFTER = [
    pytest.param(BREACH, id="still-breaching"),
    pytest.param(HEALTHY, id="healthy"),
    pytest.param(FEW, id="inconclusive"),
]


def world_of(shadow: bool = False) -> World:
    data = spec_dict()
    data["analysis"]["slos"][0]["window"] = "0s"
    if shadow:
        data["shadow"] = {"percent": 30, "hold": "120s"}
    return World(spec_data=data)


def arm(world: World, point: str) -> None:
    """Make the rollback's tick die at `point` (the fakes raise where the process would die)."""
    if point == "before-weights":  # the intent is written, the route write never lands
        world.router.fail_writes(1)
    elif point == "before-status":  # intent and route written, the RolledBack status not
        world.kube.fail_patches(1, skip=1)
    elif point == "before-page":  # RolledBack with the page Pending written, killed mid-send
        world.pager = FakePager(
            InjectedFault("operator killed mid-send"), None, journal=world.journal
        )
    else:  # the page was sent, its delivery not written
        world.kube.fail_patches(1, skip=2)


def crash_and_restart(world: World, seconds: float, point: str, after: SloObservation) -> None:
    """The rollback's tick at `seconds`, cut at `point`; then a fresh operator ticks for
    five minutes with the canary seen as `after`."""
    arm(world, point)
    with pytest.raises(InjectedFault):
        world.tick(world.controller(), seconds, obs(BREACH))
    world.pager = FakePager(journal=world.journal)  # the send that follows is delivered
    restarted = world.controller()
    for second in range(int(seconds) + 30, int(seconds) + 331, 30):
        world.tick(restarted, second, obs(after))


def key(world: World) -> str:
    return f"canaryguard/ml/scorer/{world.spec.effective_revision()}"


@pytest.mark.parametrize("after", AFTER)
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_step_rollback_cut_at_any_point_completes_and_pages_one_incident(
    point: str, after: SloObservation
) -> None:
    world = world_of()
    controller = world.controller()
    for second in (0, 30, 60):
        world.tick(controller, second, obs(HEALTHY))
    assert world.router.weights() == [(50, 50)]
    writes = len(world.router.writes)

    crash_and_restart(world, 90, point, after)

    assert world.router.weights() == [(100, 0)]
    assert set(world.router.writes[writes:]) == {(100, 0)}  # never any traffic back
    status = world.kube.status()
    assert (status["phase"], status["canaryWeight"]) == ("RolledBack", 0)
    rollback = status["rollback"]
    assert (rollback["reason"], rollback["slo"], rollback["canary"]) == (
        "SLOBreach",
        "errors",
        0.05,
    )
    assert rollback["at"] == rollback["breachingSince"] == "2024-06-01T12:01:30Z"
    assert (status["page"]["state"], status["page"]["dedupKey"]) == ("Delivered", key(world))
    # Exactly one incident: one trigger, or two of the same key when the crash came between
    # the send and its record (delivery is at least once; DESIGN.md).
    sent = [e[1] for e in world.journal.of("page")]
    assert sent == [key(world)] * (2 if point == "after-page" else 1)
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert progressing["reason"] == "RolledBack"


@pytest.mark.parametrize("after", AFTER)
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_shadow_rollback_cut_at_any_point_never_sets_the_mirror_again(
    point: str, after: SloObservation
) -> None:
    """Before the intent, a shadow rollback cut between its route write and its status, with
    no breach on record, came back to a running shadow without its mirror: the mirror was set
    again (MirrorReasserted) and, the canary looking healthy on it, the shadow passed and the
    canary was given traffic up to 100%."""
    world = world_of(shadow=True)
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 30, obs(HEALTHY))
    assert world.router.mirrors == [30]

    crash_and_restart(world, 60, point, after)

    assert world.router.weights() == [(100, 0)]
    assert world.router.mirrors[1:] == [0]  # the rollback's one write removed the mirror
    assert ("Warning", "MirrorReasserted") not in world.kube.reasons()
    status = world.kube.status()
    assert (status["phase"], status["shadow"]["state"]) == ("RolledBack", "Failed")
    assert status["rollback"]["message"].count("in shadow (mirror removed") == 1
    sent = [e[1] for e in world.journal.of("page")]
    assert sent == [key(world)] * (2 if point == "after-page" else 1)


def test_the_intent_is_written_before_the_weights_and_names_the_rollback() -> None:
    """What a crash right after the intent leaves: the step and its weight as they were, the
    rollback decided (reason, values, breach start), the page Pending, Progressing False
    RollingBack; and the route still at the step's split."""
    world = world_of()
    controller = world.controller()
    for second in (0, 30, 60):
        world.tick(controller, second, obs(HEALTHY))
    world.router.fail_writes(1)
    with pytest.raises(InjectedFault):
        world.tick(controller, 90, obs(BREACH))

    assert world.router.weights() == [(50, 50)]
    status = world.kube.status()
    assert (status["phase"], status["canaryWeight"], status["stepIndex"]) == ("Progressing", 50, 1)
    assert status["rollback"]["reason"] == "SLOBreach"
    assert status["rollback"]["breachingSince"] == "2024-06-01T12:01:30Z"
    assert (status["page"]["state"], status["page"]["dedupKey"]) == ("Pending", key(world))
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "RollingBack")
    assert world.journal.of("page") == []


def test_an_ordinary_tick_writes_no_intent() -> None:
    """Only a rollback writes twice: a step advance is one weight write and one status write."""
    world = world_of()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    before = len(world.journal.entries)
    world.tick(controller, 60, obs(HEALTHY))
    assert [e[:2] for e in world.journal.of("weights", "status")[-2:]] == [
        ("weights", "50/50"),
        ("status", "Progressing"),
    ]
    assert (
        len(world.journal.of("status"))
        == len([e for e in world.journal.entries[:before] if e[0] == "status"]) + 1
    )


@pytest.mark.parametrize("point", ["before-weights", "before-status"])
def test_a_manual_abort_cut_before_its_status_completes_once(point: str) -> None:
    """An abort asked with --page: its intent records the request as handled, so the
    restarted operator completes the abort (ManualAbort) instead of carrying the request out
    a second time, and pages once."""
    world = world_of()
    controller = world.controller()
    for second in (0, 30, 60):
        world.tick(controller, second, obs(HEALTHY))
    request = '{"id": "r-1", "action": "abort", "by": "ana", "reason": "bad", "page": true}'
    world.kube.annotate(REQUEST_ANNOTATION, request)
    arm(world, point)
    with pytest.raises(InjectedFault):
        world.tick(controller, 70, obs(HEALTHY))

    restarted = world.controller()
    world.tick(restarted, 90, obs(HEALTHY))
    world.tick(restarted, 120, obs(HEALTHY))

    status = world.kube.status()
    assert (status["phase"], status["rollback"]["reason"]) == ("RolledBack", "Manual")
    assert status["lastRequest"]["id"] == "r-1"
    assert world.router.weights() == [(100, 0)]
    assert [e[1] for e in world.journal.of("page")] == [key(world)]
    aborts = [r for r in world.kube.reasons() if r[1] == "ManualAbort"]
    # Events follow the weight write: posted when decided (if the weights were written),
    # and when completed.
    assert aborts == [("Warning", "ManualAbort")] * (1 if point == "before-weights" else 2)
