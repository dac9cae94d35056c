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

While the baseline gets no traffic (canary at 100%), its own evidence is not required: the
canary's value and evidence are judged against the baseline reference, the baseline's value
at the last tick where it was evidence enough (`take_reference`). Without a reference only
the absolute limit can judge (beyond it is a breach); an SLO without a limit is then healthy
on the canary's evidence alone. The reason says which of these was used.

A drift SLO (`spec.Drift`) compares distributions, not values: its observation's canary value
is the PSI of the canary's score distribution against the baseline's (`core.drift`), and it
is a breach when that is more than the threshold, healthy otherwise, inconclusive with too
few observations on either side or no PSI. With the baseline idle there is no distribution
to compare with: healthy on the canary's evidence alone, like an SLO without a limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from canaryguard.core.observations import SloObservation
from canaryguard.core.spec import Drift, Query, Slo
from canaryguard.core.status import Verdict, format_time, round_value

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


@dataclass(frozen=True)
class BaselineReference:
    """The baseline's value and evidence at the tick `at`, where they were evidence enough.

    Values are rounded as the status keeps them, so a reference read back from the status
    judges exactly as the one just taken.
    """

    value: float
    samples: float | None
    at: datetime


def take_reference(
    slo: Slo, observation: SloObservation | None, now: datetime
) -> BaselineReference | None:
    """This tick's baseline as a reference, if it is evidence enough: at least the SLO's
    minRequests (when set) and a finite value; else None."""
    if observation is None or observation.unavailable:
        return None
    if _too_few(slo, "baseline", observation.baseline_samples) is not None:
        return None
    value = round_value(observation.baseline)
    if value is None:
        return None
    return BaselineReference(value, round_value(observation.baseline_samples), now)


def judge(
    slo: Slo,
    observation: SloObservation | None,
    reference: BaselineReference | None = None,
    *,
    baseline_idle: bool = False,
) -> Judgement:
    """Judge one SLO on one tick's observation (None: nothing was gathered for it).

    `baseline_idle` says the baseline has no traffic (canary at 100%): the canary is then
    judged against `reference` (or by the limit alone without one), and the baseline's
    current values are ignored. Otherwise `reference` is not used.
    """
    if observation is None:
        return Judgement("unavailable", "no observation was gathered")
    if observation.unavailable:
        return Judgement("unavailable", f"query failed: {observation.error or 'unknown error'}")
    if isinstance(slo.kind, Drift):
        return _drift(slo, slo.kind, observation, baseline_idle)
    if baseline_idle:
        canary = _canary_evidence(slo, observation)
        if isinstance(canary, str):
            return Judgement("inconclusive", canary)
        if reference is None:
            return _limit_only(slo, canary)
        b = reference.value
        comparison = (
            f"canary {canary:.4g} vs baseline reference {b:.4g} (from {format_time(reference.at)})"
        )
        return _compare(slo, b, canary, comparison)
    evidence = _evidence(slo, observation)
    if isinstance(evidence, str):
        return Judgement("inconclusive", evidence)
    b, c = evidence
    return _compare(slo, b, c, f"canary {c:.4g} vs baseline {b:.4g}")


def _compare(slo: Slo, b: float, c: float, comparison: str) -> Judgement:
    """The verdict of canary value `c` against baseline value `b` (both finite)."""
    worse_by = c - b if slo.direction == "HigherIsWorse" else b - c
    relative = _relative(worse_by, b)
    beyond_limit = _beyond_limit(slo, c)
    margin = slo.margin
    beyond_margin = margin is not None and all(
        _exceeds(amount, allowed)
        for amount, allowed in ((worse_by, margin.absolute), (relative, margin.relative))
        if allowed is not None
    )
    if beyond_margin or beyond_limit:
        causes = []
        if margin is not None and beyond_margin:
            causes.append(f"worse by {_amount(worse_by, relative)}, more than {margin.describe()}")
        if beyond_limit:
            causes.append(f"{_side(slo)} the limit {slo.limit:g}")
        return Judgement("breach", f"{comparison}: {'; '.join(causes)}", worse_by, relative)
    if worse_by > 0:
        reason = f"{comparison}: worse by {_amount(worse_by, relative)}, within tolerance"
    else:
        reason = f"{comparison}: not worse"
    return Judgement("healthy", reason, worse_by, relative)


