"""The commands people run against a cluster: `status`, `explain`, `pause`, `resume`,
`promote`, `abort`.

They read CanaryRollouts (status is the operator's record of everything it decided) and write
only `spec.paused` and the manual request annotation `canaryguard.io/request` (which the
operator carries out once and records in `status.lastRequest`). Every failure a user can
cause or meet (no kubeconfig, an unreachable or refusing API server, a missing rollout, the
CRD not installed) ends in one `error:` line and exit code 1, never a traceback. The same
commands serve `canaryguard` and the kubectl plugin `kubectl canary`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from canaryguard.adapters.kube import GROUP, PLURAL, VERSION
from canaryguard.core.durations import format_duration, parse_duration
from canaryguard.core.manual import (
    REQUEST_ANNOTATION,
    InvalidRequest,
    ManualRequest,
    RequestAction,
    parse_request,
)
from canaryguard.core.spec import SpecError, parse_spec
from canaryguard.core.status import (
    HistoryEntry,
    Rollback,
    Status,
    format_time,
    status_from_dict,
)

KIND = "CanaryRollout"
# (connect, read) seconds: a CLI should answer or fail fast, not hang on a dead network.
REQUEST_TIMEOUT = (5.0, 20.0)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MESSAGE_WIDTH = 70
# Writing a request is conditional on the resourceVersion read; the operator's status writes
# bump it, so a conflict is retried with a fresh read this many times.
WRITE_ATTEMPTS = 5
WAIT_POLL_SECONDS = 0.5
T = TypeVar("T")


class CliError(Exception):
    """A failure to report in one line, without a traceback."""


class Conflict(CliError):
    """The object changed since it was read (HTTP 409)."""


# --- the parser -----------------------------------------------------------------------------


def new_request_id(now: datetime) -> str:
    """A fresh request id: the time it was made, then random hex (`20240601T120000Z-3fa9c1`)."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add status, explain, pause, resume, promote and abort to the `canaryguard` parser."""
    status = sub.add_parser(
        "status",
        help="show rollouts (a table, or one in detail)",
        description=(
            "Without NAME: a table of the rollouts in the namespace (or all, with -A): phase, "
            "step, canary weight and what each is doing. With NAME: that rollout in detail, "
            "with each SLO's baseline and canary values, samples, verdict and breach start, "
            "the rollback and page if any, conditions and recent decisions."
        ),
    )
    status.add_argument("name", nargs="?", help="a CanaryRollout (default: all of them)")
    _connection_flags(status, all_namespaces=True)
    status.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text (default) or the resource(s) as JSON",
    )
    status.set_defaults(handler=cmd_status)

    explain = sub.add_parser(
        "explain",
        help="say in words why the last decisions were taken",
        description=(
            "Explain a rollout from its status: where it is and what it waits for, why it "
            "was rolled back (SLO, values, margin, window) and whether on-call was paged, "
            "then its latest decisions, newest first."
        ),
    )
    explain.add_argument("name", help="the CanaryRollout")
    _connection_flags(explain)
    explain.add_argument(
        "--last", type=int, default=5, metavar="N", help="decisions to explain (default 5)"
    )
    explain.set_defaults(handler=cmd_explain)

    for verb, paused, blurb in (
        ("pause", True, "stop progression: weights hold (a sustained breach still rolls back)"),
        ("resume", False, "let a paused rollout progress again"),
    ):
        cmd = sub.add_parser(
            verb,
            help=blurb,
            description=f"Set spec.paused={str(paused).lower()}: {blurb}.",
        )
        cmd.add_argument("name", help="the CanaryRollout")
        _connection_flags(cmd)
        cmd.set_defaults(handler=cmd_pause if paused else cmd_resume)

    promote = sub.add_parser(
        "promote",
        help="skip the remaining steps: all traffic to the canary, phase Promoted",
        description=(
            "Ask the operator to promote the rollout now: the canary gets 100% of the "
            "traffic and the phase becomes Promoted, skipping the remaining steps and their "
            f"analysis. The request is the annotation {REQUEST_ANNOTATION}; the operator "
            "carries it out once, as soon as it sees it, and records it in status.lastRequest."
        ),
    )
    abort = sub.add_parser(
        "abort",
        help="roll back now: all traffic to the baseline, phase RolledBack (no page unless --page)",
        description=(
            "Ask the operator to roll the rollout back now: the baseline gets 100% of the "
            "traffic, the phase becomes RolledBack with reason Manual, and on-call is paged "
            f"only with --page. The request is the annotation {REQUEST_ANNOTATION}; the "
            "operator carries it out once, as soon as it sees it, and records it in "
            "status.lastRequest."
        ),
    )
    abort.add_argument(
        "--page", action="store_true", help="also page on-call (spec.paging) about the abort"
    )
    for cmd in (promote, abort):
        cmd.add_argument("name", help="the CanaryRollout")
        _connection_flags(cmd)
        cmd.add_argument("--reason", default="", help="why, for the record (events, status, page)")
        cmd.add_argument(
            "--wait",
            action="store_true",
            help="wait until the operator has carried the request out, and print the outcome",
        )
        cmd.add_argument(
            "--timeout",
            default="1m",
            metavar="DURATION",
            help="how long --wait waits (default 1m)",
        )
    promote.set_defaults(handler=cmd_promote, action="promote", page=False)
    abort.set_defaults(handler=cmd_abort, action="abort")


