"""The judges simulated: how often each rolls back a good canary and catches a bad one.

Drives the real engine (canaryguard.sim) with Poisson requests and binomial errors at the
fraud-model example's schedule (5% 2m, 25% 5m, 50% 10m, 100% 10m; 30 s ticks), baseline
error rate 0.5%, for each request rate and scenario:

- identical: the canary fails as often as the baseline;
- 2x, 3x: the canary fails 2 or 3 times as often, from its first request;
- shared: both versions identical, then both fail 3% of requests for five minutes, from one
  minute after the canary reaches 50% (an upstream outage).

Policies, each on the same streams (rollout i of a cell draws from the same seed under every
policy, so the traffic is the same until their decisions differ):

- plain: the example's error-rate SLO (margin 1 point and 50%, limit 5%, window 2m,
  lookback 1m);
- plain-tight: margin 0.5 point and 100% (tight enough to catch 3x), same window;
- statistical: `confidence: 0.99`, `margin: {relative: 0}` (any worsening), limit 5%,
  window 1m;
- threshold: Flagger's way: the canary's error rate over 1m above 1% is a failed check,
  5 failed checks in all roll back.

Prints the table (the README's) and writes every figure as JSON.

    .venv/bin/python bench/bench_judge.py [--rollouts 200] [--json bench-judge.json]
        [--statistical-window 1m]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from canaryguard.core.spec import Spec, parse_spec
from canaryguard.sim.rollout import (
    Outcome,
    ThresholdPolicy,
    Traffic,
    simulate,
    simulate_threshold,
)

EXAMPLE = Path(__file__).parents[1] / "examples" / "fraud-model" / "canaryrollout.yaml"
RATES = (50, 100, 200)
BASELINE_ERROR = 0.005
SCENARIOS: dict[str, dict[str, Any]] = {
    "identical": {},
    "2x": {"canary_factor": 2.0},
    "3x": {"canary_factor": 3.0},
    "shared": {"shared_error": 0.03},
}
SLOS: dict[str, dict[str, Any]] = {
    "plain": {
        "margin": {"absolute": 0.01, "relative": 0.5},
        "limit": 0.05,
        "window": "2m",
    },
    "plain-tight": {
        "margin": {"absolute": 0.005, "relative": 1.0},
        "limit": 0.05,
        "window": "2m",
    },
    "statistical": {
        "margin": {"relative": 0},
        "confidence": 0.99,
        "limit": 0.05,
        "window": "1m",
    },
}
THRESHOLD = ThresholdPolicy(threshold=0.01, failure_limit=5)
POLICIES = (*SLOS, "threshold")


def spec_for(slo: dict[str, Any]) -> Spec:
    """The example rollout with one error-rate SLO (the others see no simulated signal)."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["analysis"]["slos"] = [
        {"name": "error-rate", "errorRate": {"codes": "5.."}, "lookback": "1m", **slo}
    ]
    return parse_spec(body)


def runner(policy: str) -> Callable[[Traffic, random.Random], Outcome]:
    if policy == "threshold":
        spec = spec_for(SLOS["plain"])
        return lambda traffic, rng: simulate_threshold(spec, THRESHOLD, traffic, rng)
    spec = spec_for(copy.deepcopy(SLOS[policy]))
    return lambda traffic, rng: simulate(spec, traffic, rng)


def cell(outcomes: list[Outcome]) -> dict[str, Any]:
    back = [o.seconds for o in outcomes if o.phase == "RolledBack"]
    promoted = [o.seconds for o in outcomes if o.phase == "Promoted"]
    return {
        "rollouts": len(outcomes),
        "rolled_back": len(back),
        "rolled_back_fraction": len(back) / len(outcomes),
        "median_seconds_to_rollback": statistics.median(back) if back else None,
        "promoted": len(promoted),
        "median_seconds_to_promote": statistics.median(promoted) if promoted else None,
        "rollback_weights": sorted({o.weight for o in outcomes if o.phase == "RolledBack"}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--json", default="bench-judge.json")
    parser.add_argument(
        "--statistical-window", default="1m", help="the statistical judge's window (1m)"
    )
    args = parser.parse_args()
    SLOS["statistical"]["window"] = args.statistical_window
    started = time.process_time()
    results: dict[str, Any] = {}
    for policy in POLICIES:
        run = runner(policy)
        for rate in RATES:
            for scenario, edits in SCENARIOS.items():
                traffic = Traffic(rps=rate, baseline_error=BASELINE_ERROR, **edits)
                outcomes = [
                    run(traffic, random.Random(f"{rate}/{scenario}/{i}"))
                    for i in range(args.rollouts)
                ]
                results[f"{policy}/{rate}/{scenario}"] = cell(outcomes)
    cpu = time.process_time() - started
    print(table(results, args.rollouts))
    print(f"\ncpu {cpu:.1f} s for {len(results) * args.rollouts} rollouts")
    report = {
        "rollouts_per_cell": args.rollouts,
        "baseline_error": BASELINE_ERROR,
        "rates": RATES,
        "slos": SLOS,
        "threshold": {"threshold": THRESHOLD.threshold, "failure_limit": THRESHOLD.failure_limit},
        "cells": results,
        "cpu_seconds": cpu,
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)


def table(results: dict[str, Any], rollouts: int) -> str:
    def pct(c: dict[str, Any]) -> str:
        return f"{c['rolled_back_fraction'] * 100:.1f}%"

    def med(c: dict[str, Any]) -> str:
        m = c["median_seconds_to_rollback"]
        return "-" if m is None else f"{m:.0f} s"

    lines = [
        f"| policy | req/s | identical rolled back | 2x caught (median) | 3x caught (median) "
        f"| shared degradation rolled back | identical promoted ({rollouts} rollouts a cell) |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy in POLICIES:
        for rate in RATES:
            c = {s: results[f"{policy}/{rate}/{s}"] for s in SCENARIOS}
            same = c["identical"]
            lines.append(
                f"| {policy} | {rate} | {pct(same)} | {pct(c['2x'])} ({med(c['2x'])}) "
                f"| {pct(c['3x'])} ({med(c['3x'])}) | {pct(c['shared'])} "
                f"| {same['promoted'] / rollouts * 100:.1f}% |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
