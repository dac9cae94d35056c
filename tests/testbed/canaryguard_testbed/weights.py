"""Traffic weights as an Istio VirtualService sets them, behind a small interface.

The router and the synthetic mode ask a `WeightSource` for the destinations of the route they
serve; the source is a watched VirtualService in the API server (`vswatch`) or, in tests and
benchmarks, a `StaticWeightSource` set by hand.

Istio's semantics (istio/api virtual_service.proto): traffic is shared as weight / sum of
weights; a destination of weight 0 (or none, when there are several) gets nothing; a lone
destination gets everything whatever its weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class VirtualServiceError(ValueError):
    """A VirtualService does not have the shape the router needs."""


@dataclass(frozen=True)
class RouteDestination:
    """One `route[]` entry of an http route: destination host, subset and weight."""

    host: str
    subset: str | None = None
    weight: int | None = None


@dataclass(frozen=True)
class RouteSnapshot:
    """The destinations of the route being served, at one moment."""

    destinations: tuple[RouteDestination, ...]
    origin: str = "static"  # where it came from, for logs


class WeightSource(Protocol):
    """Where the current route comes from. `current()` is called for every request, so it
    must be cheap; None means there is no VirtualService (plain Kubernetes Service
    balancing)."""

    def current(self) -> RouteSnapshot | None: ...


class StaticWeightSource:
    """A route set by hand (tests, benchmarks, the synthetic mode's control endpoint)."""

    def __init__(self, destinations: Iterable[RouteDestination] | None = None) -> None:
        self._snapshot: RouteSnapshot | None = None
        if destinations is not None:
            self.set(destinations)

    def current(self) -> RouteSnapshot | None:
        return self._snapshot

    def set(self, destinations: Iterable[RouteDestination] | None) -> None:
        """Replace the route; None removes it (as if the VirtualService were deleted)."""
        self._snapshot = None if destinations is None else RouteSnapshot(tuple(destinations))

    def set_weights(self, host: str, weights: Mapping[str, int]) -> None:
        """Route `host` by subset, e.g. set_weights("fraud-model", {"v1": 90, "v2": 10})."""
        self.set(RouteDestination(host, subset, weight) for subset, weight in weights.items())


def traffic_shares(
    destinations: Iterable[RouteDestination],
) -> list[tuple[RouteDestination, float]]:
    """Each destination that receives traffic and its share (shares sum to 1).

    Empty when every destination of a multi-destination route has weight 0, which istiod
    rejects and Envoy would answer with 503.
    """
    dests = list(destinations)
    if len(dests) == 1:
        return [(dests[0], 1.0)]
    weights = [max(d.weight or 0, 0) for d in dests]
    total = sum(weights)
    if total <= 0:
        return []
    return [(d, w / total) for d, w in zip(dests, weights, strict=True) if w > 0]


def select_http_route(vs: Mapping[str, Any], route_name: str | None = None) -> Mapping[str, Any]:
    """The http route to serve: the one named `route_name`, else the first without `match`
    (the catch-all route)."""
    spec = vs.get("spec") or {}
    routes = spec.get("http") or []
    if not isinstance(routes, list):
        raise VirtualServiceError("spec.http: expected a list")
    for i, route in enumerate(routes):
        if not isinstance(route, Mapping):
            raise VirtualServiceError(f"spec.http[{i}]: expected an object")
        if route_name is not None and route.get("name") == route_name:
            return route
        if route_name is None and not route.get("match"):
            return route
    wanted = f"named {route_name!r}" if route_name is not None else "without match"
    raise VirtualServiceError(f"spec.http: no route {wanted}")


def route_snapshot(vs: Mapping[str, Any], route_name: str | None = None) -> RouteSnapshot:
    """The destinations of the served route of a VirtualService object."""
    route = select_http_route(vs, route_name)
    meta = vs.get("metadata") or {}
    origin = f"virtualservice {meta.get('namespace')}/{meta.get('name')}"
    if route.get("name"):
        origin += f" route {route['name']}"
    entries = route.get("route") or []
    if not isinstance(entries, list) or not entries:
        raise VirtualServiceError(f"{origin}: route: expected at least one destination")
    dests: list[RouteDestination] = []
    for i, entry in enumerate(entries):
        dest = entry.get("destination") if isinstance(entry, Mapping) else None
        if not isinstance(dest, Mapping) or not isinstance(dest.get("host"), str):
            raise VirtualServiceError(f"{origin}: route[{i}].destination.host: required")
        weight = entry.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)):
            raise VirtualServiceError(f"{origin}: route[{i}].weight: expected an integer")
        subset = dest.get("subset")
        dests.append(RouteDestination(dest["host"], subset if subset else None, weight))
    return RouteSnapshot(tuple(dests), origin)


def httproute_snapshot(route: Mapping[str, Any], rule: str | None = None) -> RouteSnapshot:
    """The backends of the served rule of a Gateway API HTTPRoute, as destinations (host =
    the Service name, qualified by its namespace when the backendRef names one; no subset).

    The served rule is the one named `rule`, or at index `rule` when it is a number, else the
    first catch-all rule (no `matches`, or the API server's default: path prefix `/`).
    Gateway API weights default to 1 (not Istio's 0), so a missing weight is written out; a
    lone backend gets everything (`traffic_shares`).
    """
    meta = route.get("metadata") or {}
    origin = f"httproute {meta.get('namespace')}/{meta.get('name')}"
    rules = (route.get("spec") or {}).get("rules") or []
    if not isinstance(rules, list):
        raise VirtualServiceError(f"{origin}: spec.rules: expected a list")
    chosen: Mapping[str, Any] | None = None
    for i, r in enumerate(rules):
        if not isinstance(r, Mapping):
            raise VirtualServiceError(f"{origin}: spec.rules[{i}]: expected an object")
        if rule is None:
            found = _catch_all(r.get("matches"))
        else:
            found = r.get("name") == rule or (rule.isdigit() and int(rule) == i)
        if found:
            chosen = r
            origin += f" rule {r.get('name') or i}"
            break
    if chosen is None:
        wanted = f"{rule!r}" if rule is not None else "without matches"
        raise VirtualServiceError(f"{origin}: spec.rules: no rule {wanted}")
    refs = chosen.get("backendRefs") or []
    if not isinstance(refs, list) or not refs:
        raise VirtualServiceError(f"{origin}: backendRefs: expected at least one backend")
    dests: list[RouteDestination] = []
    for i, ref in enumerate(refs):
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
            raise VirtualServiceError(f"{origin}: backendRefs[{i}].name: required")
        weight = ref.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise VirtualServiceError(f"{origin}: backendRefs[{i}].weight: expected an integer")
        ns = ref.get("namespace")
        host = f"{ref['name']}.{ns}.svc.cluster.local" if ns else ref["name"]
        dests.append(RouteDestination(host, None, weight))
    return RouteSnapshot(tuple(dests), origin)


def _catch_all(matches: Any) -> bool:
    """True for an HTTPRoute rule that matches every request."""
    if not matches:
        return True
    everything = {"path": {"type": "PathPrefix", "value": "/"}}
    return isinstance(matches, list) and any(m == everything for m in matches)
