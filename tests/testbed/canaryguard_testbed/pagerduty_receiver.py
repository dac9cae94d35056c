"""A local PagerDuty Events API v2 receiver for tests, the demo and benchmarks.

It implements the `POST /v2/enqueue` contract as PagerDuty documents it: the body is validated
field by field (400 `invalid event` with one error per problem), accepted events answer 202
with their `dedup_key`, and alerts are modelled as PagerDuty models them: a trigger with the
`dedup_key` of an open incident is merged into it, acknowledge and resolve change its state,
and a trigger after resolve opens a new incident. Acknowledge or resolve without an open
incident is accepted and dropped, as PagerDuty does.

Faults are injected per call: answer 429 or 5xx for the next N calls, or delay the next N
answers. The server runs in a thread with its own event loop, so synchronous tests and async
code use the same object. `GET /_receiver/state` shows everything as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import Any, Final

from aiohttp import web

__all__ = ["ENQUEUE_PATH", "STATE_PATH", "PagerDutyReceiver", "main", "validate_event"]

log = logging.getLogger(__name__)

ENQUEUE_PATH: Final = "/v2/enqueue"
STATE_PATH: Final = "/_receiver/state"
FAIL_PATH: Final = "/_receiver/fail"
DELAY_PATH: Final = "/_receiver/delay"
RESET_PATH: Final = "/_receiver/reset"

ROUTING_KEY_LENGTH: Final = 32
MAX_DEDUP_KEY: Final = 255
MAX_SUMMARY: Final = 1024
MAX_BODY_BYTES: Final = 512 * 1024
EVENT_ACTIONS: Final = ("trigger", "acknowledge", "resolve")
SEVERITIES: Final = ("critical", "error", "warning", "info")
INVALID_MESSAGE: Final = "Event object is invalid"

# Incident states, as PagerDuty names them.
TRIGGERED: Final = "triggered"
ACKNOWLEDGED: Final = "acknowledged"
RESOLVED: Final = "resolved"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _check_string(
    errors: list[str], obj: Mapping[str, Any], key: str, field: str, *, required: bool
) -> str | None:
    """Append an error naming `field` unless obj[key] is a (non-empty, if required) string."""
    if key not in obj or obj[key] is None:
        if required:
            errors.append(f"'{field}' is missing")
        return None
    value = obj[key]
    if not isinstance(value, str):
        errors.append(f"'{field}' must be a string")
        return None
    if required and not value.strip():
        errors.append(f"'{field}' must not be empty")
        return None
    return value


def _check_timestamp(errors: list[str], value: str) -> None:
    # ISO 8601 date-time: a date, a 'T', a time (PagerDuty's own example uses "+0000").
    try:
        datetime.fromisoformat(value)
    except ValueError:
        errors.append("'payload.timestamp' must be an ISO 8601 date-time")
        return
    if "T" not in value:
        errors.append("'payload.timestamp' must be an ISO 8601 date-time")


def _check_objects(
    errors: list[str],
    event: Mapping[str, Any],
    key: str,
    required: str,
    optional: tuple[str, ...],
) -> None:
    """Validate `links` or `images`: an array of objects with one required string field."""
    if key not in event or event[key] is None:
        return
    items = event[key]
    if not isinstance(items, list):
        errors.append(f"'{key}' must be an array of objects")
        return
    for index, item in enumerate(items):
        where = f"{key}[{index}]"
        if not isinstance(item, dict):
            errors.append(f"'{where}' must be an object")
            continue
        value = _check_string(errors, item, required, f"{where}.{required}", required=True)
        if key == "images" and value is not None and not value.startswith("https://"):
            errors.append(f"'{where}.src' must be served over HTTPS")
        for name in optional:
            _check_string(errors, item, name, f"{where}.{name}", required=False)


def _check_payload(errors: list[str], event: Mapping[str, Any]) -> None:
    payload = event.get("payload")
    if payload is None:
        errors.append("'payload' is missing (required for trigger events)")
        return
    if not isinstance(payload, dict):
        errors.append("'payload' must be an object")
        return
    summary = _check_string(errors, payload, "summary", "payload.summary", required=True)
    if summary is not None and len(summary) > MAX_SUMMARY:
        errors.append(f"'payload.summary' is too long ({len(summary)} > {MAX_SUMMARY} characters)")
    _check_string(errors, payload, "source", "payload.source", required=True)
    severity = _check_string(errors, payload, "severity", "payload.severity", required=True)
    if severity is not None and severity not in SEVERITIES:
        errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}")
    timestamp = _check_string(errors, payload, "timestamp", "payload.timestamp", required=False)
    if timestamp is not None:
        _check_timestamp(errors, timestamp)
    for name in ("component", "group", "class"):
        _check_string(errors, payload, name, f"payload.{name}", required=False)
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, dict):
        errors.append("'payload.custom_details' must be an object")


def validate_event(event: object) -> list[str]:
    """Check an Events API v2 alert event; return one message per problem, naming the field."""
    if not isinstance(event, dict):
        return ["the event must be a JSON object"]
    errors: list[str] = []
    routing_key = _check_string(errors, event, "routing_key", "routing_key", required=True)
    if routing_key is not None and len(routing_key) != ROUTING_KEY_LENGTH:
        errors.append(
            f"Length of 'routing_key' is incorrect (should be {ROUTING_KEY_LENGTH} characters)"
        )
    action = _check_string(errors, event, "event_action", "event_action", required=True)
    if action is not None and action not in EVENT_ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(EVENT_ACTIONS)}")
    follow_up = action in ("acknowledge", "resolve")
    if follow_up and event.get("dedup_key") is None:
        errors.append(f"'dedup_key' is missing (required for {action} events)")
    dedup_key = _check_string(errors, event, "dedup_key", "dedup_key", required=False)
    if dedup_key is not None:
        if not dedup_key:
            errors.append("'dedup_key' must not be empty")
        elif len(dedup_key) > MAX_DEDUP_KEY:
            errors.append(
                f"'dedup_key' is too long ({len(dedup_key)} > {MAX_DEDUP_KEY} characters)"
            )
    if action == "trigger":
        _check_payload(errors, event)
    _check_objects(errors, event, "links", "href", ("text",))
    _check_objects(errors, event, "images", "src", ("href", "alt"))
    _check_string(errors, event, "client", "client", required=False)
    _check_string(errors, event, "client_url", "client_url", required=False)
    return errors


@dataclass
class _Fault:
    remaining: int
    status: int
    retry_after: float | None


@dataclass
class _Delay:
    remaining: int
    seconds: float


class PagerDutyReceiver:
    """A PagerDuty Events API v2 endpoint on 127.0.0.1, in a background thread.

    `PagerDutyReceiver(port=0)` picks a free port; `start()` returns once it listens and
    `stop()` shuts it down. All accessors return copies and are safe from any thread.
    `rate_limit_per_minute` models PagerDuty's per-integration-key limit (off by default).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        rate_limit_per_minute: int | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._rate_limit = rate_limit_per_minute
        self._port: int | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stop_event: asyncio.Event | None = None
        self._epoch = 0
        self._events: list[dict[str, Any]] = []
        self._calls: list[dict[str, Any]] = []
        self._incidents: list[dict[str, Any]] = []
        # Which integration an incident belongs to; kept apart so no listing shows the key.
        self._incident_routing: dict[str, str] = {}
        self._faults: collections.deque[_Fault] = collections.deque()
        self._delays: collections.deque[_Delay] = collections.deque()
        self._recent: dict[str, collections.deque[float]] = {}

    def __repr__(self) -> str:
        return f"PagerDutyReceiver(host={self._host!r}, port={self._port})"

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> PagerDutyReceiver:
        """Start listening; return once the socket is bound (raise if it cannot be)."""
        if self._thread is not None:
            raise RuntimeError("the receiver is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="pagerduty-receiver", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"the PagerDuty receiver could not start: {failure[0]}")
        log.info("pagerduty_receiver.started url=%s", self.url)
        return self

    def stop(self) -> None:
        """Stop the server and its thread; in-flight delayed answers are cut after 1 s."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=10)
        self._thread = None
        log.info("pagerduty_receiver.stopped port=%s", self._port)

    def __enter__(self) -> PagerDutyReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run(ready))
        except BaseException as exc:
            failure.append(exc)
        finally:
            ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _run(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY_BYTES * 2)
        app.router.add_post(ENQUEUE_PATH, self._handle_enqueue)
        app.router.add_get(STATE_PATH, self._handle_state)
        app.router.add_post(FAIL_PATH, self._handle_fail)
        app.router.add_post(DELAY_PATH, self._handle_delay)
        app.router.add_post(RESET_PATH, self._handle_reset)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            self._runner = runner
            ready.set()
            await self._stop_event.wait()
        finally:
            await runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ Python API

    @property
    def port(self) -> int:
        """The bound TCP port (after `start()`)."""
        if self._port is None:
            raise RuntimeError("the receiver has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """The enqueue URL, to pass to the operator's PagerDuty client."""
        return self.base_url + ENQUEUE_PATH

    def events(self) -> list[dict[str, Any]]:
        """Every accepted event: `event` (the body), `dedup_key`, `effect`, `incident_id`."""
        with self._lock:
            return copy.deepcopy(self._events)

    def calls(self) -> list[dict[str, Any]]:
        """Every call to the enqueue endpoint: raw `body`, `status`, `response`, times."""
        with self._lock:
            return copy.deepcopy(self._calls)

    def incidents(self) -> list[dict[str, Any]]:
        """Incidents in the order they were opened, each with its `status` and `log`."""
        with self._lock:
            return copy.deepcopy(self._incidents)

    def fail_next(self, n: int, status: int = 500, *, retry_after: float | None = None) -> None:
        """Answer the next `n` enqueue calls with `status` (429 or 5xx), without processing."""
        if n < 0 or not 400 <= status <= 599:
            raise ValueError("fail_next needs n >= 0 and a 4xx or 5xx status")
        with self._lock:
            if n:
                self._faults.append(_Fault(n, status, retry_after))

    def delay_next(self, n: int, seconds: float) -> None:
        """Hold the answer to the next `n` enqueue calls for `seconds` before processing."""
        if n < 0 or seconds < 0:
            raise ValueError("delay_next needs n >= 0 and seconds >= 0")
        with self._lock:
            if n:
                self._delays.append(_Delay(n, seconds))

    def reset(self) -> None:
        """Forget events, calls, incidents and pending faults; answers still in flight from
        before the reset are not recorded."""
        with self._lock:
            self._epoch += 1
            self._events.clear()
            self._calls.clear()
            self._incidents.clear()
            self._incident_routing.clear()
            self._faults.clear()
            self._delays.clear()
            self._recent.clear()

    def state(self) -> dict[str, Any]:
        """Everything the receiver knows, as served by `GET /_receiver/state`."""
        with self._lock:
            return copy.deepcopy(
                {
                    "url": self.url,
                    "events": self._events,
                    "calls": self._calls,
                    "incidents": self._incidents,
                    "pending_faults": [vars(f) for f in self._faults],
                    "pending_delays": [vars(d) for d in self._delays],
                }
            )

    # -------------------------------------------------------------------- handlers

    def _take_delay(self) -> float:
        with self._lock:
            if not self._delays:
                return 0.0
            delay = self._delays[0]
            delay.remaining -= 1
            if delay.remaining <= 0:
                self._delays.popleft()
            return delay.seconds

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.popleft()
            return fault

    def _rate_limited(self, routing_key: str, now: float) -> bool:
        if self._rate_limit is None:
            return False
        recent = self._recent.setdefault(routing_key, collections.deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= self._rate_limit:
            return True
        recent.append(now)
        return False

    async def _handle_enqueue(self, request: web.Request) -> web.Response:
        received_at = _now_iso()
        with self._lock:
            epoch = self._epoch
        raw = await request.read()
        delay = self._take_delay()
        if delay:
            await asyncio.sleep(delay)
        fault = self._take_fault()
        if fault is not None:
            status, body, headers = self._fault_answer(fault)
        else:
            status, body = self._process(raw, epoch, received_at)
            headers = {}
        with self._lock:
            if epoch == self._epoch:
                self._calls.append(
                    {
                        "received_at": received_at,
                        "answered_at": _now_iso(),
                        "method": request.method,
                        "path": request.path,
                        "content_type": request.content_type,
                        "user_agent": request.headers.get("User-Agent"),
                        "body": raw.decode("utf-8", errors="replace"),
                        "status": status,
                        "response": body,
                        "injected": fault is not None,
                        "delayed_s": delay,
                    }
                )
        log.info("pagerduty_receiver.call status=%d injected=%s", status, fault is not None)
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def _fault_answer(fault: _Fault) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            # Retry-After is whole seconds in HTTP; keep fractions for fast tests.
            seconds = fault.retry_after
            headers["Retry-After"] = str(int(seconds) if seconds == int(seconds) else seconds)
        if fault.status == 429:
            body = {"status": "throttled", "message": "Request Limit Exceeded"}
        else:
            body = {"status": "error", "message": f"injected fault (HTTP {fault.status})"}
        return fault.status, body, headers

    def _process(self, raw: bytes, epoch: int, received_at: str) -> tuple[int, dict[str, Any]]:
        if len(raw) > MAX_BODY_BYTES:
            return 400, _invalid([f"the event is larger than {MAX_BODY_BYTES // 1024} KB"])
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, _invalid([f"the body is not valid JSON: {exc}"])
        errors = validate_event(event)
        if errors:
            return 400, _invalid(errors)
        with self._lock:
            if self._rate_limited(event["routing_key"], time.monotonic()):
                return 429, {"status": "throttled", "message": "Request Limit Exceeded"}
            dedup_key = event.get("dedup_key") or uuid.uuid4().hex
            if epoch == self._epoch:
                self._apply(event, dedup_key, received_at)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}

    def _open_incident(self, routing_key: str, dedup_key: str) -> dict[str, Any] | None:
        for incident in reversed(self._incidents):
            same_key = self._incident_routing[incident["id"]] == routing_key
            if incident["dedup_key"] == dedup_key and same_key:
                return incident if incident["status"] != RESOLVED else None
        return None

    def _apply(self, event: dict[str, Any], dedup_key: str, received_at: str) -> None:
        """Update incidents as PagerDuty does; the caller holds the lock."""
        action = event["event_action"]
        incident = self._open_incident(event["routing_key"], dedup_key)
        effect: str
        if action == "trigger":
            payload = event["payload"]
            if incident is None:
                incident = {
                    "id": f"Q{len(self._incidents) + 1:06d}",
                    "dedup_key": dedup_key,
                    "status": TRIGGERED,
                    "summary": payload["summary"],
                    "severity": payload["severity"],
                    "source": payload["source"],
                    "custom_details": payload.get("custom_details", {}),
                    "links": event.get("links", []),
                    "opened_at": received_at,
                    "updated_at": received_at,
                    "trigger_count": 0,
                    "log": [],
                }
                self._incidents.append(incident)
                self._incident_routing[incident["id"]] = event["routing_key"]
                effect = "opened"
            else:
                effect = "deduplicated"
            incident["trigger_count"] += 1
        elif incident is None:
            effect = "dropped"  # PagerDuty drops acknowledge/resolve without an open alert
        elif action == "acknowledge":
            if incident["status"] == TRIGGERED:
                incident["status"] = ACKNOWLEDGED
            effect = "acknowledged"
        else:
            incident["status"] = RESOLVED
            incident["resolved_at"] = received_at
            effect = "resolved"
        if incident is not None and effect != "dropped":
            incident["updated_at"] = received_at
            incident["log"].append({"at": received_at, "action": action, "effect": effect})
        self._events.append(
            {
                "received_at": received_at,
                "event": event,
                "dedup_key": dedup_key,
                "effect": effect,
                "incident_id": incident["id"] if effect != "dropped" and incident else None,
            }
        )

    async def _handle_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _handle_fail(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            self.fail_next(
                int(body.get("count", 1)),
                int(body.get("status", 500)),
                retry_after=None if body.get("retry_after") is None else float(body["retry_after"]),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"status": "error", "message": str(exc)}, status=400)
        return web.json_response({"status": "ok"})

    async def _handle_delay(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            self.delay_next(int(body.get("count", 1)), float(body["seconds"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return web.json_response({"status": "error", "message": str(exc)}, status=400)
        return web.json_response({"status": "ok"})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"status": "ok"})


def _invalid(errors: list[str]) -> dict[str, Any]:
    return {"status": "invalid event", "message": INVALID_MESSAGE, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    """Run the receiver until SIGINT or SIGTERM; print its enqueue URL on the first line."""
    parser = argparse.ArgumentParser(
        prog="python -m canaryguard_testbed.pagerduty_receiver",
        description="Local PagerDuty Events API v2 receiver (listens on 127.0.0.1).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 picks a free one)")
    parser.add_argument(
        "--rate-limit", type=int, default=None, help="events per minute per routing key"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    receiver = PagerDutyReceiver(args.port, rate_limit_per_minute=args.rate_limit)
    receiver.start()
    try:
        print(receiver.url, flush=True)
        done.wait()
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
