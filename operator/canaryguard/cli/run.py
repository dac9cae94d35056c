"""The `run` command: the operator in this process, until it is signalled to stop."""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger("canaryguard")


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
    log.info(
        "starting operator scope=%s handlers=%s",
        ",".join(namespaces) or "cluster",
        handlers.__name__,
    )
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(config={"kubeconfig": args.kubeconfig, "concurrency": args.concurrency}),
    )
    return 0
