"""The tick scheduler: per-rollout cadence, no overlapping ticks, removal, immediate ticks.

Every test runs on virtual time: the scheduler's clock is a `VirtualClock`, and so is the
event loop's, whose timers (the scheduler's waits, `asyncio.sleep` in the ticks and in the
tests) fire in order without real waiting. Time moves only when every task waits, straight
to the next timer, so tick times are exact, whatever the machine's load.

Intervals and durations are binary fractions (0.25, 0.5, 1, 10), exact in floating point.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

import pytest

from canaryguard.runtime.scheduler import Scheduler
from tests.unit.virtual_time import VirtualClock, run_virtual


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    """Run the scheduler for `seconds` of virtual time, then stop it."""
    stop = asyncio.Event()
    runner = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await runner


def recorder(
    clock: VirtualClock, duration: float = 0.0
) -> tuple[dict[Hashable, list[float]], Callable[[Hashable], Awaitable[None]]]:
    """A tick function that records each tick's start time per key and lasts `duration`."""
    calls: dict[Hashable, list[float]] = {}

    async def tick(key: Hashable) -> None:
        calls.setdefault(key, []).append(clock())
        if duration:
            await asyncio.sleep(duration)

    return calls, tick


def grid(start: float, step: float, count: int) -> list[float]:
    return [start + i * step for i in range(count)]


def test_the_virtual_clock_moves_only_through_timers() -> None:
    async def main(clock: VirtualClock) -> None:
        assert clock() == 0.0
        await asyncio.sleep(2.5)
        assert clock() == 2.5
        await asyncio.gather(asyncio.sleep(1.0), asyncio.sleep(0.5))
        assert clock() == 3.5

    assert run_virtual(main)() == 3.5


def test_each_key_ticks_at_its_own_interval_from_when_it_was_added() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock)
        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("fast", 0.25)
        s.upsert("slow", 1.0)

        async def add_late() -> None:
            await asyncio.sleep(0.5)
            s.upsert("late", 1.0)

        adder = asyncio.create_task(add_late())
        await run_for(s, 2.1)
        await adder

    run_virtual(main)
    assert calls["fast"] == grid(0.0, 0.25, 9)  # 0, 0.25, ... 2.0
    assert calls["slow"] == [0.0, 1.0, 2.0]
    assert calls["late"] == [0.5, 1.5]


def test_an_interval_below_50ms_is_raised_to_50ms() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock)
        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("x", 0.0)
        await run_for(s, 0.52)

    run_virtual(main)
    assert calls["x"] == pytest.approx(grid(0.0, 0.05, 11))


def test_a_slow_tick_is_never_overlapped_keeps_its_grid_and_others_keep_going() -> None:
    calls: dict[Hashable, list[float]] = {}
    running = {"slow": 0, "max": 0}

    async def main(clock: VirtualClock) -> None:
        async def tick(key: Hashable) -> None:
            calls.setdefault(key, []).append(clock())
            if key == "slow":
                running["slow"] += 1
                running["max"] = max(running["max"], running["slow"])
                await asyncio.sleep(0.75)  # three intervals
                running["slow"] -= 1

        s = Scheduler(tick, concurrency=4, clock=clock, wall=clock)
        s.upsert("slow", 0.25)
        s.upsert("fast", 0.25)
        await run_for(s, 2.1)

    run_virtual(main)
    assert running["max"] == 1
    # Each slow tick ends at +0.75: the ticks due meanwhile are skipped, and the next one is
    # on the original grid (not 0.75 after the end, which would drift).
    assert calls["slow"] == [0.0, 1.0, 2.0]
    assert calls["fast"] == grid(0.0, 0.25, 9)


def test_a_tick_a_little_late_does_not_move_the_grid() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock, duration=0.5)  # half an interval
        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("x", 1.0)
        await run_for(s, 3.1)

    run_virtual(main)
    assert calls["x"] == [0.0, 1.0, 2.0, 3.0]


def test_ticks_in_flight_are_bounded_by_the_concurrency() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock, duration=0.5)
        s = Scheduler(tick, concurrency=2, clock=clock, wall=clock)
        for key in ("a", "b", "c", "d"):
            s.upsert(key, 10.0)
        await run_for(s, 2.0)

    run_virtual(main)
    # Two run at once; the other two wait for a slot, then start as the first two end.
    # (`calls` records the start inside the slot.)
    starts = sorted(t for times in calls.values() for t in times)
    assert starts == [0.0, 0.0, 0.5, 0.5]


