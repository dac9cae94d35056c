"""Text that both `status` and `explain` show: numbers, durations, hosts, a step's hold."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from canaryguard.core.durations import format_duration, parse_duration
from canaryguard.core.status import Status


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
