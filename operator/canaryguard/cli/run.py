"""The `run` command: the operator in this process, until it is signalled to stop."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime (kopf, prometheus_client) is imported only to run
    from canaryguard.runtime.controller import Settings
    from canaryguard.runtime.leader import Election
    from canaryguard.runtime.sharding import Shard

log = logging.getLogger("canaryguard")

# Where a pod finds its own namespace when the downward API does not say.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def operator_settings(args: argparse.Namespace) -> Settings:
    """The controller's settings from `run`'s flags. An allowlist flag not given at all keeps
    its default (no Prometheus; PagerDuty's public Events API); given empty, it allows
    nothing."""
    from canaryguard.core.access import Allowlist
    from canaryguard.runtime.controller import (
        ALLOW_PAGERDUTY_FLAG,
        ALLOW_PROMETHEUS_FLAG,
        DEFAULT_ALLOW_PAGERDUTY,
        DEFAULT_ALLOW_PROMETHEUS,
        Settings,
    )

    return Settings(
        concurrency=args.concurrency,
        namespaces=tuple(args.namespace),
        status_heartbeat=args.status_heartbeat,
        batch_queries=args.batch_queries,
        batch_window=args.batch_window.total_seconds(),
        cache_routes=args.cache_routes,
        shard=args.shard,
        allow_prometheus=DEFAULT_ALLOW_PROMETHEUS
        if args.allow_prometheus is None
        else Allowlist(tuple(args.allow_prometheus), ALLOW_PROMETHEUS_FLAG),
        allow_pagerduty=DEFAULT_ALLOW_PAGERDUTY
        if args.allow_pagerduty is None
        else Allowlist(tuple(args.allow_pagerduty), ALLOW_PAGERDUTY_FLAG),
    )


def run_operator(args: argparse.Namespace) -> int:
    """Start the operator in this process until it is signalled to stop."""
    if args.kubeconfig:
        # kopf logs in from the same kubeconfig as the operator's own client.
        os.environ["KUBECONFIG"] = os.path.abspath(args.kubeconfig)

    import kopf
    from prometheus_client import start_http_server

    from canaryguard.runtime import handlers, logs

    election = election_from(args)
    logs.configure(args.log_format, args.verbose)
    if args.metrics is not None:
        start_http_server(args.metrics[1], addr=args.metrics[0])
    liveness = None
    if args.liveness is not None:
        liveness = f"http://{args.liveness[0]}:{args.liveness[1]}/healthz"
    namespaces = list(args.namespace)
    settings = operator_settings(args)
    log.info(
        "starting operator scope=%s handlers=%s leader_election=%s allow_prometheus=%s "
        "allow_pagerduty=%s status_heartbeat=%ss batch_queries=%s batch_window=%ss shard=%s",
        ",".join(namespaces) or "cluster",
        handlers.__name__,
        f"{election.namespace}/{election.name} as {election.identity}" if election else "off",
        settings.allow_prometheus,
        settings.allow_pagerduty,
        settings.status_heartbeat.total_seconds(),
        settings.batch_queries,
        settings.batch_window,
        settings.shard,
    )
    if not settings.allow_prometheus.entries:
        log.warning(
            "no Prometheus address is allowed (%s): every rollout stays Invalid",
            settings.allow_prometheus.flag,
        )
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(
            config={"kubeconfig": args.kubeconfig, "settings": settings, "election": election}
        ),
    )
    return 0


def election_from(args: argparse.Namespace) -> Election | None:
    """The Lease to campaign for, from the flags and the pod's environment (downward API);
    None without `--leader-elect`. Exits with a message when no namespace can be found."""
    from canaryguard.runtime.leader import Election

    if not args.leader_elect:
        return None
    namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE") or _own_namespace()
    if not namespace:
        raise SystemExit(
            "error: --leader-elect needs the Lease's namespace: --lease-namespace, or "
            "POD_NAMESPACE from the downward API"
        )
    identity = (
        args.leader_identity
        or os.environ.get("POD_NAME")
        or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    )
    name = args.lease_name or lease_name(args.shard)
    return Election(namespace, name, identity, args.lease_duration)


def lease_name(shard: Shard) -> str:
    """The default Lease: one per shard, so replicas of different shards never stand by for
    each other (each shard's rollouts have a leader of their own)."""
    if shard.count == 1:
        return "canaryguard"
    return f"canaryguard-shard-{shard.index}-of-{shard.count}"


def _own_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None
