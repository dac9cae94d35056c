"""The `canaryguard` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from canaryguard.cli import commands as cli_commands

log = logging.getLogger("canaryguard")


def _address(text: str) -> tuple[str, int] | None:
    """`host:port`, or `off`."""
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or off, got {text!r}")
    return host or "0.0.0.0", int(port)  # noqa: S104 - in a pod, probes come from outside


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
    run.add_argument("--log-format", choices=("json", "text"), default="json")
    run.add_argument(
        "--concurrency", type=int, default=32, help="ticks in flight at once (default 32)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    cli_commands.add_commands(sub)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `canaryguard` and `python -m canaryguard`."""
    # Installed twice: `canaryguard` and the kubectl plugin `kubectl-canary` (`kubectl canary`).
    plugin = os.path.basename(sys.argv[0]) == "kubectl-canary"
    args = build_parser("kubectl canary" if plugin else "canaryguard").parse_args(argv)
    if args.command == "run":
        return run_operator(args)
    return cli_commands.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
