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

With `confidence` (counts only: error rates, count-ratio queries) the margin is judged on the
evidence accumulated since the analysis began, one stratum per step (`core.sequential`), not
on the lookback's values. The relative margin `r` sets the null rate ratio (`1 + r`, or
`1 - r` for LowerIsWorse); the absolute margin, if set, is a floor on the stratified
difference of rates:

- breach: the data show at that confidence (anytime-valid) that the ratio is beyond the null,
  and the estimated difference exceeds the absolute margin (when set); or the lookback's
  canary value is beyond `limit`;
- healthy: the data show the ratio within the null (needs r > 0), or the estimated difference
  is within a positive absolute margin; with no positive margin at all (any worsening counts)
  no amount of data can rule out an infinitesimal worsening, so there the SLO is healthy while
  the data do not show it worse;
- inconclusive: fewer than minRequests requests (since the analysis began) on either
  version, or neither shown.

At 100% the strata of earlier steps still judge; without any (the only step is 100%) the SLO
is judged as without `confidence`.

The false-rollback bound: an SLO whose canary is no worse than the null breaches at any tick
of the whole analysis with probability at most 1 - confidence.

A drift SLO (`spec.Drift`) compares distributions, not values: its observation's canary value
is the PSI of the canary's score distribution against the baseline's (`core.drift`), and it
is a breach when that is more than the threshold, healthy otherwise, inconclusive with too
few observations on either side or no PSI. With the baseline idle there is no distribution
to compare with: healthy on the canary's evidence alone, like an SLO without a limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from canaryguard.core import sequential
from canaryguard.core.observations import SloObservation
from canaryguard.core.sequential import Side, Stratum
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
    strata: Sequence[Stratum] = (),
) -> Judgement:
    """Judge one SLO on one tick's observation (None: nothing was gathered for it).

    `baseline_idle` says the baseline has no traffic (canary at 100%): the canary is then
    judged against `reference` (or by the limit alone without one), and the baseline's
    current values are ignored. Otherwise `reference` is not used. An SLO with `confidence`
    is judged on `strata` (the counts since the analysis began, this tick's included).
    """
    if observation is None:
        return Judgement("unavailable", "no observation was gathered")
    if observation.unavailable:
        return Judgement("unavailable", f"query failed: {observation.error or 'unknown error'}")
    if isinstance(slo.kind, Drift):
        return _drift(slo, slo.kind, observation, baseline_idle)
    informative = any(s.informative() for s in strata)
    if slo.confidence is not None and (informative or not baseline_idle):
        return _with_confidence(slo, slo.confidence, observation, strata)
    # With confidence but the baseline never had traffic beside the canary (a schedule
    # whose only step is 100%): nothing to compare, judged as any SLO at 100% below.
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


def _with_confidence(
    slo: Slo, confidence: float, observation: SloObservation, strata: Sequence[Stratum]
) -> Judgement:
    """The verdict on the accumulated evidence (see the module's docstring)."""
    for side, count in (
        ("baseline", sum(s.baseline_requests for s in strata)),
        ("canary", sum(s.canary_requests for s in strata)),
    ):
        if slo.min_requests > 0 and count < slo.min_requests:
            unit = "samples" if isinstance(slo.kind, Query) else "requests"
            return Judgement(
                "inconclusive",
                f"{side} has {count:.6g} {unit} since the analysis began, needs {slo.min_requests}",
            )
    canary_now = observation.canary
    if canary_now is not None and math.isfinite(canary_now) and _beyond_limit(slo, canary_now):
        return Judgement("breach", f"canary {canary_now:.4g}: {_side(slo)} the limit {slo.limit:g}")
    difference = sequential.rate_difference(strata)
    if difference is None:
        return Judgement("inconclusive", "no step yet where both versions had requests")
    higher = slo.direction == "HigherIsWorse"
    margin = slo.margin
    relative = (margin.relative or 0.0) if margin is not None else 0.0
    absolute = margin.absolute if margin is not None else None
    rho0 = 1 + relative if higher else 1 - relative
    worse_by = difference if higher else -difference
    worse: Side = "above" if higher else "below"
    better: Side = "below" if higher else "above"
    e_worse = math.exp(sequential.log_e_value(strata, rho0, worse))
    needed = 1 / (1 - confidence)
    ratio = sequential.rate_ratio(strata)
    ratio_text = "n/a" if ratio is None else f"{ratio:.3g}"
    evidence = (
        f"since the analysis began ({len(strata)} step{'s' if len(strata) != 1 else ''}): "
        f"canary {_events(strata, 'canary')} vs baseline {_events(strata, 'baseline')}, "
        f"rate ratio {ratio_text}, difference {difference:.4g}; "
        f"e-value {e_worse:.3g} for {'above' if higher else 'below'} {rho0:g}x "
        f"(needs {needed:.4g} at {confidence:g})"
    )
    relative_worse = None if ratio is None else (ratio - 1 if higher else 1 - ratio)
    if e_worse >= needed and (absolute is None or _exceeds(worse_by, absolute)):
        return Judgement(
            "breach",
            f"{evidence}: shown worse by more than {_margin_text(slo)}",
            worse_by,
            relative_worse,
        )
    ruled_out = relative > 0 and sequential.shown(strata, rho0, better, confidence)
    within_absolute = absolute is not None and absolute > 0 and not _exceeds(worse_by, absolute)
    any_worsening = relative == 0 and not absolute
    if ruled_out or within_absolute:
        why = "shown within" if ruled_out else "estimate within"
        return Judgement(
            "healthy", f"{evidence}: {why} {_margin_text(slo)}", worse_by, relative_worse
        )
    if any_worsening:
        return Judgement("healthy", f"{evidence}: not shown worse", worse_by, relative_worse)
    return Judgement(
        "inconclusive",
        f"{evidence}: neither shown worse nor within {_margin_text(slo)} yet",
        worse_by,
        relative_worse,
    )


def _margin_text(slo: Slo) -> str:
    return slo.margin.describe() if slo.margin is not None else "no margin"


def _events(strata: Sequence[Stratum], side: str) -> str:
    if side == "canary":
        events = sum(s.canary_events for s in strata)
        requests = sum(s.canary_requests for s in strata)
    else:
        events = sum(s.baseline_events for s in strata)
        requests = sum(s.baseline_requests for s in strata)
    return f"{events:.6g}/{requests:.6g}"


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
