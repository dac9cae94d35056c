"""The engine's words: event, condition and status messages, rollback explanations, pages.

The engine decides (`engine.py` holds the transitions); this module only says in words what
it decided, from the values it is handed. Every function is pure and decides nothing: which
message applies is the engine's choice, except where the wording alone depends on the state
(a paused rollout's message names why it is paused).

Texts kept in status and events are clipped to `MAX_TEXT` characters; a page's summary fits
PagerDuty's limit (`paging.safe_summary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from canaryguard.core.durations import format_duration
from canaryguard.core.manual import ManualRequest
from canaryguard.core.paging import safe_summary
from canaryguard.core.spec import Slo, Spec, Step
from canaryguard.core.status import IncidentStatus, Rollback, SloStatus, Status, format_time

MAX_TEXT: Final = 1024  # messages and errors kept in status and events

# Why a manual request cannot act on this rollout (the engine's finding, in `request_ignored`).
NoEffect = Literal["OtherObject", "OtherRevision", "Finished"]
# Why a paused rollout resumes (the condition reason, in `resumed`).
ResumeReason = Literal["Spec", "MetricsRecovered", "SpecValid"]

SPEC_VALID: Final = "the spec is valid"
PAGE_PENDING: Final = "the page has not been delivered yet"
METRICS_ANSWERED: Final = "every SLO query answered"
PROMOTED: Final = "promoted: canary at 100%"
PROMOTED_CONDITION: Final = "every step held with all SLOs healthy"
PAUSED_BEFORE_START: Final = "paused before the first step (spec.paused)"
PAUSED_BY_SPEC: Final = "paused by spec.paused: weights hold; a sustained breach still rolls back"
TICK_RECOVERED: Final = "ticks run to a decision again"
TRAFFIC_AS_DECIDED: Final = "the routed weights are the ones canaryguard decided"


def clip(text: str) -> str:
    """`text` cut to `MAX_TEXT` characters, ending in `...` when cut."""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


# --- the spec and its revision ----------------------------------------------------------------


def invalid_spec(error: str) -> str:
    """The status message of a rollout whose spec does not parse."""
    return f"invalid: {error}"


def invalid_spec_event(error: str) -> str:
    return f"invalid spec: {error}"


def revision_changed(old: str | None, new: str) -> str:
    return f"revision {old} -> {new}: the schedule starts again at step 1"


# --- manual requests ------------------------------------------------------------------------


def request_rejected(problem: str) -> str:
    """A request annotation that does not parse."""
    return clip(f"request ignored: {problem}")


def request_ignored(spec: Spec, status: Status, request: ManualRequest, why: NoEffect) -> str:
    """A request recorded without effect, and why."""
    if why == "OtherObject":
        text = f"has no effect: it was made for another object of this name (uid {request.uid})"
    elif why == "OtherRevision":
        text = (
            f"has no effect: it was made for revision {request.revision}; "
            f"the rollout is at revision {spec.effective_revision()}"
        )
    else:
        text = f"has no effect: the rollout has already finished ({status.phase})"
    return clip(f"{request.action} {request.who()} (request {request.id}) {text}")


def manual_promote(spec: Spec, status: Status, request: ManualRequest) -> str:
    """A manual promote, from the status before it: the weight it moved from and where."""
    before = status.canary_weight or 0
    where = (
        "before the first step"
        if status.step_index is None
        else f"at step {status.step_index + 1}/{len(spec.steps)}"
    )
    return clip(
        f"manual promote {request.who()}: {request.why()} (request {request.id}); canary "
        f"{before}% -> 100% {where}, the rest of the schedule and its analysis skipped"
    )


def promoted_by_hand(request: ManualRequest) -> str:
    """The status message after a manual promote."""
    return clip(f"promoted by hand ({request.who()}): canary at 100%")


def manual_abort(spec: Spec, request: ManualRequest) -> str:
    """A manual abort, and whether it pages."""
    if not request.page:
        paging = "on-call not paged (not asked)"
    elif spec.paging is None:
        paging = "a page was asked for, but spec.paging is not set"
    else:
        paging = "paging on-call as asked"
    return clip(f"manual abort {request.who()}: {request.why()} (request {request.id}); {paging}")


# --- steps and progress ---------------------------------------------------------------------


def started(spec: Spec) -> str:
    first = spec.steps[0]
    return (
        f"started: step 1/{len(spec.steps)}, canary at {first.weight}% "
        f"for {format_duration(first.hold)}"
    )


def step_advanced(spec: Spec, status: Status, before: int | None) -> str:
    """The step `status` is now at, reached from canary weight `before`."""
    index = status.step_index or 0
    step = spec.steps[index]
    return (
        f"step {index + 1}/{len(spec.steps)}: canary {before}% -> {step.weight}% for "
        f"{format_duration(step.hold)}; all {len(status.slos)} SLOs healthy"
    )


def promoted(step: Step, held: timedelta, status: Status, baseline_idle: bool) -> str:
    """The last step held healthy for `held`."""
    return clip(
        f"promoted: canary at {step.weight}% for {format_duration(held)} "
        f"with {all_healthy(status.slos, baseline_idle)}"
    )


def holding(spec: Spec, status: Status) -> str:
    """A step whose hold is not over."""
    index = status.step_index or 0
    started = status.step_started_at
    until = format_time(started + spec.steps[index].hold) if started is not None else "?"
    return f"step {index + 1}/{len(spec.steps)} at {status.canary_weight}%: holding until {until}"


def hold_done(spec: Spec, status: Status) -> str:
    return f"{_where(spec, status)}: hold done, next step at the next tick"


def waiting_for_evidence(spec: Spec, status: Status, unsure: SloStatus) -> str:
    """The hold is over, but `unsure` (the first SLO not healthy) holds the next step back."""
    return f"{_where(spec, status)}: waiting for evidence: {slo_list([unsure])}"


def breaching(slo: SloStatus, since: datetime, window: timedelta) -> str:
    """An SLO breaching since `since`, not yet for its whole window."""
    return (
        f"{slo.name} breaching since {format_time(since)}; "
        f"rollback at {format_time(since + window)} if it persists"
    )


def paused(spec: Spec, status: Status) -> str:
    """The status message of a paused rollout: by the spec, or by a metrics outage."""
    if status.paused_reason == "MetricsOutage":
        return outage(spec, status)
    if status.shadowing:
        return f"paused (spec.paused) in the {_where(spec, status)}; users on the baseline"
    index = status.step_index or 0
    return (
        f"paused (spec.paused) at step {index + 1}/{len(spec.steps)}, "
        f"canary {status.canary_weight}%"
    )


def resumed(reason: ResumeReason) -> str:
    why = {
        "Spec": "spec.paused is false",
        "MetricsRecovered": "metrics are available again",
        "SpecValid": "the spec is valid again",
    }[reason]
    return f"resumed: {why}"


def _where(spec: Spec, status: Status) -> str:
    if status.shadowing and status.shadow is not None:
        return f"shadow, {status.shadow.percent}% mirrored to the canary"
    return f"step {(status.step_index or 0) + 1}/{len(spec.steps)} at {status.canary_weight}%"


# --- metrics outage -------------------------------------------------------------------------


def outage(spec: Spec, status: Status) -> str:
    """Since when metrics are unavailable, and what happens if they stay so."""
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


def metrics_recovered(lasted: timedelta) -> str:
    return f"metrics back after {format_duration(lasted)}"


def blind_slos(errors: Mapping[str, str | None]) -> str:
    """Which SLOs got no answer, and why where known."""
    return clip(
        "no answer from Prometheus for "
        + "; ".join(f"{name}: {error}" if error else name for name, error in errors.items())
    )


def waiting_to_start(names: Sequence[str], since: datetime) -> str:
    """Why a rollout has not started: its metrics cannot be read."""
    return clip(
        f"not started: metrics unavailable since {format_time(since)} "
        f"({', '.join(names)}); no traffic goes to the canary until they can be read"
    )


def tick_failed(reason: str, error: str) -> str:
    return clip(
        f"tick failed ({reason}): {error}; nothing was decided and weights are unchanged, "
        "retried at the next interval"
    )


# --- traffic ---------------------------------------------------------------------------------


def _share(value: float) -> str:
    return f"{value:.4g}%"


def weights_reasserted(spec: Spec, routed: float, wanted: int) -> str:
    return (
        f"{spec.target.kind} {spec.target.name}: the canary's share was raised outside "
        f"canaryguard to {_share(routed)}; set back to the decided {wanted}%"
    )


def weights_lowered(spec: Spec, routed: float, wanted: int, phase: str) -> str:
    """A lowered canary share, respected: what was found and what happens now."""
    if phase == "Promoted":
        then = "left as it is (canaryguard never raises it again)"
    else:
        then = (
            "respected: the rollout holds (no step advances) until the weight is restored or "
            "a person promotes or aborts; a sustained breach still rolls back"
        )
    return (
        f"{spec.target.kind} {spec.target.name}: the canary's share is {_share(routed)}, "
        f"below the decided {wanted}% "
        f"(lowered outside canaryguard, by a person or a rollback whose status was not "
        f"recorded): {then}"
    )


def held_lowered(routed: float, status: Status) -> str:
    return clip(
        f"holding at step {(status.step_index or 0) + 1}: the canary's share was lowered to "
        f"{_share(routed)} outside canaryguard (decided {status.canary_weight}%)"
    )


# --- SLOs -----------------------------------------------------------------------------------


def slo_list(slos: Sequence[SloStatus], with_since: bool = False) -> str:
    """`name: reason` per SLO (`name (since T): reason` with `with_since`), joined by `; `."""
    parts = []
    for slo in slos:
        since = (
            f" (since {format_time(slo.breaching_since)})"
            if with_since and slo.breaching_since
            else ""
        )
        parts.append(f"{slo.name}{since}: {slo.reason}")
    return clip("; ".join(parts))


def all_healthy(slos: Sequence[SloStatus], baseline_idle: bool) -> str:
    """`all N SLOs healthy`; with the baseline idle, also what each was judged against."""
    skipped = [slo.name for slo in slos if slo.verdict == "skipped"]
    text = f"all {len(slos) - len(skipped)} SLOs healthy"
    if skipped:
        text += f" ({', '.join(skipped)} skipped in shadow)"
    if baseline_idle and slos:
        text += f"; baseline idle (no traffic at 100%): {slo_list(slos)}"
    return clip(text)


# --- rollback and the page ------------------------------------------------------------------


def breach_rollback(
    slo: Slo, state: SloStatus, since: datetime, now: datetime, others: Sequence[str]
) -> str:
    """Why `slo` rolled the canary back; `others` name the other SLOs breached as long."""
    message = (
        f"SLO {slo.name} breached for {format_duration(now - since)} (window "
        f"{format_duration(slo.window)}) since {format_time(since)}: {state.reason}"
    )
    if others:
        message += "; also breaching: " + ", ".join(others)
    return clip(message)


def outage_rollback(
    spec: Spec, since: datetime, now: datetime, unavailable: Sequence[SloStatus]
) -> str:
    """Why a metrics outage rolled the canary back, with each failed query's error."""
    limit = format_duration(spec.analysis.max_metrics_outage)
    errors = "; ".join(f"{slo.name}: {slo.reason}" for slo in unavailable)
    return clip(
        f"metrics unavailable for {format_duration(now - since)} (maxMetricsOutage {limit}) "
        f"since {format_time(since)}: {errors}"
    )