def _connection_flags(parser: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, then in-cluster)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "-n", "--namespace", help="namespace (default: the context's, else default)"
    )
    if all_namespaces:
        parser.add_argument(
            "-A", "--all-namespaces", action="store_true", help="rollouts of every namespace"
        )


def run_command(args: argparse.Namespace) -> int:
    """Run the subcommand chosen on the command line; errors become one line on stderr."""
    handler: Callable[[argparse.Namespace, Cluster], str] = args.handler
    try:
        cluster = connect(args.kubeconfig, args.context)
        output = handler(args, cluster)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if output:
        print(output)
    return 0


# --- talking to the cluster -----------------------------------------------------------------


@dataclass
class Cluster:
    """An API client, the server it talks to and the namespace used when none is given."""

    api: Any  # kubernetes.client.CustomObjectsApi (untyped)
    server: str
    namespace: str
    user: str = ""  # the kubeconfig context's user name, if any

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the API; turn every failure into a CliError that says what could not be done."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(_api_error(exc, what)) from None
            raise CliError(_api_error(exc, what)) from None
        except (HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CliError(f"cannot reach the API server at {self.server}: {reason}") from None

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        what = f'get {KIND} "{name}" in namespace "{namespace}"'
        obj: dict[str, Any] = self.call(
            what, self.api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
        return obj

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            what = f"list {KIND}s in all namespaces"
            result = self.call(what, self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            what = f'list {KIND}s in namespace "{namespace}"'
            result = self.call(
                what, self.api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def patch_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        what = f'patch {KIND} "{name}" in namespace "{namespace}"'
        obj: dict[str, Any] = self.call(
            what,
            self.api.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": dict(spec)},
        )
        return obj

    def annotate(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> dict[str, Any]:
        """Merge annotations in, only if the object is still at `resource_version` (else
        Conflict)."""
        what = f'annotate {KIND} "{name}" in namespace "{namespace}"'
        metadata = {"annotations": dict(annotations), "resourceVersion": resource_version}
        obj: dict[str, Any] = self.call(
            what,
            self.api.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": metadata},
        )
        return obj

    def whoami(self) -> str:
        """The user name the API server knows these credentials by (a SelfSubjectReview),
        else the kubeconfig's user name; "" when neither is known. Best effort: a request
        is worth more than its signature."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            review = client.AuthenticationV1Api(self.api.api_client).create_self_subject_review(
                client.V1SelfSubjectReview(), _request_timeout=REQUEST_TIMEOUT
            )
            info = review.status.user_info if review.status is not None else None
            name = info.username if info is not None else None
        except (ApiException, HTTPError, OSError, ValueError):
            name = None
        return str(name or self.user)


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """A client from the kubeconfig (flag, then KUBECONFIG, then ~/.kube/config), else the
    pod's service account. The client retries nothing by itself: one attempt, one answer."""
    from kubernetes import client, config

    if kubeconfig and not Path(kubeconfig).is_file():
        raise CliError(f"kubeconfig {kubeconfig} does not exist")
    cfg = client.Configuration()
    cfg.retries = 0
    namespace = "default"
    user = ""
    has_file = bool(kubeconfig or os.environ.get("KUBECONFIG")) or (
        Path("~/.kube/config").expanduser().is_file()
    )
    try:
        if has_file:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig
            )
            chosen = next((c for c in contexts if c.get("name") == context), None) or active
            namespace = (chosen or {}).get("context", {}).get("namespace") or namespace
            user = str((chosen or {}).get("context", {}).get("user") or "")
        else:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            if SERVICE_ACCOUNT_NAMESPACE.is_file():
                namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or namespace
    except config.ConfigException as exc:
        hint = "" if has_file else "; set --kubeconfig or KUBECONFIG"
        raise CliError(f"no cluster access: {exc}{hint}") from None
    cfg.retries = 0
    api = client.CustomObjectsApi(client.ApiClient(cfg))
    return Cluster(api=api, server=str(cfg.host), namespace=namespace, user=user)


def _api_error(exc: Any, what: str) -> str:
    status = getattr(exc, "status", None)
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(getattr(exc, "body", None) or "{}")
        body = parsed if isinstance(parsed, dict) else {}
    except (TypeError, ValueError):
        pass
    message = body.get("message") or getattr(exc, "reason", "") or ""
    if status == 404:
        details = body.get("details") or {}
        if body.get("kind") == "Status" and details.get("name"):
            return f'{KIND} "{details["name"]}" not found' + _in_namespace(what)
        return (
            f"cannot {what}: the {KIND} API ({GROUP}/{VERSION}) is not installed on this "
            "cluster (kubectl apply -k manifests/ installs it)"
        )
    if status == 401:
        return f"cannot {what}: not authenticated (401); check the kubeconfig's credentials"
    if status == 403:
        return f"cannot {what}: forbidden (403): {message}"
    if status == 0 or status is None:
        return f"cannot {what}: {message or exc}"
    return f"cannot {what}: the API server answered {status}: {message}"


def _in_namespace(what: str) -> str:
    marker = 'in namespace "'
    return " " + what[what.index(marker) :] if marker in what else ""


def _namespace(args: argparse.Namespace, cluster: Cluster) -> str:
    return str(args.namespace or cluster.namespace)


# --- status ---------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, cluster: Cluster) -> str:
    """`status [NAME]`."""
    if args.name:
        if getattr(args, "all_namespaces", False):
            raise CliError("a NAME needs one namespace (-n), not -A")
        obj = cluster.get(_namespace(args, cluster), args.name)
        if args.output == "json":
            return json.dumps(obj, indent=2, sort_keys=True)
        return render_detail(obj, datetime.now(UTC))
    namespace = None if args.all_namespaces else _namespace(args, cluster)
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
            "-" if status.canary_weight is None else f"{status.canary_weight}%",
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
        f"Route:      VirtualService {(spec.get('virtualService') or {}).get('name', '?')}: "
        f"{_destination(spec.get('baseline'))} (baseline) -> "
        f"{_destination(spec.get('canary'))} (canary)",
        f"Revision:   {status.revision or spec.get('revision') or '-'}",
        f"Phase:      {status.phase}{_paused_text(spec, status)}",
        f"Step:       {_step_detail(obj, status, now)}",
        f"Message:    {status.message or '-'}",
    ]
    if (request := _request_text(obj, status)) is not None:
        lines.append(f"Request:    {request}")
    if status.metrics_outage_since is not None:
        lasted = _dur(now - status.metrics_outage_since)
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
                    _num(slo.baseline),
                    _num(slo.canary),
                    f"{_num(slo.baseline_samples)}/{_num(slo.canary_samples)}",
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
                    "-" if h.canary_weight is None else f"{h.canary_weight}%",
                    _clip(h.message or "-", MESSAGE_WIDTH),
                ]
            )
        lines += _indent(_columns(rows))
    else:
        lines.append("  (no decisions yet)")
    return "\n".join(lines)


# --- explain --------------------------------------------------------------------------------

# Reasons recorded with decisions, in words (others are shown as recorded).
_REASONS = {
    "SLOBreach": "an SLO stayed in breach for its whole window",
    "MetricsOutage": "Prometheus could not be queried for longer than maxMetricsOutage",
    "Manual": "someone asked for it",
    "Spec": "spec.paused was set",
    "InvalidSpec": "the spec is invalid",
    "QueryFailed": "Prometheus queries failed",
    "QueriesSucceeded": "Prometheus queries succeeded again",
}


def cmd_explain(args: argparse.Namespace, cluster: Cluster) -> str:
    """`explain NAME`."""
    if args.last < 1:
        raise CliError("--last must be at least 1")
    obj = cluster.get(_namespace(args, cluster), args.name)
    return explain(obj, datetime.now(UTC), last=args.last)


def explain(obj: Mapping[str, Any], now: datetime, last: int = 5) -> str:
    """The rollout's state and its latest decisions, in plain sentences."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec") or {}
    status = status_from_dict(obj.get("status"))
    who = f"{meta.get('namespace')}/{meta.get('name')}"
    canary = _destination(spec.get("canary"))
    out = [_state_sentence(who, obj, status, canary, now)]
    if (pending := _pending_request(obj, status)) is not None:
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
    if bool(spec.get("paused")) and status.phase not in ("Promoted", "RolledBack"):
        out.append(
            "It is paused by spec.paused: weights hold, but a sustained breach still rolls "
            "it back. `resume` lets it progress."
        )
    elif status.paused_reason == "MetricsOutage":
        out.append(
            "It paused itself because Prometheus could not be queried for longer than "
            "maxMetricsOutage (onMetricsOutage: pause); it resumes when queries succeed."
        )
    if status.metrics_outage_since is not None and status.phase not in ("Promoted", "RolledBack"):
        out.append(
            f"Prometheus queries have failed since {format_time(status.metrics_outage_since)} "
            f"({_dur(now - status.metrics_outage_since)}): weights do not move "
            "forward until they succeed."
        )
    if status.rollback is not None:
        out.append(_rollback_sentence(status.rollback))
        out.append(_page_sentence(status))
    elif status.phase not in ("Promoted", "RolledBack"):
        out += _slo_sentences(spec, status, now)
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
    steps = _steps(obj)
    if status.phase == "Pending":
        return f"{who} has not started: the operator has not ticked it yet."
    if status.phase == "Promoted":
        return f"{who} was promoted: {canary} takes {share}."
    if status.phase == "RolledBack":
        return f"{who} was rolled back: the baseline takes all traffic again."
    if status.phase == "Invalid":
        return f"{who} is Invalid and holds its weights ({share} to {canary})."
    step = "" if status.step_index is None else f" at step {status.step_index + 1} of {len(steps)}"
    hold = _hold_text(obj, status, now)
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
                lasted = _dur(now - slo.breaching_since)
                since = f" since {format_time(slo.breaching_since)} ({lasted} so far)"
            baseline = f"baseline {_num(slo.baseline)}"
            if slo.baseline is None and slo.baseline_reference is not None:
                baseline = f"baseline reference {_num(slo.baseline_reference)}"
            out.append(
                f"SLO {slo.name} is in breach{since}: {slo.reason or 'canary worse than baseline'}"
                f" ({baseline}, canary {_num(slo.canary)}). If it lasts its "
                f"{windows.get(slo.name, '1m')} window, the rollout is rolled back."
            )
        elif slo.verdict == "inconclusive":
            out.append(
                f"SLO {slo.name} is inconclusive: {slo.reason or 'not enough evidence'}. The "
                "rollout waits: inconclusive never counts as healthy."
            )
        elif slo.verdict == "unavailable":
            out.append(f"SLO {slo.name} could not be queried: {slo.reason or 'query failed'}.")
    if healthy:
        out.append(f"Healthy at the last tick: {', '.join(healthy)}.")
    return out


def _rollback_sentence(rollback: Rollback) -> str:
    why = _REASONS.get(rollback.reason, rollback.reason)
    text = f"It was rolled back at {format_time(rollback.at)} because {why}"
    if rollback.reason == "SLOBreach" and rollback.slo:
        text += f": SLO {rollback.slo} had the canary at {_num(rollback.canary)} "
        if rollback.baseline_reference_at is not None:
            text += (
                f"against the baseline reference {_num(rollback.baseline)} (taken at "
                f"{format_time(rollback.baseline_reference_at)}; the baseline had no traffic)"
            )
        elif rollback.baseline is None:
            text += "with no baseline value to compare (judged by its limit)"
        else:
            text += f"against the baseline's {_num(rollback.baseline)}"
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


# --- pause and resume -----------------------------------------------------------------------


def cmd_pause(args: argparse.Namespace, cluster: Cluster) -> str:
    """`pause NAME`."""
    return _set_paused(args, cluster, True)


def cmd_resume(args: argparse.Namespace, cluster: Cluster) -> str:
    """`resume NAME`."""
    return _set_paused(args, cluster, False)


def _set_paused(args: argparse.Namespace, cluster: Cluster, paused: bool) -> str:
    namespace = _namespace(args, cluster)
    obj = cluster.get(namespace, args.name)
    who = f"{KIND} {namespace}/{args.name}"
    status = status_from_dict(obj.get("status"))
    note = ""
    if status.phase in ("Promoted", "RolledBack"):
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


# --- promote and abort ------------------------------------------------------------------------


def cmd_promote(args: argparse.Namespace, cluster: Cluster) -> str:
    """`promote NAME`."""
    return _request(args, cluster, "promote")


def cmd_abort(args: argparse.Namespace, cluster: Cluster) -> str:
    """`abort NAME`."""
    return _request(args, cluster, "abort")


def _request(args: argparse.Namespace, cluster: Cluster, action: RequestAction) -> str:
    """Write a fresh request annotation, unless the rollout is already where it was asked to
    go; with --wait, report what the operator did with it."""
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        raise CliError(f"--timeout: {exc}") from None
    namespace = _namespace(args, cluster)
    who = f"{KIND} {namespace}/{args.name}"
    by: str | None = None
    for _ in range(WRITE_ATTEMPTS):
        obj = cluster.get(namespace, args.name)
        meta = obj.get("metadata", {})
        status = status_from_dict(obj.get("status"))
        revision = _current_revision(obj, status)
        if revision == status.revision and (settled := _settled(who, status, action)):
            return settled
        pending = _pending_request(obj, status)
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
                {REQUEST_ANNOTATION: text},
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


def _pending_request(obj: Mapping[str, Any], status: Status) -> ManualRequest | None:
    """The request on the object that the operator has not handled yet, if any."""
    request = parse_request((obj.get("metadata") or {}).get("annotations"))
    if not isinstance(request, ManualRequest):
        return None
    if status.last_request is not None and status.last_request.id == request.id:
        return None
    return request


def _wait_for(
    cluster: Cluster,
    namespace: str,
    name: str,
    who: str,
    request: ManualRequest,
    timeout: timedelta,
) -> str:
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


# --- formatting -----------------------------------------------------------------------------


def _steps(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    steps = (obj.get("spec") or {}).get("steps")
    return [s for s in steps if isinstance(s, Mapping)] if isinstance(steps, list) else []


def _step_text(obj: Mapping[str, Any], status: Status) -> str:
    if status.step_index is None:
        return "-"
    return f"{status.step_index + 1}/{len(_steps(obj))}"


def _hold(obj: Mapping[str, Any], status: Status) -> timedelta | None:
    steps = _steps(obj)
    if status.step_index is None or not 0 <= status.step_index < len(steps):
        return None
    try:
        return parse_duration(str(steps[status.step_index].get("hold", "0s")))
    except ValueError:
        return None


def _hold_text(obj: Mapping[str, Any], status: Status, now: datetime) -> str:
    hold = _hold(obj, status)
    if hold is None or status.step_started_at is None:
        return ""
    held = now - status.step_started_at
    if held >= hold:
        return f", held {_dur(held)} (hold {_dur(hold)} done)"
    return f", held {_dur(held)} of its {_dur(hold)} hold"


def _step_detail(obj: Mapping[str, Any], status: Status, now: datetime) -> str:
    if status.step_index is None:
        return "-"
    weight = "-" if status.canary_weight is None else f"{status.canary_weight}%"
    started = ""
    if status.step_started_at is not None:
        started = f", since {format_time(status.step_started_at)}"
    return f"{_step_text(obj, status)}, canary {weight}{started}{_hold_text(obj, status, now)}"


def _paused_text(spec: Mapping[str, Any], status: Status) -> str:
    if status.paused_reason == "MetricsOutage":
        return " (paused: metrics outage)"
    if spec.get("paused"):
        return " (spec.paused)"
    return ""


def _destination(value: Any) -> str:
    if not isinstance(value, Mapping):
        return "?"
    host = str(value.get("host", "?"))
    return f"{host}/{value['subset']}" if value.get("subset") else host


def _rollback_text(rollback: Rollback) -> str:
    rows = [
        ["at", format_time(rollback.at) or "-"],
        ["reason", rollback.reason],
        ["slo", rollback.slo or "-"],
        ["baseline", _num(rollback.baseline)],
        ["canary", _num(rollback.canary)],
        ["margin", rollback.margin or "-"],
        ["window", rollback.window or "-"],
        ["since", format_time(rollback.breaching_since) or "-"],
        ["message", rollback.message or "-"],
    ]
    return _columns(rows)


def _request_text(obj: Mapping[str, Any], status: Status) -> str | None:
    """The request waiting for the operator, else the last one it handled."""
    pending = _pending_request(obj, status)
    if pending is not None:
        return f"{pending.action} {pending.who()} (request {pending.id}): not carried out yet"
    done = status.last_request
    if done is None:
        return None
    return f"{done.outcome} at {format_time(done.at)} (request {done.id}): {done.message}"


def _dur(value: timedelta) -> str:
    """A duration for people: whole seconds, never negative (clocks differ a little)."""
    seconds = max(0, round(value.total_seconds()))
    return format_duration(timedelta(seconds=seconds))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _since(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    return f"{format_time(moment)} ({_dur(now - moment)} ago)"


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
