"""The query batcher (`canaryguard.runtime.batcher`) on a fake Prometheus: ticks on their way
are waited for (within the window), a lone tick is not; each member gets its own rows; a
refusal is asked again per rollout; credentials and shapes never share a query."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from canaryguard.core.batching import Builtin
from canaryguard.core.ports import MetricsUnavailable, QueryRefused, Sample
from canaryguard.runtime.batcher import QueryBatcher
from tests.unit.fakes import FakeMetrics

PROM = "http://prometheus:9090"


def member(service: str, metric: str = "requests") -> Builtin:
    selector = {"destination_service_name": service}
    if metric == "errors":
        return Builtin.of("errors", selector, "version", "v1", "v2", 60.0, codes="5..")
    return Builtin.of("requests", selector, "version", "v1", "v2", 60.0)


def rows_for(*services: str) -> list[Sample]:
    """What Prometheus answers a batch over `services`: v1 100*(i+1), v2 10*(i+1)."""
    return [
        Sample({"destination_service_name": s, "reporter": "destination", "version": v}, value * i)
        for i, s in enumerate(services, start=1)
        for v, value in (("v1", 100.0), ("v2", 10.0))
    ]


def answering(*services: str) -> Callable[[str], list[Sample]]:
    def answer(text: str) -> list[Sample]:
        if "destination_service_name=~" in text:  # a batch: a regex over the services
            return rows_for(*services)
        service = text.split('destination_service_name="')[1].split('"')[0]
        i = services.index(service) + 1
        return [Sample({"version": "v1"}, 100.0 * i), Sample({"version": "v2"}, 10.0 * i)]

    return answer


async def tick(
    batcher: QueryBatcher,
    service: str,
    delay: float = 0.0,
    headers: dict[str, str] | None = None,
    metric: str = "requests",
    at: datetime | None = None,
) -> list[Sample] | BaseException:
    """One tick, as the controller runs it: expected from its start, its query after `delay`
    (its VirtualService read), arrived at its end."""
    arrived = batcher.expect()
    try:
        await asyncio.sleep(delay)
        source = batcher.connect(PROM, 5.0, headers or {}, 10.0)
        try:
            return await source.query_builtin(member(service, metric), at)
        except Exception as exc:
            return exc
    finally:
        arrived()


def run(*ticks: Awaitable[Any]) -> list[Any]:
    async def main() -> list[Any]:
        return list(await asyncio.gather(*ticks))

    return asyncio.run(main())


def test_ticks_on_their_way_share_one_query_and_each_gets_its_rows() -> None:
    fake = FakeMetrics(answering("a", "b", "c"))
    batcher = QueryBatcher(fake, window=5.0)
    began = time.monotonic()
    a, b, c = run(tick(batcher, "a"), tick(batcher, "b", 0.05), tick(batcher, "c", 0.1))
    assert time.monotonic() - began < 2  # sent once nobody was on the way, not after 5 s
    assert len(fake.queries) == 1
    assert "=~" in fake.queries[0]
    assert a == [Sample({"version": "v1"}, 100.0), Sample({"version": "v2"}, 10.0)]
    assert b == [Sample({"version": "v1"}, 200.0), Sample({"version": "v2"}, 20.0)]
    assert c == [Sample({"version": "v1"}, 300.0), Sample({"version": "v2"}, 30.0)]


def test_a_lone_tick_waits_for_nobody_and_sends_its_own_query() -> None:
    fake = FakeMetrics(answering("a"))
    batcher = QueryBatcher(fake, window=5.0)
    began = time.monotonic()
    (answer,) = run(tick(batcher, "a"))
    assert time.monotonic() - began < 1
    assert fake.queries == [member("a").single()]
    assert answer == [Sample({"version": "v1"}, 100.0), Sample({"version": "v2"}, 10.0)]


def test_a_batch_waits_no_longer_than_its_window() -> None:
    fake = FakeMetrics(answering("a", "b"))
    batcher = QueryBatcher(fake, window=0.2)
    began = time.monotonic()
    a, b = run(tick(batcher, "a"), tick(batcher, "b", 1.0))  # b comes after the window
    assert 0.2 <= time.monotonic() - began < 2
    assert fake.queries == [member("a").single(), member("b").single()]
    assert isinstance(a, list) and isinstance(b, list)


def test_ticks_each_within_the_window_of_the_one_before_share_one_query() -> None:
    # Four ticks 0.15 s apart with a 0.2 s window: the last comes 0.45 s after the first.
    fake = FakeMetrics(answering("a", "b", "c", "d"))
    batcher = QueryBatcher(fake, window=0.2)
    answers = run(*(tick(batcher, s, 0.15 * i) for i, s in enumerate("abcd")))
    assert len(fake.queries) == 1 and "=~" in fake.queries[0]
    assert [a[0].value for a in answers] == [100.0, 200.0, 300.0, 400.0]


def test_a_batch_whose_members_keep_coming_is_sent_after_ten_windows() -> None:
    # A tick every 0.05 s for 1.5 s, with a 0.1 s window: the first batch is sent 1 s after
    # its first member (WAIT_WINDOWS), the rest go in a second.
    services = [f"s{i:02d}" for i in range(30)]
    fake = FakeMetrics(answering(*services))
    batcher = QueryBatcher(fake, window=0.1)
    began = time.monotonic()
    answers = run(*(tick(batcher, s, 0.05 * i) for i, s in enumerate(services)))
    assert time.monotonic() - began < 3
    assert len(fake.queries) == 2, fake.queries
    first = re.search(r'destination_service_name=~"([^"]*)"', fake.queries[0])
    assert first is not None
    # The services of the first batch: those that came within 1 s, give or take a tick.
    assert 17 <= len(first.group(1).split("|")) <= 23, first.group(1)
    assert all(isinstance(a, list) for a in answers)


def test_other_credentials_or_shapes_never_share_a_query() -> None:
    fake = FakeMetrics(answering("a", "b"))
    batcher = QueryBatcher(fake, window=5.0)
    run(
        tick(batcher, "a", headers={"Authorization": "Bearer team-a"}),
        tick(batcher, "b", headers={"Authorization": "Bearer team-b"}),
    )
    assert len(fake.queries) == 2
    headers = sorted(c.headers["Authorization"] for c in fake.connections[-2:])
    assert headers == ["Bearer team-a", "Bearer team-b"]

    fake.queries.clear()
    fake.answer = lambda text: []
    run(tick(batcher, "a"), tick(batcher, "b", metric="errors"))
    assert len(fake.queries) == 2


def test_an_outage_is_every_member_s() -> None:
    def down(text: str) -> list[Sample]:
        raise MetricsUnavailable("connection refused")

    batcher = QueryBatcher(FakeMetrics(down), window=5.0)
    a, b = run(tick(batcher, "a"), tick(batcher, "b", 0.05))
    assert isinstance(a, MetricsUnavailable) and isinstance(b, MetricsUnavailable)


def test_a_refused_batch_is_asked_again_per_rollout_so_a_refusal_is_its_own() -> None:
    sent: list[str] = []

    def answer(text: str) -> list[Sample]:
        sent.append(text)
        if "destination_service_name=~" in text:
            raise QueryRefused("422: too many samples")
        if 'destination_service_name="b"' in text:
            raise QueryRefused("400: b is broken")
        return [Sample({"version": "v1"}, 1.0)]

    batcher = QueryBatcher(FakeMetrics(answer), window=5.0)
    a, b = run(tick(batcher, "a"), tick(batcher, "b", 0.05))
    assert a == [Sample({"version": "v1"}, 1.0)]
    assert isinstance(b, QueryRefused) and "b is broken" in str(b)
    assert len(sent) == 3


def test_a_batch_is_cut_before_its_query_grows_too_long() -> None:
    fake = FakeMetrics(lambda text: [])
    batcher = QueryBatcher(fake, window=5.0, max_union_chars=40)
    services = [f"service-{i:02d}" for i in range(6)]
    run(*(tick(batcher, s, 0.01 * i) for i, s in enumerate(services)))
    assert 2 <= len(fake.queries) <= 6
    assert all(len(q) < 600 for q in fake.queries)


@pytest.mark.parametrize("cancelled", [0, 1])
def test_a_cancelled_tick_does_not_hold_up_the_others(cancelled: int) -> None:
    fake = FakeMetrics(answering("a", "b", "c"))
    batcher = QueryBatcher(fake, window=1.0)

    async def main() -> list[Any]:
        # a and b wait in the batch for c, which is on its way.
        delays = {"a": 0.0, "b": 0.01, "c": 0.2}
        tasks = [asyncio.create_task(tick(batcher, s, d)) for s, d in delays.items()]
        await asyncio.sleep(0.05)
        tasks[cancelled].cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    results = asyncio.run(main())
    assert isinstance(results[cancelled], asyncio.CancelledError)
    assert isinstance(results[1 - cancelled], list) and isinstance(results[2], list)
    assert len(fake.queries) == 1


def test_a_batch_is_evaluated_at_its_ticks_time_and_other_times_never_share_it() -> None:
    fake = FakeMetrics(answering("a", "b", "c"))
    batcher = QueryBatcher(fake, window=5.0)
    slot = datetime(2024, 6, 1, 12, 0, 30, tzinfo=UTC)
    other = datetime(2024, 6, 1, 12, 0, 30, 250000, tzinfo=UTC)
    a, b, c = run(
        tick(batcher, "a", at=slot),
        tick(batcher, "b", delay=0.01, at=slot),
        tick(batcher, "c", delay=0.02, at=other),
    )
    assert len(fake.queries) == 2  # a and b together at the slot; c alone at its own time
    assert "destination_service_name=~" in fake.queries[0]
    assert 'destination_service_name="c"' in fake.queries[1]
    assert fake.times == [slot, other]
    assert a == [Sample({"version": "v1"}, 100.0), Sample({"version": "v2"}, 10.0)]
    assert b == [Sample({"version": "v1"}, 200.0), Sample({"version": "v2"}, 20.0)]
    assert c == [Sample({"version": "v1"}, 300.0), Sample({"version": "v2"}, 30.0)]
