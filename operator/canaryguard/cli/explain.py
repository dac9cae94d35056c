"""The `explain` command: a rollout's state and its latest decisions, in plain sentences."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from canaryguard.cli.cluster import Cluster
from canaryguard.cli.errors import CliError
from canaryguard.cli.render import (
    destination,
    duration,
    hold_text,
    number,
    router_text,
    shadow_text,
    steps,
)
from canaryguard.cli.requests import pending_request
from canaryguard.core import sequential
from canaryguard.core.sequential import Stratum
from canaryguard.core.status import (
    FINISHED,
    HistoryEntry,
    Rollback,
    Status,
    format_time,
    status_from_dict,
)

# Reasons recorded with decisions, in words (others are shown as recorded).
_REASONS = {
    "SLOBreach": "an SLO stayed in breach for its whole window",
    "MetricsOutage": "Prometheus could not be queried for longer than maxMetricsOutage",
    "Manual": "someone asked for it",
    "Spec": "spec.paused was set",
    "InvalidSpec": "the spec is invalid",
    "AddressNotAllowed": "it names an address the operator's installer did not allow",
    "SecretNotAllowed": "it names a Secret not made available to it",
    "QueryFailed": "Prometheus queries failed",
    "QueriesSucceeded": "Prometheus queries succeeded again",
}


def cmd_explain(args: argparse.Namespace, cluster: Cluster) -> str:
    """`explain NAME`."""
    if args.last < 1:
        raise CliError("--last must be at least 1")
    obj = cluster.get(cluster.namespace_or_default(args.namespace), args.name)
    return explain(obj, datetime.now(UTC), last=args.last)


def explain(obj: Mapping[str, Any], now: datetime, last: int = 5) -> str:
    """The rollout's state and its latest decisions, in plain sentences."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec") or {}
    status = status_from_dict(obj.get("status"))
    who = f"{meta.get('namespace')}/{meta.get('name')}"
    canary = destination(spec.get("canary"))
    out = [_state_sentence(who, obj, status, canary, now)]
    out.append(f"It drives the {router_text(spec)}.")
    if (shadow := shadow_text(spec, status, now)) is not None:
        out.append(f"Shadow phase: {shadow}.")
    if (pending := pending_request(obj, status)) is not None:
        out.append(
            f"A manual {pending.action} {pending.who()} (request {pending.id}) is waiting for "
            "the operator to carry it out."
        )
    elif (
        status.phase == "Promoted"
        and status.last_request is not None
        and status.last_request.outcome == "Promoted"
    ):
        out.append(f"It was promoted by hand: {status.last_request.message}.")
    if bool(spec.get("paused")) and status.phase not in FINISHED:
        out.append(
            "It is paused by spec.paused: weights hold, but a sustained breach still rolls "
            "it back. `resume` lets it progress."
        )
    elif status.paused_reason == "MetricsOutage":
        out.append(
            "It paused itself because Prometheus could not be queried for longer than "
            "maxMetricsOutage (onMetricsOutage: pause); it resumes when queries succeed."
        )
    if status.metrics_outage_since is not None and status.phase not in FINISHED:
        out.append(
            f"Prometheus queries have failed since {format_time(status.metrics_outage_since)} "
            f"({duration(now - status.metrics_outage_since)}): weights do not move "
            "forward until they succeed."
        )
    if status.rollback is not None:
        out.append(_rollback_sentence(status.rollback))
        out.append(_page_sentence(status))
    elif status.phase not in FINISHED:
        out += _slo_sentences(spec, status, now)
    out += _evidence_sentences(spec, status)
    spec_valid = status.condition("SpecValid")
    if spec_valid is not None and spec_valid.status == "False":
        out.append(f"The spec is invalid: {spec_valid.message}")
    decisions = list(reversed(status.history))[:last]
    if decisions:
        out += ["", f"Latest decisions, newest first ({len(decisions)} of {len(status.history)}):"]
        out += [f"- {_decision_sentence(h)}" for h in decisions]
    else:
        out += ["", "No decisions yet: the operator has not ticked this rollout."]
    return "\n".join(out)


def _state_sentence(
    who: str, obj: Mapping[str, Any], status: Status, canary: str, now: datetime
) -> str:
    weight = status.canary_weight
    share = "no traffic yet" if weight is None else f"{weight}% of the traffic"
    if status.phase == "Pending":
        return f"{who} has not started: the operator has not ticked it yet."
    if status.phase == "Promoted":
        return f"{who} was promoted: {canary} takes {share}."
    if status.phase == "RolledBack":
        return f"{who} was rolled back: the baseline takes all traffic again."
    if status.phase == "Invalid":
        return f"{who} is Invalid and holds its weights ({share} to {canary})."
    step = ""
    if status.shadowing and status.shadow is not None:
        return (
            f"{who} is {status.phase} in its shadow phase: {canary} gets "
            f"{status.shadow.percent}% of the requests mirrored and serves no user."
        )
    if status.step_index is not None:
        step = f" at step {status.step_index + 1} of {len(steps(obj))}"
    hold = hold_text(obj, status, now)
    return f"{who} is {status.phase}{step}: {canary} takes {share}{hold}."


