"""Istio adapter: read and set the baseline/canary weights of a VirtualService, and the
mirror to the canary of the shadow phase (`mirror` and `mirrorPercentage` on the route).

The pure part (`plan_routes`, `read_weights`, `with_weights`) works on the VirtualService as
the API server returns it, so every field the operator does not drive round-trips untouched.
The I/O part (`VirtualServiceClient`) reads and replaces the object with optimistic
concurrency: a 409 conflict means someone else wrote in between, so it reads again.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from canaryguard.core.ports import RouteError, RouteNotFound, WeightChange, Weights
from canaryguard.core.spec import Destination

log = logging.getLogger(__name__)

GROUP = "networking.istio.io"
PLURAL = "virtualservices"
# Preferred first: v1 is served since Istio 1.22; older meshes serve only the betas.
VERSIONS = ("v1", "v1beta1", "v1alpha3")
CONFLICT_RETRIES = 5


class VirtualServiceNotFound(RouteNotFound):
    """The VirtualService named by the rollout does not exist."""


def matches(dest: Destination, obj: Mapping[str, Any], namespace: str) -> bool:
    """True when an Istio `destination` object names this host and subset."""
    return same_host(dest.host, str(obj.get("host", "")), namespace) and (
        obj.get("subset") or None
    ) == (dest.subset or None)


def same_host(a: str, b: str, namespace: str) -> bool:
    """Istio resolves a short host name in the VirtualService's namespace."""

    def qualify(host: str) -> str:
        return host if "." in host else f"{host}.{namespace}.svc.cluster.local"

    return qualify(a) == qualify(b)


def plan_routes(
    vs: Mapping[str, Any],
    route_names: Sequence[str],
    baseline: Destination,
    canary: Destination,
) -> list[int]:
    """Indexes of the http routes to drive.

    Named routes must exist and contain the baseline destination. Without names, every
    http route that contains the baseline destination is driven. A driven route may hold only
    the baseline and canary destinations: anything else there would keep receiving traffic
    after a rollback, so it is refused with a message naming the route.
    """
    namespace = str(vs.get("metadata", {}).get("namespace", ""))
    name = vs.get("metadata", {}).get("name", "?")
    http = vs.get("spec", {}).get("http") or []
    if route_names:
        by_name = {r.get("name"): i for i, r in enumerate(http) if r.get("name")}
        missing = [n for n in route_names if n not in by_name]
        if missing:
            known = ", ".join(sorted(str(k) for k in by_name)) or "none"
            raise RouteError(
                f"VirtualService {name} has no http route named {', '.join(missing)} "
                f"(named routes: {known})"
            )
        indexes = [by_name[n] for n in route_names]
    else:
        indexes = [
            i
            for i, r in enumerate(http)
            if any(matches(baseline, d.get("destination", {}), namespace) for d in _dests(r))
        ]
        if not indexes:
            raise RouteError(f"VirtualService {name} has no http route to {baseline}")
    for i in indexes:
        route = http[i]
        label = route.get("name") or f"http[{i}]"
        dests = [d.get("destination", {}) for d in _dests(route)]
        if not any(matches(baseline, d, namespace) for d in dests):
            raise RouteError(
                f"route {label} of VirtualService {name} has no destination {baseline}"
            )
        others = [
            d
            for d in dests
            if not matches(baseline, d, namespace) and not matches(canary, d, namespace)
        ]
        if others:
            extra = ", ".join(str(Destination(d.get("host", ""), d.get("subset"))) for d in others)
            raise RouteError(
                f"route {label} of VirtualService {name} also sends traffic to {extra}, "
                f"which is neither baseline {baseline} nor canary {canary}"
            )
    return indexes


def read_weights(
    vs: Mapping[str, Any], routes: Sequence[int], baseline: Destination, canary: Destination
) -> list[Weights]:
    """The current baseline/canary weights of each driven route, in Istio's semantics.

    A lone destination without a weight receives all traffic (100); a destination listed
    with others but without a weight receives none (0).
    """
    namespace = str(vs.get("metadata", {}).get("namespace", ""))
    http = vs.get("spec", {}).get("http") or []
    result = []
    for i in routes:
        dests = _dests(http[i])
        b = c = None
        for d in dests:
            weight = int(d.get("weight", 100 if len(dests) == 1 else 0))
            if matches(baseline, d.get("destination", {}), namespace):
                b = weight
            elif matches(canary, d.get("destination", {}), namespace):
                c = weight
        result.append(Weights(b, c, mirror_percent(http[i], canary, namespace)))
    return result


