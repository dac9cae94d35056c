"""The PagerDuty Events API v2 enqueue contract, as PagerDuty documents it.

`read_event` takes a request body to the event it carries, or to the errors that make
PagerDuty answer 400 `invalid event` (one message per problem, naming the field); the
answer bodies are built here too. The limits are the operator's own definition
(`canaryguard.core.paging`); the receiver's tests pin them to PagerDuty's documented numbers,
so a wrong limit there fails here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from canaryguard.core.paging import MAX_DEDUP_KEY, MAX_SUMMARY, SEVERITIES

__all__ = [
    "EVENT_ACTIONS",
    "INVALID_MESSAGE",
    "MAX_BODY_BYTES",
    "MAX_DEDUP_KEY",
    "MAX_SUMMARY",
    "ROUTING_KEY_LENGTH",
    "SEVERITIES",
    "accepted",
    "invalid",
    "read_event",
    "throttled",
    "validate_event",
]

ROUTING_KEY_LENGTH: Final = 32
MAX_BODY_BYTES: Final = 512 * 1024
EVENT_ACTIONS: Final = ("trigger", "acknowledge", "resolve")
INVALID_MESSAGE: Final = "Event object is invalid"


def throttled() -> dict[str, Any]:
    """The 429 answer of a rate-limited integration."""
    return {"status": "throttled", "message": "Request Limit Exceeded"}


def accepted(dedup_key: str) -> dict[str, Any]:
    """The 202 answer to an accepted event."""
    return {"status": "success", "message": "Event processed", "dedup_key": dedup_key}


def invalid(errors: list[str]) -> dict[str, Any]:
    """The 400 answer to an event that breaks the contract."""
    return {"status": "invalid event", "message": INVALID_MESSAGE, "errors": errors}


def read_event(raw: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """The event in a request body and no errors, or None and why PagerDuty refuses it."""
    if len(raw) > MAX_BODY_BYTES:
        return None, [f"the event is larger than {MAX_BODY_BYTES // 1024} KB"]
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, [f"the body is not valid JSON: {exc}"]
    errors = validate_event(event)
    if errors:
        return None, errors
    return event, []


def validate_event(event: object) -> list[str]:
    """Check an Events API v2 alert event; return one message per problem, naming the field."""
    if not isinstance(event, dict):
        return ["the event must be a JSON object"]
    errors: list[str] = []
    routing_key = _check_string(errors, event, "routing_key", "routing_key", required=True)
    if routing_key is not None and len(routing_key) != ROUTING_KEY_LENGTH:
        errors.append(
            f"Length of 'routing_key' is incorrect (should be {ROUTING_KEY_LENGTH} characters)"
        )
    action = _check_string(errors, event, "event_action", "event_action", required=True)
    if action is not None and action not in EVENT_ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(EVENT_ACTIONS)}")
    follow_up = action in ("acknowledge", "resolve")
    if follow_up and event.get("dedup_key") is None:
        errors.append(f"'dedup_key' is missing (required for {action} events)")
    dedup_key = _check_string(errors, event, "dedup_key", "dedup_key", required=False)
    if dedup_key is not None:
        if not dedup_key:
            errors.append("'dedup_key' must not be empty")
        elif len(dedup_key) > MAX_DEDUP_KEY:
            errors.append(
                f"'dedup_key' is too long ({len(dedup_key)} > {MAX_DEDUP_KEY} characters)"
            )
    if action == "trigger":
        _check_payload(errors, event)
    _check_objects(errors, event, "links", "href", ("text",))
    _check_objects(errors, event, "images", "src", ("href", "alt"))
    _check_string(errors, event, "client", "client", required=False)
    _check_string(errors, event, "client_url", "client_url", required=False)
    return errors


def _check_string(
    errors: list[str], obj: Mapping[str, Any], key: str, field: str, *, required: bool
) -> str | None:
    """Append an error naming `field` unless obj[key] is a (non-empty, if required) string."""
    if key not in obj or obj[key] is None:
        if required:
            errors.append(f"'{field}' is missing")
        return None
    value = obj[key]
    if not isinstance(value, str):
        errors.append(f"'{field}' must be a string")
        return None
    if required and not value.strip():
        errors.append(f"'{field}' must not be empty")
        return None
    return value


def _check_timestamp(errors: list[str], value: str) -> None:
    # ISO 8601 date-time: a date, a 'T', a time (PagerDuty's own example uses "+0000").
    try:
        datetime.fromisoformat(value)
    except ValueError:
        errors.append("'payload.timestamp' must be an ISO 8601 date-time")
        return
    if "T" not in value:
        errors.append("'payload.timestamp' must be an ISO 8601 date-time")


def _check_objects(
    errors: list[str],
    event: Mapping[str, Any],
    key: str,
    required: str,
    optional: tuple[str, ...],
) -> None:
    """Validate `links` or `images`: an array of objects with one required string field."""
    if key not in event or event[key] is None:
        return
    items = event[key]
    if not isinstance(items, list):
        errors.append(f"'{key}' must be an array of objects")
        return
    for index, item in enumerate(items):
        where = f"{key}[{index}]"
        if not isinstance(item, dict):
            errors.append(f"'{where}' must be an object")
            continue
        value = _check_string(errors, item, required, f"{where}.{required}", required=True)
        if key == "images" and value is not None and not value.startswith("https://"):
            errors.append(f"'{where}.src' must be served over HTTPS")
        for name in optional:
            _check_string(errors, item, name, f"{where}.{name}", required=False)


def _check_payload(errors: list[str], event: Mapping[str, Any]) -> None:
    payload = event.get("payload")
    if payload is None:
        errors.append("'payload' is missing (required for trigger events)")
        return
    if not isinstance(payload, dict):
        errors.append("'payload' must be an object")
        return
    summary = _check_string(errors, payload, "summary", "payload.summary", required=True)
    if summary is not None and len(summary) > MAX_SUMMARY:
        errors.append(f"'payload.summary' is too long ({len(summary)} > {MAX_SUMMARY} characters)")
    _check_string(errors, payload, "source", "payload.source", required=True)
    severity = _check_string(errors, payload, "severity", "payload.severity", required=True)
    if severity is not None and severity not in SEVERITIES:
        errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}")
    timestamp = _check_string(errors, payload, "timestamp", "payload.timestamp", required=False)
    if timestamp is not None:
        _check_timestamp(errors, timestamp)
    for name in ("component", "group", "class"):
        _check_string(errors, payload, name, f"payload.{name}", required=False)
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, dict):
        errors.append("'payload.custom_details' must be an object")
