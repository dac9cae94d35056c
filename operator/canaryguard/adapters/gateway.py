"""Gateway API adapter: read and set the baseline/canary weights of an HTTPRoute.

The baseline and canary are Services: `spec.baseline.host` and `spec.canary.host` name the
Service a `backendRef` points at (its `name`, in the HTTPRoute's namespace unless the
backendRef says otherwise); an HTTPRoute has no subsets. The driven rules are chosen by
`spec.httpRoute.rules`: each entry a rule `name` (a string) or an index into `spec.rules`
(a number); none means every rule with a backendRef to the baseline.

Only the `weight` of the baseline and canary backendRefs changes (a canary backendRef is added
after the baseline's, same port, when a rule lacks it); every other field round-trips as the
API server returned it. Gateway API weights are relative and default to 1: a lone backendRef
receives all traffic whatever its weight.

The shadow phase mirrors requests to the canary with a rule-level `RequestMirror` filter whose
backendRef is the canary's Service and whose `percent` (standard channel since v1.3) says how
many; other RequestMirror filters are the user's and stay.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from canaryguard.adapters.istio import _names_object, weights_match
from canaryguard.core.ports import RouteError, RouteNotFound, WeightChange, Weights
from canaryguard.core.spec import Destination

log = logging.getLogger(__name__)

KIND = "HTTPRoute"
GROUP = "gateway.networking.k8s.io"
PLURAL = "httproutes"
VERSIONS = ("v1", "v1beta1")
CONFLICT_RETRIES = 5

Selector = str | int  # a rule name, or an index into spec.rules


class HTTPRouteNotFound(RouteNotFound):
    """The HTTPRoute named by the rollout does not exist."""


def matches(dest: Destination, ref: Mapping[str, Any], namespace: str) -> bool:
    """True when a backendRef points at the Service `dest.host` (subsets do not exist here)."""
    if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
        return False
    host = dest.host
    if "." in host:  # a qualified name: scorer.ml or scorer.ml.svc.cluster.local
        name, _, rest = host.partition(".")
        target_ns = rest.split(".")[0]
    else:
        name, target_ns = host, namespace
    return str(ref.get("name", "")) == name and (ref.get("namespace") or namespace) == target_ns


def _label(rule: Mapping[str, Any], index: int) -> str:
    return str(rule.get("name") or f"rules[{index}]")


def _refs(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(rule.get("backendRefs") or [])


def _describe(ref: Mapping[str, Any]) -> str:
    kind = ref.get("kind") or "Service"
    where = f"{ref['namespace']}/" if ref.get("namespace") else ""
    return f"{kind} {where}{ref.get('name', '?')}"


def plan_routes(
    route: Mapping[str, Any],
    selectors: Sequence[Selector],
    baseline: Destination,
    canary: Destination,
) -> list[int]:
    """Indexes of the rules to drive.

    Selected rules (by name or index) must exist and have a backendRef to the baseline.
    Without selectors every rule with a backendRef to the baseline is driven. A driven rule
    may hold only the baseline and canary backendRefs: a third one would keep receiving
    traffic after a rollback, so it is refused with a message naming the rule.
    """
    namespace = str(route.get("metadata", {}).get("namespace", ""))
    name = route.get("metadata", {}).get("name", "?")
    rules = route.get("spec", {}).get("rules") or []
    if baseline.subset or canary.subset:
        raise RouteError(f"HTTPRoute {name}: backendRefs have no subsets; name a Service")
    if selectors:
        by_name = {r.get("name"): i for i, r in enumerate(rules) if r.get("name")}
        indexes = []
        for sel in selectors:
            if isinstance(sel, int):
                if not 0 <= sel < len(rules):
                    raise RouteError(
                        f"HTTPRoute {name} has no rule at index {sel} ({len(rules)} rules)"
                    )
                indexes.append(sel)
            elif sel in by_name:
                indexes.append(by_name[sel])
            else:
                known = ", ".join(sorted(str(k) for k in by_name)) or "none"
                raise RouteError(f"HTTPRoute {name} has no rule named {sel} (named rules: {known})")
        indexes = list(dict.fromkeys(indexes))
    else:
        indexes = [
            i
            for i, r in enumerate(rules)
            if any(matches(baseline, ref, namespace) for ref in _refs(r))
        ]
        if not indexes:
            raise RouteError(f"HTTPRoute {name} has no rule with a backendRef to {baseline}")
    for i in indexes:
        refs = _refs(rules[i])
        label = _label(rules[i], i)
        if not any(matches(baseline, ref, namespace) for ref in refs):
            raise RouteError(f"rule {label} of HTTPRoute {name} has no backendRef to {baseline}")
        others = [
            ref
            for ref in refs
            if not matches(baseline, ref, namespace) and not matches(canary, ref, namespace)
        ]
        if others:
            extra = ", ".join(_describe(ref) for ref in others)
            raise RouteError(
                f"rule {label} of HTTPRoute {name} also sends traffic to {extra}, "
                f"which is neither baseline {baseline} nor canary {canary}"
            )
    return indexes


def read_weights(
    route: Mapping[str, Any], rules: Sequence[int], baseline: Destination, canary: Destination
) -> list[Weights]:
    """The baseline/canary weights of each driven rule, in Gateway API's semantics: a
    backendRef without a weight has weight 1; a lone backendRef receives all traffic (100)."""
    namespace = str(route.get("metadata", {}).get("namespace", ""))
    all_rules = route.get("spec", {}).get("rules") or []
    result = []
    for i in rules:
        refs = _refs(all_rules[i])
        b = c = None
        for ref in refs:
            weight = int(ref.get("weight", 1))
            if len(refs) == 1 and weight > 0:
                weight = 100
            if matches(baseline, ref, namespace):
                b = weight
            elif matches(canary, ref, namespace):
                c = weight
        result.append(Weights(b, c, mirror_percent(all_rules[i], canary, namespace)))
    return result


def _is_our_mirror(item: Any, canary: Destination, namespace: str) -> bool:
    if not isinstance(item, Mapping) or item.get("type") != "RequestMirror":
        return False
    mirror = item.get("requestMirror")
    ref = mirror.get("backendRef") if isinstance(mirror, Mapping) else None
    return isinstance(ref, Mapping) and matches(canary, ref, namespace)


def mirror_percent(rule: Mapping[str, Any], canary: Destination, namespace: str) -> float:
    """The percent of the rule's requests mirrored to the canary by a RequestMirror filter:
    its `percent`, or its `fraction` (denominator 100 by default), else all of them."""
    for item in rule.get("filters") or []:
        if not _is_our_mirror(item, canary, namespace):
            continue
        mirror = item["requestMirror"]
        if isinstance(mirror.get("percent"), int):
            return float(mirror["percent"])
        fraction = mirror.get("fraction")
        if isinstance(fraction, Mapping) and isinstance(fraction.get("numerator"), int):
            denominator = fraction.get("denominator", 100)
            if isinstance(denominator, int) and denominator > 0:
                return 100.0 * float(fraction["numerator"]) / denominator
        return 100.0
    return 0.0


def _set_mirror(
    rule: dict[str, Any], canary: Destination, namespace: str, mirror: int, base: Mapping[str, Any]
) -> None:
    """Put (or replace) the RequestMirror filter to the canary with `mirror` percent, or
    remove it for 0; every other filter stays where it is."""
    filters = [f for f in rule.get("filters") or [] if not _is_our_mirror(f, canary, namespace)]
    if mirror > 0:
        ref: dict[str, Any] = {
            k: copy.deepcopy(base[k]) for k in ("group", "kind", "port") if k in base
        }
        name, _, rest = canary.host.partition(".")
        ref["name"] = name
        if rest:
            ref["namespace"] = rest.split(".")[0]
        elif "namespace" in base:
            ref["namespace"] = base["namespace"]
        filters.append(
            {"type": "RequestMirror", "requestMirror": {"backendRef": ref, "percent": mirror}}
        )
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)


def with_weights(
    route: Mapping[str, Any],
    rules: Sequence[int],
    baseline: Destination,
    canary: Destination,
    baseline_weight: int,
    canary_weight: int,
    mirror: int = 0,
) -> dict[str, Any]:
    """A copy of the HTTPRoute with the driven rules set to the given weights, and `mirror`
    percent of their requests mirrored to the canary (0: no mirror to it). The canary
    backendRef (same group, kind, namespace and port as the baseline's) is added after the
    baseline's when a rule lacks it. Nothing else changes."""
    namespace = str(route.get("metadata", {}).get("namespace", ""))
    out = copy.deepcopy(dict(route))
    all_rules = out["spec"]["rules"]
    for i in rules:
        refs = all_rules[i]["backendRefs"]
        base_at = 0
        has_canary = False
        for at, ref in enumerate(refs):
            if matches(baseline, ref, namespace):
                ref["weight"] = baseline_weight
                base_at = at
            elif matches(canary, ref, namespace):
                ref["weight"] = canary_weight
                has_canary = True
        if not has_canary:
            base = refs[base_at]
            new_ref: dict[str, Any] = {
                k: copy.deepcopy(base[k]) for k in ("group", "kind", "port") if k in base
            }
            name, _, rest = canary.host.partition(".")
            new_ref["name"] = name
            if rest:
                new_ref["namespace"] = rest.split(".")[0]
            elif "namespace" in base:
                new_ref["namespace"] = base["namespace"]
            new_ref["weight"] = canary_weight
            refs.insert(base_at + 1, new_ref)
        if mirror > 0 or mirror_percent(all_rules[i], canary, namespace) > 0:
            _set_mirror(all_rules[i], canary, namespace, mirror, refs[base_at])
    return out


def rule_labels(route: Mapping[str, Any], rules: Sequence[int]) -> str:
    """`rule a` / `rules a, rules[2]`, for messages."""
    all_rules = route.get("spec", {}).get("rules") or []
    names = [_label(all_rules[i], i) for i in rules]
    return ("rule " if len(names) == 1 else "rules ") + ", ".join(names)


class HTTPRouteClient:
    """Reads and writes HTTPRoutes through the Kubernetes API (in a worker thread, with a
    request timeout); a 409 conflict on write means read again."""

    kind = KIND

    def __init__(self, api_client: ApiClient, request_timeout: float = 10.0) -> None:
        self._api = CustomObjectsApi(api_client)
        self._timeout = request_timeout
        self._version: str | None = None

    def plan(
        self,
        obj: Mapping[str, Any],
        selectors: Sequence[Selector],
        baseline: Destination,
        canary: Destination,
    ) -> list[int]:
        return plan_routes(obj, selectors, baseline, canary)

    def read(
        self,
        obj: Mapping[str, Any],
        routes: Sequence[int],
        baseline: Destination,
        canary: Destination,
    ) -> list[Weights]:
        return read_weights(obj, routes, baseline, canary)

    def labels(self, obj: Mapping[str, Any], routes: Sequence[int]) -> str:
        return rule_labels(obj, routes)

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The HTTPRoute as served, trying Gateway API's versions newest first."""
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
                    raise HTTPRouteNotFound(f"HTTPRoute {namespace}/{name} not found") from None
                continue
            self._version = version
            if not isinstance(obj, dict):
                raise RouteError(f"HTTPRoute {namespace}/{name}: unexpected answer")
            return obj
        raise HTTPRouteNotFound(
            f"HTTPRoute {namespace}/{name} not found (Gateway API's HTTPRoute is not served)"
        )

    async def set_weights(
        self,
        namespace: str,
        name: str,
        route_names: Sequence[Selector],
        baseline: Destination,
        canary: Destination,
        baseline_weight: int,
        canary_weight: int,
        mirror: int = 0,
    ) -> WeightChange:
        """Set the split and the mirror on the driven rules, writing only when it differs."""
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
        selectors: Sequence[Selector],
        baseline: Destination,
        canary: Destination,
        baseline_weight: int,
        canary_weight: int,
        mirror: int = 0,
    ) -> WeightChange:
        for attempt in range(CONFLICT_RETRIES):
            route = self._get(namespace, name)
            rules = plan_routes(route, selectors, baseline, canary)
            before = read_weights(route, rules, baseline, canary)
            if weights_match(before, baseline_weight, canary_weight, mirror):
                return WeightChange(before, changed=False, current=route)
            body = with_weights(
                route, rules, baseline, canary, baseline_weight, canary_weight, mirror
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
                        "httproute conflict, reading again route=%s/%s attempt=%d",
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
            f"HTTPRoute {namespace}/{name} kept changing under us "
            f"({CONFLICT_RETRIES} conflicts in a row)"
        )