def _slo_sentences(spec: Mapping[str, Any], status: Status, now: datetime) -> list[str]:
    windows = {
        str(slo.get("name")): str(slo.get("window", "1m"))
        for slo in (spec.get("analysis") or {}).get("slos") or []
        if isinstance(slo, Mapping)
    }
    out = []
    healthy = [s.name for s in status.slos if s.verdict == "healthy"]
    for slo in status.slos:
        if slo.verdict == "breach":
            since = ""
            if slo.breaching_since is not None:
                lasted = duration(now - slo.breaching_since)
                since = f" since {format_time(slo.breaching_since)} ({lasted} so far)"
            baseline = f"baseline {number(slo.baseline)}"
            if slo.baseline is None and slo.baseline_reference is not None:
                baseline = f"baseline reference {number(slo.baseline_reference)}"
            out.append(
                f"SLO {slo.name} is in breach{since}: {slo.reason or 'canary worse than baseline'}"
                f" ({baseline}, canary {number(slo.canary)}). If it lasts its "
                f"{windows.get(slo.name, '1m')} window, the rollout is rolled back."
            )
        elif slo.verdict == "inconclusive":
            out.append(
                f"SLO {slo.name} is inconclusive: {slo.reason or 'not enough evidence'}. The "
                "rollout waits: inconclusive never counts as healthy."
            )
        elif slo.verdict == "skipped":
            out.append(
                f"SLO {slo.name} is not judged in the shadow phase: it needs real outcomes, "
                "which mirrored requests (whose answers nobody sees) do not have. It is "
                "judged from step 1."
            )
        elif slo.verdict == "unavailable":
            out.append(f"SLO {slo.name} could not be queried: {slo.reason or 'query failed'}.")
    if healthy:
        out.append(f"Healthy at the last tick: {', '.join(healthy)}.")
    return out


def _evidence_sentences(spec: Mapping[str, Any], status: Status) -> list[str]:
    """For SLOs with `confidence`: the counts per step and the confidence sequence's bounds
    on the canary's rate as a multiple of the baseline's (core.sequential)."""
    confidences = {
        str(slo.get("name")): slo.get("confidence")
        for slo in (spec.get("analysis") or {}).get("slos") or []
        if isinstance(slo, Mapping)
    }
    out = []
    for slo in status.slos:
        confidence = confidences.get(slo.name)
        if not slo.evidence or not isinstance(confidence, int | float):
            continue
        strata = [
            Stratum(r.baseline_requests, r.baseline_events, r.canary_requests, r.canary_events)
            for r in slo.evidence
        ]
        steps_text = "; ".join(
            f"at {r.weight}% from {format_time(r.since)}: canary {r.canary_events}/"
            f"{r.canary_requests}, baseline {r.baseline_events}/{r.baseline_requests}"
            for r in slo.evidence
        )
        ratio = sequential.rate_ratio(strata)
        low = sequential.bound(strata, "above", confidence)
        high = sequential.bound(strata, "below", confidence)
        estimate = "no events yet" if ratio is None else f"{ratio:.3g}x the baseline's"
        out.append(
            f"SLO {slo.name} evidence since the analysis began (events/requests per step) "
            f"{steps_text}. The canary's rate is {estimate}; at {confidence * 100:g}% "
            f"confidence, valid at every tick, it is above {low:.3g}x and below "
            f"{'infinity' if high == float('inf') else f'{high:.3g}x'} (each bound one-sided)."
        )
    return out


def _rollback_sentence(rollback: Rollback) -> str:
    why = _REASONS.get(rollback.reason, rollback.reason)
    text = f"It was rolled back at {format_time(rollback.at)} because {why}"
    if rollback.reason == "SLOBreach" and rollback.slo:
        text += f": SLO {rollback.slo} had the canary at {number(rollback.canary)} "
        if rollback.baseline_reference_at is not None:
            text += (
                f"against the baseline reference {number(rollback.baseline)} (taken at "
                f"{format_time(rollback.baseline_reference_at)}; the baseline had no traffic)"
            )
        elif rollback.baseline is None:
            text += "with no baseline value to compare (judged by its limit)"
        else:
            text += f"against the baseline's {number(rollback.baseline)}"
        if rollback.margin:
            text += f", beyond {rollback.margin}"
        if rollback.window:
            text += f", for its window of {rollback.window}"
        if rollback.breaching_since is not None:
            text += f" (breaching since {format_time(rollback.breaching_since)})"
    text += "."
    if rollback.message:
        text += f" The operator recorded: {rollback.message}"
    return text


def _page_sentence(status: Status) -> str:
    page = status.page
    if page is None and status.rollback is not None and status.rollback.reason == "Manual":
        return "No page was sent: a manual abort pages only when asked (abort --page)."
    if page is None:
        return "No page was sent (no paging configured, or none needed)."
    if page.state == "Delivered":
        when = format_time(page.delivered_at) if page.delivered_at else "an unrecorded time"
        return (
            f"On-call was paged: PagerDuty accepted the trigger at {when} "
            f"(dedup key {page.dedup_key})."
        )
    if page.state == "Failed":
        return (
            f"The page FAILED and will not be retried: {page.last_error or 'rejected'}. "
            "On-call may not know; fix the routing key or Secret."
        )
    error = f"; last error: {page.last_error}" if page.last_error else ""
    return (
        f"The page is not delivered yet ({page.attempts} attempt(s){error}); the operator "
        "retries it every tick with the same dedup key."
    )


def _decision_sentence(entry: HistoryEntry) -> str:
    where = ""
    if entry.canary_weight is not None:
        step = "" if entry.step_index is None else f"step {entry.step_index + 1}, "
        where = f" [{step}canary {entry.canary_weight}%]"
    if entry.reason in _REASONS:
        because = f" because {_REASONS[entry.reason]}"
    elif entry.reason and entry.reason != entry.action:
        because = f" ({entry.reason})"
    else:
        because = ""
    return f"{format_time(entry.at)} {entry.action}{because}: {entry.message}{where}"
