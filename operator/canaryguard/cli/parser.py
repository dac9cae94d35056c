"""The argument parser: `run` and its flags, and the commands people run against a cluster."""

from __future__ import annotations

import argparse
from datetime import timedelta

from canaryguard.cli.backtest import add_backtest
from canaryguard.cli.explain import cmd_explain
from canaryguard.cli.plan import cmd_plan
from canaryguard.cli.requests import cmd_request, cmd_set_paused
from canaryguard.cli.status import cmd_status
from canaryguard.core.access import (
    SECRET_OPT_IN,
    Address,
    AddressError,
    parse_address,
    strip_credentials,
)
from canaryguard.core.durations import parse_duration
from canaryguard.core.manual import REQUEST_ANNOTATION
from canaryguard.core.paging import DEFAULT_EVENTS_URL
from canaryguard.runtime.sharding import Shard, parse_shard


def build_parser(prog: str = "canaryguard") -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Safe canary rollouts for ML services on Istio, judged on Prometheus.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator", description="Run the operator.")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then KUBECONFIG)")
    run.add_argument(
        "--liveness",
        type=_address,
        default=("0.0.0.0", 8080),  # noqa: S104
        metavar="HOST:PORT",
        help="kopf's liveness endpoint, served at /healthz (default 0.0.0.0:8080; off)",
    )
    run.add_argument(
        "--metrics",
        type=_address,
        default=("0.0.0.0", 9095),  # noqa: S104
        metavar="HOST:PORT",
        help="Prometheus metrics endpoint, served at /metrics (default 0.0.0.0:9095; off)",
    )
    run.add_argument(
        "--allow-prometheus",
        type=_addresses,
        action="extend",
        metavar="URL",
        help=(
            "a Prometheus address rollouts may query, and so send the Secret their "
            "headersSecretRef names to: scheme, host and port must match, and the path "
            "start with this one's (repeatable; one value may list several, space-separated; "
            "default: none, so every rollout is Invalid until one is allowed)"
        ),
    )
    run.add_argument(
        "--allow-pagerduty",
        type=_addresses,
        action="extend",
        metavar="URL",
        help=(
            "a PagerDuty Events API URL rollouts may page through, sending the routing key "
            "their routingKeySecretRef names (repeatable, space-separated lists too; default: "
            f"{DEFAULT_EVENTS_URL} only). Secrets are read only when their annotation "
            f"{SECRET_OPT_IN} names the rollout"
        ),
    )
    run.add_argument("--log-format", choices=("json", "text"), default="json")
    run.add_argument(
        "--concurrency",
        type=int,
        default=128,
        help=(
            "ticks in flight at once, not counting ticks waiting for a batched query "
            "(default 128: most of a tick in flight is waiting on the API server)"
        ),
    )
    run.add_argument(
        "--status-heartbeat",
        type=_duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help=(
            "write a rollout's status when only its SLO values changed at most this often "
            "(e.g. 60s, 5m; default 60s); phase, step, verdicts, breach and outage starts, "
            "decisions and pages are written at once"
        ),
    )
    run.add_argument(
        "--batch-queries",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "answer the builtin SLO queries of rollouts that tick close together with one "
            "Prometheus query per address, credentials and query shape (default: on)"
        ),
    )
    run.add_argument(
        "--batch-window",
        type=_duration,
        default=timedelta(milliseconds=100),
        metavar="DURATION",
        help=(
            "how long a batch waits for the next tick's queries while ticks are on their "
            "way, and at most ten times that in all (default 100ms; a lone tick never waits)"
        ),
    )
    run.add_argument(
        "--cache-routes",
        "--cache-virtualservices",
        dest="cache_routes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "read VirtualServices and HTTPRoutes from a watch (list and watch permissions) "
            "instead of a GET per tick; weight writes still read the object first "
            "(default: on)"
        ),
    )
    run.add_argument(
        "--shard",
        type=_shard,
        default=Shard(),
        metavar="I/N",
        help=(
            "tick only the rollouts of shard I of N (by a hash of namespace/name), so N "
            "processes with --shard 0/N ... N-1/N carry every rollout once (default 0/1)"
        ),
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_election_flags(run)
    _add_cluster_commands(sub)
    _add_plan_command(sub)
    add_backtest(sub)
    return parser


def _add_election_flags(run: argparse.ArgumentParser) -> None:
    election = run.add_argument_group(
        "leader election",
        "With several replicas, only the holder of a coordination.k8s.io/v1 Lease ticks "
        "rollouts; the others keep watching and take over when it stops renewing.",
    )
    election.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="tick only while holding the Lease (default off: this process always ticks)",
    )
    election.add_argument(
        "--lease-name",
        help="the Lease's name (default canaryguard; with --shard I/N, canaryguard-shard-I-of-N, "
        "so the replicas of each shard elect their own leader)",
    )
    election.add_argument(
        "--lease-namespace",
        help="the Lease's namespace (default: $POD_NAMESPACE, else the service account's)",
    )
    election.add_argument(
        "--lease-duration",
        type=_whole_seconds,
        default=15,
        metavar="DURATION",
        help="how long a Lease not renewed lasts before a standby takes over; the leader "
        "renews every third of it and stops ticking after two thirds without renewal "
        "(default 15s)",
    )
    election.add_argument(
        "--leader-identity",
        help="this replica's name in the Lease (default: $POD_NAME, else host name and a "
        "random suffix)",
    )


