"""One simulated rollout: Poisson requests, binomial errors, the real engine deciding.

Traffic: `rps` requests per second in all, split between the versions by the weight the
engine last decided; each request fails with its version's error probability. Errors and
successes of a version over a span of constant rates are then independent Poisson counts
(a Poisson stream thinned by a coin per request), so a tick's counts are drawn per span of
constant rates: the same distribution as summing per-second draws, at a fraction of the
cost. Every `interval` the engine gets what Prometheus would answer (each version's error
share and requests over the SLO's lookback, and for SLOs with `confidence` the counts since
the step began) and its decision moves the weights. Prometheus's own quirks (scrape lag,
extrapolation of increase()) are left out.

One SLO sees the simulated errors: the first error-rate SLO, or query SLO with samples (fed
the errors as its events); every other SLO sees both versions equal with the same request
counts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from canaryguard.core import engine
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.sequential import Stratum
from canaryguard.core.spec import ErrorRate, Query, Slo, Spec
from canaryguard.core.status import Status
from canaryguard.sim.poisson import poisson

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Traffic:
    """What the simulated service does.

    The canary fails `canary_factor` times as often as the baseline. A shared degradation
    (`shared_error` set) makes both versions fail at that rate for `shared_for` seconds,
    starting `shared_after` seconds after the canary first reaches `shared_at_weight`.
    """

    rps: float
    baseline_error: float
    canary_factor: float = 1.0
    shared_error: float | None = None
    shared_at_weight: int = 50
    shared_after: float = 60.0
    shared_for: float = 300.0


@dataclass(frozen=True)
class Outcome:
    """How a simulated rollout ended: RolledBack, Promoted, or Running when time ran out;
    `seconds` after its first tick; the canary's weight when it ended; and when a shared
    degradation began and ended (seconds after the first tick), if one began."""

    phase: str
    seconds: float
    weight: int
    degraded: tuple[float, float] | None = None

    def against_degradation(self) -> str:
        """When it ended relative to the shared degradation: "before" it began (or none
        began: the deciding tick had seen none of it), "during" it (the deciding tick's
        counts include some of it), or "after" it ended (a later tick)."""
        if self.degraded is None or self.seconds <= self.degraded[0]:
            return "before"
        return "during" if self.seconds <= self.degraded[1] else "after"


# (baseline requests, baseline errors, canary requests, canary errors) of one tick.
Counts = tuple[int, int, int, int]


class Streams:
    """The simulated service's counts, tick by tick, from one seeded generator."""

    def __init__(self, traffic: Traffic, rng: random.Random) -> None:
        self.traffic = traffic
        self.rng = rng
        self.shared_from: float | None = None  # when the shared degradation starts

    def draw(self, start: float, end: float, weight: int) -> Counts:
        """Counts over (start, end] with the canary at `weight` percent."""
        t = self.traffic
        if self.shared_from is None and t.shared_error is not None and weight >= t.shared_at_weight:
            self.shared_from = start + t.shared_after
        cuts = [start, end]
        if self.shared_from is not None:
            for cut in (self.shared_from, self.shared_from + t.shared_for):
                if start < cut < end:
                    cuts.insert(-1, cut)
        nb = xb = nc = xc = 0
        for a, b in pairwise(cuts):
            base = t.baseline_error
            canary = min(1.0, base * t.canary_factor)
            if self._shared(a) and t.shared_error is not None:
                base = canary = t.shared_error
            seconds = b - a
            share = weight / 100
            for fraction, p, is_canary in ((1 - share, base, False), (share, canary, True)):
                mean = t.rps * seconds * fraction
                errors = poisson(self.rng, mean * p)
                requests = errors + poisson(self.rng, mean * (1 - p))
                if is_canary:
                    nc, xc = nc + requests, xc + errors
                else:
                    nb, xb = nb + requests, xb + errors
        return nb, xb, nc, xc

    def degraded(self) -> tuple[float, float] | None:
        """When the shared degradation begins and ends, once it has been scheduled."""
        if self.shared_from is None:
            return None
        return self.shared_from, self.shared_from + self.traffic.shared_for

    def _shared(self, moment: float) -> bool:
        start = self.shared_from
        return start is not None and start <= moment < start + self.traffic.shared_for


def counted(slo: Slo) -> bool:
    """Whether an SLO sees the simulated errors."""
    return isinstance(slo.kind, ErrorRate) or (
        isinstance(slo.kind, Query) and slo.kind.samples_template is not None
    )


def judged(spec: Spec) -> Slo | None:
    """The SLO that sees the simulated errors: the first that counts them, if any."""
    return next((s for s in spec.analysis.slos if counted(s)), None)


