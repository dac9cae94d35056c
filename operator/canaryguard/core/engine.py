"""The decision engine: one analysis tick as a pure function.

`tick(spec, status, observations, now)` returns the next status and the actions that carry
the decision out (set weights, page, emit events). It reads no clock, socket or global, so
the operator, the backtest and the tests run the very same decisions. The rules are those of
DESIGN.md "Decision semantics":

1. Observe: each SLO's verdict comes from `judge.judge`. Each SLO keeps a baseline reference
   (the baseline's value at the last tick where it was evidence enough); while the baseline
   has no traffic (canary at 100%) the canary is judged against it instead of the baseline's
   current value. A new revision clears the references.
2. Sustained window: `breachingSince` is set by the first breach of a run, cleared by a
   healthy verdict and left alone by inconclusive or unavailable ones; a breach with
   `now - breachingSince >= window` rolls back.
3. Progress: a step's weight holds for its hold (counted from `stepStartedAt`, not reset by a
   pause); then the next step applies if every SLO is healthy on this tick. The last step
   held healthy is Promoted. Inconclusive never counts as healthy.
4. Outage: while any query fails, weights never move forward; after `maxMetricsOutage` of
   continuous outage the rollout rolls back or pauses (and resumes when metrics return).
5. Protection never pauses: a paused rollout still rolls back.

A manual request (`promote` or `abort`, from the `canaryguard.io/request` annotation) not yet
in `status.lastRequest` is carried out first and ends the tick: nothing is judged. On a
finished rollout, or when made for another revision or object, it is recorded without effect.

Events name every decision and the same decisions are kept in the bounded status history.
A tick that changes nothing returns an equal status and no actions, with one deliberate
exception: while a rollback's page is Pending, every tick asks for it to be sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from canaryguard.core.actions import Action, EmitEvent, EventType, Page, SetWeights
from canaryguard.core.durations import format_duration
from canaryguard.core.judge import BaselineReference, judge, take_reference
from canaryguard.core.manual import ManualRequest, RequestAction
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.paging import safe_dedup_key, safe_summary
from canaryguard.core.spec import Slo, Spec
from canaryguard.core.status import (
    FINISHED,
    ConditionStatus,
    HistoryEntry,
    LastRequest,
    PageStatus,
    RequestOutcome,
    Rollback,
    SloStatus,
    Status,
    format_time,
    round_value,
    truncate_time,
)

__all__ = [
    "Action",
    "EmitEvent",
    "Observations",
    "Page",
    "SetWeights",
    "SloObservation",
    "TickResult",
    "dedup_key",
    "desired_weights",
    "invalid",
    "record_page_result",
    "request_due",
    "tick",
]

MAX_TEXT = 1024  # messages and errors kept in status and events


@dataclass(frozen=True)
class TickResult:
    """The status to store and the actions to carry out, in order."""

    status: Status
    actions: tuple[Action, ...]


def tick(spec: Spec, status: Status, observations: Observations, now: datetime) -> TickResult:
    """Decide one analysis tick of a rollout.

    The first tick (status Pending or empty) applies step 0 and does not judge: the canary has
    had no traffic yet. `now` is cut to whole milliseconds (what the status stores), so a
    decision replayed from a stored status is the same decision.
    """
    log = _Log(truncate_time(now))
    if spec.generation is not None:
        status = replace(status, observed_generation=spec.generation)
    revision = spec.effective_revision()
    if status.revision is not None and status.revision != revision:
        status = _restart(status, revision, log)
    status, decided = _manual(spec, status, log)
    if decided:
        pass  # a person decided this tick: nothing is judged
    elif status.phase in FINISHED:
        status = _finished(spec, status, log)
    elif status.phase == "Pending" or status.step_index is None:
        status = _start(spec, replace(status, revision=revision), log)
    else:
        status = _analyse(spec, status, observations, log)
    status = status.with_condition("SpecValid", "True", "Valid", "the spec is valid", log.now)
    return log.result(status)


def invalid(status: Status, error: str, now: datetime, generation: int | None = None) -> TickResult:
    """Record that the spec does not parse (the SpecError's message as `error`).

    A running rollout goes to phase Invalid and holds its weights; a finished one keeps its
    phase. Either way the SpecValid condition says why, and a Warning event is emitted when
    that changes. The next valid tick picks up where the rollout was.
    """
    log = _Log(truncate_time(now))
    error = _clip(error)
    if generation is not None:
        status = replace(status, observed_generation=generation)
    old = status.condition("SpecValid")
    status = status.with_condition("SpecValid", "False", "InvalidSpec", error, log.now)
    if status.phase not in FINISHED:
        status = replace(status, phase="Invalid", paused_reason=None, message=f"invalid: {error}")
        status = status.with_condition("Progressing", "False", "InvalidSpec", error, log.now)
    if old is None or old.status != "False" or old.message != error:
        log.decide(status, "Warning", "InvalidSpec", "InvalidSpec", f"invalid spec: {error}")
    return log.result(status)


def record_page_result(
    status: Status,
    delivered: bool,
    permanent_failure: bool,
    error: str | None,
    now: datetime,
    attempts: int = 1,
) -> Status:
    """Record one delivery of the pending page, which made `attempts` calls (the client
    retries 5xx, 429 and network errors within one delivery); `page.attempts` counts them all.

    Delivered: the page is done. A permanent failure (a 4xx other than 429): Failed, never
    retried. Anything else stays Pending, so the next tick emits the Page again. A result for
    a page that is no longer Pending changes nothing.
    """
    page = status.page
    if page is None or page.state != "Pending":
        return status
    now = truncate_time(now)
    attempts = page.attempts + max(attempts, 0)
    if delivered:
        page = replace(
            page, state="Delivered", attempts=attempts, delivered_at=now, last_error=None
        )
        message = f"PagerDuty accepted the trigger (dedup key {page.dedup_key})"
        status = replace(status, page=page).with_condition(
            "Paged", "True", "Delivered", message, now
        )
        return status.with_history([_entry(status, now, "PageDelivered", "Delivered", message)])
    detail = _clip(error or "unknown error")
    if permanent_failure:
        page = replace(page, state="Failed", attempts=attempts, last_error=detail)
        message = f"PagerDuty rejected the trigger, not retried: {detail}"
        status = replace(status, page=page).with_condition("Paged", "False", "Failed", message, now)
        return status.with_history([_entry(status, now, "PageFailed", "Rejected", message)])
    page = replace(page, attempts=attempts, last_error=detail)
    message = f"attempt {attempts} failed, retrying: {detail}"
    return replace(status, page=page).with_condition("Paged", "False", "Pending", message, now)


def request_due(spec: Spec, status: Status) -> bool:
    """Whether the next tick carries out a manual request (and so judges nothing): the
    controller then spares Prometheus the queries and acts without waiting on them."""
    request = spec.request
    if request is None or _handled(status, request.id):
        return False
    if status.revision is not None and status.revision != spec.effective_revision():
        return False  # the new revision starts first
    return _no_effect(spec, status, request) is None


def desired_weights(status: Status) -> SetWeights | None:
    """The weights the VirtualService should have according to the status (None before the
    first step). Lets the operator repair weights after a crash between patches."""
    if status.canary_weight is None:
        return None
    return SetWeights(baseline=100 - status.canary_weight, canary=status.canary_weight)


def dedup_key(spec: Spec, revision: str) -> str:
    """The page's dedup key: `canaryguard/<namespace>/<name>/<revision>`, stable per revision.

    A key longer than PagerDuty's 255 characters keeps its start and ends in a hash of the
    whole key (`paging.safe_dedup_key`, as the adapter does).
    """
    return safe_dedup_key(f"canaryguard/{spec.namespace}/{spec.name}/{revision}")


# --- the phases of a tick -------------------------------------------------------------------


class _Log:
    """The decisions of one tick: actions in order, and the history entries they leave."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.actions: list[Action] = []
        self.history: list[HistoryEntry] = []

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def decide(
        self, status: Status, type_: EventType, action: str, reason: str, message: str
    ) -> None:
        """A decision: an Event now, and an entry in the history."""
        self.actions.append(EmitEvent(type_, action, message))
        self.history.append(_entry(status, self.now, action, reason, message))

    def result(self, status: Status) -> TickResult:
        return TickResult(status.with_history(self.history), tuple(self.actions))


def _entry(status: Status, now: datetime, action: str, reason: str, message: str) -> HistoryEntry:
    return HistoryEntry(now, action, reason, message, status.step_index, status.canary_weight)


def _restart(status: Status, revision: str, log: _Log) -> Status:
    """A new revision: the schedule starts over; breach, outage, rollback and page are cleared.

    The canary weight is kept because it is what the VirtualService still has: the start
    that follows moves it to step 0 (or to 0 when paused).
    """
    old = status.revision
    status = Status(
        revision=revision,
        observed_generation=status.observed_generation,
        canary_weight=status.canary_weight,
        # The request annotation outlives the revision: it must not act again on the new one.
        last_request=status.last_request,
        history=status.history,
    )
    log.decide(
        status,
        "Normal",
        "RevisionChanged",
        "NewRevision",
        f"revision {old} -> {revision}: the schedule starts again at step 1",
    )
    return status


def _manual(spec: Spec, status: Status, log: _Log) -> tuple[Status, bool]:
    """Handle a manual request not handled before; True when it decided this tick."""
    bad = spec.invalid_request
    if bad is not None and not _handled(status, bad.id):
        message = _clip(f"request ignored: {bad.problem}")
        status = _record_request(status, bad.id, None, "", "Rejected", message, log.now)
        log.decide(status, "Warning", "InvalidRequest", "InvalidRequest", message)
        return status, False
    request = spec.request
    if request is None or _handled(status, request.id):
        return status, False
    why_not = _no_effect(spec, status, request)
    if why_not is not None:
        message = _clip(f"{request.action} {request.who()} (request {request.id}) {why_not}")
        status = _record_request(
            status, request.id, request.action, request.by, "NoEffect", message, log.now
        )
        log.decide(status, "Normal", "RequestIgnored", "Manual", message)
        return status, False
    status = replace(status, revision=status.revision or spec.effective_revision())
    if request.action == "promote":
        return _manual_promote(spec, status, request, log), True
    return _manual_abort(spec, status, request, log), True


def _handled(status: Status, request_id: str) -> bool:
    return status.last_request is not None and status.last_request.id == request_id


def _no_effect(spec: Spec, status: Status, request: ManualRequest) -> str | None:
    """Why a request cannot act on this rollout, or None when it is carried out."""
    if request.uid is not None and spec.uid is not None and request.uid != spec.uid:
        return f"has no effect: it was made for another object of this name (uid {request.uid})"
    revision = spec.effective_revision()
    if request.revision is not None and request.revision != revision:
        return (
            f"has no effect: it was made for revision {request.revision}; "
            f"the rollout is at revision {revision}"
        )
    if status.phase in FINISHED:
        return f"has no effect: the rollout has already finished ({status.phase})"
    return None


def _record_request(
    status: Status,
    request_id: str,
    action: RequestAction | None,
    by: str,
    outcome: RequestOutcome,
    message: str,
    now: datetime,
) -> Status:
    record = LastRequest(request_id, now, outcome, action, by or None, message)
    return replace(status, last_request=record)


def _manual_promote(spec: Spec, status: Status, request: ManualRequest, log: _Log) -> Status:
    """Skip the remaining steps: all traffic to the canary, phase Promoted."""
    last = len(spec.steps) - 1
    before = status.canary_weight or 0
    where = (
        "before the first step"
        if status.step_index is None
        else f"at step {status.step_index + 1}/{len(spec.steps)}"
    )
    message = _clip(
        f"manual promote {request.who()}: {request.why()} (request {request.id}); canary "
        f"{before}% -> 100% {where}, the rest of the schedule and its analysis skipped"
    )
    status = replace(
        status,
        phase="Promoted",
        paused_reason=None,
        step_index=last,
        canary_weight=100,
        step_started_at=status.step_started_at if before == 100 else log.now,
        message=_clip(f"promoted by hand ({request.who()}): canary at 100%"),
    )
    status = _record_request(
        status, request.id, request.action, request.by, "Promoted", message, log.now
    )
    log.act(SetWeights(0, 100))
    status = status.with_condition("Progressing", "False", "ManualPromote", message, log.now)
    log.decide(status, "Normal", "ManualPromote", "Manual", message)
    return status


def _manual_abort(spec: Spec, status: Status, request: ManualRequest, log: _Log) -> Status:
    """A rollback that a person asked for; it pages only when asked to."""
    if not request.page:
        paging = "on-call not paged (not asked)"
    elif spec.paging is None:
        paging = "a page was asked for, but spec.paging is not set"
    else:
        paging = "paging on-call as asked"
    message = _clip(
        f"manual abort {request.who()}: {request.why()} (request {request.id}); {paging}"
    )
    rollback = Rollback(at=log.now, reason="Manual", message=message)
    status = _record_request(
        status, request.id, request.action, request.by, "RolledBack", message, log.now
    )
    return _rollback(spec, status, rollback, log, page=request.page, event="ManualAbort")


def _start(spec: Spec, status: Status, log: _Log) -> Status:
    now = log.now
    if spec.paused:
        before = (status.phase, status.paused_reason)
        status = replace(status, phase="Paused", paused_reason="Spec")
        if status.canary_weight:
            # Restarted while paused: the new revision gets no traffic until it starts.
            status = replace(status, canary_weight=0)
            log.act(SetWeights(100, 0))
        message = "paused before the first step (spec.paused)"
        status = replace(status, message=message)
        status = status.with_condition("Progressing", "False", "Paused", message, now)
        if before != ("Paused", "Spec"):
            log.decide(status, "Normal", "Paused", "Spec", message)
        return status
    first = spec.steps[0]
    status = replace(
        status,
        phase="Progressing",
        paused_reason=None,
        step_index=0,
        canary_weight=first.weight,
        step_started_at=now,
        metrics_outage_since=None,
    )
    log.act(SetWeights(100 - first.weight, first.weight))
    message = _step_message(spec, status)
    status = replace(status, message=message)
    status = status.with_condition("Progressing", "True", "Holding", message, now)
    log.decide(
        status,
        "Normal",
        "Started",
        "Started",
        f"started: step 1/{len(spec.steps)}, canary at {first.weight}% "
        f"for {format_duration(first.hold)}",
    )
    return status


def _finished(spec: Spec, status: Status, log: _Log) -> Status:
    """Promoted or RolledBack: nothing moves, but an undelivered page is asked for again."""
    if status.page is not None and status.page.state == "Pending":
        page = _page(spec, status)
        if page is not None:
            log.act(page)
    return status


def _analyse(spec: Spec, status: Status, observations: Observations, log: _Log) -> Status:
    now = log.now
    last = len(spec.steps) - 1
    # A spec edit may have removed steps under a running rollout: stay on the last one.
    status = replace(
        status,
        step_index=min(status.step_index or 0, last),
        step_started_at=status.step_started_at or now,
    )
    previous = {slo.name: slo for slo in status.slos}
    idle = _baseline_idle(status)
    slos = tuple(
        _slo_status(slo, observations.slos.get(slo.name), previous.get(slo.name), now, idle)
        for slo in spec.analysis.slos
    )
    unavailable = [slo for slo in slos if slo.verdict == "unavailable"]
    outage_before = status.metrics_outage_since
    outage_since = (outage_before or now) if unavailable else None
    status = replace(status, slos=slos, metrics_outage_since=outage_since)

    if unavailable and outage_before is None:
        log.decide(status, "Warning", "MetricsOutage", "QueryFailed", _outage_message(spec, status))
    elif not unavailable and outage_before is not None:
        lasted = format_duration(now - outage_before)
        log.decide(
            status, "Normal", "MetricsRecovered", "QueriesSucceeded", f"metrics back after {lasted}"
        )

    sustained = [
        (slo, state)
        for slo, state in zip(spec.analysis.slos, slos, strict=True)
        if state.verdict == "breach"
        and state.breaching_since is not None
        and now - state.breaching_since >= slo.window
    ]
    if sustained:
        return _rollback(spec, status, _breach_rollback(sustained, now, idle), log)
    outage_over_limit = (
        outage_since is not None and now - outage_since >= spec.analysis.max_metrics_outage
    )
    if outage_over_limit and spec.analysis.on_metrics_outage == "rollback":
        return _rollback(spec, status, _outage_rollback(spec, status, unavailable, now), log)

    status = _pause_or_resume(spec, status, outage_over_limit, log)
    if status.phase == "Progressing":
        status = _progress(spec, status, log)
    return _describe(spec, status, now)


def _baseline_idle(status: Status) -> bool:
    """Whether the baseline gets no traffic: the canary has it all (the last step, 100%)."""
    return (status.canary_weight or 0) >= 100


def _slo_status(
    slo: Slo,
    observation: SloObservation | None,
    previous: SloStatus | None,
    now: datetime,
    baseline_idle: bool,
) -> SloStatus:
    reference = _reference(slo, observation, previous, now)
    judgement = judge(slo, observation, reference, baseline_idle=baseline_idle)
    since = previous.breaching_since if previous is not None else None
    if judgement.verdict == "breach":
        since = since or now
    elif judgement.verdict == "healthy":
        since = None
    # inconclusive and unavailable leave the breach run as it is.
    seen = observation if observation is not None and not observation.unavailable else None
    return SloStatus(
        name=slo.name,
        verdict=judgement.verdict,
        reason=_clip(judgement.reason),
        baseline=round_value(seen.baseline) if seen else None,
        canary=round_value(seen.canary) if seen else None,
        baseline_samples=round_value(seen.baseline_samples) if seen else None,
        canary_samples=round_value(seen.canary_samples) if seen else None,
        breaching_since=since,
        baseline_reference=reference.value if reference else None,
        baseline_reference_samples=reference.samples if reference else None,
        baseline_reference_at=reference.at if reference else None,
    )


def _reference(
    slo: Slo, observation: SloObservation | None, previous: SloStatus | None, now: datetime
) -> BaselineReference | None:
    """The SLO's baseline reference after this tick: this tick's baseline if it is evidence
    enough, else the one kept in the status. A reference with the same value and count as the
    kept one keeps its time, so a tick that saw the same world writes nothing."""
    kept = None
    if (
        previous is not None
        and previous.baseline_reference is not None
        and previous.baseline_reference_at is not None
    ):
        kept = BaselineReference(
            previous.baseline_reference,
            previous.baseline_reference_samples,
            previous.baseline_reference_at,
        )
    taken = take_reference(slo, observation, now)
    if taken is None:
        return kept
    if kept is not None and (kept.value, kept.samples) == (taken.value, taken.samples):
        return kept
    return taken


def _pause_or_resume(spec: Spec, status: Status, outage_pause: bool, log: _Log) -> Status:
    before = (status.phase, status.paused_reason)
    if spec.paused:
        status = replace(status, phase="Paused", paused_reason="Spec")
    elif outage_pause:
        status = replace(status, phase="Paused", paused_reason="MetricsOutage")
    else:
        status = replace(status, phase="Progressing", paused_reason=None)
    if (status.phase, status.paused_reason) == before:
        return status
    if status.paused_reason == "Spec":
        log.decide(
            status,
            "Normal",
            "Paused",
            "Spec",
            "paused by spec.paused: weights hold; a sustained breach still rolls back",
        )
    elif status.paused_reason == "MetricsOutage":
        log.decide(status, "Warning", "Paused", "MetricsOutage", _outage_message(spec, status))
    else:
        why = {
            "Spec": ("Spec", "spec.paused is false"),
            "MetricsOutage": ("MetricsRecovered", "metrics are available again"),
        }.get(before[1] or "", ("SpecValid", "the spec is valid again"))
        log.decide(status, "Normal", "Resumed", why[0], f"resumed: {why[1]}")
    return status


def _progress(spec: Spec, status: Status, log: _Log) -> Status:
    """Apply the next step (or promote) if the hold is over and every SLO is healthy.

    An unavailable SLO is not healthy, so a metrics outage never moves weights forward.
    """
    now = log.now
    index = status.step_index or 0
    step = spec.steps[index]
    started = status.step_started_at or now
    if now - started < step.hold or any(slo.verdict != "healthy" for slo in status.slos):
        return status
    if status.canary_weight != step.weight:
        # The steps were edited under a running rollout: apply this step's weight afresh.
        return _apply_step(spec, status, index, "SpecChanged", log)
    if index == len(spec.steps) - 1:
        status = replace(status, phase="Promoted")
        log.decide(
            status,
            "Normal",
            "Promoted",
            "AllHealthy",
            _clip(
                f"promoted: canary at {step.weight}% for {format_duration(now - started)} "
                f"with {_all_healthy(status)}"
            ),
        )
        return status
    return _apply_step(spec, status, index + 1, "HoldElapsed", log)


def _apply_step(spec: Spec, status: Status, index: int, reason: str, log: _Log) -> Status:
    step = spec.steps[index]
    before = status.canary_weight
    status = replace(status, step_index=index, canary_weight=step.weight, step_started_at=log.now)
    log.act(SetWeights(100 - step.weight, step.weight))
    log.decide(
        status,
        "Normal",
        "StepAdvanced",
        reason,
        f"step {index + 1}/{len(spec.steps)}: canary {before}% -> {step.weight}% for "
        f"{format_duration(step.hold)}; all {len(status.slos)} SLOs healthy",
    )
    return status


# --- rollback and the page ------------------------------------------------------------------


def _breach_rollback(
    sustained: Sequence[tuple[Slo, SloStatus]], now: datetime, baseline_idle: bool
) -> Rollback:
    """The rollback for sustained breaches; with the baseline idle, the baseline value it
    records is the reference the canary was judged against (None: judged by limit only)."""
    slo, state = sustained[0]
    since = state.breaching_since or now
    message = (
        f"SLO {slo.name} breached for {format_duration(now - since)} (window "
        f"{format_duration(slo.window)}) since {format_time(since)}: {state.reason}"
    )
    if len(sustained) > 1:
        message += "; also breaching: " + ", ".join(other.name for other, _ in sustained[1:])
    return Rollback(
        at=now,
        reason="SLOBreach",
        message=_clip(message),
        slo=slo.name,
        baseline=state.baseline_reference if baseline_idle else state.baseline,
        canary=state.canary,
        margin=slo.describe_tolerance(),
        window=format_duration(slo.window),
        breaching_since=since,
        baseline_reference_at=state.baseline_reference_at if baseline_idle else None,
    )


def _outage_rollback(
    spec: Spec, status: Status, unavailable: Sequence[SloStatus], now: datetime
) -> Rollback:
    since = status.metrics_outage_since or now
    limit = format_duration(spec.analysis.max_metrics_outage)
    errors = "; ".join(f"{slo.name}: {slo.reason}" for slo in unavailable)
    return Rollback(
        at=now,
        reason="MetricsOutage",
        message=_clip(
            f"metrics unavailable for {format_duration(now - since)} (maxMetricsOutage {limit}) "
            f"since {format_time(since)}: {errors}"
        ),
        slo=", ".join(slo.name for slo in unavailable),
        window=limit,
        breaching_since=since,
    )


def _rollback(
    spec: Spec,
    status: Status,
    rollback: Rollback,
    log: _Log,
    page: bool = True,
    event: str = "RolledBack",
) -> Status:
    """All traffic to the baseline, one page (if `page` and paging is set up), one Warning
    event."""
    status = replace(
        status,
        phase="RolledBack",
        paused_reason=None,
        canary_weight=0,
        rollback=rollback,
        message=_short_rollback(rollback),
    )
    log.act(SetWeights(100, 0))
    if page and spec.paging is not None:
        status = replace(status, page=PageStatus(dedup_key(spec, status.revision or "")))
        status = status.with_condition(
            "Paged", "False", "Pending", "the page has not been delivered yet", log.now
        )
        trigger = _page(spec, status)
        if trigger is not None:
            log.act(trigger)
    log.decide(status, "Warning", event, rollback.reason, rollback.message)
    return _describe(spec, status, log.now)


def _short_rollback(rollback: Rollback) -> str:
    if rollback.reason == "SLOBreach":
        return f"rolled back: {rollback.slo} {_versus(rollback)} for {rollback.window}"
    if rollback.reason == "Manual":
        return _clip(f"rolled back: {rollback.message}")
    return f"rolled back: metrics unavailable for {rollback.window}"


def _versus(rollback: Rollback) -> str:
    """The values of a breach rollback: canary against baseline, or against the reference."""
    canary = f"canary {_num(rollback.canary)}"
    if rollback.baseline is None:
        return f"{canary} (no baseline reference; judged by limit only)"
    if rollback.baseline_reference_at is not None:
        return (
            f"{canary} vs baseline reference {_num(rollback.baseline)} "
            f"(from {format_time(rollback.baseline_reference_at)})"
        )
    return f"{canary} vs baseline {_num(rollback.baseline)}"


def _page(spec: Spec, status: Status) -> Page | None:
    """The page for the status's rollback; rebuilt the same way after a restart."""
    rollback, page, paging = status.rollback, status.page, spec.paging
    if rollback is None or page is None or paging is None:
        return None
    who = f"{spec.namespace}/{spec.name}" if spec.name else "a CanaryRollout"
    since = format_time(rollback.breaching_since)
    if rollback.reason == "SLOBreach":
        cause = (
            f"SLO {rollback.slo} {_versus(rollback)}, beyond {rollback.margin} for "
            f"{rollback.window} (since {since})"
        )
    elif rollback.reason == "Manual":
        cause = rollback.message  # "manual abort by alice: <reason> ..."
    else:
        cause = f"metrics unavailable for {rollback.window} (since {since}): {rollback.slo}"
    summary = f"canaryguard rolled back {who} revision {status.revision}: {cause}"
    details = {
        "rollout": who,
        "revision": status.revision,
        "reason": rollback.reason,
        "slo": rollback.slo,
        "baseline": rollback.baseline,
        "canary": rollback.canary,
        "margin": rollback.margin,
        "window": rollback.window,
        "breachingSince": since,
        "baselineReferenceAt": format_time(rollback.baseline_reference_at),
        "rolledBackAt": format_time(rollback.at),
        "stepIndex": status.step_index,
        "explanation": rollback.message,
        "slos": status.to_dict()["slos"],
        "virtualService": spec.virtual_service.name,
        "baselineDestination": str(spec.baseline),
        "canaryDestination": str(spec.canary),
    }
    return Page(page.dedup_key, safe_summary(summary), paging.pager_duty.severity, details)


# --- messages and conditions ------------------------------------------------------------------


def _describe(spec: Spec, status: Status, now: datetime) -> Status:
    """Set the one-line message and the conditions from this tick's state."""
    slos = status.slos
    breaching = [slo for slo in slos if slo.verdict == "breach"]
    unavailable = [slo for slo in slos if slo.verdict == "unavailable"]
    unsure = [slo for slo in slos if slo.verdict in ("inconclusive", "unavailable")]

    if breaching:
        status = status.with_condition(
            "Healthy", "False", "Breach", _list(breaching, with_since=True), now
        )
    elif unsure:
        reason = "MetricsUnavailable" if unavailable else "Inconclusive"
        status = status.with_condition("Healthy", "Unknown", reason, _list(unsure), now)
    else:
        status = status.with_condition("Healthy", "True", "AllHealthy", _all_healthy(status), now)
    if unavailable:
        status = status.with_condition(
            "MetricsAvailable", "False", "QueryFailed", _list(unavailable), now
        )
    else:
        status = status.with_condition(
            "MetricsAvailable", "True", "QueriesSucceeded", "every SLO query answered", now
        )

    progressing: tuple[ConditionStatus, str, str]
    if status.phase == "RolledBack" and status.rollback is not None:
        progressing = ("False", "RolledBack", status.rollback.message)
    elif status.phase == "Promoted":
        status = replace(status, message="promoted: canary at 100%")
        progressing = ("False", "Promoted", "every step held with all SLOs healthy")
    elif status.phase == "Paused":
        message = _paused_message(spec, status)
        status = replace(status, message=message)
        progressing = ("False", "Paused", message)
    else:
        reason, message = _progress_message(spec, status, now)
        status = replace(status, message=message)
        progressing = ("True", reason, message)
    flag, reason, message = progressing
    return status.with_condition("Progressing", flag, reason, message, now)


def _all_healthy(status: Status) -> str:
    """`all N SLOs healthy`; with the baseline idle, also what each was judged against."""
    text = f"all {len(status.slos)} SLOs healthy"
    if _baseline_idle(status) and status.slos:
        text += f"; baseline idle (no traffic at 100%): {_list(status.slos)}"
    return _clip(text)


def _progress_message(spec: Spec, status: Status, now: datetime) -> tuple[str, str]:
    """Why a Progressing rollout is where it is: (condition reason, one-line message)."""
    if status.metrics_outage_since is not None:
        return "WaitingForMetrics", _outage_message(spec, status)
    by_name = {slo.name: slo for slo in spec.analysis.slos}
    for slo in status.slos:
        if slo.verdict == "breach" and slo.breaching_since is not None:
            deadline = format_time(slo.breaching_since + by_name[slo.name].window)
            return (
                "Breaching",
                f"{slo.name} breaching since {format_time(slo.breaching_since)}; "
                f"rollback at {deadline} if it persists",
            )
    index = status.step_index or 0
    started = status.step_started_at or now
    hold_end = started + spec.steps[index].hold
    if now < hold_end:
        return "Holding", _step_message(spec, status)
    unsure = [slo for slo in status.slos if slo.verdict != "healthy"]
    where = f"step {index + 1}/{len(spec.steps)} at {status.canary_weight}%"
    if unsure:
        return "WaitingForEvidence", f"{where}: waiting for evidence: {_list(unsure[:1])}"
    return "Holding", f"{where}: hold done, next step at the next tick"


def _step_message(spec: Spec, status: Status) -> str:
    index = status.step_index or 0
    started = status.step_started_at
    until = format_time(started + spec.steps[index].hold) if started is not None else "?"
    return f"step {index + 1}/{len(spec.steps)} at {status.canary_weight}%: holding until {until}"


def _paused_message(spec: Spec, status: Status) -> str:
    if status.paused_reason == "MetricsOutage":
        return _outage_message(spec, status)
    index = status.step_index or 0
    return (
        f"paused (spec.paused) at step {index + 1}/{len(spec.steps)}, "
        f"canary {status.canary_weight}%"
    )


def _outage_message(spec: Spec, status: Status) -> str:
    since = status.metrics_outage_since
    if since is None:
        return "metrics available"
    policy = spec.analysis.on_metrics_outage
    at = format_time(since + spec.analysis.max_metrics_outage)
    if status.phase == "Paused" and status.paused_reason == "MetricsOutage":
        tail = "paused until they are back"
    else:
        tail = f"weights held; {policy} at {at} if it lasts"
    return f"metrics unavailable since {format_time(since)}: {tail}"


def _list(slos: Sequence[SloStatus], with_since: bool = False) -> str:
    parts = []
    for slo in slos:
        since = (
            f" (since {format_time(slo.breaching_since)})"
            if with_since and slo.breaching_since
            else ""
        )
        parts.append(f"{slo.name}{since}: {slo.reason}")
    return _clip("; ".join(parts))


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."
