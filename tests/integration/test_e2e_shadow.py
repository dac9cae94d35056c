"""End to end, the shadow phase: the real operator (under the shipped RBAC) sets Istio's
`mirror` and `mirrorPercentage` on the VirtualService's route `primary` while v1 serves
everyone; the router mirrors that share of the real requests to v2 as Istio does (fire and
forget, answers discarded, reported under v2 in Istio's metrics) and counts the responses it
returned to clients per version, which is how these tests prove that no user was served by
v2 before the shadow ended."""

import json
from typing import Any

import pytest

from canaryguard_testbed.controlplane import ControlPlane
from tests.integration.fixtures_e2e import EndToEnd, error_rate_slo, rollout_body
from tests.integration.fixtures_operator import Rollout, wait_for

pytestmark = pytest.mark.integration


def primary(r: Rollout) -> dict[str, Any]:
    for route in r.vs()["spec"]["http"]:
        if route.get("name") == "primary":
            found: dict[str, Any] = route
            return found
    raise AssertionError("no route primary")


def mirrored(r: Rollout) -> tuple[dict[str, Any] | None, Any]:
    route = primary(r)
    return route.get("mirror"), route.get("mirrorPercentage")


def test_shadow_catches_a_v2_failing_5_percent_of_mirrored_requests_before_any_user(
    e2e: EndToEnd,
) -> None:
    r = e2e.rollout(
        shadow={"percent": 50, "hold": "120s"},
        slos=[error_rate_slo(window="6s", lookback="10s")],
    )
    e2e.mesh.control("v2", {"error_rate": 0.05})
    with e2e.traffic(rate=100):
        e2e.operator()
        wait_for(
            "the mirror on route primary",
            lambda: mirrored(r) == ({"host": "fraud-model", "subset": "v2"}, {"value": 50}),
            timeout=30,
        )
        assert r.weights() == (100, 0)
        assert r.status()["shadow"]["state"] == "Running"
        status = r.wait_phase("RolledBack", timeout=90)
        r.wait_page("Delivered", timeout=30)
        served = e2e.mesh.served()
        sent_to_v2 = e2e.mesh.mirrored()
    print(f"shadow catch (VirtualService): served {served}, mirrored {sent_to_v2}")

    # Not one user response came from v2, while v2 was judged on thousands of mirrored ones.
    assert served.get("v2", 0) == 0
    assert served["v1"] > 0
    assert sent_to_v2["v2"] >= 200
    # The mirror went with the rollback, in the same write; the weights stayed 100/0.
    assert mirrored(r) == (None, None)
    assert r.weights() == (100, 0)
    route = primary(r)
    assert route["timeout"] == "5s"  # the rest of the route round-trips
    assert status["shadow"]["state"] == "Failed"
    rollback = status["rollback"]
    assert (rollback["reason"], rollback["slo"]) == ("SLOBreach", "error-rate")
    assert rollback["canary"] - rollback["baseline"] > 0.02
    assert rollback["message"].startswith("in shadow (mirror removed")
    assert status.get("stepIndex") is None
    events = e2e.pagerduty.events()
    assert len(events) == 1
    payload = events[0]["event"]["payload"]
    assert "in shadow" in payload["summary"]
    assert payload["custom_details"]["shadow"] is True
    reasons = r.event_reasons()
    assert "ShadowStarted" in reasons and "RolledBack" in reasons
    assert "StepAdvanced" not in reasons and "ShadowPassed" not in reasons


def test_a_healthy_shadow_removes_the_mirror_and_goes_on_to_promotion(e2e: EndToEnd) -> None:
    r = e2e.rollout(shadow={"percent": 50, "hold": "6s"})
    with e2e.traffic(rate=80):
        e2e.operator()
        wait_for(
            "the mirror on route primary",
            lambda: mirrored(r)[0] == {"host": "fraud-model", "subset": "v2"},
            timeout=30,
        )
        served_in_shadow = e2e.mesh.served().get("v2", 0)
        r.wait_weights(80, 20, timeout=60)
        assert mirrored(r) == (None, None)  # step 1 came with the mirror removed
        status = r.wait_phase("Promoted", timeout=90)
        served = e2e.mesh.served()

    assert served_in_shadow == 0
    assert served["v2"] > 0
    assert r.weights() == (0, 100)
    assert mirrored(r) == (None, None)
    assert status["shadow"]["state"] == "Passed"
    actions = [h["action"] for h in status["history"]]
    assert actions[:3] == ["ShadowStarted", "ShadowPassed", "StepAdvanced"]
    assert actions[-1] == "Promoted"
    assert e2e.pagerduty.events() == []


