"""The operator's PagerDuty client against the local receiver over real HTTP: a page is
delivered exactly once through 5xx, 429, timeouts and refused connections, is never retried
on other 4xx, stays within its budget, and never lets the routing key out."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from aiohttp import web

from canaryguard.adapters.pagerduty import (
    DeliveryOutcome,
    DeliveryResult,
    Link,
    PageEvent,
    PagerDutyClient,
)
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver

KEY = "5ec7e7c0ffee4bad5ec7e7c0ffee4bad"
DEDUP = "canaryguard/ml/fraud-scorer/rollback/7"
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def client(url: str, **overrides: Any) -> PagerDutyClient:
    """A client with test-sized waits: milliseconds, not seconds."""
    settings: dict[str, Any] = {
        "timeout": 2.0,
        "max_attempts": 6,
        "budget_seconds": 5.0,
        "wait_multiplier": 0.01,
        "wait_max": 0.05,
    }
    settings.update(overrides)
    return PagerDutyClient(url, **settings)


def page(dedup_key: str = DEDUP, **overrides: Any) -> PageEvent:
    fields: dict[str, Any] = {
        "dedup_key": dedup_key,
        "summary": "ml/fraud-scorer rolled back: error-rate canary 4.10% vs baseline 0.30%",
        "source": "canaryguard/ml/fraud-scorer",
        "severity": "critical",
    }
    fields.update(overrides)
    return PageEvent(**fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ------------------------------------------------------------------------ delivering


def test_500_twice_then_202_is_one_incident_after_three_attempts(
    pagerduty: PagerDutyReceiver,
) -> None:
    pagerduty.fail_next(2, status=500)

    result = run(client(pagerduty.url).trigger(KEY, page()))

    assert result.outcome is DeliveryOutcome.DELIVERED
    assert (result.attempts, result.status, result.dedup_key) == (3, 202, DEDUP)
    assert [c["status"] for c in pagerduty.calls()] == [500, 500, 202]
    [incident] = pagerduty.incidents()
    assert (incident["dedup_key"], incident["trigger_count"]) == (DEDUP, 1)


def test_the_event_carries_every_field_of_the_page(pagerduty: PagerDutyReceiver) -> None:
    event = page(
        component="fraud-scorer",
        group="ml",
        event_class="canary rollback",
        custom_details={"slo": "error-rate", "baseline": 0.003, "since": datetime(2025, 1, 1)},
        links=[Link("http://prometheus:9090/graph?g0.expr=up", "failing query"), Link("http://x")],
        timestamp=datetime(2025, 1, 1, 12, 0, tzinfo=UTC),
    )

    assert run(client(pagerduty.url).trigger(KEY, event)).delivered

    [received] = pagerduty.events()
    body = received["event"]
    assert body["routing_key"] == KEY and body["event_action"] == "trigger"
    assert body["payload"] == {
        "summary": event.summary,
        "source": event.source,
        "severity": "critical",
        "timestamp": "2025-01-01T12:00:00+00:00",
        "component": "fraud-scorer",
        "group": "ml",
        "class": "canary rollback",
        "custom_details": {"slo": "error-rate", "baseline": 0.003, "since": "2025-01-01 00:00:00"},
    }
    assert body["links"] == [
        {"href": "http://prometheus:9090/graph?g0.expr=up", "text": "failing query"},
        {"href": "http://x"},
    ]


def test_the_same_dedup_key_sent_twice_is_one_incident(pagerduty: PagerDutyReceiver) -> None:
    pd = client(pagerduty.url)

    first = run(pd.trigger(KEY, page()))
    second = run(pd.trigger(KEY, page()))

    assert first.delivered and second.delivered
    [incident] = pagerduty.incidents()
    assert incident["trigger_count"] == 2


def test_resolve_closes_the_incident(pagerduty: PagerDutyReceiver) -> None:
    pd = client(pagerduty.url)
    run(pd.trigger(KEY, page()))

    result = run(pd.resolve(KEY, DEDUP))

    assert (result.outcome, result.attempts) == (DeliveryOutcome.DELIVERED, 1)
    assert [i["status"] for i in pagerduty.incidents()] == ["resolved"]


def test_long_summary_and_dedup_key_are_cut_safely(pagerduty: PagerDutyReceiver) -> None:
    pd = client(pagerduty.url)
    prefix = "canaryguard/" + "n" * 300
    one, other = prefix + "/revision-1", prefix + "/revision-2"

    assert run(pd.trigger(KEY, page(one, summary="é" * 5000))).delivered
    assert run(pd.trigger(KEY, page(other))).delivered
    assert run(pd.trigger(KEY, page(one))).delivered
    assert run(pd.resolve(KEY, one)).delivered

    first, second = pagerduty.incidents()
    assert len(first["summary"]) == 1024 and first["summary"].endswith("\u2026")
    assert len(first["dedup_key"]) == 255 and first["dedup_key"] != second["dedup_key"]
    assert (first["trigger_count"], first["status"]) == (2, "resolved")
    assert second["status"] == "triggered"


def test_oversized_custom_details_still_page(pagerduty: PagerDutyReceiver) -> None:
    event = page(custom_details={"samples": "x" * (600 * 1024)})

    result = run(client(pagerduty.url).trigger(KEY, event))

    assert result.delivered
    [incident] = pagerduty.incidents()
    assert "omitted" in incident["custom_details"]["note"]


def test_a_trailing_newline_on_the_routing_key_is_ignored(pagerduty: PagerDutyReceiver) -> None:
    result = run(client(pagerduty.url).trigger(KEY + "\n", page()))

    assert result.delivered


# ------------------------------------------------------------------------- rejecting


def test_400_is_rejected_after_one_attempt(pagerduty: PagerDutyReceiver) -> None:
    result = run(client(pagerduty.url).trigger("not-a-32-character-key", page()))

    assert result.outcome is DeliveryOutcome.REJECTED
    assert (result.attempts, result.status) == (1, 400)
    assert "Event object is invalid" in result.message
    assert "'routing_key'" in result.message
    assert len(pagerduty.calls()) == 1
    assert pagerduty.incidents() == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 413])
def test_no_4xx_but_429_is_ever_retried(pagerduty: PagerDutyReceiver, status: int) -> None:
    pagerduty.fail_next(5, status=status)

    result = run(client(pagerduty.url).trigger(KEY, page()))

    assert (result.outcome, result.attempts, result.status) == (
        DeliveryOutcome.REJECTED,
        1,
        status,
    )
    assert f"HTTP {status}" in result.message
    assert len(pagerduty.calls()) == 1


# ------------------------------------------------------------------------- retrying


def test_429_retry_after_is_honoured(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(1, status=429, retry_after=1)

    started = time.monotonic()
    result = run(client(pagerduty.url).trigger(KEY, page()))
    elapsed = time.monotonic() - started

    assert (result.outcome, result.attempts) == (DeliveryOutcome.DELIVERED, 2)
    # Backoff alone would wait at most 0.05 s; the server asked for 1 s.
    assert 1.0 <= elapsed < 2.0
    first, second = (datetime.fromisoformat(c["received_at"]) for c in pagerduty.calls())
    assert (second - first).total_seconds() >= 0.95


def test_a_retry_after_beyond_the_budget_gives_up_at_once(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(1, status=429, retry_after=30)

    started = time.monotonic()
    result = run(client(pagerduty.url, budget_seconds=2).trigger(KEY, page()))

    assert time.monotonic() - started < 1.0
    assert (result.outcome, result.attempts, result.status) == (
        DeliveryOutcome.EXHAUSTED,
        1,
        429,
    )
    assert "Retry-After 30 s" in result.message


def test_the_time_budget_bounds_the_delivery(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(1000, status=503)
    pd = client(pagerduty.url, max_attempts=100, budget_seconds=0.6, wait_max=0.2)

    started = time.monotonic()
    result = run(pd.trigger(KEY, page()))
    elapsed = time.monotonic() - started

    assert result.outcome is DeliveryOutcome.EXHAUSTED
    assert 1 < result.attempts < 100
    assert result.status == 503
    assert "budget" in result.message and "HTTP 503" in result.message
    assert elapsed < 0.6 + 0.5
    assert pagerduty.incidents() == []


def test_the_attempt_limit_bounds_the_delivery(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(1000, status=500)

    result = run(client(pagerduty.url, max_attempts=3).trigger(KEY, page()))

    assert (result.outcome, result.attempts, result.status) == (
        DeliveryOutcome.EXHAUSTED,
        3,
        500,
    )
    assert "all 3 attempts failed" in result.message
    assert len(pagerduty.calls()) == 3


def test_a_refused_connection_is_retried_until_the_receiver_is_up() -> None:
    port = free_port()
    receiver = PagerDutyReceiver(port=port)
    pd = client(
        f"http://127.0.0.1:{port}/v2/enqueue",
        max_attempts=50,
        wait_multiplier=0.05,
        wait_max=0.2,
    )

    async def scenario() -> DeliveryResult:
        delivery = asyncio.create_task(pd.trigger(KEY, page()))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(receiver.start)
        return await delivery

    try:
        result = run(scenario())
        assert result.outcome is DeliveryOutcome.DELIVERED
        assert result.attempts > 1
        assert len(receiver.incidents()) == 1
    finally:
        receiver.stop()


def test_a_refused_connection_ends_exhausted_with_no_status() -> None:
    pd = client(f"http://127.0.0.1:{free_port()}/v2/enqueue", max_attempts=3)

    result = run(pd.trigger(KEY, page()))

    assert (result.outcome, result.attempts, result.status) == (
        DeliveryOutcome.EXHAUSTED,
        3,
        None,
    )
    assert "network error" in result.message


def test_a_timeout_is_retried_and_still_one_incident(pagerduty: PagerDutyReceiver) -> None:
    # The first answer is late; the server still processes that event after the client gave
    # up on it, as a real one may. The dedup_key keeps it one incident.
    pagerduty.delay_next(1, 1.0)

    result = run(client(pagerduty.url, timeout=0.3).trigger(KEY, page()))

    assert (result.outcome, result.attempts) == (DeliveryOutcome.DELIVERED, 2)
    wait_until(lambda: len(pagerduty.calls()) == 2)
    assert len(pagerduty.incidents()) == 1


def _cancel_after(pd: PagerDutyClient, seconds: float) -> float:
    """Start a trigger, cancel it after `seconds`; return how long the cancel took."""

    async def scenario() -> float:
        delivery = asyncio.create_task(pd.trigger(KEY, page()))
        await asyncio.sleep(seconds)
        delivery.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await delivery
        return time.monotonic() - started

    return run(scenario())


def test_cancellation_during_an_attempt_is_never_retried(pagerduty: PagerDutyReceiver) -> None:
    # The cancel lands inside the attempt, where a retry-on-anything predicate would catch it.
    pagerduty.delay_next(1, 1.0)

    assert _cancel_after(client(pagerduty.url, budget_seconds=30), 0.3) < 0.5

    wait_until(lambda: len(pagerduty.calls()) == 1)  # the delayed call, answered late
    time.sleep(0.3)
    assert len(pagerduty.calls()) == 1


def test_cancellation_during_a_backoff_is_never_retried(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(1, status=429, retry_after=3)

    assert _cancel_after(client(pagerduty.url, budget_seconds=30), 0.3) < 0.5
    assert len(pagerduty.calls()) == 1


# -------------------------------------------------------------------------- secrecy


def test_the_routing_key_never_appears_in_logs_or_results(
    pagerduty: PagerDutyReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pd = client(pagerduty.url, max_attempts=3)
    results = []

    pagerduty.fail_next(1, status=500)
    pagerduty.fail_next(1, status=429, retry_after=0)
    results.append(run(pd.trigger(KEY, page())))  # retried, delivered
    pagerduty.fail_next(1, status=403)
    results.append(run(pd.trigger(KEY, page())))  # rejected
    pagerduty.fail_next(3, status=502)
    results.append(run(pd.resolve(KEY, DEDUP)))  # exhausted
    refused = client(f"http://127.0.0.1:{free_port()}/v2/enqueue", max_attempts=2)
    results.append(run(refused.trigger(KEY, page())))

    assert [r.outcome for r in results] == [
        DeliveryOutcome.DELIVERED,
        DeliveryOutcome.REJECTED,
        DeliveryOutcome.EXHAUSTED,
        DeliveryOutcome.EXHAUSTED,
    ]
    assert "pagerduty retry" in caplog.text and "pagerduty failed" in caplog.text
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in repr(record.__dict__)
    for result in results:
        assert KEY not in repr(result) and KEY not in str(result)
    assert KEY not in repr(pd)


def test_a_server_that_echoes_the_key_is_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    calls: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        key = (await request.json())["routing_key"]
        status = 503 if not calls else 400
        calls.append(key)
        return web.json_response({"message": f"routing key {key} is unknown"}, status=status)

    async def scenario() -> DeliveryResult:
        app = web.Application()
        app.router.add_post("/v2/enqueue", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            return await client(f"http://127.0.0.1:{port}/v2/enqueue").trigger(KEY, page())
        finally:
            await runner.cleanup()

    result = run(scenario())

    assert (result.outcome, result.attempts) == (DeliveryOutcome.REJECTED, 2)
    assert "routing key <routing-key> is unknown" in result.message
    assert KEY not in repr(result)
    assert KEY not in caplog.text
