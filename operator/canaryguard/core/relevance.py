"""Which status changes a reader needs at once, and which can wait for a heartbeat.

Most ticks of a running rollout change nothing but the numbers they saw: each SLO's baseline
and canary values and request counts, the reason that quotes them, the baseline reference
taken from them, and the messages that repeat them. Writing those at every tick costs the
API server one status patch per rollout and interval for nothing anyone acts on. The runtime
writes them at most once per heartbeat (with the counts of a `confidence` SLO's current
stratum), and at once whatever else changed: the phase, the
step and its start, the weights, a verdict, a breach or outage start, a condition's status or
reason, a decision (history), the rollback, the page, a manual request, the generation seen.

What is held back is never needed to resume: the engine decides from the previous status'
breach and outage starts, step start, page and request state (all written at once), never
from the values of the last tick. The one value it does carry forward is the baseline
reference, and only while the baseline has no traffic (canary at 100%) is it what the canary
is judged against; then its changes are written at once too. Before that, every tick whose
baseline is evidence enough takes a fresh reference, so a restarted operator takes its own.
"""

from __future__ import annotations

from typing import Any

from canaryguard.core.status import Status

# Per SLO: what the last tick saw, and the reason that quotes it.
HEARTBEAT_SLO_FIELDS = frozenset(
    {"baseline", "canary", "baselineSamples", "canarySamples", "reason"}
)
# Per SLO: the baseline reference, a heartbeat value while the baseline has traffic.
REFERENCE_FIELDS = frozenset(
    {"baselineReference", "baselineReferenceSamples", "baselineReferenceAt"}
)


def reader_view(status: Status, *, with_reference: bool) -> dict[str, Any]:
    """The status as a reader needs it at once: its wire form without the values of the
    last tick and the words that restate them (the top-level message and each condition's
    message; a condition's status, reason and transition time stay)."""
    data = status.to_dict()
    data.pop("message", None)
    dropped = HEARTBEAT_SLO_FIELDS if with_reference else HEARTBEAT_SLO_FIELDS | REFERENCE_FIELDS
    data["slos"] = [
        _without_running_counts({k: v for k, v in slo.items() if k not in dropped})
        for slo in data["slos"]
    ]
    data["conditions"] = [
        {k: v for k, v in condition.items() if k != "message"} for condition in data["conditions"]
    ]
    return data


def _without_running_counts(slo: dict[str, Any]) -> dict[str, Any]:
    """An SLO with `confidence` without the counts of its current stratum (the last record):
    they grow at every tick, and a restarted operator counts them again from the stratum's
    start. Earlier strata, and the start and weight of the current one, are news: a step
    change writes the finished stratum's counts with it."""
    evidence = slo.get("evidence")
    if not evidence:
        return slo
    last = {k: v for k, v in evidence[-1].items() if k in ("since", "weight")}
    return {**slo, "evidence": [*evidence[:-1], last]}


def baseline_idle(status: Status) -> bool:
    """Whether the baseline gets no traffic (canary at 100%): the canary is then judged
    against the baseline reference, which must be written as soon as it changes."""
    return (status.canary_weight or 0) >= 100


def reader_relevant(stored: Status, decided: Status) -> bool:
    """True when `decided` differs from `stored` in anything but heartbeat values: the
    change must be written now. False when only values (or nothing) changed."""
    keep_reference = baseline_idle(stored) or baseline_idle(decided)
    return reader_view(stored, with_reference=keep_reference) != reader_view(
        decided, with_reference=keep_reference
    )
