"""PagerDuty adapter: Events API v2 `trigger` and `resolve`, delivered reliably.

Delivery follows PagerDuty's retry table: 202 is done; 429, 5xx and network errors are
retried with exponential backoff and full jitter (a `Retry-After` header is honoured when it
fits in the time budget); any other 4xx is final and never retried. Every call is bounded by
`max_attempts` and `budget_seconds`, and the outcome is a `DeliveryResult` that says what
happened in words an operator can act on, never an exception.

The routing key is a secret: it is only ever written into the request body. Logs, results,
exceptions and reprs never carry it, and any text that comes back from the network is
scrubbed of it before use.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from canaryguard import __version__
from canaryguard.core.access import strip_credentials
from canaryguard.core.paging import (
    DEFAULT_EVENTS_URL,
    MAX_DEDUP_KEY,
    MAX_SUMMARY,
    SEVERITIES,
    DeliveryOutcome,
    DeliveryResult,
    Link,
    PageEvent,
    safe_dedup_key,
    safe_summary,
)

__all__ = [
    "DEFAULT_EVENTS_URL",
    "MAX_DEDUP_KEY",
    "MAX_SUMMARY",
    "SEVERITIES",
    "DeliveryOutcome",
    "DeliveryResult",
    "Link",
    "PageEvent",
    "PagerDutyClient",
    "PagerDutyPager",
    "safe_dedup_key",
    "safe_summary",
]

log = logging.getLogger(__name__)

MAX_EVENT_BYTES: Final = 512 * 1024
# An attempt squeezed into the end of the budget still gets this long to connect and answer.
MIN_ATTEMPT_SECONDS: Final = 0.05
MAX_ANSWER_BYTES: Final = 64 * 1024
MAX_MESSAGE_CHARS: Final = 2000
_PLAIN = re.compile(r"[\w.:/@+-]+")


class _Transient(Exception):
    """An attempt that may succeed if repeated: network error, timeout, 429 or 5xx."""

    def __init__(self, reason: str, status: int | None, retry_after: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Mapping[str, Any]


def _is_transient(exc: BaseException) -> bool:
    # Only our own marker: CancelledError, programming errors and 4xx are never retried.
    return isinstance(exc, _Transient)


class _RetryAfterOrBackoff(wait_base):
    """Wait what the server asked for (Retry-After), else exponential backoff with jitter."""

    def __init__(self, multiplier: float, maximum: float) -> None:
        self._backoff = wait_random_exponential(multiplier=multiplier, max=maximum)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(retry_state))


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer


def _q(value: object) -> str:
    """A log field value: bare when plain, JSON-quoted otherwise, so a line stays one line."""
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


class PagerDutyClient:
    """Sends Events API v2 events with bounded, honest retries.

    `timeout` bounds one attempt; `max_attempts` and `budget_seconds` bound the whole
    delivery (no wait is started that would end past the budget); waits grow as
    `wait_multiplier * 2**n` with full jitter, capped at `wait_max`, unless the server sent
    Retry-After. The client holds no connection between calls and no routing key, so one
    instance serves every rollout and every event loop.
    """

    def __init__(
        self,
        url: str = DEFAULT_EVENTS_URL,
        *,
        timeout: float = 10,
        max_attempts: int = 6,
        budget_seconds: float = 25,
        wait_multiplier: float = 0.5,
        wait_max: float = 8,
    ) -> None:
        if timeout <= 0 or budget_seconds <= 0 or max_attempts < 1:
            raise ValueError("timeout and budget_seconds must be > 0 and max_attempts >= 1")
        if wait_multiplier < 0 or wait_max < 0:
            raise ValueError("wait_multiplier and wait_max must be >= 0")
        parsed = urlsplit(url)
        # A malformed URL can never succeed: refuse it now, not after a retry budget.
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"the Events API URL must be http(s)://host/...: {strip_credentials(url)!r}"
            )
        self.url = url
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.budget_seconds = float(budget_seconds)
        self.wait_multiplier = float(wait_multiplier)
        self.wait_max = float(wait_max)

    def __repr__(self) -> str:
        return (
            f"PagerDutyClient(url={strip_credentials(self.url)!r}, timeout={self.timeout}, "
            f"max_attempts={self.max_attempts}, budget_seconds={self.budget_seconds})"
        )

    async def trigger(self, routing_key: str, event: PageEvent) -> DeliveryResult:
        """Open (or add to) the incident `event.dedup_key` names."""
        payload: dict[str, Any] = {
            "summary": safe_summary(event.summary),
            "source": event.source,
            "severity": event.severity,
        }
        if event.timestamp is not None:
            stamp = event.timestamp
            payload["timestamp"] = (
                stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            ).isoformat()
        for key, value in (
            ("component", event.component),
            ("group", event.group),
            ("class", event.event_class),
        ):
            if value is not None:
                payload[key] = value
        if event.custom_details:
            payload["custom_details"] = dict(event.custom_details)
        body: dict[str, Any] = {"payload": payload, "client": "canaryguard"}
        if event.links:
            body["links"] = [
                {"href": link.href} | ({"text": link.text} if link.text is not None else {})
                for link in event.links
            ]
        return await self._deliver("trigger", routing_key, safe_dedup_key(event.dedup_key), body)

    async def resolve(self, routing_key: str, dedup_key: str) -> DeliveryResult:
        """Resolve the incident `dedup_key` names (PagerDuty drops it if none is open)."""
        if not dedup_key.strip():
            raise ValueError("dedup_key must not be empty")
        return await self._deliver("resolve", routing_key, safe_dedup_key(dedup_key), {})

    # ---------------------------------------------------------------------- delivery

    @staticmethod
    def _encode(action: str, routing_key: str, dedup_key: str, body: dict[str, Any]) -> bytes:
        event: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": dedup_key,
        }
        event.update(body)
        # default=str: a page must not fail because a detail is a datetime or a Decimal.
        data = json.dumps(event, default=str, ensure_ascii=False).encode("utf-8")
        if len(data) > MAX_EVENT_BYTES and "payload" in event:
            # Over PagerDuty's size limit the event would be refused: page without details.
            size = len(data)
            event["payload"] = dict(event["payload"])
            event["payload"]["custom_details"] = {
                "note": f"custom details omitted: the event was {size} bytes, over the "
                f"{MAX_EVENT_BYTES} byte limit"
            }
            data = json.dumps(event, default=str, ensure_ascii=False).encode("utf-8")
        return data

    async def _deliver(
        self, action: str, routing_key: str, dedup_key: str, body: dict[str, Any]
    ) -> DeliveryResult:
        # A key pasted into a Secret often ends in a newline; PagerDuty would refuse it.
        routing_key = routing_key.strip()
        data = self._encode(action, routing_key, dedup_key, body)
        started = time.monotonic()
        attempts = 0

        def scrub(text: str) -> str:
            text = text.replace(routing_key, "<routing-key>") if routing_key else text
            return text[:MAX_MESSAGE_CHARS]

        async def attempt(session: aiohttp.ClientSession) -> _Answer:
            nonlocal attempts
            attempts += 1
            left = self.budget_seconds - (time.monotonic() - started)
            per_try = min(self.timeout, max(left, MIN_ATTEMPT_SECONDS))
            try:
                async with session.post(
                    self.url,
                    data=data,
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=per_try),
                    allow_redirects=False,
                ) as response:
                    raw = await response.content.read(MAX_ANSWER_BYTES)
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except TimeoutError:
                raise _Transient(f"no answer within {per_try:.2f} s", None, None) from None
            except aiohttp.ClientError as exc:
                reason = scrub(f"network error: {type(exc).__name__}: {exc}")
                raise _Transient(reason, None, None) from None
            answer = _Answer(status, _decode(raw))
            if status == 429 or status >= 500:
                raise _Transient(_describe(answer, scrub), status, retry_after)
            return answer

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            reason = exc.reason if isinstance(exc, _Transient) else "unknown"
            log.warning(
                "pagerduty retry action=%s dedup_key=%s attempt=%d error=%s wait_s=%.2f",
                action,
                _q(dedup_key),
                state.attempt_number,
                _q(reason),
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.budget_seconds),
            wait=_RetryAfterOrBackoff(self.wait_multiplier, self.wait_max),
            retry=retry_if_exception(_is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        headers = {"User-Agent": f"canaryguard/{__version__}"}
        # One session per delivery: pages are rare, and nothing outlives the caller's loop.
        async with aiohttp.ClientSession(headers=headers) as session:
            try:
                answer: _Answer = await retrying(attempt, session)
            except _Transient as exc:
                result = self._exhausted(exc, attempts, time.monotonic() - started, dedup_key)
            else:
                result = self._answered(answer, attempts, dedup_key, scrub)
        self._log_result(action, result, time.monotonic() - started)
        return result

    def _exhausted(
        self, last: _Transient, attempts: int, elapsed: float, dedup_key: str
    ) -> DeliveryResult:
        if attempts >= self.max_attempts:
            why = f"all {attempts} attempts failed"
        elif last.retry_after is not None and elapsed + last.retry_after >= self.budget_seconds:
            why = (
                f"gave up after {attempts} attempts: Retry-After {last.retry_after:g} s "
                f"is beyond the {self.budget_seconds:g} s budget"
            )
        else:
            why = f"gave up after {attempts} attempts: the {self.budget_seconds:g} s budget ran out"
        return DeliveryResult(
            DeliveryOutcome.EXHAUSTED,
            attempts,
            last.status,
            f"{why}; last: {last.reason}",
            dedup_key,
        )

    @staticmethod
    def _answered(
        answer: _Answer, attempts: int, dedup_key: str, scrub: Callable[[str], str]
    ) -> DeliveryResult:
        if 200 <= answer.status < 300:
            key = answer.body.get("dedup_key")
            return DeliveryResult(
                DeliveryOutcome.DELIVERED,
                attempts,
                answer.status,
                f"accepted by PagerDuty (HTTP {answer.status}) on attempt {attempts}",
                key if isinstance(key, str) and key else dedup_key,
            )
        return DeliveryResult(
            DeliveryOutcome.REJECTED,
            attempts,
            answer.status,
            f"rejected by PagerDuty, not retried: {_describe(answer, scrub)}",
            dedup_key,
        )

    @staticmethod
    def _log_result(action: str, result: DeliveryResult, elapsed: float) -> None:
        level = logging.INFO if result.delivered else logging.ERROR
        log.log(
            level,
            "pagerduty %s action=%s dedup_key=%s outcome=%s attempts=%d status=%s "
            "elapsed_s=%.2f message=%s",
            "delivered" if result.delivered else "failed",
            action,
            _q(result.dedup_key),
            result.outcome.value,
            result.attempts,
            result.status,
            elapsed,
            _q(result.message),
        )


def _decode(raw: bytes) -> Mapping[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {"message": raw[:200].decode("utf-8", errors="replace").strip()}
    return value if isinstance(value, dict) else {}


def _describe(answer: _Answer, scrub: Callable[[str], str]) -> str:
    """`HTTP 400: Event object is invalid: 'payload.severity' must be ...` from an answer."""
    parts = [f"HTTP {answer.status}"]
    message = answer.body.get("message")
    if isinstance(message, str) and message:
        parts.append(message)
    errors = answer.body.get("errors")
    if isinstance(errors, list) and errors:
        parts.append("; ".join(str(e) for e in errors))
    return scrub(": ".join(parts))


class PagerDutyPager:
    """The `Pager` port: one delivery per page, to the Events API URL the rollout names,
    bounded by `budget_seconds` (what is not delivered by then is retried at the next tick)."""

    def __init__(self, budget_seconds: float = 20.0) -> None:
        self.budget_seconds = budget_seconds

    async def trigger(self, url: str, routing_key: str, event: PageEvent) -> DeliveryResult:
        client = PagerDutyClient(url, budget_seconds=self.budget_seconds)
        return await client.trigger(routing_key, event)

    async def resolve(self, url: str, routing_key: str, dedup_key: str) -> DeliveryResult:
        client = PagerDutyClient(url, budget_seconds=self.budget_seconds)
        return await client.resolve(routing_key, dedup_key)
