"""The `pause`, `resume`, `promote` and `abort` commands: writing requests, waiting for them.

pause and resume set spec.paused. promote and abort write the request annotation, which the
operator carries out once and records in status.lastRequest; --wait waits for that record.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from canaryguard.cli.cluster import KIND, Cluster, Conflict
from canaryguard.cli.errors import CliError
from canaryguard.core.durations import format_duration, parse_duration
from canaryguard.core.manual import (
    REQUEST_ANNOTATION,
    REQUESTED_BY_ANNOTATION,
    InvalidRequest,
    ManualRequest,
    RequestAction,
    parse_request,
)
from canaryguard.core.spec import SpecError, parse_spec
from canaryguard.core.status import FINISHED, Status, status_from_dict

# Writing a request is conditional on the resourceVersion read; the operator's status writes
# bump it, so a conflict is retried with a fresh read this many times.
WRITE_ATTEMPTS = 5
WAIT_POLL_SECONDS = 0.5


def new_request_id(now: datetime) -> str:
    """A fresh request id: the time it was made, then random hex (`20240601T120000Z-3fa9c1`)."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def pending_request(obj: Mapping[str, Any], status: Status) -> ManualRequest | None:
    """The request on the object that the operator has not handled yet, if any."""
    request = parse_request((obj.get("metadata") or {}).get("annotations"))
    if not isinstance(request, ManualRequest):
        return None
    if status.last_request is not None and status.last_request.id == request.id:
        return None
    return request


def cmd_set_paused(args: argparse.Namespace, cluster: Cluster) -> str:
    """`pause NAME` and `resume NAME`: set spec.paused to `args.paused`."""
    paused: bool = args.paused
    namespace = cluster.namespace_or_default(args.namespace)
    obj = cluster.get(namespace, args.name)
    who = _who(namespace, args.name)
    status = status_from_dict(obj.get("status"))
    note = ""
    if status.phase in FINISHED:
        note = f" (it has finished, {status.phase}: this changes nothing until a new revision)"
    if bool((obj.get("spec") or {}).get("paused")) == paused:
        return f"{who} is already {'paused' if paused else 'not paused'}{note}"
    cluster.patch_spec(namespace, args.name, {"paused": paused})
    if paused:
        return (
            f"{who} paused: weights hold at their current step; a sustained breach still "
            f"rolls it back{note}"
        )
    return f"{who} resumed: it progresses again at the next analysis tick{note}"


def cmd_request(args: argparse.Namespace, cluster: Cluster) -> str:
    """`promote NAME` and `abort NAME`: write a fresh request annotation for `args.action`,
    unless the rollout is already where it was asked to go; with --wait, report what the
    operator did with it."""
    action: RequestAction = args.action
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        raise CliError(f"--timeout: {exc}") from None
    namespace = cluster.namespace_or_default(args.namespace)
    who = _who(namespace, args.name)
    by: str | None = None
    for _ in range(WRITE_ATTEMPTS):
        obj = cluster.get(namespace, args.name)
        meta = obj.get("metadata", {})
        status = status_from_dict(obj.get("status"))
        revision = _current_revision(obj, status)
        if revision == status.revision and (settled := _settled(who, status, action)):
            return settled
        pending = pending_request(obj, status)
        if pending is not None and pending.action == "abort" and action == "promote":
            raise CliError(
                f"{who} has an abort {pending.who()} (request {pending.id}) not carried out "
                "yet; a promote does not override an abort"
            )
        by = cluster.whoami() if by is None else by
        request = ManualRequest(
            action=action,
            id=new_request_id(datetime.now(UTC)),
            page=bool(args.page),
            reason=" ".join(args.reason.split()),
            by=by,
            revision=revision,
            uid=meta.get("uid"),
        )
        text = request.to_annotation()
        if isinstance(problem := parse_request({REQUEST_ANNOTATION: text}), InvalidRequest):
            raise CliError(problem.problem.removeprefix(f"{REQUEST_ANNOTATION}: "))
        try:
            cluster.annotate(
                namespace,
                args.name,
                # The API server checks requested-by against who is asking (the shipped
                # ValidatingAdmissionPolicy), so the operator records an authenticated name.
                {REQUEST_ANNOTATION: text, REQUESTED_BY_ANNOTATION: by},
                str(meta.get("resourceVersion", "")),
            )
        except Conflict:
            continue  # changed since read (a status write, another request): read again
        break
    else:
        raise CliError(f"{who} kept changing while the request was written; try again")
    if args.wait:
        return _wait_for(cluster, namespace, args.name, who, request, timeout)
    replaced = f"; it replaces the {pending.action} {pending.who()}" if pending else ""
    if action == "promote":
        effect = "gives the canary 100% of the traffic"
    else:
        effect = "sends all traffic back to the baseline"
        effect += ", pages on-call" if request.page else " (no page)"
    note = ""
    if status.phase == "Invalid":
        note = " (the spec is invalid: once it is fixed)"
    return (
        f"{who}: {action} requested (request {request.id}{replaced}); the operator {effect} "
        f"as soon as it sees it{note}; `status {args.name}` shows the outcome"
    )


def _who(namespace: str, name: str) -> str:
    return f"{KIND} {namespace}/{name}"


def _current_revision(obj: Mapping[str, Any], status: Status) -> str | None:
    """The revision the operator is or is about to be at: the spec's, if it parses."""
    try:
        return parse_spec(obj).effective_revision()
    except SpecError:
        return status.revision


def _settled(who: str, status: Status, action: RequestAction) -> str | None:
    """For a finished rollout: a message when it is already where asked (nothing to write);
    a CliError when the request could not change anything."""
    if status.phase == "Promoted":
        if action == "promote":
            return f"{who} is already promoted; nothing to do"
        raise CliError(
            f"{who} was promoted: the canary has all the traffic and abort applies to a running "
            "rollout only; to go back, roll out the previous version as a new revision"
        )
    if status.phase == "RolledBack":
        if action == "abort":
            return f"{who} is already rolled back; nothing to do"
        raise CliError(
            f"{who} was rolled back and stays finished; to ship the canary again, set a new "
            "spec.revision"
        )
    return None


def _wait_for(
    cluster: Cluster,
    namespace: str,
    name: str,
    who: str,
    request: ManualRequest,
    timeout: timedelta,
) -> str:
    """Poll until the operator records the request in status.lastRequest: its outcome."""
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        status = status_from_dict(cluster.get(namespace, name).get("status"))
        done = status.last_request
        if done is not None and done.id == request.id:
            if done.outcome in ("Promoted", "RolledBack"):
                return f"{who} {done.outcome}: {done.message}"
            raise CliError(f"{who}: the request was not carried out: {done.message}")
        if time.monotonic() >= deadline:
            raise CliError(
                f"{who}: the operator has not handled request {request.id} within "
                f"{format_duration(timeout)}; is it running and watching namespace "
                f'"{namespace}"? The request stays and is carried out when it is'
            )
        time.sleep(WAIT_POLL_SECONDS)
