"""The shadow phase's mirror in both adapters' planning: Istio's `mirror` and
`mirrorPercentage` on a VirtualService http route, and Gateway API's RequestMirror filter with
`percent` on an HTTPRoute rule. Set with the weights in one write, read back, removed;
everything else round-trips; a mirror that is the user's is left alone or named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canaryguard.adapters import gateway, istio
from canaryguard.core.ports import RouteError, Weights
from canaryguard.core.spec import Destination

# --- Istio -----------------------------------------------------------------------------------

V1 = Destination("scorer", "v1")
V2 = Destination("scorer", "v2")


def virtual_service(**primary: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "scorer", "namespace": "ml"},
        "spec": {
            "hosts": ["scorer"],
            "http": [
                {
                    "name": "qa",
                    "match": [{"headers": {"x-qa": {"exact": "1"}}}],
                    "route": [{"destination": {"host": "scorer", "subset": "v2"}}],
                },
                {
                    "name": "primary",
                    "timeout": "5s",
                    "route": [
                        {"destination": {"host": "scorer", "subset": "v1", "port": {"number": 80}}}
                    ],
                    **primary,
                },
            ],
        },
    }


def test_istio_mirror_is_set_with_the_weights_and_only_there() -> None:
    vs = virtual_service()
    out = istio.with_weights(vs, [1], V1, V2, 100, 0, mirror=20)
    primary = out["spec"]["http"][1]
    assert primary["mirror"] == {"host": "scorer", "subset": "v2", "port": {"number": 80}}
    assert primary["mirrorPercentage"] == {"value": 20.0}
    assert [d["weight"] for d in primary["route"]] == [100, 0]
    assert primary["timeout"] == "5s"
    assert out["spec"]["http"][0] == vs["spec"]["http"][0]
    assert istio.read_weights(out, [1], V1, V2) == [Weights(100, 0, 20.0)]
    assert istio.weights_match(istio.read_weights(out, [1], V1, V2), 100, 0, 20)
    assert not istio.weights_match(istio.read_weights(out, [1], V1, V2), 100, 0, 0)


def test_istio_mirror_is_removed_by_the_next_write_without_one() -> None:
    mirrored = istio.with_weights(virtual_service(), [1], V1, V2, 100, 0, mirror=20)
    out = istio.with_weights(mirrored, [1], V1, V2, 90, 10)
    primary = out["spec"]["http"][1]
    assert "mirror" not in primary and "mirrorPercentage" not in primary
    assert istio.read_weights(out, [1], V1, V2) == [Weights(90, 10, 0.0)]


def test_istio_mirror_semantics_when_reading() -> None:
    whole = virtual_service(mirror={"host": "scorer", "subset": "v2"})
    assert istio.read_weights(whole, [1], V1, V2)[0].mirror == 100.0  # no percentage: all
    legacy = virtual_service(mirror={"host": "scorer", "subset": "v2"}, mirrorPercent=7)
    assert istio.read_weights(legacy, [1], V1, V2)[0].mirror == 7.0
    fqdn = virtual_service(
        mirror={"host": "scorer.ml.svc.cluster.local", "subset": "v2"},
        mirrorPercentage={"value": 12.5},
    )
    assert istio.read_weights(fqdn, [1], V1, V2)[0].mirror == 12.5
    elsewhere = virtual_service(mirror={"host": "audit"}, mirrorPercentage={"value": 50})
    assert istio.read_weights(elsewhere, [1], V1, V2)[0].mirror == 0.0


def test_istio_user_mirror_elsewhere_is_kept_but_cannot_be_replaced() -> None:
    vs = virtual_service(mirror={"host": "audit"}, mirrorPercentage={"value": 50})
    kept = istio.with_weights(vs, [1], V1, V2, 90, 10)
    assert kept["spec"]["http"][1]["mirror"] == {"host": "audit"}
    assert kept["spec"]["http"][1]["mirrorPercentage"] == {"value": 50}
    with pytest.raises(RouteError, match="route primary of VirtualService scorer already mirrors"):
        istio.with_weights(vs, [1], V1, V2, 100, 0, mirror=20)
    many = virtual_service(mirrors=[{"destination": {"host": "audit"}}])
    with pytest.raises(RouteError, match="has mirrors"):
        istio.with_weights(many, [1], V1, V2, 100, 0, mirror=20)


def test_istio_mirror_percent_changes_in_place() -> None:
    vs = virtual_service(
        mirror={"host": "scorer", "subset": "v2"}, mirrorPercent=5, mirrorPercentage=None
    )
    del vs["spec"]["http"][1]["mirrorPercentage"]
    out = istio.with_weights(vs, [1], V1, V2, 100, 0, mirror=30)
    primary = out["spec"]["http"][1]
    assert (primary["mirrorPercentage"], "mirrorPercent" in primary) == ({"value": 30.0}, False)


# --- Gateway API -----------------------------------------------------------------------------

S1 = Destination("scorer-v1")
S2 = Destination("scorer-v2")
HEADER = {
    "type": "RequestHeaderModifier",
    "requestHeaderModifier": {"set": [{"name": "x-a", "value": "b"}]},
}
AUDIT = {
    "type": "RequestMirror",
    "requestMirror": {"backendRef": {"name": "audit", "port": 9000}, "percent": 5},
}


def http_route(filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    primary: dict[str, Any] = {
        "name": "primary",
        "timeouts": {"request": "5s"},
        "backendRefs": [
            {"group": "", "kind": "Service", "name": "scorer-v1", "port": 8080, "weight": 1}
        ],
    }
    if filters is not None:
        primary["filters"] = filters
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "scorer", "namespace": "ml"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {"name": "qa", "backendRefs": [{"name": "scorer-v2", "port": 8080}]},
                primary,
            ],
        },
    }


def test_httproute_request_mirror_is_added_after_the_users_filters() -> None:
    r = http_route([HEADER, AUDIT])
    out = gateway.with_weights(r, [1], S1, S2, 100, 0, mirror=20)
    primary = out["spec"]["rules"][1]
    assert primary["filters"] == [
        HEADER,
        AUDIT,
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"group": "", "kind": "Service", "name": "scorer-v2", "port": 8080},
                "percent": 20,
            },
        },
    ]
    assert [(b["name"], b["weight"]) for b in primary["backendRefs"]] == [
        ("scorer-v1", 100),
        ("scorer-v2", 0),
    ]
    assert primary["timeouts"] == {"request": "5s"}
    assert out["spec"]["rules"][0] == r["spec"]["rules"][0]
    assert gateway.read_weights(out, [1], S1, S2) == [Weights(100, 0, 20.0)]


def test_httproute_request_mirror_is_removed_and_the_users_stay() -> None:
    mirrored = gateway.with_weights(http_route([HEADER, AUDIT]), [1], S1, S2, 100, 0, mirror=20)
    out = gateway.with_weights(mirrored, [1], S1, S2, 90, 10)
    assert out["spec"]["rules"][1]["filters"] == [HEADER, AUDIT]
    assert gateway.read_weights(out, [1], S1, S2) == [Weights(90, 10, 0.0)]
    # A rule that had no filters before the shadow has none after it.
    bare = gateway.with_weights(http_route(), [1], S1, S2, 100, 0, mirror=20)
    after = gateway.with_weights(bare, [1], S1, S2, 90, 10)
    assert "filters" not in after["spec"]["rules"][1]
    # Without a mirror to set or remove, filters are not touched at all.
    untouched = http_route([HEADER])
    assert gateway.with_weights(untouched, [1], S1, S2, 90, 10)["spec"]["rules"][1]["filters"] == [
        HEADER
    ]


def test_httproute_mirror_percent_fraction_and_default() -> None:
    def ours(**mirror: Any) -> dict[str, Any]:
        backend = {"name": "scorer-v2", "port": 8080}
        return {"type": "RequestMirror", "requestMirror": {"backendRef": backend, **mirror}}

    cases = [
        (ours(percent=30), 30.0),
        (ours(fraction={"numerator": 1, "denominator": 8}), 12.5),
        (ours(fraction={"numerator": 40}), 40.0),
        (ours(), 100.0),
        (AUDIT, 0.0),
    ]
    for item, expected in cases:
        assert gateway.read_weights(http_route([item]), [1], S1, S2)[0].mirror == expected


def test_httproute_mirror_percent_replaced_not_duplicated() -> None:
    r = http_route(
        [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": "scorer-v2", "port": 8080},
                    "fraction": {"numerator": 1, "denominator": 2},
                },
            }
        ]
    )
    out = gateway.with_weights(copy.deepcopy(r), [1], S1, S2, 100, 0, mirror=10)
    mirrors = [f for f in out["spec"]["rules"][1]["filters"] if f["type"] == "RequestMirror"]
    assert len(mirrors) == 1
    assert mirrors[0]["requestMirror"]["percent"] == 10
    assert "fraction" not in mirrors[0]["requestMirror"]
