"""What one analysis tick saw in Prometheus, per SLO: the engine's only input about the world.

How the values were gathered (one query per SLO, batched across rollouts, replayed from a
recording) is the adapters' business; the engine only reads these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SloObservation:
    """Baseline and canary values of one SLO and the evidence (request counts) behind them.

    `unavailable` means the query failed (network, 5xx, timeout); `error` says how. That is
    not the same as no data: an empty result, NaN or Inf is passed as None/NaN/Inf with
    `unavailable=False` and makes the verdict inconclusive instead of starting an outage.
    """

    baseline: float | None
    canary: float | None
    baseline_samples: float | None
    canary_samples: float | None
    unavailable: bool = False
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> SloObservation:
        """An observation whose query failed (network, 5xx, timeout)."""
        return cls(None, None, None, None, unavailable=True, error=error)


@dataclass(frozen=True)
class Observations:
    """One tick's observations, keyed by SLO name. An SLO with no entry counts as unavailable."""

    slos: Mapping[str, SloObservation] = field(default_factory=dict)