def _whole_seconds(text: str) -> int:
    """A duration of whole seconds, at least 1s (a Lease's duration is whole seconds)."""
    try:
        value = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected whole seconds, at least 1s, got {text!r}")
    return int(value)


def _duration(text: str) -> timedelta:
    """A duration as rollouts write them (`30s`, `5m`, `1h30m`)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _address(text: str) -> tuple[str, int] | None:
    """`host:port`, or `off`."""
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or off, got {text!r}")
    return host or "0.0.0.0", int(port)  # noqa: S104 - in a pod, probes come from outside


def _addresses(text: str) -> list[Address]:
    """Space-separated URL prefixes (none for an empty value), each parsed as the operator
    will match it."""
    addresses = []
    for url in text.split():
        try:
            addresses.append(parse_address(url))
        except AddressError as exc:
            raise argparse.ArgumentTypeError(f"{strip_credentials(url)}: {exc}") from None
    return addresses


def _add_plan_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add plan: a simulation of a rollout manifest, without a cluster."""
    plan = sub.add_parser(
        "plan",
        help="simulate a rollout: what it catches, how fast, how often it cries wolf",
        description=(
            "Simulate a CanaryRollout manifest through the real engine at a request rate "
            "and baseline error rate (Poisson requests, binomial errors): per step, the "
            "smallest regression caught by its end and the chance of rolling back an "
            "identical canary; the median time to catch 2x; warnings for holds too short "
            "to gather evidence and margins that sit on a likely regression."
        ),
    )
    plan.add_argument("-f", "--filename", required=True, help="the manifest (- for stdin)")
    plan.add_argument("--rps", type=float, help="requests per second, in all")
    plan.add_argument(
        "--baseline-error-rate",
        type=float,
        metavar="R",
        help="the baseline's share of failing requests (0.005 is 0.5%%)",
    )
    plan.add_argument(
        "--prometheus",
        metavar="URL",
        help=(
            "read what is not typed from this Prometheus: the service's request rate and the "
            "baseline's error share, with the rollout's own selector and error codes"
        ),
    )
    plan.add_argument("--over", default="1h", help="the range read from Prometheus (default 1h)")
    plan.add_argument(
        "--rollouts", type=int, default=200, help="simulated rollouts per regression (200)"
    )
    plan.add_argument("--seed", type=int, default=1, help="random seed (1)")
    plan.add_argument("-o", "--output", choices=("text", "json"), default="text")
    plan.set_defaults(handler=cmd_plan)


def _add_cluster_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add status, explain, pause, resume, promote and abort."""
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
        cmd.set_defaults(handler=cmd_set_paused, paused=paused)

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
    promote.set_defaults(handler=cmd_request, action="promote", page=False)
    abort.set_defaults(handler=cmd_request, action="abort")


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
