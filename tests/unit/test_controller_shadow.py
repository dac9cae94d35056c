"""The shadow phase through the controller, on the in-memory fakes: the mirror is written
to the VirtualService with the weights (one write), before the status; an operator that dies
between the two, or after the write that ends the shadow, re-derives the decision from what
it finds on restart."""

from __future__ import annotations

import pytest

from tests.unit.fakes import InjectedFault, World
from tests.unit.scenario import BREACH, FEW, HEALTHY, obs, spec_dict


def shadow_world(**shadow: object) -> World:
    data = spec_dict()
    data["shadow"] = {"percent": 30, "hold": "60s", **shadow}
    return World(spec_data=data)


def mirror(world: World) -> tuple[object, object]:
    route = world.router.services[("ml", "scorer")]["spec"]["http"][0]
    return route.get("mirror"), route.get("mirrorPercentage")


def test_shadow_is_written_to_the_route_before_the_status_and_ends_in_one_write() -> None:
    world = shadow_world()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    assert mirror(world) == ({"host": "scorer", "subset": "v2"}, {"value": 30.0})
    assert world.router.weights() == [(100, 0)]
    assert world.journal.of("weights", "status")[:2] == [
        ("weights", "100/0 mirror 30%"),
        ("status", "Progressing", "None"),
    ]
    assert world.kube.status()["shadow"]["state"] == "Running"

    world.tick(controller, 30, obs(HEALTHY))
    world.tick(controller, 60, obs(HEALTHY))
    assert mirror(world) == (None, None)
    assert world.router.writes == [(100, 0), (90, 10)]
    assert world.router.mirrors == [30, 0]
    status = world.kube.status()
    assert (status["shadow"]["state"], status["stepIndex"], status["canaryWeight"]) == (
        "Passed",
        0,
        10,
    )


def test_crash_between_the_mirror_and_the_status_starts_the_shadow_again() -> None:
    world = shadow_world()
    world.kube.fail_patches(1)
    with pytest.raises(InjectedFault):
        world.tick(world.controller(), 0, obs(HEALTHY))
    assert mirror(world)[1] == {"value": 30.0}  # the route was written, the status was not
    assert world.kube.status() == {}

    restarted = world.controller()  # the operator died: nothing kept in memory
    world.tick(restarted, 5, obs(HEALTHY))
    assert world.router.mirrors == [30]  # found as decided: not written again
    status = world.kube.status()
    assert (status["shadow"]["state"], status["shadow"]["startedAt"]) == (
        "Running",
        "2024-06-01T12:00:05Z",
    )


def test_crash_after_the_shadow_rollback_write_is_rolled_back_again_while_it_breaches() -> None:
    world = shadow_world()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 20, obs(BREACH))
    world.kube.fail_patches(2)  # the rollback's intent, then its status
    with pytest.raises(InjectedFault):
        world.tick(controller, 80, obs(BREACH))
    assert mirror(world) == (None, None)
    assert world.kube.status()["shadow"]["state"] == "Running"

    restarted = world.controller()
    world.tick(restarted, 85, obs(BREACH))
    status = world.kube.status()
    assert (status["phase"], status["shadow"]["state"]) == ("RolledBack", "Failed")
    assert mirror(world) == (None, None)
    assert world.router.weights() == [(100, 0)]
    assert len(world.pager.triggers) == 1


def test_a_mirror_removed_by_hand_during_the_shadow_is_set_again() -> None:
    world = shadow_world()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    route = world.router.services[("ml", "scorer")]["spec"]["http"][0]
    del route["mirror"], route["mirrorPercentage"]
    world.tick(controller, 30, obs(HEALTHY))
    assert mirror(world) == ({"host": "scorer", "subset": "v2"}, {"value": 30.0})
    assert ("Warning", "MirrorReasserted") in world.kube.reasons()


def test_crash_after_the_shadow_rollback_write_is_recorded_after_the_lookback() -> None:
    """The rollback's route write (100/0, mirror removed) landed and its status did not; the
    operator comes back after the canary's mirrored requests left the lookback, so the SLO
    is inconclusive. The stored breach had run its window: the rollback is recorded and
    paged once, and the mirror is not set again."""
    world = shadow_world()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 20, obs(BREACH))
    world.kube.fail_patches(2)  # the rollback's intent, then its status
    with pytest.raises(InjectedFault):
        world.tick(controller, 80, obs(BREACH))
    assert mirror(world) == (None, None)  # the route was written, the status was not
    stored = world.kube.status()
    assert (stored["phase"], stored["shadow"]["state"]) == ("Progressing", "Running")
    assert stored["slos"][0]["breachingSince"] == "2024-06-01T12:00:20Z"
    posted = world.kube.reasons().count(("Warning", "RolledBack"))

    restarted = world.controller()  # nothing kept in memory
    world.tick(restarted, 300, obs(FEW))
    status = world.kube.status()
    assert (status["phase"], status["shadow"]["state"]) == ("RolledBack", "Failed")
    assert status["rollback"]["breachingSince"] == "2024-06-01T12:00:20Z"
    assert status["rollback"]["message"].startswith(
        "in shadow (mirror removed, no user was served by the canary): SLO errors"
    )
    assert mirror(world) == (None, None)
    assert 30 not in world.router.mirrors[1:]  # never mirrored again after the rollback
    assert world.router.weights() == [(100, 0)]
    assert len(world.pager.triggers) == 1
    assert ("Warning", "MirrorReasserted") not in world.kube.reasons()
    assert world.kube.reasons().count(("Warning", "RolledBack")) == posted + 1

    world.tick(restarted, 330, obs(FEW))  # recorded once
    assert len(world.pager.triggers) == 1
    assert world.kube.reasons().count(("Warning", "RolledBack")) == posted + 1


def test_crash_after_a_shadow_rollback_set_to_event_is_recorded_without_a_page() -> None:
    world = shadow_world(onBreach="event")
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 20, obs(BREACH))
    world.kube.fail_patches(2)  # the rollback's intent, then its status
    with pytest.raises(InjectedFault):
        world.tick(controller, 80, obs(BREACH))
    posted = world.kube.reasons().count(("Warning", "RolledBack"))

    world.tick(world.controller(), 300, obs(FEW))
    status = world.kube.status()
    assert (status["phase"], status["shadow"]["state"]) == ("RolledBack", "Failed")
    assert mirror(world) == (None, None)
    assert world.pager.triggers == []
    assert world.kube.reasons().count(("Warning", "RolledBack")) == posted + 1


def test_a_dry_run_shadow_does_not_post_its_missing_mirror_every_tick() -> None:
    """A dry run never sets the mirror: the route without one is as decided, not a mirror
    removed outside (before, every tick posted MirrorReasserted and added it to the
    history)."""
    data = spec_dict()
    data["shadow"] = {"percent": 30, "hold": "60s"}
    data["dryRun"] = True
    world = World(spec_data=data)
    controller = world.controller()
    for second in (0, 10, 20, 30):
        world.tick(controller, second, obs(HEALTHY))
    assert (world.router.writes, world.router.mirrors) == ([], [])
    assert world.kube.reasons() == [("Normal", "ShadowStarted")]
    assert [h["action"] for h in world.kube.status()["history"]] == ["ShadowStarted"]
