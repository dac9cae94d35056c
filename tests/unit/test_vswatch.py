"""The VirtualService watcher against a small fake API server: list then watch, changes and
deletions, a 410 that forces a new list, the v1beta1 fallback, and the last state kept
while the API server fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from canaryguard_testbed.vswatch import (
    KubeEndpoint,
    KubeVirtualServiceSource,
    VirtualServiceWatcher,
)
from canaryguard_testbed.weights import RouteDestination

NS = "shop"


def vs(v1: int, v2: int, rv: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "fraud-model", "namespace": NS, "resourceVersion": rv},
        "spec": {
            "http": [
                {
                    "route": [
                        {"destination": {"host": "fraud-model", "subset": "v1"}, "weight": v1},
                        {"destination": {"host": "fraud-model", "subset": "v2"}, "weight": v2},
                    ]
                }
            ]
        },
    }


class FakeApiServer:
    """Serves a VirtualService list and, per watch, the next scripted batch of events (which
    also change what the next list returns, as in a real API server)."""

    def __init__(self, served_versions: tuple[str, ...] = ("v1",)) -> None:
        self.served = served_versions
        self.items: list[dict[str, Any]] = []
        self.watches: list[list[dict[str, Any]]] = []
        self.lists = 0
        self.failing = False
        self.seen_params: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        version = request.match_info["version"]
        if version not in self.served:
            return web.Response(status=404)
        if self.failing:
            return web.Response(status=500, text="etcd is down")
        self.seen_params.append(dict(request.query))
        if request.query.get("watch") != "1":
            self.lists += 1
            return web.json_response({"metadata": {"resourceVersion": "10"}, "items": self.items})
        events = self.watches.pop(0) if self.watches else []
        resp = web.StreamResponse()
        await resp.prepare(request)
        for event in events:
            obj = event["object"]
            if event["type"] in ("ADDED", "MODIFIED"):  # the store changes as it reports
                self.items = [obj]
            elif event["type"] == "DELETED":
                self.items = []
            await resp.write(json.dumps(event).encode() + b"\n")
        if not events:
            await asyncio.sleep(0.2)  # an idle watch that times out
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp


async def run(
    fake: FakeApiServer, body: Callable[[VirtualServiceWatcher], Awaitable[None]]
) -> None:
    app = web.Application()
    app.router.add_get(
        "/apis/networking.istio.io/{version}/namespaces/{ns}/virtualservices", fake.handle
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    kube = KubeEndpoint(f"http://127.0.0.1:{runner.addresses[0][1]}", ssl.create_default_context())
    watcher = VirtualServiceWatcher(kube, NS, "fraud-model", resync_s=1)
    await watcher.start()
    try:
        assert await watcher.wait_synced(5)
        await body(watcher)
    finally:
        await watcher.stop()
        await runner.cleanup()


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def weights(source: KubeVirtualServiceSource) -> dict[str | None, int | None] | None:
    snapshot = source.current()
    return None if snapshot is None else {d.subset: d.weight for d in snapshot.destinations}


def test_list_then_watch_follows_changes_and_deletion() -> None:
    fake = FakeApiServer()
    fake.items = [vs(90, 10, "10")]
    fake.watches = [
        [
            {"type": "MODIFIED", "object": vs(50, 50, "11")},
            {"type": "DELETED", "object": vs(50, 50, "12")},
        ],
    ]

    async def body(watcher: VirtualServiceWatcher) -> None:
        source = KubeVirtualServiceSource(watcher, NS, "fraud-model")
        first = source.current()
        assert first is not None
        assert first.destinations[0] == RouteDestination("fraud-model", "v1", 90)
        await eventually(lambda: watcher.get(NS, "fraud-model") is None)
        assert source.current() is None  # no VirtualService: plain Service balancing

    asyncio.run(run(fake, body))
    watch_params = [p for p in fake.seen_params if p.get("watch") == "1"]
    assert watch_params[0]["resourceVersion"] == "10"
    assert watch_params[0]["fieldSelector"] == "metadata.name=fraud-model"
    assert watch_params[0]["allowWatchBookmarks"] == "true"


def test_an_expired_watch_lists_again() -> None:
    fake = FakeApiServer()
    fake.items = [vs(90, 10, "10")]
    fake.watches = [[{"type": "ERROR", "object": {"kind": "Status", "code": 410}}]]

    async def body(watcher: VirtualServiceWatcher) -> None:
        fake.items = [vs(0, 100, "20")]  # changed while the watch was gone
        source = KubeVirtualServiceSource(watcher, NS, "fraud-model")
        await eventually(lambda: weights(source) == {"v1": 0, "v2": 100})

    asyncio.run(run(fake, body))
    assert fake.lists >= 2


def test_v1beta1_is_used_when_v1_is_not_served() -> None:
    fake = FakeApiServer(served_versions=("v1beta1",))
    fake.items = [vs(70, 30, "10")]

    async def body(watcher: VirtualServiceWatcher) -> None:
        source = KubeVirtualServiceSource(watcher, NS, "fraud-model")
        assert weights(source) == {"v1": 70, "v2": 30}

    asyncio.run(run(fake, body))


def test_the_last_route_stays_while_the_api_server_fails() -> None:
    fake = FakeApiServer()
    fake.items = [vs(90, 10, "10")]

    async def body(watcher: VirtualServiceWatcher) -> None:
        source = KubeVirtualServiceSource(watcher, NS, "fraud-model")
        fake.failing = True
        lists = fake.lists
        await asyncio.sleep(1.5)  # a resync period and more of failures
        assert fake.lists == lists
        assert weights(source) == {"v1": 90, "v2": 10}
        fake.failing = False
        fake.items = [vs(80, 20, "30")]
        await eventually(lambda: weights(source) == {"v1": 80, "v2": 20}, seconds=10)

    asyncio.run(run(fake, body))


def test_an_invalid_update_keeps_the_last_good_route() -> None:
    fake = FakeApiServer()
    fake.items = [vs(90, 10, "10")]
    broken = {"metadata": {"name": "fraud-model", "namespace": NS}, "spec": {"http": []}}
    fake.watches = [[{"type": "MODIFIED", "object": broken}]]

    async def body(watcher: VirtualServiceWatcher) -> None:
        source = KubeVirtualServiceSource(watcher, NS, "fraud-model")
        assert weights(source) == {"v1": 90, "v2": 10}
        await eventually(lambda: watcher.get(NS, "fraud-model") == broken)
        assert weights(source) == {"v1": 90, "v2": 10}

    asyncio.run(run(fake, body))


def test_an_httproute_rule_maps_to_weighted_destinations() -> None:
    from canaryguard_testbed.weights import RouteDestination, httproute_snapshot

    route = {
        "metadata": {"name": "scorer", "namespace": "ml"},
        "spec": {
            "rules": [
                {
                    "name": "qa",
                    "matches": [{"headers": [{"name": "x", "value": "y"}]}],
                    "backendRefs": [{"name": "b"}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": "v1", "weight": 3}, {"name": "v2", "namespace": "o"}],
                },
            ]
        },
    }
    default = httproute_snapshot(route)
    assert default.destinations == (
        RouteDestination("v1", None, 3),
        RouteDestination("v2.o.svc.cluster.local", None, 1),
    )
    assert httproute_snapshot(route, "1") == default
    assert httproute_snapshot(route, "qa").destinations == (RouteDestination("b", None, 1),)
