"""What the engine asks the world to do after a tick; adapters carry these out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class SetWeights:
    """Set the driven routes' weights; the two always sum to 100.

    `mirror` is the percent of requests mirrored to the canary (the shadow phase); 0 removes
    a mirror to the canary, so every write outside the shadow phase (a step, a rollback)
    also ends it, in the same write as the weights.
    """

    baseline: int
    canary: int
    mirror: int = 0


@dataclass(frozen=True)
class Page:
    """Send (or resend) the rollback's PagerDuty trigger.

    `summary` names the rollout, SLO, values, margin and window in one line (at most 1024
    characters); `details` carries the full explanation as PagerDuty custom_details.
    """

    dedup_key: str
    summary: str
    severity: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolve:
    """Resolve the incident an earlier revision's rollback opened: PagerDuty `resolve` with
    that page's `dedup_key`."""

    dedup_key: str


@dataclass(frozen=True)
class EmitEvent:
    """Post a Kubernetes Event on the CanaryRollout."""

    type: EventType
    reason: str
    message: str


Action = SetWeights | Page | Resolve | EmitEvent
