"""Ticks of long intervals in slots (on virtual time, see test_scheduler): they start on the
next whole second after their cadence, so rollouts tick together and share batched queries;
rollouts listed at start-up are spread over their interval; the cadence never drifts."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta

import pytest

from canaryguard.core.backtest import tick_times
from canaryguard.runtime.scheduler import SLOT, Scheduler, scheduled_time, spread_offset
from tests.unit.test_scheduler import VirtualClock, recorder, run_for, run_virtual


def test_a_long_interval_ticks_in_the_slot_after_its_cadence_without_drifting() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock)
        s = Scheduler(tick, clock=clock, wall=clock)
        clock.now = 0.25
        s.upsert("a", 30.5)  # new: at once, then in the slot after 30.75, 61.25, 91.75
        s.upsert("short", 2.5)  # a short interval keeps its exact cadence
        await run_for(s, 95)

    run_virtual(main)
    assert calls["a"] == [0.25, 31.0, 62.0, 92.0]
    assert calls["short"][:3] == [0.25, 2.75, 5.25]


def test_rollouts_listed_at_start_up_are_spread_over_their_interval_in_slots() -> None:
    calls: dict[Hashable, list[float]] = {}
    keys = [("ns", f"svc-{i:04d}") for i in range(200)]

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock)
        s = Scheduler(tick, clock=clock, wall=clock)
        for key in keys:
            s.upsert(key, 30.0, now=True, spread=True)
        await run_for(s, 59.5)

    run_virtual(main)
    firsts = [calls[key][0] for key in keys]
    assert all(0 <= t < 30 and t == int(t) for t in firsts)
    assert len(set(firsts)) >= 25  # spread over the slots of the interval
    assert all(calls[key][1] - calls[key][0] == 30 for key in keys)
    assert all(t == spread_offset(key, 30.0) for key, t in zip(keys, firsts, strict=True))


def test_the_spread_is_the_same_after_a_restart_and_only_for_long_intervals() -> None:
    key = ("ml", "scorer")
    assert spread_offset(key, 30.0) == spread_offset(key, 30.0)
    assert 0 <= spread_offset(key, 30.0) < 30 and spread_offset(key, 30.0) % SLOT == 0
    assert spread_offset(key, 5.0) == 0.0


def test_a_spec_change_ticks_at_once_outside_the_slots() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock)
        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("a", 30.0)
        await run_for(s, 10.25)
        s.upsert("a", 30.0, now=True)
        await run_for(s, 31)

    run_virtual(main)
    assert calls["a"] == [0.0, 10.25, 41.0]


def test_a_slotted_tick_takes_its_slot_as_its_time_or_when_late_the_second_it_starts_in() -> None:
    seen: list[tuple[str, float, float | None]] = []

    async def main(clock: VirtualClock) -> None:
        async def tick(key: Hashable) -> None:
            seen.append((str(key), clock(), scheduled_time()))
            await asyncio.sleep(1.5 if key == "slow" else 0.25)

        s = Scheduler(tick, concurrency=1, clock=clock, wall=lambda: clock() + 1000.5)
        clock.now = 0.25
        for key in ("slow", "a", "b"):
            s.upsert(key, 30.0, spread=False)
        await run_for(s, 40)

    run_virtual(main)
    # Added at once: not slotted, the first takes the moment it was due (0.25 + 1000.5); the
    # other two start a slot late or more (after `slow`, at 1.75 and 2.0), so each takes the
    # whole wall-clock second it starts in: the same one, so they would share a batch.
    # Then slots on whole wall seconds: the slot after 30.25 + 1000.5 is 1031, at 30.5.
    assert [(k, t) for k, _, t in seen[:3]] == [("slow", 1000.75), ("a", 1002.0), ("b", 1002.0)]
    slow, a, b = seen[3:6]
    assert slow == ("slow", 30.5, 1031.0)
    assert a == ("a", 32.0, 1032.0)  # waited 1.5 s for the one place in flight
    assert b == ("b", 32.25, 1032.0)


def test_a_short_interval_tick_takes_its_time_on_the_grid_even_when_it_starts_late() -> None:
    seen: list[tuple[str, float, float | None]] = []

    async def main(clock: VirtualClock) -> None:
        async def tick(key: Hashable) -> None:
            seen.append((str(key), clock(), scheduled_time()))
            await asyncio.sleep(0.375 if key == "busy" else 0.0)

        # Wall time is 1000 s ahead, plus half a millisecond: times are whole milliseconds.
        s = Scheduler(tick, concurrency=1, clock=clock, wall=lambda: clock() + 1000.0005)
        clock.now = 0.25
        s.upsert("busy", 1.0)
        s.upsert("x", 1.0)
        await run_for(s, 1.875)

    run_virtual(main)
    # x waits 0.375 s for busy's place each time, yet its time is its due time on the grid.
    assert seen == [
        ("busy", 0.25, 1000.25),
        ("x", 0.625, 1000.25),
        ("busy", 1.25, 1001.25),
        ("x", 1.625, 1001.25),
    ]


@pytest.mark.parametrize("interval", [1.0, 2.5, 30.0, 45.0])
def test_the_scheduler_s_tick_times_are_the_backtest_s_grid_from_the_first(interval: float) -> None:
    times: list[float | None] = []

    async def main(clock: VirtualClock) -> None:
        async def tick(key: Hashable) -> None:
            times.append(scheduled_time())
            await asyncio.sleep(0.125)  # each tick takes a while: nothing drifts

        s = Scheduler(tick, clock=clock, wall=lambda: clock() + 1_700_000_000.375)
        clock.now = 0.5
        s.upsert("a", interval)  # new: at once, off the whole second
        await run_for(s, 10 * interval)

    run_virtual(main)
    assert None not in times and len(times) >= 10
    live = [datetime.fromtimestamp(t, UTC) for t in times if t is not None]
    assert live == tick_times(live[0], live[-1], timedelta(seconds=interval))
    if interval >= 10:  # slotted after the first
        assert all(t.microsecond == 0 for t in live[1:]) and live[0].microsecond == 875000
