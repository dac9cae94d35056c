"""The backtest: the engine replayed over history, as if the rollout had run then.

Ticks fall at `start`, `start + interval`, ... up to `end` (the rollout's own interval). Each
tick's observations come from range queries evaluated on that same grid: every query of the
rollout (`queries.plan`) asked once for the whole period, and a tick reads each series' point
at its time (a series without a point there is no data, as an empty instant result is). The
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
from canaryguard.core.observations import Observations
from canaryguard.core.ports import Sample, Series
from canaryguard.core.queries import fold, plan
from canaryguard.core.spec import Spec
from canaryguard.core.status import FINISHED, SloStatus, Status, truncate_time

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
    """`start`, `start + interval`, ... up to and including `end`."""
    if interval <= timedelta(0):
        raise ValueError("the interval must be positive")
    if end < start:
        raise ValueError("the end must not be before the start")
    count = int((end - start) / interval) + 1
    if count > MAX_TICKS:
        raise ValueError(f"{count} ticks: at most {MAX_TICKS} (shorten the period)")
    return [start + interval * k for k in range(count)]


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
    times = tick_times(truncate_time(start), truncate_time(end), spec.analysis.interval)
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
