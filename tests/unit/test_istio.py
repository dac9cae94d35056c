"""The VirtualService weight logic: which routes are driven, and that only weights change."""

import copy
from typing import Any

import pytest

from canaryguard.adapters.istio import (
    RouteError,
    Weights,
    plan_routes,
    read_weights,
    weights_match,
    with_weights,
)
from canaryguard.core.spec import Destination

V1 = Destination("reviews", "v1")
V2 = Destination("reviews", "v2")


def bookinfo_vs() -> dict[str, Any]:
    """Bookinfo's reviews: a header-match route to v2, then a weighted catch-all."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default", "resourceVersion": "7"},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "name": "jason",
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {
                    "name": "primary",
                    "timeout": "2s",
                    "retries": {"attempts": 3, "perTryTimeout": "1s"},
                    "route": [
                        {
                            "destination": {
                                "host": "reviews",
                                "subset": "v1",
                                "port": {"number": 9080},
                            },
                            "weight": 90,
                        },
                        {
                            "destination": {
                                "host": "reviews.default.svc.cluster.local",
                                "subset": "v2",
                                "port": {"number": 9080},
                            },
                            "weight": 10,
                        },
                    ],
                },
            ],
        },
    }


def test_unnamed_routes_drive_every_route_to_the_baseline_only() -> None:
    vs = bookinfo_vs()
    assert plan_routes(vs, [], V1, V2) == [1]


def test_short_and_fully_qualified_hosts_are_the_same_destination() -> None:
    vs = bookinfo_vs()
    assert read_weights(vs, [1], V1, V2) == [Weights(90, 10)]


def test_setting_weights_changes_only_the_weights_of_the_driven_route() -> None:
    vs = bookinfo_vs()
    before = copy.deepcopy(vs)
    out = with_weights(vs, [1], V1, V2, 100, 0)
    assert vs == before, "the input must not be mutated"
    expected = copy.deepcopy(before)
    expected["spec"]["http"][1]["route"][0]["weight"] = 100
    expected["spec"]["http"][1]["route"][1]["weight"] = 0
    assert out == expected
    assert read_weights(out, [1], V1, V2) == [Weights(100, 0)]


def test_a_route_without_the_canary_gets_it_added_with_the_baseline_port() -> None:
    vs = bookinfo_vs()
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}}
    ]
    assert read_weights(vs, [1], V1, V2) == [Weights(100, None)]
    assert weights_match(read_weights(vs, [1], V1, V2), 100, 0)
    out = with_weights(vs, [1], V1, V2, 90, 10)
    assert out["spec"]["http"][1]["route"] == [
        {
            "destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}},
            "weight": 90,
        },
        {
            "destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}},
            "weight": 10,
        },
    ]


def test_named_route_that_does_not_exist_is_refused_with_the_known_names() -> None:
    with pytest.raises(RouteError, match=r"no http route named canary-route .*jason, primary"):
        plan_routes(bookinfo_vs(), ["canary-route"], V1, V2)


def test_named_route_without_the_baseline_is_refused() -> None:
    with pytest.raises(RouteError, match=r"route jason .* has no destination reviews/v1"):
        plan_routes(bookinfo_vs(), ["jason"], V1, V2)


def test_a_third_destination_in_a_driven_route_is_refused() -> None:
    vs = bookinfo_vs()
    vs["spec"]["http"][1]["route"].append(
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 0}
    )
    with pytest.raises(RouteError, match=r"also sends traffic to reviews/v3"):
        plan_routes(vs, ["primary"], V1, V2)


def test_no_route_to_the_baseline_is_refused() -> None:
    with pytest.raises(RouteError, match=r"no http route to ratings/v1"):
        plan_routes(bookinfo_vs(), [], Destination("ratings", "v1"), Destination("ratings", "v2"))


def test_weights_match_requires_every_driven_route() -> None:
    assert weights_match([Weights(90, 10), Weights(90, 10)], 90, 10)
    assert not weights_match([Weights(90, 10), Weights(100, 0)], 90, 10)
