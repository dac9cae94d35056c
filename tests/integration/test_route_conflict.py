"""Two rollouts, one route, with the real operator: the second CanaryRollout that names the
route of a running one is Invalid with a message naming the first, the VirtualService keeps
the first one's weights tick after tick (no 80/20, 30/70 tug of war), and the second takes
the route over when the first is deleted.

The real operator runs under the shipped RBAC against the real API server and Prometheus;
no traffic is needed (both rollouts hold their first step). Time is accelerated: 1 s ticks."""

import copy
import json
import time

from canaryguard_testbed.controlplane import ControlPlane
from tests.integration.fixtures_e2e import EndToEnd
from tests.integration.fixtures_operator import Rollout, condition, wait_for

HOLD = [{"weight": 20, "hold": "300s"}, {"weight": 100, "hold": "300s"}]
RIVAL_HOLD = [{"weight": 70, "hold": "300s"}, {"weight": 100, "hold": "300s"}]


def vs_version(cp: ControlPlane, namespace: str) -> str:
    out = cp.kubectl("get", "virtualservice", "fraud-model", "-n", namespace, "-o=json")
    version: str = json.loads(out.stdout)["metadata"]["resourceVersion"]
    return version


def test_a_second_rollout_on_a_driven_route_is_invalid_and_never_moves_its_weights(
    e2e: EndToEnd,
) -> None:
    control_plane, namespace = e2e.cp, e2e.namespace
    first = e2e.rollout(steps=HOLD, mesh=False)
    op = e2e.operator()
    wait_for(
        "the first rollout at 80/20",
        lambda: first.phase() == "Progressing" and first.weights() == (80, 20),
        timeout=20,
    )
    body = copy.deepcopy(first.body)
    body["metadata"]["name"] = "fraud-model-2"
    body["spec"]["steps"] = RIVAL_HOLD
    second = Rollout(control_plane, namespace, "fraud-model-2", body, "fraud-model")
    second.apply()

    wait_for("the second rollout Invalid", lambda: second.phase() == "Invalid", timeout=20)
    expected = (
        "spec.virtualService.routes: route primary of VirtualService fraud-model is already "
        "driven by CanaryRollout fraud-model, created earlier and not finished; two rollouts "
        "on one route would fight over its weights, so this one waits until fraud-model "
        "finishes or is deleted"
    )
    status = second.status()
    assert status["message"] == f"invalid: {expected}"
    spec_valid = condition(status, "SpecValid")
    assert (spec_valid["status"], spec_valid["message"]) == ("False", expected)

    # Tick after tick, the route keeps the first rollout's split and is not even written.
    version = vs_version(control_plane, namespace)
    seen = set()
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        seen.add(first.weights())
        time.sleep(0.2)
    assert seen == {(80, 20)}, seen
    assert vs_version(control_plane, namespace) == version
    assert (first.phase(), second.phase()) == ("Progressing", "Invalid")
    assert [e["reason"] for e in second.events()].count("InvalidSpec") == 1

    # The first one deleted, the second drives the route from its own first step.
    control_plane.kubectl("delete", "canaryrollout", "fraud-model", "-n", namespace)
    wait_for(
        "the second rollout at 30/70",
        lambda: second.phase() == "Progressing" and first.weights() == (30, 70),
        timeout=20,
    )
    assert condition(second.status(), "SpecValid")["status"] == "True"
    assert op.proc is not None and op.proc.poll() is None