def test_httproute_shadow_mirrors_with_a_request_mirror_filter_and_rolls_back(
    e2e: EndToEnd,
) -> None:
    """The same catch on a Gateway API HTTPRoute: the operator adds a RequestMirror filter
    (percent 50) to the rule `primary`, in the Gateway API's own CRDs (standard channel),
    and removes it with the rollback."""
    from tests.integration.test_e2e_httproute import V2, start

    e2e.start_mesh(http_route="fraud-model")
    e2e.mesh.control("v2", {"error_rate": 0.05})
    r = start(
        e2e,
        shadow={"percent": 50, "hold": "120s"},
        slos=[error_rate_slo(window="6s", lookback="10s")],
    )

    def rule() -> dict[str, Any]:
        found: dict[str, Any] = next(
            x for x in r.route()["spec"]["rules"] if x.get("name") == "primary"
        )
        return found

    with e2e.traffic(rate=100):
        e2e.operator()
        wait_for("the RequestMirror filter", lambda: "filters" in rule(), timeout=30)
        (mirror,) = rule()["filters"]
        assert mirror["type"] == "RequestMirror"
        assert mirror["requestMirror"]["percent"] == 50
        assert mirror["requestMirror"]["backendRef"]["name"] == V2
        status = r.wait_phase("RolledBack", timeout=90)
        r.wait_page("Delivered", timeout=30)
        served = e2e.mesh.served()
        sent_to_v2 = e2e.mesh.mirrored()
    print(f"shadow catch (HTTPRoute): served {served}, mirrored {sent_to_v2}")

    assert served.get("v2", 0) == 0
    assert sent_to_v2["v2"] >= 200
    assert "filters" not in rule()
    assert r.weights() == (100, 0)
    assert rule()["timeouts"] == {"request": "5s"}
    assert status["shadow"]["state"] == "Failed"
    assert len(e2e.pagerduty.events()) == 1


@pytest.mark.parametrize(
    ("shadow", "message"),
    [
        ({"percent": 0, "hold": "1m"}, "spec.shadow.percent: Invalid value: 0"),
        ({"percent": 101, "hold": "1m"}, "spec.shadow.percent: Invalid value: 101"),
        ({"percent": 10}, "spec.shadow.hold: Required value"),
        ({"percent": 10, "hold": "soon"}, "spec.shadow.hold: Invalid value"),
        ({"percent": 10, "hold": "9000h"}, "must be at most 8760h"),
        ({"percent": 10, "hold": "1m", "onBreach": "email"}, "spec.shadow.onBreach: Unsupported"),
        (
            {"percent": 10, "hold": "1m", "skipSlos": ["ctr"]},
            "shadow.skipSlos must name SLOs of analysis.slos",
        ),
        (
            {"percent": 10, "hold": "1m", "skipSlos": ["error-rate"]},
            "shadow.skipSlos must leave at least one SLO to judge the shadow on",
        ),
        (
            {"percent": 10, "hold": "1m", "skipSlos": ["error-rate", "error-rate"]},
            "skipSlos must not repeat a name",
        ),
    ],
)
def test_the_api_server_refuses_a_bad_shadow_naming_the_field(
    control_plane: ControlPlane, namespace: str, shadow: dict[str, Any], message: str
) -> None:
    body = rollout_body(namespace, "http://127.0.0.1:9", "http://127.0.0.1:9", shadow=shadow)
    refused = control_plane.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
    assert refused.returncode != 0
    assert message in refused.stderr


def test_the_api_server_takes_a_good_shadow_with_its_default(
    control_plane: ControlPlane, namespace: str
) -> None:
    body = rollout_body(
        namespace, "http://127.0.0.1:9", "http://127.0.0.1:9", shadow={"percent": 5, "hold": "1m"}
    )
    control_plane.kubectl("create", "-f", "-", input=json.dumps(body))
    out = control_plane.kubectl("get", "cro", "fraud-model", "-n", namespace, "-o=json").stdout
    assert json.loads(out)["spec"]["shadow"] == {"percent": 5, "hold": "1m", "onBreach": "page"}
