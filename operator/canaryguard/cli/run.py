"""The `run` command: the operator in this process, until it is signalled to stop."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from canaryguard.runtime.controller import Settings

log = logging.getLogger("canaryguard")


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
        status_heartbeat=args.status_heartbeat,
        batch_queries=args.batch_queries,
        batch_window=args.batch_window.total_seconds(),
        cache_virtualservices=args.cache_virtualservices,
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

    logs.configure(args.log_format, args.verbose)
    if args.metrics is not None:
        start_http_server(args.metrics[1], addr=args.metrics[0])
    liveness = None
    if args.liveness is not None:
        liveness = f"http://{args.liveness[0]}:{args.liveness[1]}/healthz"
    namespaces = list(args.namespace)
    settings = operator_settings(args)
    log.info(
        "starting operator scope=%s handlers=%s allow_prometheus=%s allow_pagerduty=%s "
        "status_heartbeat=%ss batch_queries=%s batch_window=%ss shard=%s",
        ",".join(namespaces) or "cluster",
        handlers.__name__,
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
            config={"kubeconfig": args.kubeconfig, "settings": settings, "namespaces": namespaces}
        ),
    )
    return 0
