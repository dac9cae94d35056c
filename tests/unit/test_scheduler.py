"""The tick scheduler: per-rollout cadence, no overlapping ticks, removal, immediate ticks."""

import asyncio
import time
from collections.abc import Hashable

from canaryguard.runtime.scheduler import Scheduler


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    stop = asyncio.Event()
    runner = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await runner


def test_each_key_ticks_at_its_own_interval() -> None:
    calls: dict[Hashable, list[float]] = {"fast": [], "slow": []}

    async def tick(key: Hashable) -> None:
        calls[key].append(time.monotonic())

    async def main() -> None:
        s = Scheduler(tick)
        s.upsert("fast", 0.05)
        s.upsert("slow", 0.25)
        await run_for(s, 0.6)

    asyncio.run(main())
    # 0.6 s at 0.05 s is 12-13 ticks and at 0.25 s 3 ticks; allow for a loaded machine.
    assert 8 <= len(calls["fast"]) <= 13
    assert 2 <= len(calls["slow"]) <= 3
    gaps = [b - a for a, b in zip(calls["slow"], calls["slow"][1:], strict=False)]
    assert all(g > 0.2 for g in gaps)


def test_a_slow_tick_is_never_overlapped_and_others_keep_going() -> None:
    running = {"slow": 0, "max": 0}
    fast_ticks = []

    async def tick(key: Hashable) -> None:
        if key == "slow":
            running["slow"] += 1
            running["max"] = max(running["max"], running["slow"])
            await asyncio.sleep(0.3)
            running["slow"] -= 1
        else:
            fast_ticks.append(key)

    async def main() -> None:
        s = Scheduler(tick, concurrency=4)
        s.upsert("slow", 0.05)
        s.upsert("fast", 0.05)
        await run_for(s, 0.5)

    asyncio.run(main())
    assert running["max"] == 1
    assert len(fast_ticks) >= 6


def test_removed_key_stops_and_immediate_upsert_ticks_at_once() -> None:
    calls: list[tuple[Hashable, float]] = []

    async def tick(key: Hashable) -> None:
        calls.append((key, time.monotonic()))

    async def main() -> None:
        s = Scheduler(tick)
        stop = asyncio.Event()
        runner = asyncio.create_task(s.run(stop))
        s.upsert("a", 10.0)
        await asyncio.sleep(0.05)
        assert [k for k, _ in calls] == ["a"]
        started = time.monotonic()
        s.upsert("a", 10.0, now=True)
        await asyncio.sleep(0.05)
        assert [k for k, _ in calls] == ["a", "a"]
        assert calls[1][1] - started < 0.05
        s.remove("a")
        assert "a" not in s
        await asyncio.sleep(0.05)
        assert len(calls) == 2
        stop.set()
        await runner

    asyncio.run(main())


def test_a_failing_tick_does_not_stop_the_schedule() -> None:
    calls = []

    async def tick(key: Hashable) -> None:
        calls.append(key)
        raise RuntimeError("boom")

    async def main() -> None:
        s = Scheduler(tick)
        s.upsert("x", 0.05)
        await run_for(s, 0.3)

    asyncio.run(main())
    assert len(calls) >= 3
