"""The backtest: the engine replayed over history, as if the rollout had run then.

Ticks fall on the operator's grid from `start` (`canaryguard.core.cadence`): `start`, then
`start + interval`, ... up to `end`, each in the whole second that follows for intervals of
10 s and more, as the operator's slotted ticks. A live tick evaluates its queries at its own
time on that grid, so with `start` a tick the rollout had (its `Started` time, the first
tick), every replayed tick is evaluated at the instant a live tick was. Each tick's
observations come from range queries evaluated at those times: every query of the rollout
(`queries.plan`) asked once per run of equally spaced ticks (`runs`), and a tick reads each
series' point at its time (a series without a point there is no data, as an empty instant
result is). The
engine runs exactly as in the operator, from a rollout never ticked, until it finishes or the
period ends. Nothing is carried out: the decisions are only recorded, and a page is counted
as delivered at once so that it is not asked for again. The routed weights are not known
(history has the weights of whatever ran then), so they are neither guarded nor compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from canaryguard.core import engine
from canaryguard.core.actions import EmitEvent, Page
from canaryguard.core.cadence import from_ms, grid_ms, to_ms
from canaryguard.core.observations import Observations
from canaryguard.core.ports import Sample, Series
from canaryguard.core.queries import fold, plan
from canaryguard.core.spec import Spec
from canaryguard.core.status import FINISHED, SloStatus, Status

MAX_TICKS = 100_000


@dataclass(frozen=True)
class TickRecord:
    """What one replayed tick saw and decided."""

    index: int
    at: datetime
    phase: str
    canary_weight: int | None
    slos: tuple[SloStatus, ...]
    decisions: tuple[EmitEvent, ...]


@dataclass(frozen=True)
class Replay:
    """Every replayed tick, and the status after the last."""

    ticks: tuple[TickRecord, ...]
    status: Status

    @property
    def decided(self) -> TickRecord | None:
        """The tick that finished the rollout (Promoted or RolledBack), if one did."""
        last = self.ticks[-1] if self.ticks else None
        return last if last is not None and last.phase in FINISHED else None


def tick_times(start: datetime, end: datetime, interval: timedelta) -> list[datetime]:
    """The operator's tick grid from `start` (`cadence.grid_ms`) up to and including `end`,
    to the millisecond."""
    interval_ms = interval // timedelta(milliseconds=1)
    if interval_ms <= 0:
        raise ValueError("the interval must be positive")
    if end < start:
        raise ValueError("the end must not be before the start")
    start_ms, end_ms = to_ms(start), to_ms(end)
    count = (end_ms - start_ms) // interval_ms + 1
    if count > MAX_TICKS:
        raise ValueError(f"{count} ticks: at most {MAX_TICKS} (shorten the period)")
    times = []
    for k in range(count):
        at = grid_ms(start_ms, interval_ms, k)
        if at > end_ms:
            break
        times.append(from_ms(at))
    return times


def runs(times: Sequence[datetime], interval: timedelta) -> list[tuple[datetime, datetime]]:
    """The tick times as runs of ticks exactly `interval` apart, each as (first, last): one
    range query stepped by the interval answers each run."""
    found: list[tuple[datetime, datetime]] = []
    for at in times:
        if found and at - found[-1][1] == interval:
            found[-1] = (found[-1][0], at)
        else:
            found.append((at, at))
    return found


def _key(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def samples_at(series: Sequence[Series], at: datetime) -> list[Sample]:
    """The instant vector a range answer holds at `at` (points matched to the millisecond)."""
    key = _key(at)
    found = []
    for one in series:
        for moment, value in one.points:
            if round(moment * 1000) == key:
                found.append(Sample(one.labels, value))
                break
    return found


def observations_at(
    spec: Spec, answers: Mapping[str, Sequence[Series]], at: datetime
) -> Observations:
    """One tick's observations out of the range answers (keyed by query text); a query
    missing from `answers` counts as failed (unavailable), as in the operator."""
    result = {}
    for name, sq in plan(spec).items():
        if sq.value not in answers or sq.samples not in answers:
            continue  # no entry: unavailable
        value = samples_at(answers[sq.value], at)
        samples = samples_at(answers[sq.samples], at)
        result[name] = fold(sq, value, samples)
    return Observations(slos=result)


def replay(
    spec: Spec, answers: Mapping[str, Sequence[Series]], start: datetime, end: datetime
) -> Replay:
    """Run the engine tick by tick over [start, end] on the range answers; stops at the
    tick that finishes the rollout."""
    status = Status()
    records = []
    times = tick_times(start, end, spec.analysis.interval)
    for index, at in enumerate(times):
        result = engine.tick(spec, status, observations_at(spec, answers, at), at)
        status = result.status
        if any(isinstance(a, Page) for a in result.actions):
            status = engine.record_page_result(status, True, False, None, at, attempts=0)
        records.append(
            TickRecord(
                index=index,
                at=at,
                phase=status.phase,
                canary_weight=status.canary_weight,
                slos=status.slos,
                decisions=tuple(a for a in result.actions if isinstance(a, EmitEvent)),
            )
        )
        if status.phase in FINISHED:
            break
    return Replay(tuple(records), status)
