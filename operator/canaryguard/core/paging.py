"""What a page is, and PagerDuty's limits: one definition for the engine and the adapter.

PagerDuty Events API v2: a `summary` of at most 1024 characters, a `dedup_key` of at most
255, one of four severities. The engine builds pages within these limits with `safe_summary`
and `safe_dedup_key`; the adapter applies the same two to whatever it is handed, delivers
the page and reports a `DeliveryResult`.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

DEFAULT_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY: Final = 1024
MAX_DEDUP_KEY: Final = 255
Severity = Literal["critical", "error", "warning", "info"]
SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "error", "warning", "info")
_ELLIPSIS: Final = "\u2026"


def safe_summary(summary: str) -> str:
    """`summary` cut to PagerDuty's 1024 characters, ending in an ellipsis when cut."""
    if len(summary) <= MAX_SUMMARY:
        return summary
    return summary[: MAX_SUMMARY - 1] + _ELLIPSIS


def safe_dedup_key(dedup_key: str) -> str:
    """`dedup_key` within PagerDuty's 255 characters, stable and still unique.

    A plain cut would merge two long keys that share a prefix into one incident, so a key
    that is too long keeps a prefix and ends in a hash of the whole key.
    """
    if len(dedup_key) <= MAX_DEDUP_KEY:
        return dedup_key
    digest = hashlib.sha256(dedup_key.encode("utf-8")).hexdigest()[:32]
    return dedup_key[: MAX_DEDUP_KEY - len(digest) - 1] + "~" + digest


@dataclass(frozen=True)
class Link:
    """A link shown on the alert, e.g. to the Prometheus graph of the failing query."""

    href: str
    text: str | None = None


@dataclass(frozen=True)
class PageEvent:
    """What to page about. `dedup_key` must be stable for one incident (one rollback)."""

    dedup_key: str
    summary: str
    source: str
    severity: str
    component: str | None = None
    group: str | None = None
    event_class: str | None = None
    custom_details: Mapping[str, Any] = field(default_factory=dict)
    links: Sequence[Link] = ()
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {sorted(SEVERITIES)}: {self.severity!r}")
        for name in ("dedup_key", "summary", "source"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty")


class DeliveryOutcome(enum.Enum):
    """How a delivery ended."""

    DELIVERED = "delivered"
    """PagerDuty accepted the event (2xx)."""
    REJECTED = "rejected"
    """PagerDuty refused it (4xx other than 429); retrying the same event cannot help."""
    EXHAUSTED = "exhausted"
    """Network errors, 429 or 5xx until the attempts or the time budget ran out."""


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one `trigger` or `resolve`, with the last HTTP status (None when the
    last attempt got no answer) and a message that says what failed."""

    outcome: DeliveryOutcome
    attempts: int
    status: int | None
    message: str
    dedup_key: str | None

    @property
    def delivered(self) -> bool:
        return self.outcome is DeliveryOutcome.DELIVERED