def rolled_back(rollback: Rollback) -> str:
    """The one-line status message of a rolled back rollout."""
    if rollback.reason == "SLOBreach":
        return f"rolled back: {rollback.slo} {_versus(rollback)} for {rollback.window}"
    if rollback.reason == "Manual":
        return clip(f"rolled back: {rollback.message}")
    return f"rolled back: metrics unavailable for {rollback.window}"


def page_summary(spec: Spec, status: Status, rollback: Rollback) -> str:
    """The page's one line: the rollout, its revision and the cause, within PagerDuty's limit."""
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
    if status.shadow is not None and status.shadow.state == "Failed":
        cause = f"in shadow (no user served by the canary): {cause}"
    return safe_summary(f"canaryguard rolled back {_who(spec)} revision {status.revision}: {cause}")


def page_details(spec: Spec, status: Status, rollback: Rollback) -> dict[str, Any]:
    """The page's custom details: the rollback's evidence and every SLO's last status."""
    return {
        "rollout": _who(spec),
        "revision": status.revision,
        "reason": rollback.reason,
        "slo": rollback.slo,
        "baseline": rollback.baseline,
        "canary": rollback.canary,
        "margin": rollback.margin,
        "window": rollback.window,
        "breachingSince": format_time(rollback.breaching_since),
        "baselineReferenceAt": format_time(rollback.baseline_reference_at),
        "rolledBackAt": format_time(rollback.at),
        "stepIndex": status.step_index,
        "shadow": status.shadow is not None and status.shadow.state == "Failed",
        "explanation": rollback.message,
        "slos": status.to_dict()["slos"],
        "router": spec.target.kind,
        "virtualService" if spec.http_route is None else "httpRoute": spec.target.name,
        "baselineDestination": str(spec.baseline),
        "canaryDestination": str(spec.canary),
    }


