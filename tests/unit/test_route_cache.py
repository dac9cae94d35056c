"""VirtualServices from a watch cache (`canaryguard.adapters.route_cache`): reads of a synced
scope come from the cache, a miss or a scope whose watch failed reads the API server, and a
weight write puts what it wrote in the cache at once."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from prometheus_client import REGISTRY

from canaryguard.adapters.route_cache import ALL, CachedRouter, RouteStore
from canaryguard.core.ports import Routers, WeightChange
from canaryguard.runtime.accounting import CountedRouter
from canaryguard.runtime.controller import Controller
from tests.unit.fakes import SETTINGS, V1, V2, FakeRouter, virtual_service
from tests.unit.scenario import HEALTHY, obs
from tests.unit.test_controller_httproute import RouteWorld, route_spec


class CountingRouter(FakeRouter):
    """The fake router, counting reads (the API server's GETs)."""

    def __init__(self, *services: dict[str, Any]) -> None:
        super().__init__(*services)
        self.gets = 0

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.gets += 1
        return await super().get(namespace, name)


def versioned(version: int, baseline: int = 100, canary: int = 0) -> dict[str, Any]:
    vs = virtual_service(baseline, canary)
    vs["metadata"]["resourceVersion"] = str(version)
    return vs


def test_a_synced_scope_is_read_from_the_cache_without_a_get() -> None:
    router = CountingRouter(versioned(1))
    store = RouteStore()
    store.replace_scope("ml", [versioned(1)])
    cached = CachedRouter(router, store)
    for _ in range(3):
        vs = asyncio.run(cached.get("ml", "scorer"))
        assert vs["metadata"]["resourceVersion"] == "1"
    assert router.gets == 0


def test_a_miss_or_a_scope_not_synced_reads_the_api_server() -> None:
    router = CountingRouter(versioned(1))
    store = RouteStore()
    cached = CachedRouter(router, store)
    asyncio.run(cached.get("ml", "scorer"))  # never listed
    assert router.gets == 1
    store.replace_scope("other", [])
    asyncio.run(cached.get("ml", "scorer"))  # listed elsewhere only
    assert router.gets == 2
    store.replace_scope("ml", [])
    asyncio.run(cached.get("ml", "scorer"))  # created after the list: a miss
    assert router.gets == 3
    asyncio.run(cached.get("ml", "scorer"))  # kept from that read
    assert router.gets == 3
    store.lost("ml")  # the watch failed: the cache may be stale
    asyncio.run(cached.get("ml", "scorer"))
    assert router.gets == 4


def test_a_cluster_wide_list_serves_every_namespace() -> None:
    store = RouteStore()
    store.replace_scope(ALL, [versioned(3)])
    assert store.synced("ml") and store.synced("anything")
    assert store.get("ml", "scorer") is not None


def test_a_weight_write_puts_what_it_wrote_in_the_cache_at_once() -> None:
    class Answering(CountingRouter):
        """Answers a write with the object as stored, as the Istio adapter does."""

        async def set_weights(self, *args: Any) -> WeightChange:
            change = await super().set_weights(*args)
            current = copy.deepcopy(self.services[("ml", "scorer")])
            return WeightChange(change.before, change.changed, current)

    router = Answering(versioned(1))
    store = RouteStore()
    store.replace_scope("ml", [versioned(1)])
    cached = CachedRouter(router, store)
    asyncio.run(cached.set_weights("ml", "scorer", (), V1, V2, 90, 10))

    vs = asyncio.run(cached.get("ml", "scorer"))  # the next tick sees its own write
    assert vs["metadata"]["resourceVersion"] == "2"
    assert router.weights() == [(90, 10)]
    assert router.gets == 1  # the write's own read of the object, none since


def test_the_store_keeps_the_newest_version_and_forgets_deleted_objects() -> None:
    store = RouteStore()
    store.put(versioned(5, 50, 50))
    store.put(versioned(4, 90, 10))  # an older event arriving late
    kept = store.get("ml", "scorer")
    assert kept is not None and kept["metadata"]["resourceVersion"] == "5"
    store.put(versioned(6, 100, 0))
    kept = store.get("ml", "scorer")
    assert kept is not None and kept["metadata"]["resourceVersion"] == "6"
    store.delete(versioned(6))
    assert store.get("ml", "scorer") is None
    store.replace_scope("ml", [versioned(7)])
    store.replace_scope("ml", [])  # listed again without it
    assert store.get("ml", "scorer") is None and len(store) == 0


def counted(resource: str, verb: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "canaryguard_api_requests_total", {"resource": resource, "verb": verb}
        )
        or 0.0
    )


def test_an_httproute_rollout_ticks_from_the_cache_its_first_read_started() -> None:
    world = RouteWorld(spec_data=route_spec())
    http_routes = CountedRouter(world.router)
    assert http_routes.kind == "HTTPRoute"
    store, starts = RouteStore(), []
    cached = CachedRouter(http_routes, store, lambda: starts.append(1))
    controller = Controller(
        world.kube,
        Routers(CachedRouter(CountedRouter(world.vs_router), RouteStore()), cached),
        world.metrics,
        world.pager,
        SETTINGS,
        clock=lambda: world.now,
    )
    controller.seen("ADDED", world.kube.get())
    gets, vs_gets = counted("httproutes", "get"), counted("virtualservices", "get")
    world.tick(controller, 0, obs(HEALTHY))  # not listed yet: read from the API server
    assert starts == [1]
    assert world.router.writes == [(90, 10)]
    assert counted("httproutes", "get") == gets + 2  # the tick's read, the write's own read
    assert counted("httproutes", "update") >= 1

    store.replace_scope("ml", [copy.deepcopy(world.router.services[("ml", "scorer")])])
    for second in range(30, 601, 30):
        world.tick(controller, second, obs(HEALTHY))
    assert len(world.router.writes) > 1  # stepped on, deciding from the cached route
    # Only the writes read the API server since the list.
    assert counted("httproutes", "get") == gets + 1 + len(world.router.writes)
    assert counted("virtualservices", "get") == vs_gets
    assert len(starts) == 1 + 20


def test_kept_objects_leave_their_managed_fields_behind_and_the_original_untouched() -> None:
    store = RouteStore()
    served = versioned(5, 50, 50)
    served["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    store.put(served)
    store.replace_scope(
        "other", [{**served, "metadata": {**served["metadata"], "namespace": "other"}}]
    )
    for namespace in ("ml", "other"):
        kept = store.get(namespace, "scorer")
        assert kept is not None and "managedFields" not in kept["metadata"]
        assert kept["spec"] == served["spec"] and kept["metadata"]["resourceVersion"] == "5"
    assert "managedFields" in served["metadata"]  # the watch's own object is not changed


def test_the_controller_keeps_rollouts_without_their_managed_fields() -> None:
    world = RouteWorld()
    controller = world.controller()
    body = copy.deepcopy(world.kube.get())
    body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    body["metadata"]["resourceVersion"] = "999"
    controller.seen("MODIFIED", body)
    kept = controller._bodies[("ml", "scorer")]
    assert "managedFields" not in kept["metadata"] and kept["spec"] == body["spec"]