def simulate(
    spec: Spec, traffic: Traffic, rng: random.Random, max_seconds: float | None = None
) -> Outcome:
    """Run the engine on simulated traffic until the rollout ends or `max_seconds` pass
    (default: twice the schedule's holds, at least an hour)."""
    interval = spec.analysis.interval.total_seconds()
    holds = sum(step.hold.total_seconds() for step in spec.steps)
    limit = max_seconds if max_seconds is not None else max(2 * holds, 3600.0)
    streams = Streams(traffic, rng)
    target = judged(spec)
    first = {slo.name: SloObservation(None, None, 0, 0) for slo in spec.analysis.slos}
    status = engine.tick(spec, Status(), Observations(first), T0).status
    ticks: list[Counts] = []
    step_from = 0  # index in `ticks` where the current step's counts begin
    lookbacks = {
        slo.name: max(1, math.ceil(slo.lookback.total_seconds() / interval - 1e-9))
        for slo in spec.analysis.slos
    }
    k = 0
    while True:
        k += 1
        now = k * interval
        weight = status.canary_weight or 0
        ticks.append(streams.draw(now - interval, now, weight))
        observations = Observations(
            {
                slo.name: _observe(slo, slo is target, ticks, lookbacks[slo.name], step_from)
                for slo in spec.analysis.slos
            }
        )
        status = engine.tick(spec, status, observations, T0 + timedelta(seconds=now)).status
        if status.phase in ("RolledBack", "Promoted"):
            return Outcome(status.phase, now, weight, streams.degraded())
        if (status.canary_weight or 0) != weight:
            step_from = len(ticks)
        if now >= limit:
            return Outcome("Running", now, status.canary_weight or 0, streams.degraded())


def _observe(
    slo: Slo, target: bool, ticks: list[Counts], lookback: int, step_from: int
) -> SloObservation:
    nb, xb, nc, xc = _sum(ticks[-lookback:])
    if not target:
        return SloObservation(1.0, 1.0, nb, nc)
    counts = None
    if slo.confidence is not None:
        sb, sxb, sc, sxc = _sum(ticks[step_from:])
        counts = Stratum(sb, sxb, sc, sxc)
    return SloObservation(xb / nb if nb else None, xc / nc if nc else None, nb, nc, counts=counts)


def _sum(ticks: list[Counts]) -> Counts:
    nb = xb = nc = xc = 0
    for b, eb, c, ec in ticks:
        nb, xb, nc, xc = nb + b, xb + eb, nc + c, xc + ec
    return nb, xb, nc, xc


@dataclass(frozen=True)
class ThresholdPolicy:
    """An absolute threshold counted the way Flagger counts failed checks: every interval
    the canary's error rate over the lookback is checked against `threshold`; a check above
    it, or without data, is a failed check; failed checks add up over the whole analysis
    (a passing check does not reset them) and `failure_limit` of them roll back. A step
    advances after its hold at a passing check; the last step held is promoted."""

    threshold: float = 0.01
    failure_limit: int = 5


def time_limit(spec: Spec, max_seconds: float | None) -> float:
    """How long a policy without the engine is simulated: `max_seconds`, or twice the
    schedule's holds (at least an hour)."""
    holds = sum(step.hold.total_seconds() for step in spec.steps)
    return max_seconds if max_seconds is not None else max(2 * holds, 3600.0)


def advance(spec: Spec, index: int, started: float, now: float) -> tuple[int, float] | None:
    """A policy's schedule after a tick at `now` that may advance it: the step and when it
    started (the next step from `now` once the hold of step `index`, begun at `started`, is
    over), or None when the last step's hold is over (promoted)."""
    if now - started < spec.steps[index].hold.total_seconds():
        return index, started
    if index == len(spec.steps) - 1:
        return None
    return index + 1, now


def simulate_threshold(
    spec: Spec,
    policy: ThresholdPolicy,
    traffic: Traffic,
    rng: random.Random,
    max_seconds: float | None = None,
) -> Outcome:
    """The threshold policy on the same traffic model, with the spec's schedule, interval and
    (first counted SLO's) lookback; no engine involved."""
    interval = spec.analysis.interval.total_seconds()
    slo = judged(spec) or spec.analysis.slos[0]
    lookback = max(1, math.ceil(slo.lookback.total_seconds() / interval - 1e-9))
    limit = time_limit(spec, max_seconds)
    streams = Streams(traffic, rng)
    ticks: list[Counts] = []
    index, started, failed, k = 0, 0.0, 0, 0
    while True:
        k += 1
        now = k * interval
        weight = spec.steps[index].weight
        ticks.append(streams.draw(now - interval, now, weight))
        _, _, nc, xc = _sum(ticks[-lookback:])
        passed = nc > 0 and xc / nc <= policy.threshold
        if not passed:
            failed += 1
            if failed >= policy.failure_limit:
                return Outcome("RolledBack", now, weight, streams.degraded())
        else:
            step = advance(spec, index, started, now)
            if step is None:
                return Outcome("Promoted", now, weight, streams.degraded())
            index, started = step
        if now >= limit:
            return Outcome("Running", now, weight, streams.degraded())
