"""What PagerDuty does with a valid event: its rate limit, and alerts as incidents.

A trigger with the `dedup_key` of an open incident of the same integration (routing key) is
merged into it; acknowledge and resolve change its state; a trigger after resolve opens a new
incident; acknowledge or resolve without an open incident is accepted and dropped. Neither
class locks: the receiver calls them under its own lock.
"""

from __future__ import annotations

import collections
from typing import Any, Final

__all__ = ["ACKNOWLEDGED", "RESOLVED", "TRIGGERED", "Incidents", "RateLimit"]

# Incident states, as PagerDuty names them.
TRIGGERED: Final = "triggered"
ACKNOWLEDGED: Final = "acknowledged"
RESOLVED: Final = "resolved"


class RateLimit:
    """PagerDuty's per-integration-key limit: at most `per_minute` events in any minute
    (None: no limit)."""

    def __init__(self, per_minute: int | None) -> None:
        self._per_minute = per_minute
        self._recent: dict[str, collections.deque[float]] = {}

    def exceeded(self, routing_key: str, now: float) -> bool:
        """Whether an event at `now` (monotonic seconds) is over the limit; if not, count it."""
        if self._per_minute is None:
            return False
        recent = self._recent.setdefault(routing_key, collections.deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= self._per_minute:
            return True
        recent.append(now)
        return False

    def clear(self) -> None:
        self._recent.clear()


class Incidents:
    """Accepted events and the incidents they opened, in order; plain JSON-able dicts."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []
        # Which integration an incident belongs to; kept apart so no listing shows the key.
        self._routing: dict[str, str] = {}

    def clear(self) -> None:
        self.events.clear()
        self.incidents.clear()
        self._routing.clear()

    def apply(self, event: dict[str, Any], dedup_key: str, received_at: str) -> None:
        """Record an accepted event and update the incidents as PagerDuty does."""
        action = event["event_action"]
        incident = self._open_incident(event["routing_key"], dedup_key)
        effect: str
        if action == "trigger":
            payload = event["payload"]
            if incident is None:
                incident = {
                    "id": f"Q{len(self.incidents) + 1:06d}",
                    "dedup_key": dedup_key,
                    "status": TRIGGERED,
                    "summary": payload["summary"],
                    "severity": payload["severity"],
                    "source": payload["source"],
                    "custom_details": payload.get("custom_details", {}),
                    "links": event.get("links", []),
                    "opened_at": received_at,
                    "updated_at": received_at,
                    "trigger_count": 0,
                    "log": [],
                }
                self.incidents.append(incident)
                self._routing[incident["id"]] = event["routing_key"]
                effect = "opened"
            else:
                effect = "deduplicated"
            incident["trigger_count"] += 1
        elif incident is None:
            effect = "dropped"  # PagerDuty drops acknowledge/resolve without an open alert
        elif action == "acknowledge":
            if incident["status"] == TRIGGERED:
                incident["status"] = ACKNOWLEDGED
            effect = "acknowledged"
        else:
            incident["status"] = RESOLVED
            incident["resolved_at"] = received_at
            effect = "resolved"
        if incident is not None and effect != "dropped":
            incident["updated_at"] = received_at
            incident["log"].append({"at": received_at, "action": action, "effect": effect})
        self.events.append(
            {
                "received_at": received_at,
                "event": event,
                "dedup_key": dedup_key,
                "effect": effect,
                "incident_id": incident["id"] if effect != "dropped" and incident else None,
            }
        )

    def _open_incident(self, routing_key: str, dedup_key: str) -> dict[str, Any] | None:
        for incident in reversed(self.incidents):
            same_key = self._routing[incident["id"]] == routing_key
            if incident["dedup_key"] == dedup_key and same_key:
                return incident if incident["status"] != RESOLVED else None
        return None
