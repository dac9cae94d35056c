"""Two rollouts, one route: which CanaryRollout drives a VirtualService's http route (or an
HTTPRoute's rule).

Two rollouts that drive the same route would each set their own weights at every tick
(80/20, 30/70, 80/20 ...). So a route has one owner, and a rollout that is not the owner
writes nothing and is told why:
- an active rollout (not Promoted or RolledBack) is Invalid while an older active rollout
  drives one of its routes (older: earlier creationTimestamp, then name); it starts, or goes
  on, when that one finishes or is deleted;
- a finished rollout stops setting its last weights back while an active rollout, or a
  newer finished one, drives one of its routes.
The routes a rollout drives are worked out on the VirtualService as it is now, the way the
router picks them (`Router.plan`): the named routes, or every route to the baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from canaryguard.core.ports import RouteError, Router
from canaryguard.core.spec import Spec, SpecError, parse_spec
from canaryguard.core.status import FINISHED

Key = tuple[str, str]  # (namespace, name)
ObjectKey = tuple[str, str, str]  # (namespace, kind, name) of the routing object


class RouteClaims:
    """The latest body of every rollout, indexed by the VirtualService it names, so a tick
    looks only at the rollouts that share its VirtualService."""

    def __init__(self) -> None:
        self._bodies: dict[Key, Mapping[str, Any]] = {}
        self._by_vs: dict[ObjectKey, set[Key]] = {}

    def note(self, key: Key, body: Mapping[str, Any]) -> None:
        """Track the rollout's latest body (from the watch or a status write)."""
        self.forget(key)
        self._bodies[key] = body
        self._by_vs.setdefault((key[0], *_target(body)), set()).add(key)

    def forget(self, key: Key) -> None:
        """The rollout is gone."""
        body = self._bodies.pop(key, None)
        if body is not None:
            index = (key[0], *_target(body))
            self._by_vs[index].discard(key)
            if not self._by_vs[index]:
                del self._by_vs[index]

    def conflict(
        self,
        spec: Spec,
        phase: str | None,
        vs: Mapping[str, Any],
        routes: Sequence[int],
        router: Router,
    ) -> str | None:
        """Why the rollout `spec` (in `phase`, driving `routes` of `vs`) must leave its routes
        to another rollout, naming the field and that rollout; None when it owns them."""
        me: Key = (spec.namespace, spec.name)
        mine = self._bodies.get(me)
        my_age = _age(mine) if mine is not None else ("", spec.name)
        finished = phase in FINISHED
        rivals = []
        target = spec.target
        for key in self._by_vs.get((spec.namespace, target.kind, target.name), set()) - {me}:
            body = self._bodies[key]
            shared = sorted(set(routes) & set(_driven(body, vs, router)))
            if not shared:
                continue
            active = (body.get("status") or {}).get("phase") not in FINISHED
            if _yields(finished, active, _age(body) < my_age):
                rivals.append((_age(body), key[1], shared))
        if not rivals:
            return None
        _, name, shared = min(rivals)
        field = f"{target.field}." + (target.selector_key if target.selectors else "name")
        where = f"{router.labels(vs, shared)} of {target.kind} {target.name}"
        if finished:
            return (
                f"{field}: {where} is now driven by CanaryRollout {name}; "
                "this finished rollout no longer sets its weights"
            )
        return (
            f"{field}: {where} is already driven by CanaryRollout {name}, created earlier and "
            "not finished; two rollouts on one route would fight over its weights, so this one "
            f"waits until {name} finishes or is deleted"
        )


def _yields(finished: bool, other_active: bool, other_older: bool) -> bool:
    """The rule of the module docstring, for a rollout and another sharing one of its routes."""
    if finished:
        return other_active or not other_older
    return other_active and other_older


def _target(body: Mapping[str, Any]) -> tuple[str, str]:
    """The kind and name of the routing object the body names, as far as it reads."""
    spec = body.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    kind, ref = "VirtualService", spec.get("virtualService")
    if ref is None and spec.get("httpRoute") is not None:
        kind, ref = "HTTPRoute", spec.get("httpRoute")
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return kind, name if isinstance(name, str) else ""


def _age(body: Mapping[str, Any]) -> tuple[str, str]:
    """Sorts older rollouts first: creationTimestamp (RFC 3339, UTC), then name."""
    meta = body.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def _driven(body: Mapping[str, Any], vs: Mapping[str, Any], router: Router) -> list[int]:
    """The routes of `vs` another rollout drives; none when its spec or routes are invalid
    (it is Invalid itself and sets no weights)."""
    try:
        spec = parse_spec(body)
        return router.plan(vs, spec.target.selectors, spec.baseline, spec.canary)
    except (SpecError, RouteError):
        return []
