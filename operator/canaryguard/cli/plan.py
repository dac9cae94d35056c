"""The `plan` command: what a rollout can catch at a given traffic, before it runs.

Reads a CanaryRollout manifest, simulates it through the real engine (canaryguard.sim) at
the typed request rate and baseline error rate (or those Prometheus saw, `--prometheus`,
from the rollout's own error-rate queries), and prints per step the smallest regression
caught by its end, the chance of rolling back an identical canary in it, the evidence the
hold gathers, the expected time to catch a 2x regression, and warnings. Needs no cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from canaryguard.adapters.prometheus import PrometheusClient
from canaryguard.cli.errors import CliError
from canaryguard.core import promql
from canaryguard.core.durations import format_duration, parse_duration
from canaryguard.core.ports import MetricsUnavailable, QueryRefused, Sample
from canaryguard.core.queries import split
from canaryguard.core.spec import ErrorRate, Spec, SpecError, parse_spec
from canaryguard.sim.plan import CATCH, FACTORS, Plan, plan


def cmd_plan(args: argparse.Namespace) -> str:
    """`plan -f FILE (--rps N --baseline-error-rate R | --prometheus URL)`."""
    if args.rollouts < 10:
        raise CliError("--rollouts must be at least 10")
    body = _read(args.filename)
    try:
        spec = parse_spec(body)
    except SpecError as exc:
        raise CliError(f"{args.filename}: {exc}") from exc
    rps, error_rate = args.rps, args.baseline_error_rate
    if args.prometheus and (rps is None or error_rate is None):
        client = PrometheusClient(address=args.prometheus, timeout=10.0, retry_budget=10.0)
        try:
            seconds = parse_duration(args.over).total_seconds()
        except ValueError as exc:
            raise CliError(f"--over: {exc}") from exc
        read_rps, read_rate = read_rates(spec, client.query_blocking, seconds)
        rps = read_rps if rps is None else rps
        error_rate = read_rate if error_rate is None else error_rate
    if rps is None or error_rate is None:
        raise CliError("give --rps and --baseline-error-rate, or --prometheus to read them")
    if rps <= 0:
        raise CliError("--rps must be positive")
    if not 0 < error_rate < 1:
        raise CliError(
            f"the baseline error rate must be between 0 and 1 (0.005 is 0.5%), got {error_rate:g}"
        )
    try:
        result = plan(spec, rps, error_rate, args.rollouts, args.seed)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.output == "json":
        return json.dumps(asdict(result), indent=2)
    return render(result)


def read_rates(
    spec: Spec, query: Callable[[str], list[Sample]], seconds: float
) -> tuple[float, float]:
    """The service's request rate (both versions) and the baseline's error share over the
    last `seconds`, from the rollout's first error-rate SLO's own queries."""
    slo = next((s for s in spec.analysis.slos if isinstance(s.kind, ErrorRate)), None)
    if slo is None:
        raise CliError("--prometheus reads an errorRate SLO's rates; this rollout has none")
    if seconds < 1:
        raise CliError("--over must be at least 1s")
    m = spec.metrics
    args = (m.selector, m.version_label, m.baseline_version, m.canary_version, seconds)
    assert isinstance(slo.kind, ErrorRate)
    by_version = (m.version_label, m.baseline_version, m.canary_version)
    try:
        nb, nc = split(query(promql.request_count(*args)), by_version)
        rate, _ = split(query(promql.error_rate(*args, codes=slo.kind.codes)), by_version)
    except (MetricsUnavailable, QueryRefused) as exc:
        raise CliError(f"Prometheus: {exc}") from exc
    if not nb or rate is None:
        raise CliError(
            "no baseline traffic found in Prometheus over the last "
            f"{format_duration(timedelta(seconds=seconds))}: type --rps and "
            "--baseline-error-rate"
        )
    return (nb + (nc or 0.0)) / seconds, rate


def _read(filename: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {filename}: {exc.strerror or exc}") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise CliError(f"{filename}: not YAML: {exc}") from exc
    rollouts = [d for d in docs if isinstance(d, dict) and d.get("kind") == "CanaryRollout"]
    if len(rollouts) != 1:
        raise CliError(f"{filename}: expected one CanaryRollout, found {len(rollouts)}")
    return rollouts[0]


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%"


def render(result: Plan) -> str:
    """The plan as text: a line per step, then the rollout as a whole, then warnings."""
    out = [
        f"SLO {result.slo} at {result.rps:g} req/s, baseline error rate "
        f"{result.baseline_error:g}; {result.rollouts} simulated rollouts per regression "
        "(present from the canary's first request)",
        "",
        f"{'step':<6}{'canary':>7}{'hold':>8}{'canary req':>12}{'errors':>9}"
        f"{'caught by its end':>19}{'identical rolled back':>23}",
    ]
    for index, step in enumerate(result.steps):
        caught = "-" if step.smallest_caught is None else f">= {step.smallest_caught:g}x"
        out.append(
            f"{index + 1:<6}{step.weight:>6}%{step.hold_seconds:>7g}s"
            f"{step.canary_requests:>12.0f}{step.canary_errors:>9.1f}"
            f"{caught:>19}{_percent(step.identical_rolled_back):>23}"
        )
    caught = ", ".join(f"{f:g}x {_percent(share)}" for f, share in result.caught.items())
    median = result.median_seconds_2x
    out += [
        "",
        f"'caught by its end': the smallest factor of {', '.join(f'{f:g}' for f in FACTORS)} "
        f"rolled back in at least {CATCH * 100:g}% of runs by the end of that step.",
        f"Rolled back before promotion: {caught}.",
        "A 2x regression is rolled back after "
        + ("never, in these runs" if median is None else f"{median:.0f}s (median)")
        + f"; an identical canary is rolled back in {_percent(result.identical_rolled_back)}"
        " of runs.",
    ]
    out += [f"warning: {w}" for w in result.warnings]
    return "\n".join(out)
