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
6. Shadow (`spec.shadow`): before step 1, the baseline serves everyone (weights 100/0) while
   `percent` of the requests are mirrored to the canary. The canary is judged on them by the
   rules above, except the SLOs named in `skipSlos` (verdict `skipped`: they need real
   outcomes). A rollback there removes the mirror (it pages unless `onBreach` is `event`);
   the hold over with every judged SLO healthy, the mirror goes and step 1 applies, in the
   same route write. While shadowing, a mirror found missing or changed is set again,
   except a mirror found removed while a breach had run its window and has had no verdict
   since: that is a rollback whose status was lost in a crash, and it is recorded (and
   paged per `onBreach`) as for a step's canary found pulled to 0%.

A rollback is decided in two records: its intent (`TickResult.intent`: the rollout as it
was, plus the rollback and its page Pending), stored before the weights are written, and the
status RolledBack. A tick that finds an intent not yet completed (`rollback` set, phase not
finished) completes that rollback and pages, judging nothing first: a crash between the two
records never leaves the canary's rollback to what the verdicts show after the restart.

A manual request (`promote` or `abort`, from the `canaryguard.io/request` annotation) not yet
in `status.lastRequest` is carried out first and ends the tick: nothing is judged. On a
finished rollout, or when made for another revision or object, it is recorded without effect.

Events name every decision and the same decisions are kept in the bounded status history.
A tick that changes nothing returns an equal status and no actions, with one deliberate
exception: while a rollback's page is Pending, a tick asks for it to be sent again once its
retry is due (failed deliveries back off: 5 s, doubling, at most 5 min).

Dry run (`spec.dryRun`): every rule above runs and every decision is recorded (status,
history, Events), but no weights are set and nothing is paged; the decisions are named for
what they would have done (WouldAdvance, WouldPromote, WouldRollBack) and the messages say
"dry run". The weights routed are not the rollout's: they are neither guarded nor compared,
and the baseline always counts as serving. Turning dryRun on or off starts the schedule
again, as a new revision does.

Closing the loop: a revision that replaces one whose rollback paged carries that incident
along (`previousIncident`), and the unresolved ones that revision carried itself
(`olderIncidents`, at most ten in all); when a revision is promoted, every one of them is
resolved with a PagerDuty `resolve` of its dedup key, once per key. Like the page, the
intent (Resolving) is recorded before it is sent, and it is sent again after a restart until
delivered; one not delivered is retried on later ticks, the phase staying Promoted.

