"""Text that both `status` and `explain` show: numbers, durations, hosts, a step's hold."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from canaryguard.core.durations import format_duration, parse_duration
from canaryguard.core.status import Status, format_time


def number(value: float | None) -> str:
    """A value in at most four significant digits, or `-`."""
    return "-" if value is None else f"{value:.4g}"


def duration(value: timedelta) -> str:
    """A duration for people: whole seconds, never negative (clocks differ a little)."""
    seconds = max(0, round(value.total_seconds()))
    return format_duration(timedelta(seconds=seconds))


def destination(value: Any) -> str:
    """A spec's `baseline` or `canary` as `host/subset`."""
    if not isinstance(value, Mapping):
        return "?"
    host = str(value.get("host", "?"))
    return f"{host}/{value['subset']}" if value.get("subset") else host


def steps(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rollout's spec.steps, whatever the spec holds."""
    found = (obj.get("spec") or {}).get("steps")
    return [s for s in found if isinstance(s, Mapping)] if isinstance(found, list) else []


def hold_text(obj: Mapping[str, Any], status: Status, now: datetime) -> str:
    """How long the current step has held, against its hold (`, held 1m of its 2m hold`)."""
    hold = _hold(obj, status)
    if hold is None or status.step_started_at is None:
        return ""
    held = now - status.step_started_at
    if held >= hold:
        return f", held {duration(held)} (hold {duration(hold)} done)"
    return f", held {duration(held)} of its {duration(hold)} hold"


def _hold(obj: Mapping[str, Any], status: Status) -> timedelta | None:
    found = steps(obj)
    if status.step_index is None or not 0 <= status.step_index < len(found):
        return None
    try:
        return parse_duration(str(found[status.step_index].get("hold", "0s")))
    except ValueError:
        return None


def router_text(spec: Mapping[str, Any]) -> str:
    """The routing object's kind and name, with the driven routes or rules when named
    (`VirtualService fraud-model (routes primary)`, `HTTPRoute scorer (rules a, rules[2])`)."""
    if isinstance(spec.get("httpRoute"), Mapping):
        ref = spec["httpRoute"]
        rules = [
            str(r.get("name") if r.get("name") is not None else f"rules[{r.get('index')}]")
            for r in ref.get("rules") or []
            if isinstance(r, Mapping)
        ]
        where = f" (rules {', '.join(rules)})" if rules else ""
        return f"HTTPRoute {ref.get('name', '?')}{where}"
    ref = spec.get("virtualService") or {}
    routes = [str(r) for r in ref.get("routes") or []]
    where = f" (routes {', '.join(routes)})" if routes else ""
    return f"VirtualService {ref.get('name', '?')}{where}"


def shadow_text(spec: Mapping[str, Any], status: Status, now: datetime) -> str | None:
    """The shadow phase in one line, or None when the rollout has none."""
    wanted = spec.get("shadow")
    shadow = status.shadow
    if not isinstance(wanted, Mapping) and shadow is None:
        return None
    wanted = wanted if isinstance(wanted, Mapping) else {}
    skipped = [str(n) for n in wanted.get("skipSlos") or []]
    tail = f"; not judged in shadow: {', '.join(skipped)}" if skipped else ""
    on_breach = "pages" if wanted.get("onBreach", "page") == "page" else "only posts an Event"
    if shadow is None:
        return (
            f"{wanted.get('percent', '?')}% of requests mirrored to the canary for "
            f"{wanted.get('hold', '?')} before step 1 (not started){tail}"
        )
    since = f"{shadow.percent}% mirrored from {format_time(shadow.started_at)}"
    ended = format_time(shadow.ended_at) if shadow.ended_at else "?"
    if shadow.state == "Running":
        held = duration(now - shadow.started_at)
        hold = f" of its {wanted['hold']} hold" if "hold" in wanted else ""
        return (
            f"running: {since}, held {held}{hold}; the canary serves no user; a sustained "
            f"breach rolls back and {on_breach}{tail}"
        )
    if shadow.state == "Passed":
        return f"passed at {ended} ({since}); mirror removed, steps followed{tail}"
    if shadow.state == "Failed":
        return f"failed at {ended} ({since}): rolled back, mirror removed; no user was served"
    return f"skipped at {ended} by a manual request ({since}); mirror removed"
