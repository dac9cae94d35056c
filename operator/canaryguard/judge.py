"""The verdict on one SLO at one tick: canary against baseline, with the evidence policy.

- unavailable: the query failed.
- inconclusive: too few requests on either side, or a value missing, NaN or Inf.
- breach: the canary is worse than the baseline by more than every margin the SLO sets, or
  beyond its absolute limit.
- healthy: otherwise.

"Worse" follows the SLO's direction: for HigherIsWorse the canary is worse by `c - b`, for
LowerIsWorse by `b - c`. The relative difference is that amount over `|b|` (which is
`c / b - 1` for a positive baseline, with the sign flipped for LowerIsWorse); with a
baseline of 0, any worsening is infinitely large relatively and none is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from canaryguard.observations import SloObservation
from canaryguard.spec import Query, Slo
from canaryguard.status import Verdict

# A difference equal to its margin is not "more than" the margin, also after float noise
# (0.011 - 0.001 is 0.009999999999999998 or 0.010000000000000002 depending on the values).
_REL_TOLERANCE = 1e-9
_ABS_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Judgement:
    """The verdict on one SLO and the numbers that led to it.

    `worse_by` is how much worse the canary is in the metric's unit (negative when better),
    `worse_by_relative` the same as a fraction of the baseline; both None unless both values
    were usable.
    """

    verdict: Verdict
    reason: str
    worse_by: float | None = None
    worse_by_relative: float | None = None


def judge(slo: Slo, observation: SloObservation | None) -> Judgement:
    """Judge one SLO on one tick's observation (None: nothing was gathered for it)."""
    if observation is None:
        return Judgement("unavailable", "no observation was gathered")
    if observation.unavailable:
        return Judgement("unavailable", f"query failed: {observation.error or 'unknown error'}")
    evidence = _evidence(slo, observation)
    if isinstance(evidence, str):
        return Judgement("inconclusive", evidence)
    b, c = evidence
    worse_by = c - b if slo.direction == "HigherIsWorse" else b - c
    relative = _relative(worse_by, b)
    beyond_limit = slo.limit is not None and (
        c > slo.limit if slo.direction == "HigherIsWorse" else c < slo.limit
    )
    margin = slo.margin
    beyond_margin = margin is not None and all(
        _exceeds(amount, allowed)
        for amount, allowed in ((worse_by, margin.absolute), (relative, margin.relative))
        if allowed is not None
    )
    comparison = f"canary {c:.4g} vs baseline {b:.4g}"
    if beyond_margin or beyond_limit:
        causes = []
        if margin is not None and beyond_margin:
            causes.append(f"worse by {_amount(worse_by, relative)}, more than {margin.describe()}")
        if beyond_limit:
            side = "above" if slo.direction == "HigherIsWorse" else "below"
            causes.append(f"{side} the limit {slo.limit:g}")
        return Judgement("breach", f"{comparison}: {'; '.join(causes)}", worse_by, relative)
    if worse_by > 0:
        reason = f"{comparison}: worse by {_amount(worse_by, relative)}, within tolerance"
    else:
        reason = f"{comparison}: not worse"
    return Judgement("healthy", reason, worse_by, relative)


def _evidence(slo: Slo, observation: SloObservation) -> tuple[float, float] | str:
    """The (baseline, canary) values if they are evidence enough, else why not."""
    unit = "samples" if isinstance(slo.kind, Query) and slo.kind.samples_template else "requests"
    if slo.min_requests > 0:
        for side, count in (
            ("baseline", observation.baseline_samples),
            ("canary", observation.canary_samples),
        ):
            if count is None or math.isnan(count):
                return f"{side} {unit} unknown (no data)"
            if count < slo.min_requests:
                return f"{side} has {count:.6g} {unit}, needs {slo.min_requests}"
    baseline = _finite("baseline", observation.baseline)
    if isinstance(baseline, str):
        return baseline
    canary = _finite("canary", observation.canary)
    if isinstance(canary, str):
        return canary
    return baseline, canary


def _finite(side: str, value: float | None) -> float | str:
    """The value if it is a finite number, else why it is not usable."""
    if value is None:
        return f"no {side} value (empty result)"
    if math.isnan(value):
        return f"{side} value is NaN"
    if math.isinf(value):
        return f"{side} value is infinite"
    return value


def _relative(worse_by: float, baseline: float) -> float:
    if baseline == 0:
        if worse_by > 0:
            return math.inf
        return 0.0 if worse_by == 0 else -math.inf
    return worse_by / abs(baseline)


def _exceeds(amount: float, allowed: float) -> bool:
    if math.isinf(amount):
        return amount > 0
    close = math.isclose(amount, allowed, rel_tol=_REL_TOLERANCE, abs_tol=_ABS_TOLERANCE)
    return amount > allowed and not close


def _amount(worse_by: float, relative: float) -> str:
    percent = "baseline is 0" if math.isinf(relative) else f"{relative * 100:+.3g}%"
    return f"{worse_by:.4g} ({percent})"