def page_error(error: str | None) -> str:
    """What a failed delivery reported, as kept in the page's status."""
    return clip(error or "unknown error")


def page_delivered(dedup_key: str) -> str:
    return f"PagerDuty accepted the trigger (dedup key {dedup_key})"


def page_rejected(error: str) -> str:
    return f"PagerDuty rejected the trigger, not retried: {error}"


def page_retrying(attempts: int, error: str, retry_at: datetime) -> str:
    return f"attempt {attempts} failed, retrying at {format_time(retry_at)}: {error}"


# --- dry run and the closing resolve ---------------------------------------------------------

DRY_RUN_PREFIX: Final = "dry run: "
# What a decision is called when nothing is carried out (the Event's reason and the history's
# action); the other decisions keep their names, their messages say "dry run".
DRY_RUN_ACTIONS: Final[Mapping[str, str]] = {
    "StepAdvanced": "WouldAdvance",
    "Promoted": "WouldPromote",
    "RolledBack": "WouldRollBack",
    "ManualPromote": "WouldPromote",
    "ManualAbort": "WouldRollBack",
}


def dry_run(message: str) -> str:
    """A message of a dry-run rollout: said to be one, once."""
    if message.startswith(DRY_RUN_PREFIX):
        return message
    return clip(DRY_RUN_PREFIX + message)


