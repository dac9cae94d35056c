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
- statistical-0s: the same with `window: 0s` (rolled back at the first tick that shows it);
- threshold: Flagger's way: the canary's error rate over 1m above 1% is a failed check,
  5 failed checks in all roll back;
- oracle: not a judge anyone can ship, a yardstick (canaryguard.sim.oracle): Wald's SPRT of
  "the canary fails 0.5% of requests" against "1.5%" (3x), the baseline's rate known
  exactly, rolled back when the evidence reaches ln(1 / 0.01), steps advancing on time.

A shared-degradation rollback is counted by when it happened: before the degradation began
(the deciding tick had seen none of it), during it, or after it ended.

Then the bound no judge can beat (canaryguard.sim.oracle.most_powerful_catch): for each rate,
the most a judge that rolls back at most 1% of identical canaries can have caught of 3x
regressions by the goal's time (the statistical window plus two intervals), and the first
tick by which it could have caught half of them.

Prints the tables (the README's) and writes every figure as JSON.

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
from canaryguard.sim.oracle import (
    Sprt,
    canary_requests_by,
    kl_bernoulli,
    most_powerful_catch,
    simulate_sprt,
)
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
SLOS["statistical-0s"] = {**SLOS["statistical"], "window": "0s"}
THRESHOLD = ThresholdPolicy(threshold=0.01, failure_limit=5)
ALPHA = 1 - SLOS["statistical"]["confidence"]
ORACLE = Sprt(null=BASELINE_ERROR, alternative=3 * BASELINE_ERROR, alpha=ALPHA)
POLICIES = (*SLOS, "threshold", "oracle")


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
    if policy == "oracle":
        spec = spec_for(SLOS["plain"])
        return lambda traffic, rng: simulate_sprt(spec, ORACLE, traffic, rng)
    spec = spec_for(copy.deepcopy(SLOS[policy]))
    return lambda traffic, rng: simulate(spec, traffic, rng)


def cell(outcomes: list[Outcome], shared: bool) -> dict[str, Any]:
    back = [o.seconds for o in outcomes if o.phase == "RolledBack"]
    promoted = [o.seconds for o in outcomes if o.phase == "Promoted"]
    when: dict[str, Any] = {}
    if shared:
        counts = {"before": 0, "during": 0, "after": 0}
        for o in outcomes:
            if o.phase == "RolledBack":
                counts[o.against_degradation()] += 1
        when = {"rolled_back_relative_to_degradation": counts}
    return {
        "rollouts": len(outcomes),
        "rolled_back": len(back),
        "rolled_back_fraction": len(back) / len(outcomes),
        "median_seconds_to_rollback": statistics.median(back) if back else None,
        "promoted": len(promoted),
        "median_seconds_to_promote": statistics.median(promoted) if promoted else None,
        "rollback_weights": sorted({o.weight for o in outcomes if o.phase == "RolledBack"}),
        **when,
    }


def bounds() -> dict[str, Any]:
    """Per rate, what no judge rolling back at most ALPHA of identical canaries can beat on
    a 3x regression (see canaryguard.sim.oracle): its catch by the goal's time, and the
    first tick by which it could have caught half."""
    spec = spec_for(SLOS["statistical"])
    interval = spec.analysis.interval.total_seconds()
    goal = spec.analysis.slos[0].window.total_seconds() + 2 * interval
    p0, p1 = ORACLE.null, ORACLE.alternative
    per_request = kl_bernoulli(p1, p0)
    found: dict[str, Any] = {
        "alpha": ALPHA,
        "null": p0,
        "alternative": p1,
        "goal_seconds": goal,
        "kl_nats_per_canary_request": per_request,
        "threshold_nats": ORACLE.threshold,
        "rates": {},
    }
    for rate in RATES:
        ticks = {}
        k, half = 0, None
        while half is None:
            k += 1
            seconds = k * interval
            catch = most_powerful_catch(canary_requests_by(spec, rate, seconds), p0, p1, ALPHA)
            ticks[seconds] = catch
            if catch >= 0.5:
                half = seconds
        by_goal = canary_requests_by(spec, rate, goal)
        first = spec.steps[0].weight / 100 * rate
        found["rates"][str(rate)] = {
            "canary_requests_per_second_at_first_step": first,
            "nats_per_second_at_first_step": first * per_request,
            "canary_requests_by_goal": by_goal,
            "expected_nats_by_goal": by_goal * per_request,
            "most_caught_by_goal": most_powerful_catch(by_goal, p0, p1, ALPHA),
            "most_caught_by_tick": ticks,
            "first_tick_half_can_be_caught": half,
        }
    return found


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
                results[f"{policy}/{rate}/{scenario}"] = cell(outcomes, scenario == "shared")
    limits = bounds()
    cpu = time.process_time() - started
    print(table(results, args.rollouts))
    print()
    print(bound_table(limits))
    print(f"\ncpu {cpu:.1f} s for {len(results) * args.rollouts} rollouts")
    report = {
        "rollouts_per_cell": args.rollouts,
        "baseline_error": BASELINE_ERROR,
        "rates": RATES,
        "slos": SLOS,
        "threshold": {"threshold": THRESHOLD.threshold, "failure_limit": THRESHOLD.failure_limit},
        "oracle": {"null": ORACLE.null, "alternative": ORACLE.alternative, "alpha": ORACLE.alpha},
        "cells": results,
        "bound_3x": limits,
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

    def when(c: dict[str, Any]) -> str:
        w = c["rolled_back_relative_to_degradation"]
        return f"{w['before']} / {w['during']} / {w['after']}"

    lines = [
        f"| policy | req/s | identical rolled back | 2x caught (median) | 3x caught (median) "
        f"| shared degradation rolled back (before / during / after it) "
        f"| identical promoted ({rollouts} rollouts a cell) |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy in POLICIES:
        for rate in RATES:
            c = {s: results[f"{policy}/{rate}/{s}"] for s in SCENARIOS}
            same = c["identical"]
            lines.append(
                f"| {policy} | {rate} | {pct(same)} | {pct(c['2x'])} ({med(c['2x'])}) "
                f"| {pct(c['3x'])} ({med(c['3x'])}) | {pct(c['shared'])} ({when(c['shared'])}) "
                f"| {same['promoted'] / rollouts * 100:.1f}% |"
            )
    return "\n".join(lines)


def bound_table(found: dict[str, Any]) -> str:
    goal = found["goal_seconds"]
    lines = [
        f"3x ({found['alternative']:g} against {found['null']:g}), any judge rolling back at "
        f"most {found['alpha']:.0%} of identical canaries; "
        f"{found['kl_nats_per_canary_request']:.5f} nats per canary request, "
        f"{found['threshold_nats']:.3f} nats to reach 1/alpha",
        "",
        f"| req/s | canary req/s at 5% | nats/s at 5% | canary requests by {goal:.0f} s "
        f"| their nats | most caught by {goal:.0f} s | first tick by which half can be caught |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate, r in found["rates"].items():
        lines.append(
            f"| {rate} | {r['canary_requests_per_second_at_first_step']:g} "
            f"| {r['nats_per_second_at_first_step']:.4f} | {r['canary_requests_by_goal']:.0f} "
            f"| {r['expected_nats_by_goal']:.2f} | {r['most_caught_by_goal'] * 100:.1f}% "
            f"| {r['first_tick_half_can_be_caught']:.0f} s |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
