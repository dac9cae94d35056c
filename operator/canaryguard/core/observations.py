"""What one analysis tick saw in Prometheus, per SLO: the engine's only input about the world.

How the values were gathered (one query per SLO, batched across rollouts, replayed from a
recording) is the adapters' business; the engine only reads these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from canaryguard.core.sequential import Stratum


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
    # For an SLO with `confidence`: each version's requests and events since the current
    # step began (one stratum of core.sequential); None when not gathered or no data.
    counts: Stratum | None = None

    @classmethod
    def failed(cls, error: str) -> SloObservation:
        """An observation whose query failed (network, 5xx, timeout)."""
        return cls(None, None, None, None, unavailable=True, error=error)


@dataclass(frozen=True)
class Observations:
    """One tick's observations, keyed by SLO name. An SLO with no entry counts as unavailable.

    `routed_canary` is the canary's share of traffic (0-100) on the driven routes as the
    router has them before this tick's decision, the highest share where routes differ; None
    when it was not read. The engine compares it with the weight it decided last, so that no
    path but a judged step or a manual promote ever raises the canary's weight.
    """

    slos: Mapping[str, SloObservation] = field(default_factory=dict)
    routed_canary: float | None = None
    # The percent of requests each driven route mirrors to the canary (0: none), as read
    # with `routed_canary`; None when not read.
    routed_mirror: tuple[float, ...] | None = None