def mirror_percent(route: Mapping[str, Any], canary: Destination, namespace: str) -> float:
    """The percent of the route's requests mirrored to the canary: Istio mirrors all of them
    when `mirrorPercentage` is absent; 0 when the route mirrors nowhere or elsewhere."""
    mirror = route.get("mirror")
    if not isinstance(mirror, Mapping) or not matches(canary, mirror, namespace):
        return 0.0
    percentage = route.get("mirrorPercentage")
    if isinstance(percentage, Mapping):
        value = percentage.get("value")
        return float(value) if isinstance(value, int | float) else 0.0
    legacy = route.get("mirrorPercent")  # deprecated integer form
    return float(legacy) if isinstance(legacy, int) else 100.0


def weights_match(current: Sequence[Weights], baseline: int, canary: int, mirror: int = 0) -> bool:
    """True when every driven route already carries the wanted split and mirror.

    A canary destination that is absent counts as weight 0.
    """
    return all(
        w.baseline == baseline and (w.canary or 0) == canary and abs(w.mirror - mirror) < 0.01
        for w in current
    )


def with_weights(
    vs: Mapping[str, Any],
    routes: Sequence[int],
    baseline: Destination,
    canary: Destination,
    baseline_weight: int,
    canary_weight: int,
    mirror: int = 0,
) -> dict[str, Any]:
    """A copy of the VirtualService with the driven routes set to the given weights, and
    `mirror` percent of their requests mirrored to the canary (0: a mirror to the canary is
    removed; a mirror elsewhere is the user's and stays, but cannot be replaced).

    The canary destination is added after the baseline (same port) when a route lacks it.
    Nothing else changes.
    """
    namespace = str(vs.get("metadata", {}).get("namespace", ""))
    out = copy.deepcopy(dict(vs))
    http = out["spec"]["http"]
    for i in routes:
        dests = http[i]["route"]
        has_canary = False
        for d in dests:
            if matches(baseline, d.get("destination", {}), namespace):
                d["weight"] = baseline_weight
                base_entry = d
            elif matches(canary, d.get("destination", {}), namespace):
                d["weight"] = canary_weight
                has_canary = True
        if not has_canary:
            new_dest: dict[str, Any] = {"host": canary.host}
            if canary.subset:
                new_dest["subset"] = canary.subset
            if "port" in base_entry.get("destination", {}):
                new_dest["port"] = copy.deepcopy(base_entry["destination"]["port"])
            dests.append({"destination": new_dest, "weight": canary_weight})
        _set_mirror(http[i], canary, namespace, mirror, base_entry, out)
    return out


def _set_mirror(
    route: dict[str, Any],
    canary: Destination,
    namespace: str,
    mirror: int,
    base_entry: Mapping[str, Any],
    vs: Mapping[str, Any],
) -> None:
    ours = mirror_percent(route, canary, namespace) > 0 or (
        isinstance(route.get("mirror"), Mapping) and matches(canary, route["mirror"], namespace)
    )
    if mirror <= 0:
        if ours:
            for key in ("mirror", "mirrorPercentage", "mirrorPercent"):
                route.pop(key, None)
        return
    label = route.get("name") or "an http route"
    name = vs.get("metadata", {}).get("name", "?")
    if route.get("mirror") and not ours:
        other = route["mirror"]
        raise RouteError(
            f"route {label} of VirtualService {name} already mirrors to "
            f"{Destination(other.get('host', ''), other.get('subset'))}; the shadow phase "
            f"needs its mirror for the canary {canary}"
        )
    if route.get("mirrors"):
        raise RouteError(
            f"route {label} of VirtualService {name} has mirrors; the shadow phase needs the "
            f"route's mirror for the canary {canary} alone"
        )
    target: dict[str, Any] = {"host": canary.host}
    if canary.subset:
        target["subset"] = canary.subset
    if "port" in base_entry.get("destination", {}):
        target["port"] = copy.deepcopy(base_entry["destination"]["port"])
    route["mirror"] = target
    route["mirrorPercentage"] = {"value": float(mirror)}
    route.pop("mirrorPercent", None)