def _drift(slo: Slo, kind: Drift, observation: SloObservation, baseline_idle: bool) -> Judgement:
    """The verdict of a drift SLO: the PSI against its threshold."""
    sides = [("canary", observation.canary_samples)]
    if not baseline_idle:
        sides.insert(0, ("baseline", observation.baseline_samples))
    for side, count in sides:
        problem = _too_few(slo, side, count)
        if problem is not None:
            return Judgement("inconclusive", problem)
    if baseline_idle:
        return Judgement(
            "healthy",
            "baseline idle (no traffic at 100%): no score distribution to compare with; "
            "healthy on the canary's evidence alone",
        )
    psi = observation.canary
    if psi is None or not math.isfinite(psi):
        return Judgement(
            "inconclusive", "no PSI: a version has no observation in the histogram's buckets"
        )
    what = f"PSI {psi:.4g} of the canary's score distribution against the baseline's"
    if _exceeds(psi, kind.threshold):
        return Judgement("breach", f"{what}: above the threshold {kind.threshold:g}", psi)
    return Judgement("healthy", f"{what}: within the threshold {kind.threshold:g}", psi)


def _limit_only(slo: Slo, c: float) -> Judgement:
    """The verdict without any baseline value to compare with: the limit alone, if set."""
    if slo.limit is None:
        return Judgement(
            "healthy",
            f"canary {c:.4g} (no baseline reference and no limit): healthy on the canary's "
            "evidence alone",
        )
    comparison = f"canary {c:.4g} (no baseline reference; judged by limit only)"
    if _beyond_limit(slo, c):
        return Judgement("breach", f"{comparison}: {_side(slo)} the limit {slo.limit:g}")
    return Judgement("healthy", f"{comparison}: within the limit {slo.limit:g}")


def _beyond_limit(slo: Slo, c: float) -> bool:
    if slo.limit is None:
        return False
    return c > slo.limit if slo.direction == "HigherIsWorse" else c < slo.limit


def _side(slo: Slo) -> str:
    return "above" if slo.direction == "HigherIsWorse" else "below"


def _evidence(slo: Slo, observation: SloObservation) -> tuple[float, float] | str:
    """The (baseline, canary) values if they are evidence enough, else why not."""
    for side, count in (
        ("baseline", observation.baseline_samples),
        ("canary", observation.canary_samples),
    ):
        problem = _too_few(slo, side, count)
        if problem is not None:
            return problem
    baseline = _finite("baseline", observation.baseline)
    if isinstance(baseline, str):
        return baseline
    canary = _finite("canary", observation.canary)
    if isinstance(canary, str):
        return canary
    return baseline, canary


def _canary_evidence(slo: Slo, observation: SloObservation) -> float | str:
    """The canary's value if it is evidence enough on its own, else why not."""
    problem = _too_few(slo, "canary", observation.canary_samples)
    if problem is not None:
        return problem
    return _finite("canary", observation.canary)


def _too_few(slo: Slo, side: str, count: float | None) -> str | None:
    """Why `count` is not evidence enough for `side`, or None when it is (or not needed)."""
    if slo.min_requests <= 0:
        return None
    unit = "samples" if isinstance(slo.kind, Query) and slo.kind.samples_template else "requests"
    if isinstance(slo.kind, Drift):
        unit = "observations"
    if count is None or math.isnan(count):
        return f"{side} {unit} unknown (no data)"
    if count < slo.min_requests:
        return f"{side} has {count:.6g} {unit}, needs {slo.min_requests}"
    return None


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
