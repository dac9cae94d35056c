"""End to end with a Gateway API HTTPRoute instead of a VirtualService: the real operator
(under the shipped RBAC) sets the weights of an HTTPRoute's backendRefs (Gateway API's own
CRDs, standard channel, in the local API server) while real HTTP traffic flows through the
router, which follows the HTTPRoute as it follows a VirtualService and reports Istio's
metrics. Each version is its own Service (fraud-model-v1, fraud-model-v2), so the SLO
selector matches on the app label rather than the Service name."""

import json
from typing import Any

import pytest

from tests.integration.fixtures_e2e import EndToEnd, pagerduty_secret, rollout_body
from tests.integration.fixtures_operator import Rollout, wait_for

pytestmark = pytest.mark.integration

NAME = "fraud-model"
V1 = "fraud-model-v1"
V2 = "fraud-model-v2"


def fraud_http_route(namespace: str) -> dict[str, Any]:
    """All traffic on v1 in the rule `primary`, behind a header-match rule (to v2) the
    operator must leave alone; fields the operator does not know ride along."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "mesh-gateway", "sectionName": "http"}],
            "hostnames": ["fraud-model.example"],
            "rules": [
                {
                    "name": "qa",
                    "matches": [{"headers": [{"name": "x-qa", "value": "canary"}]}],
                    "backendRefs": [{"name": V2, "port": 8080}],
                },
                {
                    "name": "primary",
                    "timeouts": {"request": "5s"},
                    "backendRefs": [{"name": V1, "port": 8080}],
                },
            ],
        },
    }


class RouteRollout(Rollout):
    """A Rollout whose weights are read from the HTTPRoute's rule `primary`."""

    def route(self) -> dict[str, Any]:
        out = self.cp.kubectl("get", "httproute", NAME, "-n", self.namespace, "-o=json")
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def weights(self, route: str = "primary") -> tuple[int, int]:
        """(baseline, canary) weights of the rule, in Gateway API's semantics."""
        for rule in self.route()["spec"]["rules"]:
            if rule.get("name") == route:
                refs = rule["backendRefs"]
                found = {
                    r["name"]: (100 if len(refs) == 1 and r.get("weight", 1) > 0 else None)
                    or r.get("weight", 1)
                    for r in refs
                }
                return found.get(V1, 0), found.get(V2, 0)
        raise AssertionError(f"no rule {route}")


def start(e2e: EndToEnd, **overrides: Any) -> RouteRollout:
    e2e.start_mesh(http_route=NAME)
    e2e.cp.kubectl("apply", "-f", "-", input=json.dumps(fraud_http_route(e2e.namespace)))
    e2e.cp.kubectl("create", "-f", "-", input=json.dumps(pagerduty_secret(e2e.namespace)))
    body = rollout_body(
        e2e.namespace, e2e.prometheus.url, e2e.pagerduty.url, name=NAME, **overrides
    )
    spec = body["spec"]
    del spec["virtualService"]
    spec["httpRoute"] = {"name": NAME, "rules": [{"name": "primary"}]}
    spec["baseline"] = {"host": V1}
    spec["canary"] = {"host": V2}
    spec["metrics"]["selector"] = {
        "destination_app": NAME,
        "destination_service_namespace": e2e.namespace,
    }
    r = RouteRollout(e2e.cp, e2e.namespace, NAME, body)
    r.apply()
    return r


def test_httproute_canary_is_promoted_and_other_fields_round_trip(e2e: EndToEnd) -> None:
    r = start(e2e)
    before = r.route()
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(80, 20)
        seen = set()

        def promoted() -> bool:
            seen.add(r.weights())
            return r.phase() == "Promoted"

        wait_for("Promoted", promoted, timeout=90)
        shares = e2e.mesh.current_route()["shares"]
    assert r.weights() == (0, 100)
    assert (50, 50) in seen
    assert e2e.pagerduty.events() == []
    assert "Promoted" in r.event_reasons()
    # Only the two weights changed: the qa rule, the timeouts, parents and hostnames did not.
    after = r.route()
    assert after["spec"]["rules"][0] == before["spec"]["rules"][0]
    assert after["spec"]["rules"][1]["timeouts"] == {"request": "5s"}
    assert after["spec"]["rules"][1]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": V1, "port": 8080, "weight": 0},
        {"group": "", "kind": "Service", "name": V2, "port": 8080, "weight": 100},
    ]
    for key in ("parentRefs", "hostnames"):
        assert after["spec"][key] == before["spec"][key]
    # The router followed the HTTPRoute: all traffic on the canary's Service.
    assert {k.split(".")[0]: v for k, v in shares.items()} == {V2: 1.0}
    status = r.status()
    assert status["phase"] == "Promoted"


def test_httproute_canary_with_5xx_is_rolled_back_and_pages(e2e: EndToEnd) -> None:
    r = start(e2e, steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}])
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        r.wait_healthy()
        e2e.mesh.control("v2", {"error_rate": 0.3})
        r.wait_phase("RolledBack")
        r.wait_page("Delivered", timeout=20)
    assert r.weights() == (100, 0)
    status = r.status()
    assert status["rollback"]["reason"] == "SLOBreach"
    events = e2e.pagerduty.events()
    assert len(events) == 1
    assert events[0]["event"]["payload"]["custom_details"]["httpRoute"] == NAME
    assert events[0]["event"]["payload"]["custom_details"]["router"] == "HTTPRoute"


def test_crd_requires_exactly_one_router(e2e: EndToEnd) -> None:
    body = rollout_body(e2e.namespace, e2e.prometheus.url, e2e.pagerduty.url, name="both")
    body["spec"]["httpRoute"] = {"name": NAME}
    both = e2e.cp.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert both.returncode != 0
    assert "set exactly one of virtualService and httpRoute" in both.stderr
    del body["spec"]["httpRoute"]["name"]
    body["spec"]["httpRoute"] = {"name": NAME, "rules": [{"name": "a", "index": 0}]}
    del body["spec"]["virtualService"]
    body["spec"]["baseline"] = {"host": V1}
    body["spec"]["canary"] = {"host": V2}
    rule = e2e.cp.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert rule.returncode != 0
    assert "set exactly one of name and index" in rule.stderr
    body["spec"]["httpRoute"] = {"name": NAME}
    body["spec"]["canary"] = {"host": V2, "subset": "v2"}
    subset = e2e.cp.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert subset.returncode != 0
    assert "no subset" in subset.stderr
