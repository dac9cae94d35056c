"""The `plan` command: what a rollout can catch at a given traffic, before it runs.

Reads a CanaryRollout manifest, simulates it through the real engine (canaryguard.sim) at
the typed request rate and baseline error rate, and prints per step the smallest regression
caught by its end, the chance of rolling back an identical canary in it, the evidence the
hold gathers, the expected time to catch a 2x regression, and warnings. Needs no cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from canaryguard.cli.errors import CliError
from canaryguard.core.spec import SpecError, parse_spec
from canaryguard.sim.plan import CATCH, FACTORS, Plan, plan


def cmd_plan(args: argparse.Namespace) -> str:
    """`plan -f FILE --rps N --baseline-error-rate R`."""
    if args.rps <= 0:
        raise CliError("--rps must be positive")
    if not 0 < args.baseline_error_rate < 1:
        raise CliError("--baseline-error-rate must be between 0 and 1 (0.005 is 0.5%)")
    if args.rollouts < 10:
        raise CliError("--rollouts must be at least 10")
    body = _read(args.filename)
    try:
        spec = parse_spec(body)
    except SpecError as exc:
        raise CliError(f"{args.filename}: {exc}") from exc
    try:
        result = plan(spec, args.rps, args.baseline_error_rate, args.rollouts, args.seed)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.output == "json":
        return json.dumps(asdict(result), indent=2)
    return render(result)


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