This module decides; the words of each decision (events, conditions, status messages, the
page's summary and details) come from `messages`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from canaryguard.core import messages
from canaryguard.core.actions import Action, EmitEvent, EventType, Page, Resolve, SetWeights
from canaryguard.core.durations import format_duration
from canaryguard.core.judge import BaselineReference, judge, take_reference
from canaryguard.core.manual import ManualRequest, RequestAction
from canaryguard.core.messages import NoEffect, ResumeReason
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.paging import safe_dedup_key
from canaryguard.core.sequential import Stratum
from canaryguard.core.spec import Slo, Spec
from canaryguard.core.status import (
    EVIDENCE_LIMIT,
    FINISHED,
    INCIDENT_LIMIT,
    ConditionStatus,
    HistoryEntry,
    IncidentStatus,
    LastRequest,
    PageStatus,
    RequestOutcome,
    Rollback,
    ShadowState,
    ShadowStatus,
    SloStatus,
    Status,
    StratumRecord,
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
    "invalid",
    "page_retry_delay",
    "record_page_result",
    "record_resolve_result",
    "request_due",
    "restarts",
    "tick",
    "tick_failed",
]


@dataclass(frozen=True)
class TickResult:
    """The status to store and the actions to carry out, in order.

    `intent`, set only on a tick that rolls back (not in a dry run), is the status to store
    before any action: the rollout as it was, plus the rollback decided (reason, evidence)
    and its page Pending. A restart that finds it (`rollback` set, phase not finished)
    completes that rollback and pages, whatever the verdicts say by then.
    """

    status: Status
    actions: tuple[Action, ...]
    intent: Status | None = None


def tick(spec: Spec, status: Status, observations: Observations, now: datetime) -> TickResult:
    """Decide one analysis tick of a rollout.

    The first tick (status Pending or empty) applies step 0 and does not judge: the canary has
    had no traffic yet. `now` is cut to whole milliseconds (what the status stores), so a
    decision replayed from a stored status is the same decision.
    """
    log = _Log(truncate_time(now), spec.dry_run)
    if spec.generation is not None:
        status = replace(status, observed_generation=spec.generation)
    if spec.dry_run:
        # The routed weights are not this rollout's: neither guarded nor compared (nor the
        # mirror, which a dry run never sets).
        observations = replace(observations, routed_canary=None, routed_mirror=None)
    revision = spec.effective_revision()
    if status.revision is not None and status.revision != revision:
        status = _restart(status, revision, log)
    elif restarts(spec, status):
        status = _restart(status, revision, log, messages.dry_run_toggled(spec.dry_run))
    status = replace(status, dry_run=spec.dry_run)
    if _rollback_interrupted(status):
        status, decided = _complete_rollback(spec, status, log), True
    else:
        status, decided = _manual(spec, status, log)
    if decided:
        pass  # a person decided this tick: nothing is judged
    elif status.phase in FINISHED:
        status = _finished(spec, status, log)
    elif status.shadowing:
        status = _analyse(spec, status, observations, log)
    elif status.phase == "Pending" or status.step_index is None:
        status = _start(spec, replace(status, revision=revision), observations, log)
    else:
        status = _analyse(spec, status, observations, log)
    status = _guard_traffic(spec, status, observations.routed_canary, log)
    status = _guard_mirror(spec, status, observations.routed_mirror, log)
    status = _resolve_incident(spec, status, log)
    status = _tick_recovered(status, log)
    status = status.with_condition("SpecValid", "True", "Valid", messages.SPEC_VALID, log.now)
    if spec.dry_run:
        status = _dry_run_words(status)
    return log.result(status)


def invalid(
    status: Status,
    error: str,
    now: datetime,
    generation: int | None = None,
    reason: str = "InvalidSpec",
) -> TickResult:
    """Record that the spec cannot be acted on (the error's message as `error`): it does not
    parse, names what does not exist, or what this operator may not use (`reason` then says
    which, e.g. AddressNotAllowed).

    A running rollout goes to phase Invalid and holds its weights; a finished one keeps its
    phase. Either way the SpecValid condition says why, and a Warning event (its reason
    `reason`) is emitted when that changes. The next valid tick picks up where the rollout was.
    """
    log = _Log(truncate_time(now))
    error = messages.clip(error)
    if generation is not None:
        status = replace(status, observed_generation=generation)
    old = status.condition("SpecValid")
    status = status.with_condition("SpecValid", "False", reason, error, log.now)
    if status.phase not in FINISHED:
        status = replace(
            status, phase="Invalid", paused_reason=None, message=messages.invalid_spec(error)
        )
        status = status.with_condition("Progressing", "False", reason, error, log.now)
    if old is None or old.status != "False" or old.message != error:
        message = messages.invalid_spec_event(error)
        log.decide(status, "Warning", reason, reason, message)
    return log.result(status)


def tick_failed(status: Status, reason: str, error: str, now: datetime) -> TickResult:
    """Record a tick that could not run to a decision (the API server refused or failed a
    call, a network error, a bug): nothing is decided and nothing moves, the TickSucceeded
    condition says why, and a Warning event is emitted when that changes. Progression stops
    while ticks fail; it is never blamed on Prometheus."""
    log = _Log(truncate_time(now))
    message = messages.tick_failed(reason, error)
    old = status.condition("TickSucceeded")
    status = status.with_condition("TickSucceeded", "False", reason, message, log.now)
    if old is None or old.status != "False" or old.message != message:
        log.decide(status, "Warning", "TickFailed", reason, message)
    return log.result(status)


def _tick_recovered(status: Status, log: _Log) -> Status:
    old = status.condition("TickSucceeded")
    if old is None or old.status == "True":
        return status
    status = status.with_condition(
        "TickSucceeded", "True", "Recovered", messages.TICK_RECOVERED, log.now
    )
    log.decide(status, "Normal", "TickRecovered", "Recovered", messages.TICK_RECOVERED)
    return status


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
        message = messages.page_delivered(page.dedup_key)
        status = replace(status, page=page).with_condition(
            "Paged", "True", "Delivered", message, now
        )
        return status.with_history([_entry(status, now, "PageDelivered", "Delivered", message)])
    detail = messages.page_error(error)
    if permanent_failure:
        page = replace(page, state="Failed", attempts=attempts, last_error=detail)
        message = messages.page_rejected(detail)
        status = replace(status, page=page).with_condition("Paged", "False", "Failed", message, now)
        return status.with_history([_entry(status, now, "PageFailed", "Rejected", message)])
    failures = page.failures + 1
    retry_at = now + page_retry_delay(failures)
    page = replace(page, attempts=attempts, last_error=detail, failures=failures, retry_at=retry_at)
    message = messages.page_retrying(attempts, detail, retry_at)
    return replace(status, page=page).with_condition("Paged", "False", "Pending", message, now)


def record_resolve_result(
    status: Status,
    delivered: bool,
    permanent_failure: bool,
    error: str | None,
    now: datetime,
    attempts: int = 1,
    dedup_key: str | None = None,
) -> Status:
    """Record one delivery of the pending resolve of the incident with `dedup_key` (None:
    `previousIncident`'s), as `record_page_result` does for the page: Resolved, Failed (a 4xx
    other than 429, never retried), or still Resolving with the next attempt backed off. A
    result for an incident that is not Resolving changes nothing."""
    incidents = list(status.incidents)
    if dedup_key is None and status.previous_incident is not None:
        dedup_key = status.previous_incident.dedup_key
    index = next((i for i, x in enumerate(incidents) if x.dedup_key == dedup_key), None)
    if index is None or incidents[index].state != "Resolving":
        return status
    incident = incidents[index]
    now = truncate_time(now)
    attempts = incident.attempts + max(attempts, 0)
    entry: tuple[str, str, str] | None = None
    if delivered:
        incident = replace(
            incident,
            state="Resolved",
            attempts=attempts,
            resolved_at=now,
            last_error=None,
            retry_at=None,
        )
        entry = ("IncidentResolved", "Delivered", messages.incident_resolved(incident))
    elif permanent_failure:
        detail = messages.page_error(error)
        incident = replace(incident, state="Failed", attempts=attempts, last_error=detail)
        entry = ("ResolveFailed", "Rejected", messages.incident_not_resolved(detail))
    else:
        failures = incident.failures + 1
        incident = replace(
            incident,
            attempts=attempts,
            last_error=messages.page_error(error),
            failures=failures,
            retry_at=now + page_retry_delay(failures),
        )
    incidents[index] = incident
    status = _with_incidents(status, incidents)
    if entry is None:
        return status
    return status.with_history([_entry(status, now, *entry)])


PAGE_RETRY_FIRST = timedelta(seconds=5)
PAGE_RETRY_MAX = timedelta(minutes=5)


def page_retry_delay(failures: int) -> timedelta:
    """How long after its `failures`-th failed delivery a page is sent again: 5 s, doubling,
    at most 5 min, so an endpoint that hangs or refuses is not hammered every tick."""
    return min(PAGE_RETRY_MAX, PAGE_RETRY_FIRST * (1 << min(max(failures - 1, 0), 16)))


def request_due(spec: Spec, status: Status) -> bool:
    """Whether the next tick carries out a manual request (and so judges nothing): the
    controller then spares Prometheus the queries and acts without waiting on them."""
    request = spec.request
    if request is None or _handled(status, request.id):
        return False
    if status.revision is not None and status.revision != spec.effective_revision():
        return False  # the new revision starts first
    return _no_effect(spec, status, request) is None


def restarts(spec: Spec, status: Status) -> bool:
    """Whether the next tick starts the schedule again (a new revision, or dryRun turned on or
    off): the controller then queries metrics even for a finished rollout, since the start
    needs them."""
    if status.revision is None:
        return False
    return status.revision != spec.effective_revision() or status.dry_run != spec.dry_run


def dedup_key(spec: Spec, revision: str) -> str:
    """The page's dedup key: `canaryguard/<namespace>/<name>/<revision>`, stable per revision.

    A key longer than PagerDuty's 255 characters keeps its start and ends in a hash of the
    whole key (`paging.safe_dedup_key`, as the adapter does).
    """
    return safe_dedup_key(f"canaryguard/{spec.namespace}/{spec.name}/{revision}")


# --- the phases of a tick -------------------------------------------------------------------


class _Log:
    """The decisions of one tick: actions in order, and the history entries they leave."""

    def __init__(self, now: datetime, dry_run: bool = False) -> None:
        self.now = now
        self.dry_run = dry_run
        self.actions: list[Action] = []
        self.history: list[HistoryEntry] = []
        self.intent: Status | None = None

    def act(self, action: Action) -> None:
        """Ask for an action; a dry run never moves weights and never pages."""
        if self.dry_run and isinstance(action, SetWeights | Page | Resolve):
            return
        self.actions.append(action)

    def sets_weights(self) -> bool:
        """Whether this tick's decision already sets the weights."""
        return any(isinstance(a, SetWeights) for a in self.actions)

    def decide(
        self, status: Status, type_: EventType, action: str, reason: str, message: str
    ) -> None:
        """A decision: an Event now, and an entry in the history."""
        if self.dry_run:
            action = messages.DRY_RUN_ACTIONS.get(action, action)
            message = messages.dry_run(message)
        self.actions.append(EmitEvent(type_, action, message))
        self.history.append(_entry(status, self.now, action, reason, message))

    def result(self, status: Status) -> TickResult:
        return TickResult(status.with_history(self.history), tuple(self.actions), self.intent)


def _entry(status: Status, now: datetime, action: str, reason: str, message: str) -> HistoryEntry:
    return HistoryEntry(now, action, reason, message, status.step_index, status.canary_weight)


def _restart(status: Status, revision: str, log: _Log, message: str | None = None) -> Status:
    """A new revision (or dryRun turned on or off): the schedule starts over; breach, outage,
    rollback and page are cleared, and the page's incident is carried along to be resolved
    when a revision is promoted, after the unresolved ones this revision carried (at most
    INCIDENT_LIMIT in all: the oldest beyond are dropped, each with a Warning event and a
    history entry saying it will not be resolved).

    The canary weight is kept because it is what the VirtualService still has: the start
    that follows moves it to step 0 (or to 0 when paused). A dry run's weight was never set,
    so it is not kept.
    """
    old = status.revision
    fresh = Status(
        revision=revision,
        observed_generation=status.observed_generation,
        canary_weight=None if status.dry_run else status.canary_weight,
        # The request annotation outlives the revision: it must not act again on the new one.
        last_request=status.last_request,
        history=status.history,
        dry_run=status.dry_run,
    )
    carried = _carried_incidents(status)
    dropped, kept = carried[:-INCIDENT_LIMIT], carried[-INCIDENT_LIMIT:]
    status = _with_incidents(fresh, kept)
    message = message or messages.revision_changed(old, revision)
    log.decide(status, "Normal", "RevisionChanged", "NewRevision", message)
    for incident in dropped:
        note = messages.incident_not_tracked(incident, INCIDENT_LIMIT)
        log.decide(status, "Warning", "IncidentNotTracked", "TooManyIncidents", note)
    return status


def _carried_incidents(status: Status) -> list[IncidentStatus]:
    """The incidents a restarted revision leaves to be resolved, oldest first: those it
    carried itself and that are not resolved yet, then its own rollback's page (unless
    PagerDuty refused it: then there is no incident). One entry per dedup key."""
    kept = [i for i in status.incidents if i.state in ("Open", "Resolving")]
    page = status.page
    if page is not None and page.state != "Failed" and status.revision is not None:
        kept = [i for i in kept if i.dedup_key != page.dedup_key]
        kept.append(IncidentStatus(page.dedup_key, status.revision))
    return kept


def _with_incidents(status: Status, incidents: Sequence[IncidentStatus]) -> Status:
    """`status` tracking `incidents` (oldest first): the newest as `previousIncident`."""
    return replace(
        status,
        previous_incident=incidents[-1] if incidents else None,
        older_incidents=tuple(incidents[:-1]),
    )


def _resolve_incident(spec: Spec, status: Status, log: _Log) -> Status:
    """Once promoted, resolve every incident an earlier revision's rollback opened: record the
    intent (Resolving) and ask for the resolve, one per dedup key; while one is not
    delivered, ask again when its retry is due (the phase stays Promoted meanwhile). A dry
    run resolves nothing, and neither does a rollout without paging."""
    incidents = status.incidents
    if not incidents or status.phase != "Promoted" or spec.dry_run or spec.paging is None:
        return status
    after, opened = [], []
    for incident in incidents:
        if incident.state == "Open":
            incident = replace(incident, state="Resolving", resolved_by=status.revision)
            opened.append(incident)
            log.act(Resolve(incident.dedup_key))
        elif incident.state == "Resolving" and (
            incident.retry_at is None or log.now >= incident.retry_at
        ):
            log.act(Resolve(incident.dedup_key))
        after.append(incident)
    status = _with_incidents(status, after)
    for incident in opened:
        message = messages.incident_resolving(incident, status.revision or "")
        log.decide(status, "Normal", "ResolvingIncident", "Promoted", message)
    return status


def _dry_run_words(status: Status) -> Status:
    """A dry run's status says so: its message, and its Progressing condition (named for what
    would have happened: WouldRollBack, WouldPromote)."""
    status = replace(status, message=messages.dry_run(status.message))
    progressing = status.condition("Progressing")
    if progressing is None:
        return status
    reason = messages.DRY_RUN_ACTIONS.get(progressing.reason, progressing.reason)
    return status.with_condition(
        "Progressing",
        progressing.status,
        reason,
        messages.dry_run(progressing.message),
        progressing.last_transition_time,
    )


def _manual(spec: Spec, status: Status, log: _Log) -> tuple[Status, bool]:
    """Handle a manual request not handled before; True when it decided this tick."""
    bad = spec.invalid_request
    if bad is not None and not _handled(status, bad.id):
        message = messages.request_rejected(bad.problem)
        status = _record_request(status, bad.id, None, "", "Rejected", message, log.now)
        log.decide(status, "Warning", "InvalidRequest", "InvalidRequest", message)
        return status, False
    request = spec.request
    if request is None or _handled(status, request.id):
        return status, False
    why_not = _no_effect(spec, status, request)
    if why_not is not None:
        message = messages.request_ignored(spec, status, request, why_not)
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


def _no_effect(spec: Spec, status: Status, request: ManualRequest) -> NoEffect | None:
    """Why a request cannot act on this rollout, or None when it is carried out."""
    if request.uid is not None and spec.uid is not None and request.uid != spec.uid:
        return "OtherObject"
    if request.revision is not None and request.revision != spec.effective_revision():
        return "OtherRevision"
    if status.phase in FINISHED:
        return "Finished"
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
    message = messages.manual_promote(spec, status, request)
    status = replace(
        status,
        phase="Promoted",
        paused_reason=None,
        step_index=last,
        canary_weight=100,
        step_started_at=status.step_started_at if before == 100 else log.now,
        message=messages.promoted_by_hand(request),
        shadow=_shadow_ended(status, "Skipped", log.now),
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
    message = messages.manual_abort(spec, request)
    rollback = Rollback(at=log.now, reason="Manual", message=message)
    status = _record_request(
        status, request.id, request.action, request.by, "RolledBack", message, log.now
    )
    return _rollback(spec, status, rollback, log, page=request.page, event="ManualAbort")


def _start(spec: Spec, status: Status, observations: Observations, log: _Log) -> Status:
    now = log.now
    if spec.paused:
        before = (status.phase, status.paused_reason)
        status = replace(status, phase="Paused", paused_reason="Spec")
        if status.canary_weight:
            # Restarted while paused: the new revision gets no traffic until it starts.
            status = replace(status, canary_weight=0)
            log.act(SetWeights(100, 0))
        message = messages.PAUSED_BEFORE_START
        status = replace(status, message=message)
        status = status.with_condition("Progressing", "False", "Paused", message, now)
        if before != ("Paused", "Spec"):
            log.decide(status, "Normal", "Paused", "Spec", message)
        return status
    blind = {
        slo.name: seen.error if seen is not None else None
        for slo in spec.analysis.slos
        if (seen := observations.slos.get(slo.name)) is None or seen.unavailable
    }
    if blind:
        return _wait_for_metrics(spec, status, blind, log)
    if spec.shadow is not None and status.shadow is None:
        return _start_shadow(spec, status, log)
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
    message = messages.holding(spec, status)
    status = replace(status, message=message)
    status = status.with_condition("Progressing", "True", "Holding", message, now)
    log.decide(status, "Normal", "Started", "Started", messages.started(spec))
    return status


def _wait_for_metrics(
    spec: Spec, status: Status, blind: Mapping[str, str | None], log: _Log
) -> Status:
    """Not started while any SLO's query fails: no traffic goes to a canary whose metrics
    cannot be read. The outage is recorded (and posted once); the start waits for metrics."""
    now = log.now
    before = status.metrics_outage_since
    since = before or now
    message = messages.waiting_to_start(list(blind), since)
    status = replace(status, phase="Pending", metrics_outage_since=since, message=message)
    status = status.with_condition(
        "MetricsAvailable", "False", "QueryFailed", messages.blind_slos(blind), now
    )
    status = status.with_condition("Progressing", "False", "WaitingForMetrics", message, now)
    if before is None:
        log.decide(status, "Warning", "MetricsOutage", "NotStarted", message)
    return status


def _finished(spec: Spec, status: Status, log: _Log) -> Status:
    """Promoted or RolledBack: nothing moves, but an undelivered page is asked for again
    once its retry is due."""
    due = status.page is not None and (
        status.page.retry_at is None or log.now >= status.page.retry_at
    )
    if status.page is not None and status.page.state == "Pending" and due:
        page = _page(spec, status)
        if page is not None:
            log.act(page)
    return status


def _analyse(spec: Spec, status: Status, observations: Observations, log: _Log) -> Status:
    now = log.now
    last = len(spec.steps) - 1
    if not status.shadowing:
        # A spec edit may have removed steps under a running rollout: stay on the last one.
        status = replace(
            status,
            step_index=min(status.step_index or 0, last),
            step_started_at=status.step_started_at or now,
        )
    previous = {slo.name: slo for slo in status.slos}
    idle = _baseline_idle(status)
    skipped = _skipped_in_shadow(spec, status)
    step = (status.stratum_started_at or now, status.canary_weight or 0)
    slos = tuple(
        SloStatus(slo.name, "skipped", messages.SKIPPED_IN_SHADOW)
        if slo.name in skipped
        else _slo_status(
            slo, observations.slos.get(slo.name), previous.get(slo.name), now, idle, step
        )
        for slo in spec.analysis.slos
    )
    unavailable = [slo for slo in slos if slo.verdict == "unavailable"]
    outage_before = status.metrics_outage_since
    outage_since = (outage_before or now) if unavailable else None
    status = replace(status, slos=slos, metrics_outage_since=outage_since)

    if unavailable and outage_before is None:
        message = messages.outage(spec, status)
        log.decide(status, "Warning", "MetricsOutage", "QueryFailed", message)
    elif not unavailable and outage_before is not None:
        message = messages.metrics_recovered(now - outage_before)
        log.decide(status, "Normal", "MetricsRecovered", "QueriesSucceeded", message)

    sustained = [
        (slo, state)
        for slo, state in zip(spec.analysis.slos, slos, strict=True)
        if state.verdict == "breach"
        and state.breaching_since is not None
        and now - state.breaching_since >= slo.window
    ]
    if not sustained and (
        _pulled(status, observations.routed_canary)
        or _mirror_pulled(status, observations.routed_canary, observations.routed_mirror)
    ):
        sustained = _breach_left_unrecorded(spec, previous, slos, now)
    pages = _shadow_pages(spec, status)
    if sustained:
        return _rollback(spec, status, _breach_rollback(sustained, now, idle), log, page=pages)
    outage_over_limit = (
        outage_since is not None and now - outage_since >= spec.analysis.max_metrics_outage
    )
    if outage_over_limit and spec.analysis.on_metrics_outage == "rollback":
        rollback = _outage_rollback(spec, status, unavailable, now)
        return _rollback(spec, status, rollback, log, page=pages)

    status = _pause_or_resume(spec, status, outage_over_limit, log)
    lowered = _lowered(status, observations.routed_canary)
    if status.phase == "Progressing" and lowered is None:
        status = (
            _shadow_progress(spec, status, log)
            if status.shadowing
            else _progress(spec, status, log)
        )
    return _describe(spec, status, now, lowered)


def _lowered(status: Status, routed: float | None) -> float | None:
    """The routed canary share when it is below the weight decided last (someone lowered it:
    a person, or a rollback whose status write was lost), else None."""
    wanted = status.canary_weight
    if routed is None or wanted is None or routed > wanted - _WEIGHT_SLACK:
        return None
    return routed


# Shares are computed from weights that need not sum to 100; half a point is "the same".
_WEIGHT_SLACK = 0.5


def _guard_traffic(spec: Spec, status: Status, routed: float | None, log: _Log) -> Status:
    """Traffic is fail-safe (DESIGN.md, rule 8). When this tick decided no weights, the
    routed share is compared with the weight decided last: a canary share above it is set
    back down; one below it is respected (never raised again), recorded in the Traffic
    condition and posted once; the rollout holds until a person restores the weight or
    decides (promote, abort), and a sustained breach still rolls it back."""
    wanted = status.canary_weight
    if routed is None or wanted is None or log.sets_weights():
        return status
    now = log.now
    if routed > wanted + _WEIGHT_SLACK:
        log.act(SetWeights(100 - wanted, wanted, _mirror(status)))
        message = messages.weights_reasserted(spec, routed, wanted)
        log.decide(status, "Warning", "WeightsReasserted", "RaisedOutside", message)
        return status.with_condition("Traffic", "True", "Reasserted", message, now)
    if routed < wanted - _WEIGHT_SLACK:
        old = status.condition("Traffic")
        message = messages.weights_lowered(spec, routed, wanted, status.phase)
        status = status.with_condition("Traffic", "False", "LoweredOutside", message, now)
        if old is None or old.reason != "LoweredOutside" or old.message != message:
            log.decide(status, "Warning", "WeightsLowered", "LoweredOutside", message)
        return status
    return status.with_condition("Traffic", "True", "AsDecided", messages.TRAFFIC_AS_DECIDED, now)


def _pulled(status: Status, routed: float | None) -> bool:
    """Whether all traffic was taken off a canary that the status still gives some."""
    return routed is not None and routed < _WEIGHT_SLACK and (status.canary_weight or 0) > 0


def _mirror_pulled(status: Status, canary: float | None, routed: tuple[float, ...] | None) -> bool:
    """Whether a running shadow's routes are as a shadow rollback writes them: the baseline
    serving everyone and no mirror left (a rollback whose status was lost in a crash, or a
    person removing the mirror). Its canary gets no requests left to be judged on, as a
    step's canary pulled to 0%. A canary found serving is not this (the write that passed
    the shadow, whose status was lost)."""
    return (
        status.shadowing
        and not status.dry_run
        and _mirror(status) > 0
        and canary is not None
        and canary < _WEIGHT_SLACK
        and bool(routed)
        and all(found < 0.01 for found in routed or ())
    )


def _breach_left_unrecorded(
    spec: Spec, previous: Mapping[str, SloStatus], slos: Sequence[SloStatus], now: datetime
) -> list[tuple[Slo, SloStatus]]:
    """The SLOs whose breach had run its window when the canary's traffic was pulled and
    that have had no verdict since (the canary has no traffic left to be judged on): a
    rollback whose weights were written but whose status was lost in a crash, or a person
    pulling a breaching canary. The rollback is recorded (and paged) with the last values
    judged, instead of holding for ever with nobody told."""
    found = []
    for slo, state in zip(spec.analysis.slos, slos, strict=True):
        last = previous.get(slo.name)
        if (
            last is not None
            and last.verdict == "breach"
            and state.verdict in ("inconclusive", "unavailable")
            and state.breaching_since is not None
            and now - state.breaching_since >= slo.window
        ):
            found.append((slo, replace(last, breaching_since=state.breaching_since)))
    return found


def _baseline_idle(status: Status) -> bool:
    """Whether the baseline gets no traffic: the canary has it all (the last step, 100%). A
    dry run's weights are not routed, so its baseline keeps serving."""
    return not status.dry_run and (status.canary_weight or 0) >= 100


def _slo_status(
    slo: Slo,
    observation: SloObservation | None,
    previous: SloStatus | None,
    now: datetime,
    baseline_idle: bool,
    step: tuple[datetime, int],
) -> SloStatus:
    reference = _reference(slo, observation, previous, now)
    evidence = _evidence(slo, observation, previous, step)
    judgement = judge(
        slo,
        observation,
        reference,
        baseline_idle=baseline_idle,
        strata=tuple(_stratum(record) for record in evidence),
    )
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
        reason=messages.clip(judgement.reason),
        baseline=round_value(seen.baseline) if seen else None,
        canary=round_value(seen.canary) if seen else None,
        baseline_samples=round_value(seen.baseline_samples) if seen else None,
        canary_samples=round_value(seen.canary_samples) if seen else None,
        breaching_since=since,
        baseline_reference=reference.value if reference else None,
        baseline_reference_samples=reference.samples if reference else None,
        baseline_reference_at=reference.at if reference else None,
        evidence=evidence,
    )


def _evidence(
    slo: Slo,
    observation: SloObservation | None,
    previous: SloStatus | None,
    step: tuple[datetime, int],
) -> tuple[StratumRecord, ...]:
    """An SLO's strata after this tick (only with `confidence`): the current step's record
    replaced by this tick's counts since the step began, earlier steps' records kept."""
    if slo.confidence is None:
        return ()
    kept = previous.evidence if previous is not None else ()
    counts = observation.counts if observation is not None else None
    if counts is None or observation is None or observation.unavailable:
        return kept
    since, weight = step
    whole = [round(max(0.0, c)) if math.isfinite(c) else 0 for c in _values(counts)]
    record = StratumRecord(since, weight, *whole)
    earlier = tuple(r for r in kept if r.since != since)
    return (*earlier, record)[-EVIDENCE_LIMIT:]


def _values(counts: Stratum) -> tuple[float, float, float, float]:
    return (
        counts.baseline_requests,
        counts.baseline_events,
        counts.canary_requests,
        counts.canary_events,
    )


def _stratum(record: StratumRecord) -> Stratum:
    return Stratum(
        record.baseline_requests,
        record.baseline_events,
        record.canary_requests,
        record.canary_events,
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
        log.decide(status, "Normal", "Paused", "Spec", messages.PAUSED_BY_SPEC)
    elif status.paused_reason == "MetricsOutage":
        log.decide(status, "Warning", "Paused", "MetricsOutage", messages.outage(spec, status))
    else:
        reason: ResumeReason = "SpecValid"  # out of phase Invalid
        if before[1] == "Spec":
            reason = "Spec"
        elif before[1] == "MetricsOutage":
            reason = "MetricsRecovered"
        log.decide(status, "Normal", "Resumed", reason, messages.resumed(reason))
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
        message = messages.promoted(step, now - started, status, _baseline_idle(status))
        log.decide(status, "Normal", "Promoted", "AllHealthy", message)
        return status
    return _apply_step(spec, status, index + 1, "HoldElapsed", log)


def _apply_step(spec: Spec, status: Status, index: int, reason: str, log: _Log) -> Status:
    step = spec.steps[index]
    before = status.canary_weight
    status = replace(status, step_index=index, canary_weight=step.weight, step_started_at=log.now)
    log.act(SetWeights(100 - step.weight, step.weight))
    message = messages.step_advanced(spec, status, before)
    log.decide(status, "Normal", "StepAdvanced", reason, message)
    return status


# --- rollback and the page ------------------------------------------------------------------


def _breach_rollback(
    sustained: Sequence[tuple[Slo, SloStatus]], now: datetime, baseline_idle: bool
) -> Rollback:
    """The rollback for sustained breaches; with the baseline idle, the baseline value it
    records is the reference the canary was judged against (None: judged by limit only)."""
    slo, state = sustained[0]
    since = state.breaching_since or now
    others = [other.name for other, _ in sustained[1:]]
    return Rollback(
        at=now,
        reason="SLOBreach",
        message=messages.breach_rollback(slo, state, since, now, others),
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
    return Rollback(
        at=now,
        reason="MetricsOutage",
        message=messages.outage_rollback(spec, since, now, unavailable),
        slo=", ".join(slo.name for slo in unavailable),
        window=format_duration(spec.analysis.max_metrics_outage),
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
    event. A rollback in the shadow phase also removes the mirror (in the same write) and
    says so.

    The rollback is recorded as an intent first (`TickResult.intent`, stored before the
    weights are written): a crash anywhere after that leaves a status from which the next
    tick completes this very rollback (`_complete_rollback`) and pages once."""
    if status.shadowing and rollback.reason != "Manual":
        rollback = replace(rollback, message=messages.in_shadow(rollback.message))
    paged = page and spec.paging is not None and not spec.dry_run
    if not spec.dry_run:
        log.intent = replace(
            status,
            rollback=rollback,
            page=PageStatus(dedup_key(spec, status.revision or "")) if paged else None,
        ).with_condition("Progressing", "False", "RollingBack", rollback.message, log.now)
    return _roll_back(spec, status, rollback, log, paged, event)


def _rollback_interrupted(status: Status) -> bool:
    """Whether the status holds a rollback's intent whose completion was never recorded (the
    operator died between the intent and the status after the weight write)."""
    return status.rollback is not None and status.phase not in FINISHED and not status.dry_run


def _complete_rollback(spec: Spec, status: Status, log: _Log) -> Status:
    """Carry out the rollback whose intent the status holds: weights 100/0 (and no mirror),
    phase RolledBack, and the page the intent said was due. Nothing is judged first: the
    decision was taken, and the canary may have no traffic left to be judged on."""
    rollback = status.rollback
    assert rollback is not None
    event = "ManualAbort" if rollback.reason == "Manual" else "RolledBack"
    paged = status.page is not None and spec.paging is not None and not spec.dry_run
    return _roll_back(spec, status, rollback, log, paged, event)


def _roll_back(
    spec: Spec, status: Status, rollback: Rollback, log: _Log, paged: bool, event: str
) -> Status:
    if status.shadowing:
        state: ShadowState = "Skipped" if rollback.reason == "Manual" else "Failed"
        status = replace(status, shadow=_shadow_ended(status, state, log.now))
    status = replace(
        status,
        phase="RolledBack",
        paused_reason=None,
        canary_weight=0,
        rollback=rollback,
        message=messages.rolled_back(rollback),
    )
    log.act(SetWeights(100, 0))
    if paged:
        page = status.page or PageStatus(dedup_key(spec, status.revision or ""))
        status = replace(status, page=page)
        status = status.with_condition("Paged", "False", "Pending", messages.PAGE_PENDING, log.now)
        trigger = _page(spec, status)
        if trigger is not None:
            log.act(trigger)
    log.decide(status, "Warning", event, rollback.reason, rollback.message)
    return _describe(spec, status, log.now)


def _page(spec: Spec, status: Status) -> Page | None:
    """The page for the status's rollback; rebuilt the same way after a restart."""
    rollback, page, paging = status.rollback, status.page, spec.paging
    if rollback is None or page is None or paging is None:
        return None
    return Page(
        page.dedup_key,
        messages.page_summary(spec, status, rollback),
        paging.pager_duty.severity,
        messages.page_details(spec, status, rollback),
    )


# --- conditions ----------------------------------------------------------------------------


def _describe(spec: Spec, status: Status, now: datetime, lowered: float | None = None) -> Status:
    """Set the one-line message and the conditions from this tick's state."""
    slos = status.slos
    breaching = [slo for slo in slos if slo.verdict == "breach"]
    unavailable = [slo for slo in slos if slo.verdict == "unavailable"]
    unsure = [slo for slo in slos if slo.verdict in ("inconclusive", "unavailable")]

    if breaching:
        status = status.with_condition(
            "Healthy", "False", "Breach", messages.slo_list(breaching, with_since=True), now
        )
    elif unsure:
        reason = "MetricsUnavailable" if unavailable else "Inconclusive"
        status = status.with_condition("Healthy", "Unknown", reason, messages.slo_list(unsure), now)
    else:
        healthy = messages.all_healthy(slos, _baseline_idle(status))
        status = status.with_condition("Healthy", "True", "AllHealthy", healthy, now)
    if unavailable:
        status = status.with_condition(
            "MetricsAvailable", "False", "QueryFailed", messages.slo_list(unavailable), now
        )
    else:
        status = status.with_condition(
            "MetricsAvailable", "True", "QueriesSucceeded", messages.METRICS_ANSWERED, now
        )

    progressing: tuple[ConditionStatus, str, str]
    if status.phase == "RolledBack" and status.rollback is not None:
        progressing = ("False", "RolledBack", status.rollback.message)
    elif status.phase == "Promoted":
        status = replace(status, message=messages.PROMOTED)
        progressing = ("False", "Promoted", messages.PROMOTED_CONDITION)
    elif status.phase == "Paused":
        message = messages.paused(spec, status)
        status = replace(status, message=message)
        progressing = ("False", "Paused", message)
    elif lowered is not None:
        message = messages.held_lowered(lowered, status)
        status = replace(status, message=message)
        progressing = ("False", "WeightsLowered", message)
    else:
        reason, message = _progressing(spec, status, now)
        status = replace(status, message=message)
        progressing = ("True", reason, message)
    flag, reason, message = progressing
    return status.with_condition("Progressing", flag, reason, message, now)


def _progressing(spec: Spec, status: Status, now: datetime) -> tuple[str, str]:
    """Why a Progressing rollout is where it is: (condition reason, one-line message)."""
    if status.metrics_outage_since is not None:
        return "WaitingForMetrics", messages.outage(spec, status)
    by_name = {slo.name: slo for slo in spec.analysis.slos}
    for slo in status.slos:
        if slo.verdict == "breach" and slo.breaching_since is not None:
            window = by_name[slo.name].window
            return "Breaching", messages.breaching(slo, slo.breaching_since, window)
    if status.shadowing and status.shadow is not None:
        hold = spec.shadow.hold if spec.shadow is not None else timedelta(0)
        if now < status.shadow.started_at + hold:
            return "Shadowing", messages.shadowing(status, hold)
    else:
        index = status.step_index or 0
        started = status.step_started_at or now
        if now < started + spec.steps[index].hold:
            return "Holding", messages.holding(spec, status)
    unsure = [slo for slo in status.slos if slo.verdict not in ("healthy", "skipped")]
    if unsure:
        return "WaitingForEvidence", messages.waiting_for_evidence(spec, status, unsure[0])
    return "Holding", messages.hold_done(spec, status)


# --- the shadow phase -----------------------------------------------------------------------


def _start_shadow(spec: Spec, status: Status, log: _Log) -> Status:
    """Before step 1: mirror `spec.shadow.percent` of the requests to the canary, the
    baseline serving everyone (weights 100/0), and judge the canary on the mirrored
    requests."""
    assert spec.shadow is not None
    now = log.now
    percent = spec.shadow.percent
    status = replace(
        status,
        phase="Progressing",
        paused_reason=None,
        step_index=None,
        canary_weight=0,
        step_started_at=None,
        metrics_outage_since=None,
        shadow=ShadowStatus(now, percent),
    )
    log.act(SetWeights(100, 0, percent))
    message = messages.shadowing(status, spec.shadow.hold)
    status = replace(status, message=message)
    status = status.with_condition("Progressing", "True", "Shadowing", message, now)
    started = messages.shadow_started(spec, percent, spec.shadow.hold)
    log.decide(status, "Normal", "ShadowStarted", "Started", started)
    return status


def _shadow_progress(spec: Spec, status: Status, log: _Log) -> Status:
    """End the shadow when its hold is over and every SLO judged in shadow is healthy: the
    mirror goes and step 1 applies, in one write. Inconclusive never counts as healthy."""
    shadow = status.shadow
    assert shadow is not None
    now = log.now
    hold = spec.shadow.hold if spec.shadow is not None else timedelta(0)
    if now - shadow.started_at < hold:
        return status
    if any(slo.verdict not in ("healthy", "skipped") for slo in status.slos):
        return status
    status = replace(status, shadow=replace(shadow, state="Passed", ended_at=now))
    message = messages.shadow_passed(status, now - shadow.started_at)
    log.decide(status, "Normal", "ShadowPassed", "AllHealthy", message)
    return _apply_step(spec, status, 0, "ShadowPassed", log)


def _skipped_in_shadow(spec: Spec, status: Status) -> frozenset[str]:
    """The SLOs not judged this tick: those that need real outcomes, while shadowing."""
    if not status.shadowing or spec.shadow is None:
        return frozenset()
    return frozenset(spec.shadow.skip_slos)


def _shadow_pages(spec: Spec, status: Status) -> bool:
    """Whether a rollback now pages: always outside the shadow; in it, unless the spec says
    a failed shadow only posts an Event."""
    return not status.shadowing or spec.shadow is None or spec.shadow.on_breach == "page"


def _shadow_ended(status: Status, state: ShadowState, now: datetime) -> ShadowStatus | None:
    shadow = status.shadow
    if shadow is None or not shadow.running:
        return shadow
    return replace(shadow, state=state, ended_at=now)


def _mirror(status: Status) -> int:
    """The percent the routes should mirror to the canary now (0: no mirror)."""
    return status.shadow.percent if status.shadowing and status.shadow is not None else 0


def _guard_mirror(
    spec: Spec, status: Status, routed: tuple[float, ...] | None, log: _Log
) -> Status:
    """While shadowing, the mirror is what keeps the canary judged: found missing or
    changed (a person, or a write whose status was lost in a crash), it is set again with
    the baseline serving everyone. A mirror never serves users, so this never raises the
    canary's share of answers."""
    if not status.shadowing or routed is None or log.sets_weights():
        return status
    percent = _mirror(status)
    if all(abs(found - percent) < 0.01 for found in routed):
        return status
    log.act(SetWeights(100, 0, percent))
    message = messages.mirror_reasserted(spec, routed, percent)
    log.decide(status, "Warning", "MirrorReasserted", "ChangedOutside", message)
    return status
