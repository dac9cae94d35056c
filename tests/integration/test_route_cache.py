"""The route watch cache against the real API server, as the operator's ServiceAccount (the
shipped RBAC must allow list and watch of VirtualServices and HTTPRoutes): it follows
creations, edits by hand and deletions; reads come from it without a GET; a weight write
over a stale cache still reads the object first and writes with the resourceVersion it
read. HTTPRoutes (Gateway API's CRDs in the local API server) the same way; their watch
starts at the first read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from canaryguard.adapters.gateway import HTTPRouteClient
from canaryguard.adapters.istio import VirtualServiceClient
from canaryguard.adapters.kube import load_api_client
from canaryguard.adapters.route_cache import HTTP_ROUTES, CachedRouter, RouteWatch
from canaryguard.core.spec import Destination
from canaryguard_testbed.controlplane import ControlPlane
from tests.integration.fixtures_operator import wait_for


def virtual_service(namespace: str, name: str, v1: int, v2: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": name, "subset": "v1"}, "weight": v1},
                        {"destination": {"host": name, "subset": "v2"}, "weight": v2},
                    ],
                }
            ],
        },
    }


def weights(vs: dict[str, Any] | None) -> tuple[int, int] | None:
    if vs is None:
        return None
    route = vs["spec"]["http"][0]["route"]
    return route[0]["weight"], route[1]["weight"]


class Counting(VirtualServiceClient):
    gets = 0

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        Counting.gets += 1
        return await super().get(namespace, name)


def test_the_cache_follows_the_api_server_and_writes_read_first(
    control_plane: ControlPlane, namespace: str, operator_kubeconfig: Path
) -> None:
    def apply(vs: dict[str, Any]) -> None:
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(vs))

    apply(virtual_service(namespace, "reviews", 100, 0))
    api = load_api_client(str(operator_kubeconfig))
    watch = RouteWatch(api, [namespace], timeout_seconds=5)
    watch.start()
    try:
        assert watch.wait_synced(20), "the operator's account cannot list VirtualServices"
        store = watch.store
        assert weights(store.get(namespace, "reviews")) == (100, 0)

        def seen(name: str, expected: tuple[int, int] | None) -> Callable[[], bool]:
            return lambda: weights(store.get(namespace, name)) == expected

        apply(virtual_service(namespace, "ratings", 100, 0))  # created after the list
        wait_for("a new VirtualService in the cache", seen("ratings", (100, 0)), 10)
        apply(virtual_service(namespace, "reviews", 70, 30))  # edited by hand
        wait_for("an edit in the cache", seen("reviews", (70, 30)), 10)
        time.sleep(6)  # past one watch request (5 s): the watch goes on where it was
        apply(virtual_service(namespace, "reviews", 60, 40))
        wait_for("an edit after the watch was renewed", seen("reviews", (60, 40)), 10)
        control_plane.kubectl("delete", "virtualservice", "ratings", "-n", namespace)
        wait_for("a deletion in the cache", seen("ratings", None), 10)

        client = Counting(api)
        router = CachedRouter(client, store)
        Counting.gets = 0
        for _ in range(5):
            assert weights(asyncio.run(router.get(namespace, "reviews"))) == (60, 40)
        assert Counting.gets == 0

        # The cache goes stale (its watch stopped), someone edits the object: the write
        # reads it first and replaces it with the resourceVersion it read.
        watch.stop()
        time.sleep(6)
        apply(virtual_service(namespace, "reviews", 50, 50))
        stale = store.get(namespace, "reviews")
        v1, v2 = Destination("reviews", "v1"), Destination("reviews", "v2")
        change = asyncio.run(router.set_weights(namespace, "reviews", (), v1, v2, 100, 0))
        assert change.changed and [(w.baseline, w.canary) for w in change.before] == [(50, 50)]
        stored = json.loads(
            control_plane.kubectl(
                "get", "virtualservice", "reviews", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert weights(stored) == (100, 0)
        assert stale is not None
        assert int(stored["metadata"]["resourceVersion"]) > int(
            stale["metadata"]["resourceVersion"]
        )
        # What it wrote is in the cache at once.
        cached = store.get(namespace, "reviews")
        assert cached is not None and weights(cached) == (100, 0)
        assert cached["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    finally:
        watch.stop()


def http_route(namespace: str, name: str, v1: int, v2: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "rules": [
                {
                    "name": "primary",
                    "backendRefs": [
                        {"name": f"{name}-v1", "port": 8080, "weight": v1},
                        {"name": f"{name}-v2", "port": 8080, "weight": v2},
                    ],
                }
            ],
        },
    }


def rule_weights(route: dict[str, Any] | None) -> tuple[int, int] | None:
    if route is None:
        return None
    refs = route["spec"]["rules"][0]["backendRefs"]
    return refs[0]["weight"], refs[1]["weight"]


class CountingRoutes(HTTPRouteClient):
    gets = 0

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        CountingRoutes.gets += 1
        return await super().get(namespace, name)


def test_httproutes_are_read_from_their_own_watch_started_by_the_first_read(
    control_plane: ControlPlane, namespace: str, operator_kubeconfig: Path
) -> None:
    def apply(route: dict[str, Any]) -> None:
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(route))

    apply(http_route(namespace, "scorer", 100, 0))
    api = load_api_client(str(operator_kubeconfig))
    watch = RouteWatch(api, [namespace], HTTP_ROUTES, timeout_seconds=5)
    client = CountingRoutes(api)
    router = CachedRouter(client, watch.store, watch.start)
    assert router.kind == "HTTPRoute"
    try:
        CountingRoutes.gets = 0
        # Not listed before the first read, which goes to the API server and starts it.
        assert len(watch.store) == 0
        assert rule_weights(asyncio.run(router.get(namespace, "scorer"))) == (100, 0)
        assert CountingRoutes.gets == 1
        assert watch.wait_synced(20), "the operator's account cannot list HTTPRoutes"
        store = watch.store

        def seen(expected: tuple[int, int] | None) -> Callable[[], bool]:
            return lambda: rule_weights(store.get(namespace, "scorer")) == expected

        apply(http_route(namespace, "scorer", 80, 20))  # edited by hand
        wait_for("an HTTPRoute edit in the cache", seen((80, 20)), 10)
        for _ in range(5):
            assert rule_weights(asyncio.run(router.get(namespace, "scorer"))) == (80, 20)
        assert CountingRoutes.gets == 1  # none since the watch listed them

        # A weight write reads the object first, writes the rule's two backendRefs only,
        # and what it wrote is in the cache at once.
        v1, v2 = Destination("scorer-v1"), Destination("scorer-v2")
        change = asyncio.run(router.set_weights(namespace, "scorer", (), v1, v2, 100, 0))
        assert change.changed and [(w.baseline, w.canary) for w in change.before] == [(80, 20)]
        stored = json.loads(
            control_plane.kubectl(
                "get", "httproute", "scorer", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert rule_weights(stored) == (100, 0)
        cached = store.get(namespace, "scorer")
        assert cached is not None and rule_weights(cached) == (100, 0)
        assert cached["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]

        control_plane.kubectl("delete", "httproute", "scorer", "-n", namespace)
        wait_for("an HTTPRoute deletion in the cache", seen(None), 10)
    finally:
        watch.stop()
