"""Rollouts of one slot outnumbering the bound on ticks in flight still share one query per
group (`scheduler.slot_released`, `QueryBatcher.expect` at dispatch): the scheduler and the
batcher together on virtual time (see test_scheduler), ticks shaped like the controller's
(a route read, the builtin queries at once, a status write)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from canaryguard.core.batching import Builtin
from canaryguard.core.ports import Sample
from canaryguard.runtime.batcher import QueryBatcher
from canaryguard.runtime.scheduler import Scheduler
from tests.unit.fakes import FakeMetrics
from tests.unit.test_batcher import PROM, answering
from tests.unit.test_scheduler import run_for
from tests.unit.virtual_time import VirtualClock, run_virtual

SERVICES = [f"svc-{i:02d}" for i in range(40)]
WINDOW = 0.125


def group(service: str, kind: str) -> Builtin:
    """One of three groups (kind and lookback) of one rollout's builtin queries."""
    selector = {"destination_service_name": service}
    if kind == "errors":
        return Builtin.of("errors", selector, "version", "v1", "v2", 60.0, codes="5..")
    lookback = 300.0 if kind == "requests-5m" else 60.0
    return Builtin.of("requests", selector, "version", "v1", "v2", lookback)


KINDS = ("requests", "errors", "requests-5m")


def own_rows(service: str) -> list[Sample]:
    i = SERVICES.index(service) + 1
    return [Sample({"version": "v1"}, 100.0 * i), Sample({"version": "v2"}, 10.0 * i)]


class Bed:
    """Ticks as the controller runs them, recording what the test checks."""

    def __init__(self, clock: VirtualClock, batcher: QueryBatcher, slow: str = "") -> None:
        self.clock = clock
        self.batcher = batcher
        self.slow = slow
        self.at_work = 0
        self.most_at_work = 0
        self.answers: dict[Hashable, list[tuple[float, list[list[Sample]]]]] = {}

    async def work(self, seconds: float) -> None:
        self.at_work += 1
        self.most_at_work = max(self.most_at_work, self.at_work)
        await asyncio.sleep(seconds)
        self.at_work -= 1

    async def tick(self, key: Hashable) -> None:
        assert isinstance(key, str)
        arrived = self.batcher.expect()  # as `Controller.tick_key` does
        try:
            await self.work(5.0 if key == self.slow else 0.015625)  # its route read
            source = self.batcher.connect(PROM, 5.0, {}, 10.0)
            got = await asyncio.gather(*(source.query_builtin(group(key, k)) for k in KINDS))
            self.answers.setdefault(key, []).append((self.clock(), list(got)))
            await self.work(0.03125)  # its status write
        finally:
            arrived()


def run_slot(concurrency: int, slow: str = "") -> tuple[Bed, FakeMetrics, list[tuple[float, str]]]:
    """40 rollouts of a 30 s interval for 65 s; what they got, and every query with its
    time."""
    sent: list[tuple[float, str]] = []
    fake = FakeMetrics()
    bed: Bed | None = None

    async def main(clock: VirtualClock) -> None:
        nonlocal bed
        rows = answering(*SERVICES)

        def answer(text: str) -> list[Sample]:
            sent.append((clock(), text))
            return rows(text)

        fake.answer = answer
        batcher = QueryBatcher(fake, window=WINDOW)
        bed = Bed(clock, batcher, slow)
        scheduler = Scheduler(bed.tick, concurrency, clock=clock, wall=clock, expect=batcher.expect)
        for service in SERVICES:
            scheduler.upsert(service, 30.0)  # new: all at once, then in the same slots
        await run_for(scheduler, 65.0)

    run_virtual(main)
    assert bed is not None
    return bed, fake, sent


@pytest.mark.parametrize("concurrency", [32, 16, 8])
def test_a_slot_of_more_rollouts_than_the_bound_costs_one_query_per_group(
    concurrency: int,
) -> None:
    bed, fake, _ = run_slot(concurrency)
    # Three waves (at 0, 30 and 60 s) of 40 rollouts, each three groups: one query each.
    assert len(fake.queries) == 3 * len(KINDS)
    assert all("destination_service_name=~" in q for q in fake.queries)  # all batched
    assert len(set(fake.queries)) == len(KINDS)
    for service in SERVICES:
        ticks = bed.answers[service]
        assert [int(t) // 30 for t, _ in ticks] == [0, 1, 2]
        assert all(got == [own_rows(service)] * len(KINDS) for _, got in ticks)
    # Ticks at work (not waiting for their batch) stay within the bound.
    assert bed.most_at_work == concurrency


def test_a_slow_rollout_delays_the_others_no_more_than_the_window() -> None:
    slow = SERVICES[7]
    bed, fake, sent = run_slot(32, slow=slow)
    # Per wave: the others' three groups, sent when the window is over, then the slow
    # rollout's own three (alone: unbatched text).
    assert len(fake.queries) == 3 * 2 * len(KINDS)
    assert sum(f'"{slow}"' in q for q in fake.queries) == 3 * len(KINDS)
    for t, text in sent:
        # The others': sent one window after the last of them joined (the second wave,
        # started when the first lent its places, after two route reads), not held for
        # the slow one.
        if f'"{slow}"' not in text:
            assert t % 30 <= 2 * 0.015625 + WINDOW
            assert "=~" in text and slow not in text
    for service in SERVICES:
        assert [got for _, got in bed.answers[service]] == [[own_rows(service)] * len(KINDS)] * 3
