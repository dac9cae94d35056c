"""The entry point of `canaryguard`, `kubectl canary` and `python -m canaryguard`.

`run` starts the operator; the other commands read CanaryRollouts (status is the operator's
record of everything it decided) and write only `spec.paused` and the manual request
annotation. A failure in them ends in one `error:` line and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from canaryguard.cli.backtest import run_backtest
from canaryguard.cli.cluster import Cluster, connect
from canaryguard.cli.errors import CliError
from canaryguard.cli.parser import build_parser
from canaryguard.cli.plan import cmd_plan
from canaryguard.cli.run import run_operator

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `canaryguard` and `python -m canaryguard`."""
    # Installed twice: `canaryguard` and the kubectl plugin `kubectl-canary` (`kubectl canary`).
    plugin = os.path.basename(sys.argv[0]) == "kubectl-canary"
    args = build_parser("kubectl canary" if plugin else "canaryguard").parse_args(argv)
    if args.command == "run":
        return run_operator(args)
    if args.command == "plan":
        return _run_plan(args)
    if args.command == "backtest":  # Prometheus history only: no cluster
        return run_backtest(args)
    return _run_cluster_command(args)


def _run_plan(args: argparse.Namespace) -> int:
    """`plan` needs no cluster; errors become one line on stderr."""
    try:
        output = cmd_plan(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(output)
    return 0


def _run_cluster_command(args: argparse.Namespace) -> int:
    """Run a command against the cluster; errors become one line on stderr."""
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


if __name__ == "__main__":
    sys.exit(main())
