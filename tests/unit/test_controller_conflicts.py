"""Two rollouts, one route, on the controller's in-memory fakes: the older rollout drives the
route, the newer one is Invalid with a message naming it (no tug of war), and takes over when
the older one finishes or is deleted. A finished rollout leaves the route to the active one.

`ml/scorer` (the scenario's rollout: 10%, 50%, 100%) is created at T0; `ml/rival` names the
same VirtualService a second later, with steps 70% and 100% (held 10 minutes each).
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from typing import Any

from canaryguard.runtime.controller import Controller
from canaryguard.runtime.sharding import Shard, shard_of
from tests.unit.fakes import SETTINGS, World, rollout_body, virtual_service
from tests.unit.scenario import HEALTHY, at, obs, spec_dict

STAMP = "2024-06-01T12:00:00Z"
LATER = "2024-06-01T12:00:01Z"


def rival_body(
    spec: dict[str, Any] | None = None, created: str = LATER, name: str = "rival"
) -> dict[str, Any]:
    data = spec if spec is not None else spec_dict()
    if spec is None:
        data["steps"] = [{"weight": 70, "hold": "600s"}, {"weight": 100, "hold": "600s"}]
    body = rollout_body(data)
    body["metadata"].update(name=name, uid=f"uid-{name}", creationTimestamp=created)
    return body


def two_rollouts(rival: dict[str, Any] | None = None) -> tuple[World, Controller]:
    """The world with `ml/scorer` (created at T0) and `rival`, both seen by one controller."""
    world = World()
    world.kube.objects[("ml", "scorer")]["metadata"]["creationTimestamp"] = STAMP
    stored = world.kube.create(rival if rival is not None else rival_body())
    controller = world.controller()
    controller.seen("ADDED", stored)
    return world, controller


def tick_rival(world: World, controller: Controller, seconds: float, name: str = "rival") -> None:
    """At T0 + `seconds`, one tick of the other rollout."""
    world.now = at(seconds)
    asyncio.run(controller.tick(world.kube.get("ml", name)))


def message(world: World, name: str) -> str:
    return str(world.kube.status("ml", name)["message"])


def spec_valid(world: World, name: str) -> dict[str, Any]:
    (cond,) = [c for c in world.kube.status("ml", name)["conditions"] if c["type"] == "SpecValid"]
    return dict(cond)


def test_the_newer_rollout_on_the_same_route_is_invalid_and_writes_no_weights() -> None:
    world, controller = two_rollouts()
    for second in range(0, 121, 30):
        world.tick(controller, second, obs(HEALTHY))
        tick_rival(world, controller, second)

    assert world.router.writes == [(90, 10), (50, 50)]  # scorer's steps, never 30/70
    assert world.kube.status("ml", "scorer")["phase"] == "Progressing"
    rival = world.kube.status("ml", "rival")
    assert rival["phase"] == "Invalid"
    expected = (
        "spec.virtualService.name: route primary of VirtualService scorer is already driven "
        "by CanaryRollout scorer, created earlier and not finished; two rollouts on one route "
        "would fight over its weights, so this one waits until scorer finishes or is deleted"
    )
    assert rival["message"] == f"invalid: {expected}"
    assert (spec_valid(world, "rival")["status"], spec_valid(world, "rival")["message"]) == (
        "False",
        expected,
    )
    # Reported once, not at every tick; the weight is still scorer's.
    assert [r for _, r in world.kube.reasons()].count("InvalidSpec") == 1
    assert world.router.weights() == [(50, 50)]


def test_the_newer_rollout_takes_the_route_when_the_older_one_is_deleted() -> None:
    world, controller = two_rollouts()
    world.tick(controller, 0, obs(HEALTHY))
    tick_rival(world, controller, 0)
    assert world.kube.status("ml", "rival")["phase"] == "Invalid"

    controller.seen("DELETED", world.kube.get())
    del world.kube.objects[("ml", "scorer")]
    tick_rival(world, controller, 30)

    rival = world.kube.status("ml", "rival")
    assert (rival["phase"], rival["canaryWeight"]) == ("Progressing", 70)
    assert spec_valid(world, "rival")["status"] == "True"
    assert world.router.writes == [(90, 10), (30, 70)]


def test_when_the_older_one_finishes_the_newer_one_drives_and_the_finished_one_yields() -> None:
    """Without the rule for finished rollouts, the promoted one would set 0/100 back at each
    tick while the other sets 30/70: the tug of war again."""
    world, controller = two_rollouts()
    for second in range(0, 301, 30):
        world.tick(controller, second, obs(HEALTHY))
        tick_rival(world, controller, second)
    assert world.kube.status("ml", "scorer")["phase"] == "Promoted"
    # The rival's tick right after the promotion started it at its first step.
    assert world.router.writes == [(90, 10), (50, 50), (0, 100), (30, 70)]
    assert world.kube.status("ml", "rival")["phase"] == "Progressing"

    for second in range(330, 451, 30):
        world.tick(controller, second, obs(HEALTHY))
        tick_rival(world, controller, second)

    assert world.router.writes == [(90, 10), (50, 50), (0, 100), (30, 70)]
    assert world.router.weights() == [(30, 70)]
    assert world.kube.status("ml", "scorer")["phase"] == "Promoted"  # a finished phase stays
    assert spec_valid(world, "scorer")["message"] == (
        "spec.virtualService.name: route primary of VirtualService scorer is now driven by "
        "CanaryRollout rival; this finished rollout no longer sets its weights"
    )


def test_rollouts_on_different_routes_of_one_virtual_service_both_drive() -> None:
    vs = virtual_service()
    second_route = copy.deepcopy(vs["spec"]["http"][0])
    second_route["name"] = "secondary"
    vs["spec"]["http"].append(second_route)
    scorer = spec_dict()
    scorer["virtualService"] = {"name": "scorer", "routes": ["primary"]}
    rival = spec_dict()
    rival["virtualService"] = {"name": "scorer", "routes": ["secondary"]}
    rival["steps"] = [{"weight": 70, "hold": "60s"}, {"weight": 100, "hold": "60s"}]
    world = World(spec_data=scorer)
    world.router.services[("ml", "scorer")] = vs
    stored = world.kube.create(rival_body(rival))
    controller = world.controller()
    controller.seen("ADDED", stored)

    world.tick(controller, 0, obs(HEALTHY))
    tick_rival(world, controller, 0)

    assert world.kube.status("ml", "rival")["phase"] == "Progressing"
    assert world.router.writes == [(90, 10), (30, 70)]
    assert world.router.weights() == [(90, 10), (30, 70)]


def test_an_older_rollout_whose_spec_is_invalid_claims_nothing() -> None:
    broken = spec_dict()
    broken["steps"] = [{"weight": 50}, {"weight": 20}]
    world = World(spec_data=broken)
    world.kube.objects[("ml", "scorer")]["metadata"]["creationTimestamp"] = STAMP
    stored = world.kube.create(rival_body())
    controller = world.controller()
    controller.seen("ADDED", stored)

    world.tick(controller, 0)
    tick_rival(world, controller, 0)

    assert world.kube.status("ml", "scorer")["phase"] == "Invalid"
    assert world.kube.status("ml", "rival")["phase"] == "Progressing"
    assert world.router.writes == [(30, 70)]


def test_created_in_the_same_second_the_name_decides() -> None:
    world, controller = two_rollouts(rival_body(created=STAMP, name="alpha"))

    tick_rival(world, controller, 0, name="alpha")
    world.tick(controller, 0, obs(HEALTHY))

    assert world.kube.status("ml", "alpha")["phase"] == "Progressing"
    assert world.kube.status("ml", "scorer")["phase"] == "Invalid"
    assert "already driven by CanaryRollout alpha, created earlier" in message(world, "scorer")
    assert world.router.writes == [(30, 70)]


def test_a_rollout_of_another_shard_still_claims_its_route() -> None:
    # scorer hashes to shard 0 of 2, rival to shard 1: the shard-1 controller never ticks
    # scorer, but sees it in the watch, so rival waits for it as with one process.
    world = World()
    world.kube.objects[("ml", "scorer")]["metadata"]["creationTimestamp"] = STAMP
    rival = world.kube.create(rival_body())
    assert (shard_of("ml", "scorer", 2), shard_of("ml", "rival", 2)) == (0, 1)
    shard_one = Controller(
        world.kube,
        world.router,
        world.metrics,
        world.pager,
        replace(SETTINGS, shard=Shard(1, 2)),
        clock=lambda: world.now,
    )
    shard_one.seen(None, world.kube.get())
    shard_one.seen(None, rival)
    assert ("ml", "scorer") not in shard_one.scheduler
    tick_rival(world, shard_one, 0)
    assert world.kube.status("ml", "rival")["phase"] == "Invalid"
    assert "driven by CanaryRollout scorer" in message(world, "rival")
    assert world.router.writes == []

    shard_one.seen("DELETED", world.kube.get())  # scorer gone: rival drives
    del world.kube.objects[("ml", "scorer")]
    tick_rival(world, shard_one, 30)
    assert world.kube.status("ml", "rival")["canaryWeight"] == 70
