"""The CanaryRollout status as typed, immutable values, and its wire form.

Everything a tick needs to resume lives here (step, step start, breach and outage starts,
rollback and page state, the last manual request handled), so an operator restarted at any
instant continues the same rollout.
`Status.to_dict()` is exactly what gets patched: timestamps are RFC 3339 in UTC with at most
millisecond precision, and values are kept to 4 significant digits, so a tick that saw the
same world produces an equal dict and nothing needs writing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from canaryguard.core.manual import RequestAction

Phase = Literal["Pending", "Progressing", "Paused", "Promoted", "RolledBack", "Invalid"]
Verdict = Literal["healthy", "breach", "inconclusive", "unavailable", "skipped"]
PausedReason = Literal["Spec", "MetricsOutage"]
RollbackReason = Literal["SLOBreach", "MetricsOutage", "Manual"]
PageState = Literal["Pending", "Delivered", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]
RequestOutcome = Literal["Promoted", "RolledBack", "NoEffect", "Rejected"]
ShadowState = Literal["Running", "Passed", "Failed", "Skipped"]
IncidentState = Literal["Open", "Resolving", "Resolved", "Failed"]

FINISHED: frozenset[Phase] = frozenset({"Promoted", "RolledBack"})
HISTORY_LIMIT = 20
# Incidents a rollout tracks to resolve on promotion: `previousIncident` and at most this
# many less one in `olderIncidents` (the oldest is dropped, with a note, past that).
INCIDENT_LIMIT = 10
# Conditions are written in this order, so their list never reorders between ticks.
CONDITION_TYPES = ("Progressing", "Healthy", "MetricsAvailable", "SpecValid", "Paged")
SIGNIFICANT_DIGITS = 4


@dataclass(frozen=True)
class StratumRecord:
    """An SLO's counts over one constant-weight period of the analysis (a step, from
    `since`, at canary weight `weight`): the evidence an SLO with `confidence` is judged on.
    Earlier periods' totals stay here, so a restarted operator loses none of them."""

    since: datetime
    weight: int
    baseline_requests: int
    baseline_events: int
    canary_requests: int
    canary_events: int


# The evidence kept per SLO: one record per step, the latest kept.
EVIDENCE_LIMIT = 20


@dataclass(frozen=True)
class SloStatus:
    """The latest verdict of one SLO, the values behind it, and its breach run.

    The baseline reference is the baseline's value and sample count at the last tick where
    they were evidence enough (at least the SLO's minRequests, a finite value), and when that
    reference was taken (a tick that sees the same value and count does not move the time).
    While the baseline gets no traffic (canary at 100%) the canary is judged against it.
    """

    name: str
    verdict: Verdict
    reason: str = ""
    baseline: float | None = None
    canary: float | None = None
    baseline_samples: float | None = None
    canary_samples: float | None = None
    breaching_since: datetime | None = None
    baseline_reference: float | None = None
    baseline_reference_samples: float | None = None
    baseline_reference_at: datetime | None = None
    evidence: tuple[StratumRecord, ...] = ()


@dataclass(frozen=True)
class Rollback:
    """Why and when traffic went back to the baseline, with the evidence."""

    at: datetime
    reason: RollbackReason
    message: str
    slo: str | None = None
    baseline: float | None = None
    canary: float | None = None
    margin: str | None = None
    window: str | None = None
    breaching_since: datetime | None = None
    # Set when the canary was judged against the baseline reference (the baseline had no
    # traffic): when that reference was taken; `baseline` is then the reference's value.
    baseline_reference_at: datetime | None = None


@dataclass(frozen=True)
class PageStatus:
    """Delivery of the rollback's PagerDuty trigger."""

    dedup_key: str
    state: PageState = "Pending"
    attempts: int = 0
    delivered_at: datetime | None = None
    last_error: str | None = None
    # Failed deliveries so far, and when the next one is due (backoff across ticks).
    failures: int = 0
    retry_at: datetime | None = None


@dataclass(frozen=True)
class IncidentStatus:
    """The incident an earlier, rolled-back revision paged for, kept until a later revision
    is promoted and it is resolved (PagerDuty `resolve` with the same dedup key).

    Open: waiting for a promotion. Resolving: the resolve is decided and not yet delivered
    (sent again after a restart, with backoff like the page). Resolved: PagerDuty accepted
    it. Failed: PagerDuty refused it (a 4xx other than 429), never retried.
    """

    dedup_key: str
    revision: str
    state: IncidentState = "Open"
    attempts: int = 0
    failures: int = 0
    retry_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None  # the promoted revision
    last_error: str | None = None