def dry_run_toggled(dry: bool) -> str:
    if dry:
        return "spec.dryRun turned on: weights are left as they are; the schedule starts again"
    return "spec.dryRun turned off: the schedule starts again at step 1 and moves weights"


def incident_resolving(incident: IncidentStatus, revision: str) -> str:
    return (
        f"revision {revision} promoted: resolving the incident of rolled-back revision "
        f"{incident.revision} (dedup key {incident.dedup_key})"
    )


def incident_resolved(incident: IncidentStatus) -> str:
    return (
        f"PagerDuty resolved the incident of revision {incident.revision} (dedup key "
        f"{incident.dedup_key})"
    )


def incident_not_resolved(error: str) -> str:
    return f"PagerDuty rejected the resolve, not retried: {error}"


def incident_not_tracked(incident: IncidentStatus, limit: int) -> str:
    return (
        f"more than {limit} unresolved incidents: the oldest, of rolled-back revision "
        f"{incident.revision} (dedup key {incident.dedup_key}), is no longer tracked and will "
        "not be resolved on promotion; close it in PagerDuty"
    )


def _who(spec: Spec) -> str:
    return f"{spec.namespace}/{spec.name}" if spec.name else "a CanaryRollout"


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


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


# --- the shadow phase -----------------------------------------------------------------------

SKIPPED_IN_SHADOW: Final = (
    "skipped in the shadow phase (spec.shadow.skipSlos): it needs real outcomes, which "
    "mirrored requests do not have; judged from step 1"
)


def shadow_started(spec: Spec, percent: int, hold: timedelta) -> str:
    skipped = spec.shadow.skip_slos if spec.shadow is not None else ()
    text = (
        f"shadow started: {percent}% of requests mirrored to the canary {spec.canary} for "
        f"{format_duration(hold)}, its answers discarded; the baseline serves everyone"
    )
    if skipped:
        text += f"; not judged in shadow: {', '.join(skipped)}"
    return clip(text)


def shadowing(status: Status, hold: timedelta) -> str:
    """A shadow whose hold is not over."""
    shadow = status.shadow
    if shadow is None:
        return "shadow"
    return (
        f"shadow, {shadow.percent}% mirrored to the canary: holding until "
        f"{format_time(shadow.started_at + hold)}"
    )


def shadow_passed(status: Status, held: timedelta) -> str:
    judged = [slo for slo in status.slos if slo.verdict != "skipped"]
    skipped = [slo.name for slo in status.slos if slo.verdict == "skipped"]
    text = (
        f"shadow passed: {len(judged)} SLOs healthy on mirrored traffic for "
        f"{format_duration(held)}; mirror removed, step 1 starts"
    )
    if skipped:
        text += f" (skipped in shadow: {', '.join(skipped)})"
    return clip(text)


def in_shadow(message: str) -> str:
    """A rollback's explanation when it ended the shadow phase."""
    return clip(f"in shadow (mirror removed, no user was served by the canary): {message}")


def mirror_reasserted(spec: Spec, routed: Sequence[float], percent: int) -> str:
    found = ", ".join(_share(m) for m in routed)
    return (
        f"{spec.target.kind} {spec.target.name}: the mirror to the canary is {found}, not the "
        f"shadow's {percent}%; set again (a mirror never serves users)"
    )