def test_removed_key_stops_and_immediate_upsert_ticks_at_once() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock)
        s = Scheduler(tick, clock=clock, wall=clock)
        stop = asyncio.Event()
        runner = asyncio.create_task(s.run(stop))
        s.upsert("a", 10.0)
        await asyncio.sleep(1.0)
        assert calls == {"a": [0.0]}
        s.upsert("a", 10.0, now=True)  # a spec change: tick now, not at 10
        await asyncio.sleep(1.0)
        assert calls == {"a": [0.0, 1.0]}
        s.remove("a")
        assert "a" not in s and len(s) == 0
        await asyncio.sleep(30.0)  # past the next two due times (11, 21)
        assert calls == {"a": [0.0, 1.0]}
        stop.set()
        await runner

    run_virtual(main)


def test_an_immediate_upsert_moves_the_grid_to_now() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock)
        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("a", 10.0)

        async def edit() -> None:
            await asyncio.sleep(4.0)
            s.upsert("a", 10.0, now=True)

        editor = asyncio.create_task(edit())
        await run_for(s, 25.0)
        await editor

    run_virtual(main)
    assert calls["a"] == [0.0, 4.0, 14.0, 24.0]


def test_an_immediate_upsert_during_a_tick_reruns_it_right_after() -> None:
    calls: dict[Hashable, list[float]] = {}
    ends: list[float] = []

    async def main(clock: VirtualClock) -> None:
        async def tick(key: Hashable) -> None:
            calls.setdefault(key, []).append(clock())
            await asyncio.sleep(1.0)
            ends.append(clock())

        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("a", 10.0)

        async def edit() -> None:
            await asyncio.sleep(0.5)  # while the first tick runs
            s.upsert("a", 10.0, now=True)

        editor = asyncio.create_task(edit())
        await run_for(s, 12.0)
        await editor

    run_virtual(main)
    # Never two at once: the rerun starts when the running tick ends, and the grid
    # continues from it.
    assert calls["a"] == [0.0, 1.0, 11.0]
    assert ends[:2] == [1.0, 2.0]


def test_a_new_interval_without_now_applies_after_the_tick_already_due() -> None:
    calls: dict[Hashable, list[float]] = {}

    async def main(clock: VirtualClock) -> None:
        nonlocal calls
        calls, tick = recorder(clock)
        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("a", 10.0)

        async def edit() -> None:
            await asyncio.sleep(0.5)
            s.upsert("a", 1.0)

        editor = asyncio.create_task(edit())
        await run_for(s, 12.5)
        await editor

    run_virtual(main)
    assert calls["a"] == [0.0, 10.0, 11.0, 12.0]


def test_a_failing_tick_does_not_stop_the_schedule(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    async def main(clock: VirtualClock) -> None:
        async def tick(key: Hashable) -> None:
            calls.append(clock())
            raise RuntimeError("boom")

        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("x", 0.25)
        await run_for(s, 1.1)

    with caplog.at_level(logging.ERROR, logger="canaryguard.runtime.scheduler"):
        run_virtual(main)
    assert calls == grid(0.0, 0.25, 5)
    failures = [r for r in caplog.records if r.getMessage() == "tick failed rollout=x"]
    assert len(failures) == 5
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)


def test_stopping_waits_for_the_ticks_in_flight() -> None:
    ends: list[float] = []
    stopped: list[float] = []

    async def main(clock: VirtualClock) -> None:
        async def tick(key: Hashable) -> None:
            await asyncio.sleep(1.0)
            ends.append(clock())

        s = Scheduler(tick, clock=clock, wall=clock)
        s.upsert("x", 10.0)
        await run_for(s, 0.5)
        stopped.append(clock())

    run_virtual(main)
    assert ends == [1.0]
    assert stopped == [1.0]


def test_a_cancelled_run_cancels_ticks_in_flight_and_a_new_run_ticks_what_is_due_at_once() -> None:
    """A leader that loses its Lease cancels its run; when it (or another replica) leads
    again, everything due while it stood by is ticked at once, then on its grid."""
    started: list[tuple[Hashable, float]] = []
    cancelled: list[tuple[Hashable, float]] = []

    async def main(clock: VirtualClock) -> None:
        async def tick(key: Hashable) -> None:
            started.append((key, clock()))
            try:
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                cancelled.append((key, clock()))
                raise

        s = Scheduler(tick, clock=clock)
        s.upsert("a", 1.0)
        term = asyncio.create_task(s.run(asyncio.Event()))
        await asyncio.sleep(1.25)  # ticks at 0 (done at 0.5) and at 1 (in flight)
        term.cancel()
        with pytest.raises(asyncio.CancelledError):
            await term
        assert cancelled == [("a", 1.25)]
        await asyncio.sleep(3.0)  # standing by until 4.25: nothing ticks
        s.upsert("b", 1.0)  # the watch still feeds it
        await run_for(s, 1.125)

    run_virtual(main)
    assert started == [("a", 0.0), ("a", 1.0), ("a", 4.25), ("b", 4.25), ("a", 5.0), ("b", 5.25)]
