"""What a rollout can see, before it runs: the simulator on the rollout's own spec.

For a request rate and a baseline error rate, each regression factor (the canary failing
that many times as often as the baseline, from its first request) is simulated `rollouts`
times through the real engine. Per step it reports the smallest factor rolled back in at
least `CATCH` of the runs by the end of that step, and the share of identical canaries rolled
back during it; overall, the median time to roll back a 2x regression. It warns when a step's
hold cannot gather the evidence the SLO asks for, and when a plain margin's breach threshold
sits on a likely regression (whether it is caught is then left to noise).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from canaryguard.core.spec import ErrorRate, Slo, Spec
from canaryguard.sim.rollout import Outcome, Traffic, judged, simulate

FACTORS = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
LIKELY = (1.5, 2.0, 3.0)  # regressions a margin should not sit on
CATCH = 0.9


@dataclass(frozen=True)
class StepPlan:
    """One step: its weight and hold, the smallest factor caught by its end (None: not
    even 10x), the share of identical canaries rolled back during it, and the requests and
    errors the canary is expected to serve in its hold at the baseline rate."""

    weight: int
    hold_seconds: float
    smallest_caught: float | None
    identical_rolled_back: float
    canary_requests: float
    canary_errors: float


@dataclass(frozen=True)
class Plan:
    slo: str
    rps: float
    baseline_error: float
    rollouts: int
    steps: tuple[StepPlan, ...]
    identical_rolled_back: float
    caught: dict[float, float]  # factor -> share rolled back before promotion
    median_seconds_2x: float | None
    warnings: tuple[str, ...]


def plan(spec: Spec, rps: float, baseline_error: float, rollouts: int = 200, seed: int = 1) -> Plan:
    """Simulate the rollout (see the module's docstring). Raises ValueError when the spec has
    no SLO that counts errors."""
    slo = judged(spec)
    if slo is None:
        raise ValueError(
            "no SLO counts errors (errorRate, or a query with samplesTemplate): nothing to plan"
        )
    outcomes = {
        factor: [
            simulate(spec, Traffic(rps, baseline_error, factor), random.Random(f"{seed}/{i}"))
            for i in range(rollouts)
        ]
        for factor in (1.0, *FACTORS)
    }
    steps = []
    for index, step in enumerate(spec.steps):
        hold = step.hold.total_seconds()
        so_far = {s.weight for s in spec.steps[: index + 1]}
        smallest = next((f for f in FACTORS if _back_share(outcomes[f], so_far) >= CATCH), None)
        identical = _back_share(outcomes[1.0], {step.weight})
        requests = rps * step.weight / 100 * hold
        steps.append(
            StepPlan(step.weight, hold, smallest, identical, requests, requests * baseline_error)
        )
    back_2x = [o.seconds for o in outcomes[2.0] if o.phase == "RolledBack"]
    everywhere = {s.weight for s in spec.steps}
    caught = {f: _back_share(outcomes[f], everywhere) for f in FACTORS}
    return Plan(
        slo=slo.name,
        rps=rps,
        baseline_error=baseline_error,
        rollouts=rollouts,
        steps=tuple(steps),
        identical_rolled_back=_back_share(outcomes[1.0], everywhere),
        caught=caught,
        median_seconds_2x=statistics.median(back_2x) if back_2x else None,
        warnings=tuple(_warnings(spec, slo, rps, baseline_error, caught)),
    )


def _back_share(outcomes: list[Outcome], weights: set[int]) -> float:
    """The share of outcomes rolled back while the canary had one of `weights`."""
    back = sum(1 for o in outcomes if o.phase == "RolledBack" and o.weight in weights)
    return back / len(outcomes)


def _warnings(
    spec: Spec, slo: Slo, rps: float, baseline_error: float, caught: dict[float, float]
) -> list[str]:
    found = []
    for index, step in enumerate(spec.steps):
        hold = step.hold.total_seconds()
        if step.weight >= 100 or hold <= 0:
            continue
        canary = rps * step.weight / 100
        lookback = slo.lookback.total_seconds()
        evidence = canary * (hold if slo.confidence is not None else min(hold, lookback))
        if evidence < slo.min_requests:
            found.append(
                f"step {index + 1} ({step.weight}% for {hold:g}s): the canary serves about "
                f"{evidence:.0f} requests {'in its hold' if slo.confidence else 'per lookback'}"
                f", fewer than minRequests {slo.min_requests}: {slo.name} stays inconclusive "
                "and the step waits"
            )
        elif canary * hold * baseline_error < 1:
            found.append(
                f"step {index + 1} ({step.weight}% for {hold:g}s): the canary is expected to "
                f"fail {canary * hold * baseline_error:.2g} requests in its hold at the "
                "baseline's rate: this step alone cannot tell a regression from noise"
            )
    margin = slo.margin
    if slo.confidence is None and margin is not None and isinstance(slo.kind, ErrorRate):
        threshold = max(
            baseline_error + (margin.absolute or 0.0),
            baseline_error * (1 + (margin.relative or 0.0)),
        )
        factor = threshold / baseline_error if baseline_error > 0 else float("inf")
        for likely in LIKELY:
            if 0.85 * likely <= factor <= 1.15 * likely:
                found.append(
                    f"{slo.name}: the margin ({margin.describe()}) breaches only above "
                    f"{threshold:.4g}, {factor:.2f}x the baseline's {baseline_error:g}: a "
                    f"{likely:g}x regression sits on it, so catching one is left to noise "
                    f"({caught[likely] * 100:.1f}% of the simulated ones were rolled back); "
                    "consider confidence, or a tighter margin"
                )
    return found
