"""The `status` command: a table of rollouts, or one rollout in detail."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from canaryguard.cli.cluster import KIND, Cluster
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
from canaryguard.core.status import Rollback, Status, format_time, status_from_dict

MESSAGE_WIDTH = 70


def cmd_status(args: argparse.Namespace, cluster: Cluster) -> str:
    """`status [NAME]`."""
    if args.name:
        if getattr(args, "all_namespaces", False):
            raise CliError("a NAME needs one namespace (-n), not -A")
        obj = cluster.get(cluster.namespace_or_default(args.namespace), args.name)
        if args.output == "json":
            return json.dumps(obj, indent=2, sort_keys=True)
        return render_detail(obj, datetime.now(UTC))
    namespace = None if args.all_namespaces else cluster.namespace_or_default(args.namespace)
    items = sorted(
        cluster.list(namespace),
        key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
    )
    if args.output == "json":
        return json.dumps({"items": items}, indent=2, sort_keys=True)
    if not items:
        where = "any namespace" if namespace is None else f'namespace "{namespace}"'
        return f"No {KIND}s in {where}."
    return render_table(items, with_namespace=namespace is None)


def render_table(items: Sequence[Mapping[str, Any]], with_namespace: bool) -> str:
    """One line per rollout: [namespace,] name, phase, step, canary weight, message."""
    header = ["NAME", "PHASE", "STEP", "CANARY", "MESSAGE"]
    if with_namespace:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for obj in items:
        status = status_from_dict(obj.get("status"))
        row = [
            str(obj["metadata"]["name"]),
            status.phase,
            _step_text(obj, status),
            _percent(status.canary_weight),
            _clip(status.message or "-", MESSAGE_WIDTH),
        ]
        if with_namespace:
            row.insert(0, str(obj["metadata"].get("namespace", "")))
        rows.append(row)
    return _columns(rows)


def render_detail(obj: Mapping[str, Any], now: datetime) -> str:
    """One rollout: spec summary, state, SLOs, rollback, page, conditions and history."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec") or {}
    status = status_from_dict(obj.get("status"))
    lines = [
        f"Name:       {meta.get('name')}",
        f"Namespace:  {meta.get('namespace')}",
        f"Route:      {router_text(spec)}: "
        f"{destination(spec.get('baseline'))} (baseline) -> "
        f"{destination(spec.get('canary'))} (canary)",
        f"Revision:   {status.revision or spec.get('revision') or '-'}",
        f"Phase:      {status.phase}{_paused_text(spec, status)}",
        f"Step:       {_step_detail(obj, status, now)}",
        f"Message:    {status.message or '-'}",
    ]
    if (shadow := shadow_text(spec, status, now)) is not None:
        lines.insert(-1, f"Shadow:     {shadow}")
    if status.dry_run:
        lines.append("Dry run:    decisions recorded only: no weight is set, no one is paged")
    if (request := _request_text(obj, status)) is not None:
        lines.append(f"Request:    {request}")
    if status.metrics_outage_since is not None:
        lasted = duration(now - status.metrics_outage_since)
        lines.append(
            f"Metrics:    unavailable since {format_time(status.metrics_outage_since)} ({lasted})"
        )
    lines += ["", "SLOs:"]
    if status.slos:
        rows = [["NAME", "VERDICT", "BASELINE", "CANARY", "SAMPLES (B/C)", "BREACHING SINCE"]]
        for slo in status.slos:
            rows.append(
                [
                    slo.name,
                    slo.verdict,
                    number(slo.baseline),
                    number(slo.canary),
                    f"{number(slo.baseline_samples)}/{number(slo.canary_samples)}",
                    _since(slo.breaching_since, now),
                ]
            )
        lines += _indent(_columns(rows))
        lines += [f"  {slo.name}: {slo.reason}" for slo in status.slos if slo.reason]
    else:
        lines.append("  (not judged yet)")
    if status.rollback is not None:
        lines += ["", "Rollback:", *_indent(_rollback_text(status.rollback))]
    if status.page is not None:
        page = status.page
        lines += [
            "",
            "Page:",
            f"  state {page.state}, {page.attempts} attempt(s), dedup key {page.dedup_key}",
        ]
        if page.delivered_at is not None:
            lines.append(f"  delivered at {format_time(page.delivered_at)}")
        if page.last_error:
            lines.append(f"  last error: {page.last_error}")
    if status.incidents:
        plural = "s" if len(status.incidents) > 1 else ""
        lines += ["", f"Previous incident{plural} (resolved when this revision is promoted):"]
    for incident in status.incidents:
        lines.append(
            f"  state {incident.state}, revision {incident.revision}, dedup key "
            f"{incident.dedup_key}"
        )
        if incident.resolved_at is not None:
            lines.append(
                f"  resolved at {format_time(incident.resolved_at)} by revision "
                f"{incident.resolved_by}"
            )
        if incident.last_error:
            lines.append(f"  last error: {incident.last_error}")
    if status.conditions:
        rows = [["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]]
        for c in status.conditions:
            rows.append(
                [
                    c.type,
                    c.status,
                    c.reason or "-",
                    format_time(c.last_transition_time) or "-",
                    _clip(c.message or "-", MESSAGE_WIDTH),
                ]
            )
        lines += ["", "Conditions:", *_indent(_columns(rows))]
    lines += ["", "History (oldest first):"]
    if status.history:
        rows = [["AT", "ACTION", "REASON", "STEP", "CANARY", "MESSAGE"]]
        for h in status.history:
            rows.append(
                [
                    format_time(h.at) or "-",
                    h.action,
                    h.reason or "-",
                    "-" if h.step_index is None else str(h.step_index + 1),
                    _percent(h.canary_weight),
                    _clip(h.message or "-", MESSAGE_WIDTH),
                ]
            )
        lines += _indent(_columns(rows))
    else:
        lines.append("  (no decisions yet)")
    return "\n".join(lines)


def _step_text(obj: Mapping[str, Any], status: Status) -> str:
    if status.shadowing:
        return "shadow"
    if status.step_index is None:
        return "-"
    return f"{status.step_index + 1}/{len(steps(obj))}"


def _step_detail(obj: Mapping[str, Any], status: Status, now: datetime) -> str:
    if status.step_index is None:
        return "-"
    started = ""
    if status.step_started_at is not None:
        started = f", since {format_time(status.step_started_at)}"
    return (
        f"{_step_text(obj, status)}, canary {_percent(status.canary_weight)}{started}"
        f"{hold_text(obj, status, now)}"
    )


def _paused_text(spec: Mapping[str, Any], status: Status) -> str:
    if status.paused_reason == "MetricsOutage":
        return " (paused: metrics outage)"
    if spec.get("paused"):
        return " (spec.paused)"
    return ""


def _rollback_text(rollback: Rollback) -> str:
    rows = [
        ["at", format_time(rollback.at) or "-"],
        ["reason", rollback.reason],
        ["slo", rollback.slo or "-"],
        ["baseline", number(rollback.baseline)],
        ["canary", number(rollback.canary)],
        ["margin", rollback.margin or "-"],
        ["window", rollback.window or "-"],
        ["since", format_time(rollback.breaching_since) or "-"],
        ["message", rollback.message or "-"],
    ]
    return _columns(rows)


def _request_text(obj: Mapping[str, Any], status: Status) -> str | None:
    """The request waiting for the operator, else the last one it handled."""
    pending = pending_request(obj, status)
    if pending is not None:
        return f"{pending.action} {pending.who()} (request {pending.id}): not carried out yet"
    done = status.last_request
    if done is None:
        return None
    return f"{done.outcome} at {format_time(done.at)} (request {done.id}): {done.message}"


def _percent(weight: int | None) -> str:
    return "-" if weight is None else f"{weight}%"


def _since(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    return f"{format_time(moment)} ({duration(now - moment)} ago)"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()]
