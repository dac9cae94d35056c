"""The load generator stops by itself at its request count or its deadline, keeps its rate,
and counts answers by status (0 when nothing answered)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from canaryguard_testbed.childproc import free_port
from canaryguard_testbed.loadgen import LoadResult, run_load


async def against(*, rate: float, max_requests: int, max_duration: float) -> LoadResult:
    statuses = iter([200, 503] * 10_000)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=next(statuses))

    app = web.Application()
    app.router.add_post("/predict", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/predict"
    try:
        return await run_load(url, rate=rate, max_requests=max_requests, max_duration=max_duration)
    finally:
        await runner.cleanup()


def test_it_stops_at_max_requests_and_counts_by_status() -> None:
    result = asyncio.run(against(rate=2000, max_requests=300, max_duration=20))
    assert result.stopped_by == "max_requests"
    assert result.sent == 300
    assert result.by_status == {200: 150, 503: 150}


def test_it_stops_at_max_duration_at_the_asked_rate() -> None:
    result = asyncio.run(against(rate=100, max_requests=10_000, max_duration=1.0))
    assert result.stopped_by == "max_duration"
    assert 95 <= result.sent <= 101
    assert result.duration_s < 2.0


def test_unreachable_targets_count_as_status_zero() -> None:
    url = f"http://127.0.0.1:{free_port()}/predict"
    result = asyncio.run(run_load(url, rate=200, max_requests=20, max_duration=5))
    assert result.by_status == {0: 20}
    assert result.answered == 0
