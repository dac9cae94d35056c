"""Ticks of long intervals in slots (on virtual time, see test_scheduler): they start on the
next whole second after their cadence, so rollouts tick together and share batched queries;
rollouts listed at start-up are spread over their interval; the cadence never drifts."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

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


def test_a_slotted_tick_takes_its_slot_as_its_time_unless_it_starts_a_slot_late() -> None:
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
    # Added at once: not slotted. Then slots on whole wall seconds (wall = clock + 1000.5):
    # the slot after 30.25 + 1000.5 is 1031, at 30.5 on the clock.
    assert [t for _, _, t in seen[:3]] == [None, None, None]
    slow, a, b = seen[3:6]
    assert slow == ("slow", 30.5, 1031.0)
    assert a[0] == "a" and a[2] is None  # waited 1.5 s for the one slot in flight
    assert b[2] is None