def route_labels(vs: Mapping[str, Any], indexes: Sequence[int]) -> str:
    """`route primary` / `routes a, http[2]`, for messages."""
    http = vs.get("spec", {}).get("http") or []
    names = [str(http[i].get("name") or f"http[{i}]") for i in indexes]
    return ("route " if len(names) == 1 else "routes ") + ", ".join(names)


def _names_object(exc: ApiException, name: str) -> bool:
    """A 404 about the object itself (a Status naming it), not about an unserved API."""
    try:
        status = json.loads(exc.body or "")
    except ValueError:
        return False
    details = status.get("details") if isinstance(status, dict) else None
    return isinstance(details, dict) and details.get("name") == name


def _dests(route: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(route.get("route") or [])


class VirtualServiceClient:
    """Reads and writes VirtualServices through the Kubernetes API.

    Calls the synchronous kubernetes client in a worker thread so the operator's event loop
    never blocks; each call carries a request timeout.
    """

    kind = "VirtualService"

    def __init__(self, api_client: ApiClient, request_timeout: float = 10.0) -> None:
        self._api = CustomObjectsApi(api_client)
        self._timeout = request_timeout
        self._version: str | None = None

    def plan(
        self,
        obj: Mapping[str, Any],
        selectors: Sequence[str | int],
        baseline: Destination,
        canary: Destination,
    ) -> list[int]:
        return plan_routes(obj, [str(s) for s in selectors], baseline, canary)

    def read(
        self,
        obj: Mapping[str, Any],
        routes: Sequence[int],
        baseline: Destination,
        canary: Destination,
    ) -> list[Weights]:
        return read_weights(obj, routes, baseline, canary)

    def labels(self, obj: Mapping[str, Any], routes: Sequence[int]) -> str:
        return route_labels(obj, routes)

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The VirtualService as served, trying Istio's API versions newest first."""
        return await asyncio.to_thread(self._get, namespace, name)

    def _get(self, namespace: str, name: str) -> dict[str, Any]:
        versions = [self._version] if self._version else list(VERSIONS)
        for version in versions:
            try:
                obj = self._api.get_namespaced_custom_object(
                    GROUP, version, namespace, PLURAL, name, _request_timeout=self._timeout
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                if _names_object(exc, name):
                    raise VirtualServiceNotFound(
                        f"VirtualService {namespace}/{name} not found"
                    ) from None
                continue  # this API version is not served here; try the next one
            self._version = version
            if not isinstance(obj, dict):
                raise RouteError(f"VirtualService {namespace}/{name}: unexpected answer")
            return obj
        raise VirtualServiceNotFound(
            f"VirtualService {namespace}/{name} not found (no Istio networking API is served)"
        )

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
        """Set the split and the mirror on the driven routes, writing only when it differs."""
        return await asyncio.to_thread(
            self._set_weights,
            namespace,
            name,
            route_names,
            baseline,
            canary,
            baseline_weight,
            canary_weight,
            mirror,
        )

    def _set_weights(
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
        for attempt in range(CONFLICT_RETRIES):
            vs = self._get(namespace, name)
            routes = plan_routes(vs, [str(r) for r in route_names], baseline, canary)
            before = read_weights(vs, routes, baseline, canary)
            if weights_match(before, baseline_weight, canary_weight, mirror):
                return WeightChange(before, changed=False, current=vs)
            body = with_weights(
                vs, routes, baseline, canary, baseline_weight, canary_weight, mirror
            )
            try:
                written = self._api.replace_namespaced_custom_object(
                    GROUP,
                    self._version or VERSIONS[0],
                    namespace,
                    PLURAL,
                    name,
                    body,
                    _request_timeout=self._timeout,
                )
            except ApiException as exc:
                if exc.status == 409:
                    log.info(
                        "virtualservice conflict, reading again vs=%s/%s attempt=%d",
                        namespace,
                        name,
                        attempt + 1,
                    )
                    continue
                raise
            return WeightChange(
                before, changed=True, current=written if isinstance(written, dict) else None
            )
        raise RouteError(
            f"VirtualService {namespace}/{name} kept changing under us "
            f"({CONFLICT_RETRIES} conflicts in a row)"
        )
