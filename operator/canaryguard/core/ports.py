"""Ports: what the runtime needs of the world, as Protocols and plain data.

Adapters (`canaryguard.adapters`) implement them; the runtime receives them, never builds
them, so the controller can be driven in tests with in-memory fakes. Errors that cross a port
are defined here too, so the core and the runtime tell failures apart without importing an
adapter: an unavailable metrics backend (an outage) is not a refused query (a spec problem),
and neither is a bug.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from canaryguard.core.election import Lease, LeaseRecord
from canaryguard.core.paging import DeliveryResult, PageEvent
from canaryguard.core.spec import Destination

# --- metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and value (NaN and Inf kept as floats)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and its (UNIX seconds, value) points."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


class MetricsUnavailable(Exception):
    """The metrics backend could not answer (network error, timeout, 429 or 5xx): an outage."""


class QueryRefused(Exception):
    """The metrics backend refused the query itself (4xx): the spec is wrong, retrying will
    not help."""


class MetricsSource(Protocol):
    """Instant queries against one metrics server."""

    async def query(self, promql: str, at: datetime | None = None) -> list[Sample]:
        """The answer evaluated at `at` (None: when the server receives the query), or
        `MetricsUnavailable` / `QueryRefused`."""
        ...


class MetricsConnector(Protocol):
    """Makes the source for one rollout's Prometheus settings."""

    def connect(
        self, address: str, timeout: float, headers: Mapping[str, str], retry_budget: float
    ) -> MetricsSource: ...


# --- routing ------------------------------------------------------------------------------


class RouteError(ValueError):
    """The routing object cannot be driven as the spec says (a spec problem)."""


class RouteNotFound(RouteError):
    """The routing object does not exist."""


@dataclass(frozen=True)
class Weights:
    """Baseline and canary weight of one driven route; None where the destination is absent.
    `mirror`: the percent of the route's requests mirrored to the canary (0: none)."""

    baseline: int | None
    canary: int | None
    mirror: float = 0.0


def canary_share(routes: Sequence[Weights]) -> float:
    """The canary's share of traffic (0-100) on the driven routes, the highest where they
    differ. Weights need not sum to 100; a route that sends nowhere counts as 0."""
    shares = [
        100.0 * (w.canary or 0) / total
        for w in routes
        if (total := (w.baseline or 0) + (w.canary or 0)) > 0
    ]
    return max(shares, default=0.0)


@dataclass(frozen=True)
class WeightChange:
    """What a weight write found and did; `current` is the routing object as the API server
    had it after the call, when known (for a cache of the routing objects)."""

    before: list[Weights]
    changed: bool
    current: dict[str, Any] | None = None


class Router(Protocol):
    """Reads and writes the traffic split of one kind of routing object (an Istio
    VirtualService, a Gateway API HTTPRoute). `plan`, `read` and `labels` are pure: they work
    on the object as `get` returned it."""

    kind: str

    def plan(
        self,
        obj: Mapping[str, Any],
        selectors: Sequence[str | int],
        baseline: Destination,
        canary: Destination,
    ) -> list[int]:
        """The indexes of the driven routes (or rules), or `RouteError` naming the problem."""
        ...

    def read(
        self,
        obj: Mapping[str, Any],
        routes: Sequence[int],
        baseline: Destination,
        canary: Destination,
    ) -> list[Weights]:
        """The current weights of the driven routes."""
        ...

    def labels(self, obj: Mapping[str, Any], routes: Sequence[int]) -> str:
        """The driven routes, named for a message (`route primary`, `rules a, rules[2]`)."""
        ...

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The routing object as served, or `RouteNotFound`."""
        ...

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
        """Set the split (and the percent mirrored to the canary, 0 for none) on the driven
        routes, writing only when it differs."""
        ...


class RouterWrapper:
    """A `Router` that hands every call to `inner`: the base of routers that add something
    around some calls (a cache, counting) and override only those."""

    def __init__(self, inner: Router) -> None:
        self._inner = inner
        self.kind = inner.kind

    def plan(
        self,
        obj: Mapping[str, Any],
        selectors: Sequence[str | int],
        baseline: Destination,
        canary: Destination,
    ) -> list[int]:
        return self._inner.plan(obj, selectors, baseline, canary)

    def read(
        self,
        obj: Mapping[str, Any],
        routes: Sequence[int],
        baseline: Destination,
        canary: Destination,
    ) -> list[Weights]:
        return self._inner.read(obj, routes, baseline, canary)

    def labels(self, obj: Mapping[str, Any], routes: Sequence[int]) -> str:
        return self._inner.labels(obj, routes)

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._inner.get(namespace, name)

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
        return await self._inner.set_weights(
            namespace, name, route_names, baseline, canary, baseline_weight, canary_weight, mirror
        )


class Routers:
    """The routers by the kind of object they drive; the runtime picks one per rollout."""

    def __init__(self, *routers: Router) -> None:
        self._by_kind = {r.kind: r for r in routers}

    def for_kind(self, kind: str) -> Router:
        """The router for `kind`, or `RouteError` when this operator has none."""
        try:
            return self._by_kind[kind]
        except KeyError:
            raise RouteError(f"no router for {kind} objects") from None


# --- paging -------------------------------------------------------------------------------


class Pager(Protocol):
    """Delivers pages (PagerDuty Events API v2); never raises for a failed delivery."""

    async def trigger(self, url: str, routing_key: str, event: PageEvent) -> DeliveryResult: ...

    async def resolve(self, url: str, routing_key: str, dedup_key: str) -> DeliveryResult:
        """Resolve the incident `dedup_key` names (PagerDuty drops it if none is open)."""
        ...


# --- the rollout's own API ----------------------------------------------------------------


class SecretError(LookupError):
    """A Secret or key the spec names cannot be read (the message names it, never its value)."""


class SecretNotAllowed(SecretError):
    """The Secret was not made available to the rollout (`canaryguard.core.access`): it was
    not read, whoever asked."""


class Kube(Protocol):
    """What the controller needs of the Kubernetes API besides the routing objects."""

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def read_secret(self, namespace: str, name: str, key: str, rollout: str) -> str:
        """One key of a Secret of the rollout `rollout`'s namespace, only when the Secret was
        made available to that rollout (else `SecretNotAllowed`)."""
        ...

    async def post_event(
        self, rollout: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None: ...

    async def list_rollouts(self, namespaces: Sequence[str]) -> list[dict[str, Any]]:
        """Every rollout in `namespaces` (all namespaces when empty), read afresh."""
        ...


# --- leader election ----------------------------------------------------------------------


class LeaseConflict(Exception):
    """The Lease was written by someone else since it was read (or created meanwhile)."""


class Leases(Protocol):
    """Reads and conditionally writes coordination.k8s.io/v1 Leases."""

    async def get(self, namespace: str, name: str) -> Lease | None:
        """The Lease, or None when it does not exist."""
        ...

    async def create(self, namespace: str, name: str, record: LeaseRecord) -> Lease:
        """Create it; `LeaseConflict` when it exists already."""
        ...

    async def update(self, namespace: str, name: str, record: LeaseRecord, version: str) -> Lease:
        """Replace its spec if it is still at `version`, else `LeaseConflict`."""
        ...
