"""The Kubernetes API calls the controller makes, counted by resource and verb.

Wrappers of the `Kube` and `Router` ports that count each call as it is made (failed ones
too) in `canaryguard_api_requests_total`, so reads and writes per tick can be watched and
benchmarked. kopf's own watch is not counted: it is one stream, not a call per tick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from canaryguard.core.ports import Kube, Router, RouterWrapper, WeightChange
from canaryguard.core.spec import Destination
from canaryguard.runtime import metrics


def _count(resource: str, verb: str) -> None:
    metrics.API_REQUESTS.labels(resource=resource, verb=verb).inc()


class CountedKube:
    """The `Kube` port, counted."""

    def __init__(self, inner: Kube) -> None:
        self._inner = inner

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        _count("canaryrollouts/status", "patch")
        return await self._inner.patch_status(namespace, name, patch)

    async def read_secret(self, namespace: str, name: str, key: str, rollout: str) -> str:
        _count("secrets", "get")
        return await self._inner.read_secret(namespace, name, key, rollout)

    async def post_event(
        self, rollout: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        _count("events", "create")
        await self._inner.post_event(rollout, type_, reason, message)

    async def list_rollouts(self, namespaces: Sequence[str]) -> list[dict[str, Any]]:
        _count("canaryrollouts", "list")
        return await self._inner.list_rollouts(namespaces)


class CountedRouter(RouterWrapper):
    """The `Router` port, counted under the routing object's resource (`virtualservices`,
    `httproutes`): a weight write reads the object first, and updates it only when the
    weights differ."""

    def __init__(self, inner: Router) -> None:
        super().__init__(inner)
        self._resource = _RESOURCES.get(inner.kind, inner.kind.lower())

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        _count(self._resource, "get")
        return await super().get(namespace, name)

    async def set_weights(
        self,
        namespace: str,
        name: str,
        route_names: Sequence[str | int],
        baseline: Destination,
        canary: Destination,
        baseline_weight: int,
        canary_weight: int,
        mirror: int = 0,
    ) -> WeightChange:
        _count(self._resource, "get")
        change = await super().set_weights(
            namespace, name, route_names, baseline, canary, baseline_weight, canary_weight, mirror
        )
        if change.changed:
            _count(self._resource, "update")
        return change


_RESOURCES = {"VirtualService": "virtualservices", "HTTPRoute": "httproutes"}