@dataclass(frozen=True)
class LastRequest:
    """The last manual request handled (carried out, without effect, or rejected).

    A request whose id equals `id` is never handled again, so each is carried out once.
    `action` is unset for a rejected request whose action could not be read.
    """

    id: str
    at: datetime
    outcome: RequestOutcome
    action: RequestAction | None = None
    by: str | None = None
    message: str = ""


@dataclass(frozen=True)
class ShadowStatus:
    """The shadow phase: `percent` of the baseline's requests mirrored to the canary since
    `started_at`. Running while it is judged; Passed when its hold ended healthy (step 1
    began), Failed when it ended in a rollback, Skipped when a person promoted or the spec
    dropped it."""

    started_at: datetime
    percent: int
    state: ShadowState = "Running"
    ended_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.state == "Running"


@dataclass(frozen=True)
class Condition:
    """A standard Kubernetes condition."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One decision, as kept in the bounded history."""

    at: datetime
    action: str
    reason: str
    message: str
    step_index: int | None = None
    canary_weight: int | None = None


@dataclass(frozen=True)
class Status:
    """The whole status of a CanaryRollout. The default value is a rollout never ticked."""

    phase: Phase = "Pending"
    message: str = ""
    revision: str | None = None
    observed_generation: int | None = None
    step_index: int | None = None
    canary_weight: int | None = None
    step_started_at: datetime | None = None
    metrics_outage_since: datetime | None = None
    paused_reason: PausedReason | None = None
    slos: tuple[SloStatus, ...] = ()
    rollback: Rollback | None = None
    page: PageStatus | None = None
    last_request: LastRequest | None = None
    conditions: tuple[Condition, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    shadow: ShadowStatus | None = None

    @property
    def shadowing(self) -> bool:
        """Whether the shadow phase is running: the canary gets mirrored requests only."""
        return self.shadow is not None and self.shadow.running

    @property
    def stratum_started_at(self) -> datetime | None:
        """When the current constant-traffic period began, the one `confidence` SLOs count
        their evidence over: the shadow's start while shadowing, else the step's."""
        if self.shadowing and self.shadow is not None:
            return self.shadow.started_at
        return self.step_started_at

    dry_run: bool = False
    previous_incident: IncidentStatus | None = None
    # Incidents of rollbacks before the one in `previous_incident`, oldest first, not resolved
    # yet when carried into this revision; resolved with it on promotion.
    older_incidents: tuple[IncidentStatus, ...] = ()

    @property
    def incidents(self) -> tuple[IncidentStatus, ...]:
        """Every incident this status tracks, oldest first (`previousIncident` last)."""
        newest = () if self.previous_incident is None else (self.previous_incident,)
        return (*self.older_incidents, *newest)

    def condition(self, type_: str) -> Condition | None:
        """The condition of that type, if set."""
        return next((c for c in self.conditions if c.type == type_), None)

    def with_condition(
        self,
        type_: str,
        status: ConditionStatus,
        reason: str,
        message: str,
        now: datetime,
    ) -> Status:
        """Set a condition; its lastTransitionTime only moves when its status flips."""
        old = self.condition(type_)
        since = old.last_transition_time if old is not None and old.status == status else now
        new = Condition(type_, status, reason, message, since, self.observed_generation)
        others = [c for c in self.conditions if c.type != type_]
        return replace(self, conditions=_ordered([*others, new]))

    def with_history(self, entries: Iterable[HistoryEntry]) -> Status:
        """Append decisions, keeping the latest HISTORY_LIMIT."""
        history = (*self.history, *entries)[-HISTORY_LIMIT:]
        return replace(self, history=history)

    def to_dict(self) -> dict[str, Any]:
        """The status in the CRD's shape: what gets patched.

        Unset fields of objects are written as None, because a JSON merge patch needs a null
        to remove a field that was set before; items of lists (replaced whole by a merge
        patch) leave unset fields out.
        """
        return {
            "phase": self.phase,
            "message": self.message,
            "revision": self.revision,
            "observedGeneration": self.observed_generation,
            "stepIndex": self.step_index,
            "canaryWeight": self.canary_weight,
            "stepStartedAt": format_time(self.step_started_at),
            "metricsOutageSince": format_time(self.metrics_outage_since),
            "pausedReason": self.paused_reason,
            "slos": [_compact(_slo_to_dict(slo)) for slo in self.slos],
            "rollback": None if self.rollback is None else _rollback_to_dict(self.rollback),
            "page": None if self.page is None else _page_to_dict(self.page),
            "lastRequest": (
                None if self.last_request is None else _request_to_dict(self.last_request)
            ),
            "conditions": [_compact(_condition_to_dict(c)) for c in self.conditions],
            "history": [_compact(_history_to_dict(h)) for h in self.history],
            "shadow": None if self.shadow is None else _shadow_to_dict(self.shadow),
            "dryRun": True if self.dry_run else None,
            "previousIncident": (
                None
                if self.previous_incident is None
                else _incident_to_dict(self.previous_incident)
            ),
            "olderIncidents": (
                [_compact(_incident_to_dict(i)) for i in self.older_incidents] or None
            ),
        }


def status_from_dict(data: Mapping[str, Any] | None) -> Status:
    """Read a status as stored in the resource (None or {} is a rollout never ticked).

    Tolerant: a field of the wrong type or an unknown enum value reads as unset rather
    than raising, so a hand-edited status cannot crash the operator.
    """
    if not isinstance(data, Mapping):
        return Status()
    d = _Fields(data)
    return Status(
        phase=d.choice("phase", Phase) or "Pending",
        message=d.string("message") or "",
        revision=d.string("revision"),
        observed_generation=d.integer("observedGeneration"),
        step_index=d.integer("stepIndex"),
        canary_weight=d.integer("canaryWeight"),
        step_started_at=d.time("stepStartedAt"),
        metrics_outage_since=d.time("metricsOutageSince"),
        paused_reason=d.choice("pausedReason", PausedReason),
        slos=tuple(s for s in (_slo_from(x) for x in d.objects("slos")) if s is not None),
        rollback=_rollback_from(d.object("rollback")),
        page=_page_from(d.object("page")),
        last_request=_request_from(d.object("lastRequest")),
        conditions=_ordered(
            c for c in (_condition_from(x) for x in d.objects("conditions")) if c is not None
        ),
        history=tuple(h for h in (_history_from(x) for x in d.objects("history")) if h is not None)[
            -HISTORY_LIMIT:
        ],
        shadow=_shadow_from(d.object("shadow")),
        dry_run=data.get("dryRun") is True,
        previous_incident=_incident_from(d.object("previousIncident")),
        older_incidents=tuple(
            i for i in (_incident_from(x) for x in d.objects("olderIncidents")) if i is not None
        )[-(INCIDENT_LIMIT - 1) :],
    )


# --- values -------------------------------------------------------------------------------


def round_value(value: float | None) -> float | None:
    """A metric value as the status keeps it: 4 significant digits; None if not finite.

    Rounding can overflow (1.7977e308 rounds to 1.798e308, beyond the largest float); such a
    value is as unusable as Inf and reads as None too, since JSON cannot carry either.
    """
    if value is None or not math.isfinite(value):
        return None
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return rounded if math.isfinite(rounded) else None


def truncate_time(moment: datetime) -> datetime:
    """`moment` in UTC, cut to whole milliseconds (what the status can store)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def format_time(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC: `2024-06-01T12:00:00Z`, or `...00.250Z` when there are milliseconds."""
    if moment is None:
        return None
    moment = truncate_time(moment)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def parse_time(text: Any) -> datetime | None:
    """Read an RFC 3339 timestamp (None when absent or not a timestamp)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return truncate_time(moment)


def _number_out(value: float | None) -> float | int | None:
    # Counts come back from Prometheus as floats; 120 reads better than 120.0 in kubectl.
    if value is not None and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _ordered(conditions: Iterable[Condition]) -> tuple[Condition, ...]:
    def rank(c: Condition) -> tuple[int, str]:
        known = c.type in CONDITION_TYPES
        return (CONDITION_TYPES.index(c.type) if known else len(CONDITION_TYPES), c.type)

    return tuple(sorted(conditions, key=rank))


def _slo_to_dict(slo: SloStatus) -> dict[str, Any]:
    return {
        "name": slo.name,
        "verdict": slo.verdict,
        "baseline": _number_out(slo.baseline),
        "canary": _number_out(slo.canary),
        "baselineSamples": _number_out(slo.baseline_samples),
        "canarySamples": _number_out(slo.canary_samples),
        "breachingSince": format_time(slo.breaching_since),
        "baselineReference": _number_out(slo.baseline_reference),
        "baselineReferenceSamples": _number_out(slo.baseline_reference_samples),
        "baselineReferenceAt": format_time(slo.baseline_reference_at),
        "evidence": [_stratum_to_dict(s) for s in slo.evidence] or None,
        "reason": slo.reason,
    }


def _stratum_to_dict(stratum: StratumRecord) -> dict[str, Any]:
    return {
        "since": format_time(stratum.since),
        "weight": stratum.weight,
        "baselineRequests": stratum.baseline_requests,
        "baselineEvents": stratum.baseline_events,
        "canaryRequests": stratum.canary_requests,
        "canaryEvents": stratum.canary_events,
    }


def _rollback_to_dict(rollback: Rollback) -> dict[str, Any]:
    return {
        "at": format_time(rollback.at),
        "reason": rollback.reason,
        "slo": rollback.slo,
        "baseline": _number_out(rollback.baseline),
        "canary": _number_out(rollback.canary),
        "margin": rollback.margin,
        "window": rollback.window,
        "breachingSince": format_time(rollback.breaching_since),
        "baselineReferenceAt": format_time(rollback.baseline_reference_at),
        "message": rollback.message,
    }


def _page_to_dict(page: PageStatus) -> dict[str, Any]:
    return {
        "dedupKey": page.dedup_key,
        "state": page.state,
        "attempts": page.attempts,
        "deliveredAt": format_time(page.delivered_at),
        "lastError": page.last_error,
        "failures": page.failures or None,
        "retryAt": format_time(page.retry_at),
    }


def _shadow_to_dict(shadow: ShadowStatus) -> dict[str, Any]:
    return {
        "state": shadow.state,
        "percent": shadow.percent,
        "startedAt": format_time(shadow.started_at),
        "endedAt": format_time(shadow.ended_at),
    }


def _incident_to_dict(incident: IncidentStatus) -> dict[str, Any]:
    return {
        "dedupKey": incident.dedup_key,
        "revision": incident.revision,
        "state": incident.state,
        "attempts": incident.attempts,
        "failures": incident.failures or None,
        "retryAt": format_time(incident.retry_at),
        "resolvedAt": format_time(incident.resolved_at),
        "resolvedBy": incident.resolved_by,
        "lastError": incident.last_error,
    }


def _request_to_dict(request: LastRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "action": request.action,
        "by": request.by,
        "at": format_time(request.at),
        "outcome": request.outcome,
        "message": request.message,
    }


def _condition_to_dict(condition: Condition) -> dict[str, Any]:
    return {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message,
        "lastTransitionTime": format_time(condition.last_transition_time),
        "observedGeneration": condition.observed_generation,
    }


def _history_to_dict(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "at": format_time(entry.at),
        "action": entry.action,
        "reason": entry.reason,
        "message": entry.message,
        "stepIndex": entry.step_index,
        "canaryWeight": entry.canary_weight,
    }


# --- reading, tolerant of anything --------------------------------------------------------


class _Fields:
    """Typed reads from a stored mapping; a wrong type reads as None."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    def string(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return int(value) if math.isfinite(value) and float(value).is_integer() else None

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return round_value(float(value))

    def time(self, key: str) -> datetime | None:
        return parse_time(self.data.get(key))

    def choice(self, key: str, options: Any) -> Any:
        value = self.data.get(key)
        return value if value in get_args(options) else None

    def object(self, key: str) -> _Fields | None:
        value = self.data.get(key)
        return _Fields(value) if isinstance(value, Mapping) else None

    def objects(self, key: str) -> list[_Fields]:
        value = self.data.get(key)
        if not isinstance(value, list):
            return []
        return [_Fields(item) for item in value if isinstance(item, Mapping)]


def _slo_from(d: _Fields) -> SloStatus | None:
    name, verdict = d.string("name"), d.choice("verdict", Verdict)
    if name is None or verdict is None:
        return None
    return SloStatus(
        name=name,
        verdict=verdict,
        reason=d.string("reason") or "",
        baseline=d.number("baseline"),
        canary=d.number("canary"),
        baseline_samples=d.number("baselineSamples"),
        canary_samples=d.number("canarySamples"),
        breaching_since=d.time("breachingSince"),
        baseline_reference=d.number("baselineReference"),
        baseline_reference_samples=d.number("baselineReferenceSamples"),
        baseline_reference_at=d.time("baselineReferenceAt"),
        evidence=tuple(
            r for r in (_stratum_from(x) for x in d.objects("evidence")) if r is not None
        )[-EVIDENCE_LIMIT:],
    )


def _stratum_from(d: _Fields) -> StratumRecord | None:
    since = d.time("since")
    counts = [
        d.integer(k)
        for k in ("weight", "baselineRequests", "baselineEvents", "canaryRequests", "canaryEvents")
    ]
    if since is None or any(c is None or c < 0 for c in counts):
        return None
    weight, nb, xb, nc, xc = (int(c or 0) for c in counts)
    return StratumRecord(since, weight, nb, xb, nc, xc)


def _rollback_from(d: _Fields | None) -> Rollback | None:
    if d is None:
        return None
    at, reason = d.time("at"), d.choice("reason", RollbackReason)
    if at is None or reason is None:
        return None
    return Rollback(
        at=at,
        reason=reason,
        message=d.string("message") or "",
        slo=d.string("slo"),
        baseline=d.number("baseline"),
        canary=d.number("canary"),
        margin=d.string("margin"),
        window=d.string("window"),
        breaching_since=d.time("breachingSince"),
        baseline_reference_at=d.time("baselineReferenceAt"),
    )


def _page_from(d: _Fields | None) -> PageStatus | None:
    if d is None:
        return None
    key, state = d.string("dedupKey"), d.choice("state", PageState)
    if key is None or state is None:
        return None
    return PageStatus(
        dedup_key=key,
        state=state,
        attempts=d.integer("attempts") or 0,
        delivered_at=d.time("deliveredAt"),
        last_error=d.string("lastError"),
        failures=d.integer("failures") or 0,
        retry_at=d.time("retryAt"),
    )


def _shadow_from(d: _Fields | None) -> ShadowStatus | None:
    if d is None:
        return None
    started, state, percent = (
        d.time("startedAt"),
        d.choice("state", ShadowState),
        d.integer("percent"),
    )
    if started is None or state is None or percent is None:
        return None
    return ShadowStatus(started, percent, state, d.time("endedAt"))


def _incident_from(d: _Fields | None) -> IncidentStatus | None:
    if d is None:
        return None
    key, revision = d.string("dedupKey"), d.string("revision")
    state = d.choice("state", IncidentState)
    if key is None or revision is None or state is None:
        return None
    return IncidentStatus(
        dedup_key=key,
        revision=revision,
        state=state,
        attempts=d.integer("attempts") or 0,
        failures=d.integer("failures") or 0,
        retry_at=d.time("retryAt"),
        resolved_at=d.time("resolvedAt"),
        resolved_by=d.string("resolvedBy"),
        last_error=d.string("lastError"),
    )


def _request_from(d: _Fields | None) -> LastRequest | None:
    if d is None:
        return None
    request_id, at, outcome = d.string("id"), d.time("at"), d.choice("outcome", RequestOutcome)
    if request_id is None or at is None or outcome is None:
        return None
    return LastRequest(
        id=request_id,
        at=at,
        outcome=outcome,
        action=d.choice("action", RequestAction),
        by=d.string("by"),
        message=d.string("message") or "",
    )


def _condition_from(d: _Fields) -> Condition | None:
    type_, status = d.string("type"), d.choice("status", ConditionStatus)
    since = d.time("lastTransitionTime")
    if type_ is None or status is None or since is None:
        return None
    return Condition(
        type=type_,
        status=status,
        reason=d.string("reason") or "",
        message=d.string("message") or "",
        last_transition_time=since,
        observed_generation=d.integer("observedGeneration"),
    )


def _history_from(d: _Fields) -> HistoryEntry | None:
    at, action = d.time("at"), d.string("action")
    if at is None or action is None:
        return None
    return HistoryEntry(
        at=at,
        action=action,
        reason=d.string("reason") or "",
        message=d.string("message") or "",
        step_index=d.integer("stepIndex"),
        canary_weight=d.integer("canaryWeight"),
    )
