"""The controller drives an HTTPRoute through the HTTPRoute router picked from the registry,
with the VirtualService rules: a step moves the rule's weights; a third backend, a missing
rule or object, and a second rollout on the rule are reported naming them."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from canaryguard.core.ports import Routers
from canaryguard.runtime.controller import Controller
from tests.unit.fakes import SETTINGS, FakeHTTPRouter, FakeRouter, World, rollout_body
from tests.unit.scenario import HEALTHY, at, obs, spec_dict

V1 = "scorer-v1"
V2 = "scorer-v2"


def http_route(*backends: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "scorer", "namespace": "ml", "resourceVersion": "1"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "name": "qa",
                    "matches": [{"path": {"value": "/qa"}}],
                    "backendRefs": [{"name": V2, "port": 80}],
                },
                {"name": "primary", "backendRefs": list(backends or [{"name": V1, "port": 80}])},
            ],
        },
    }


def route_spec(**route: Any) -> dict[str, Any]:
    data = spec_dict()
    del data["virtualService"]
    data["httpRoute"] = {"name": "scorer", "rules": [{"name": "primary"}], **route}
    data["baseline"] = {"host": V1}
    data["canary"] = {"host": V2}
    return data


class RouteWorld(World):
    """The World with an HTTPRoute router beside the VirtualService one."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.vs_router = self.router
        self.router = FakeHTTPRouter(http_route(), journal=self.journal)

    def controller(self) -> Controller:
        routers = Routers(self.vs_router, self.router)
        controller = Controller(
            self.kube, routers, self.metrics, self.pager, SETTINGS, clock=lambda: self.now
        )
        controller.seen("ADDED", self.kube.get())
        return controller


def weights(router: FakeRouter, rule: int = 1) -> list[tuple[str, int | None]]:
    route = router.services[("ml", "scorer")]
    return [(b["name"], b.get("weight")) for b in route["spec"]["rules"][rule]["backendRefs"]]


def test_a_step_sets_only_the_rules_backend_weights() -> None:
    world = RouteWorld(spec_data=route_spec())
    before = copy.deepcopy(world.router.services[("ml", "scorer")])
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    assert weights(world.router) == [(V1, 90), (V2, 10)]
    after = world.router.services[("ml", "scorer")]
    assert after["spec"]["rules"][0] == before["spec"]["rules"][0]
    assert world.vs_router.writes == []
    assert world.kube.status("ml", "scorer")["phase"] == "Progressing"


def test_a_third_backend_makes_the_rollout_invalid_naming_the_rule() -> None:
    world = RouteWorld(spec_data=route_spec())
    world.router = FakeHTTPRouter(
        http_route({"name": V1}, {"name": "shadow", "weight": 0}), journal=world.journal
    )
    world.tick(world.controller(), 0, obs(HEALTHY))
    status = world.kube.status("ml", "scorer")
    assert status["phase"] == "Invalid"
    assert (
        "rule primary of HTTPRoute scorer also sends traffic to Service shadow"
        in (status["message"])
    )
    assert world.router.writes == []


def test_a_missing_rule_and_a_missing_route_are_named() -> None:
    world = RouteWorld(spec_data=route_spec(rules=[{"index": 7}]))
    world.tick(world.controller(), 0, obs(HEALTHY))
    assert "HTTPRoute scorer has no rule at index 7" in world.kube.status("ml", "scorer")["message"]
    world = RouteWorld(spec_data=route_spec(name="gone"))
    world.tick(world.controller(), 0, obs(HEALTHY))
    assert "HTTPRoute ml/gone not found" in world.kube.status("ml", "scorer")["message"]
    assert world.router.writes == []


def test_a_second_rollout_on_the_rule_waits_naming_the_first() -> None:
    world = RouteWorld(spec_data=route_spec())
    world.kube.objects[("ml", "scorer")]["metadata"]["creationTimestamp"] = "2024-06-01T12:00:00Z"
    rival = rollout_body(route_spec(rules=[{"index": 1}]))
    rival["metadata"].update(
        name="rival", uid="uid-rival", creationTimestamp="2024-06-01T12:00:01Z"
    )
    stored = world.kube.create(rival)
    controller = world.controller()
    controller.seen("ADDED", stored)
    world.tick(controller, 0, obs(HEALTHY))
    world.now = at(1)
    asyncio.run(controller.tick(world.kube.get("ml", "rival")))
    message = str(world.kube.status("ml", "rival")["message"])
    assert (
        "spec.httpRoute.rules: rule primary of HTTPRoute scorer is already driven by "
        "CanaryRollout scorer" in message
    )
    assert weights(world.router) == [(V1, 90), (V2, 10)]
