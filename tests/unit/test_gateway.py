"""The HTTPRoute adapter's planning: rule selection, weights, round-trip, refusals."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from canaryguard.adapters.gateway import (
    HTTPRouteClient,
    plan_routes,
    read_weights,
    rule_labels,
    with_weights,
)
from canaryguard.adapters.istio import weights_match
from canaryguard.core.ports import RouteError, Routers, Weights
from canaryguard.core.spec import Destination, SpecError, parse_spec
from tests.unit.scenario import BASE_SPEC

V1 = Destination("scorer-v1")
V2 = Destination("scorer-v2")


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "scorer", "namespace": "ml", "resourceVersion": "7"},
        "spec": {
            "parentRefs": [{"name": "gw", "sectionName": "http"}],
            "hostnames": ["scorer.example"],
            "rules": list(rules),
        },
        "status": {"parents": [{"parentRef": {"name": "gw"}, "controllerName": "x/y"}]},
    }


def rule(*refs: dict[str, Any], name: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"backendRefs": list(refs), **extra}
    if name:
        out["name"] = name
    return out


def ref(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": 8080, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def test_without_selectors_every_rule_to_the_baseline_is_driven() -> None:
    r = route(rule(ref("scorer-v1")), rule(ref("other")), rule(ref("scorer-v1", 90)))
    assert plan_routes(r, (), V1, V2) == [0, 2]


def test_rules_are_selected_by_name_or_index() -> None:
    r = route(
        rule(ref("scorer-v1"), name="api"),
        rule(ref("scorer-v1"), name="batch"),
        rule(ref("scorer-v1")),
    )
    assert plan_routes(r, ["batch"], V1, V2) == [1]
    assert plan_routes(r, [2, "api"], V1, V2) == [2, 0]
    assert rule_labels(r, [2, 0]) == "rules rules[2], api"


@pytest.mark.parametrize(
    ("selectors", "message"),
    [
        (["nope"], "HTTPRoute scorer has no rule named nope (named rules: api)"),
        ([5], "HTTPRoute scorer has no rule at index 5 (2 rules)"),
        ([1], "rule rules[1] of HTTPRoute scorer has no backendRef to scorer-v1"),
    ],
)
def test_a_selected_rule_must_exist_and_reach_the_baseline(
    selectors: list[str | int], message: str
) -> None:
    r = route(rule(ref("scorer-v1"), name="api"), rule(ref("other")))
    with pytest.raises(RouteError, match="^" + re.escape(message)):
        plan_routes(r, selectors, V1, V2)


def test_no_rule_to_the_baseline_is_refused() -> None:
    with pytest.raises(RouteError, match="no rule with a backendRef to scorer-v1"):
        plan_routes(route(rule(ref("other"))), (), V1, V2)


def test_a_third_backend_is_refused_naming_the_rule() -> None:
    r = route(rule(ref("scorer-v1", 80), ref("scorer-v2", 10), ref("shadow", 10), name="api"))
    with pytest.raises(RouteError) as raised:
        plan_routes(r, (), V1, V2)
    assert str(raised.value) == (
        "rule api of HTTPRoute scorer also sends traffic to Service shadow, "
        "which is neither baseline scorer-v1 nor canary scorer-v2"
    )


def test_a_backend_of_another_kind_or_namespace_is_a_third_backend() -> None:
    for extra in ({"kind": "ServiceImport", "group": "multicluster.x-k8s.io"}, {"namespace": "x"}):
        r = route(rule(ref("scorer-v1"), ref("scorer-v2", **extra)))
        with pytest.raises(RouteError, match="neither baseline"):
            plan_routes(r, (), V1, V2)
    # the route's own namespace, spelt out, is the same Service
    r = route(rule(ref("scorer-v1", namespace="ml"), ref("scorer-v2", 0, kind="Service")))
    assert plan_routes(r, (), V1, V2) == [0]


def test_subsets_are_refused() -> None:
    with pytest.raises(RouteError, match="no subsets"):
        plan_routes(route(rule(ref("scorer-v1"))), (), Destination("scorer-v1", "v1"), V2)


def test_weights_follow_gateway_api_semantics() -> None:
    r = route(
        rule(ref("scorer-v1")),  # lone, no weight: all traffic
        rule(ref("scorer-v1", 3)),  # lone: all traffic whatever the weight
        rule(ref("scorer-v1"), ref("scorer-v2")),  # default weight 1 each
        rule(ref("scorer-v1", 80), ref("scorer-v2", 20)),
        rule(ref("scorer-v1", 0)),  # lone with weight 0: nothing
    )
    got = read_weights(r, range(5), V1, V2)
    assert got == [
        Weights(100, None),
        Weights(100, None),
        Weights(1, 1),
        Weights(80, 20),
        Weights(0, None),
    ]
    assert weights_match(got[:2], 100, 0)


def test_with_weights_changes_only_the_two_weights() -> None:
    unknown = {"x-future-field": {"nested": [1, 2]}}
    r = route(
        rule(
            ref("scorer-v1", 90, filters=[{"type": "RequestHeaderModifier"}], **unknown),
            ref("scorer-v2", 10),
            name="api",
            matches=[{"path": {"type": "PathPrefix", "value": "/score"}}],
            timeouts={"request": "5s"},
            **unknown,
        ),
        rule(ref("scorer-v1"), name="untouched", filters=[{"type": "URLRewrite"}]),
    )
    before = copy.deepcopy(r)
    out = with_weights(r, [0], V1, V2, 40, 60)
    assert r == before  # the input is not changed
    expected = copy.deepcopy(before)
    expected["spec"]["rules"][0]["backendRefs"][0]["weight"] = 40
    expected["spec"]["rules"][0]["backendRefs"][1]["weight"] = 60
    assert out == expected


def test_the_canary_is_added_after_the_baseline_with_its_port() -> None:
    r = route(rule(ref("scorer-v1", namespace="ml", kind="Service"), name="api"))
    out = with_weights(r, [0], V1, V2, 95, 5)
    assert out["spec"]["rules"][0]["backendRefs"] == [
        {"name": "scorer-v1", "port": 8080, "namespace": "ml", "kind": "Service", "weight": 95},
        {"kind": "Service", "port": 8080, "name": "scorer-v2", "namespace": "ml", "weight": 5},
    ]
    assert plan_routes(out, ["api"], V1, V2) == [0]
    assert read_weights(out, [0], V1, V2) == [Weights(95, 5)]


def test_the_routers_registry_picks_by_kind() -> None:
    client = HTTPRouteClient.__new__(HTTPRouteClient)
    routers = Routers(client)
    assert routers.for_kind("HTTPRoute") is client
    with pytest.raises(RouteError, match="no router for VirtualService"):
        routers.for_kind("VirtualService")


SPEC: dict[str, Any] = {
    **{k: v for k, v in BASE_SPEC.items() if k != "virtualService"},
    "baseline": {"host": "scorer-v1"},
    "canary": {"host": "scorer-v2"},
}


def test_spec_http_route_is_parsed_as_the_target() -> None:
    spec = parse_spec(
        {**SPEC, "httpRoute": {"name": "scorer", "rules": [{"name": "api"}, {"index": 2}]}}
    )
    target = spec.target
    assert (target.kind, target.name, target.selectors) == ("HTTPRoute", "scorer", ("api", 2))
    assert target.field == "spec.httpRoute"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({}, "spec.virtualService: required (or spec.httpRoute; exactly one)"),
        (
            {"httpRoute": {"name": "a"}, "virtualService": {"name": "b"}},
            "spec.httpRoute: must not be set with spec.virtualService",
        ),
        (
            {"httpRoute": {"name": "a", "rules": [{"name": "x", "index": 1}]}},
            "spec.httpRoute.rules[0]: set exactly one of name and index",
        ),
        (
            {"httpRoute": {"name": "a", "rules": [{"index": -2}]}},
            "spec.httpRoute.rules[0].index: must be between",
        ),
        (
            {"httpRoute": {"name": "a", "rules": [{"index": 1}, {"index": 1}]}},
            "spec.httpRoute.rules: must not repeat",
        ),
        (
            {"httpRoute": {"name": "a"}, "canary": {"host": "scorer", "subset": "v2"}},
            "spec.canary.subset: must not be set with httpRoute",
        ),
    ],
)
def test_spec_http_route_errors(edit: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec({**SPEC, **edit})
    assert str(raised.value).startswith(message)
