"""A local PagerDuty Events API v2 receiver for tests, the demo and benchmarks.

It implements the `POST /v2/enqueue` contract as PagerDuty documents it: the body is validated
field by field (400 `invalid event` with one error per problem; `pagerduty_contract`),
accepted events answer 202 with their `dedup_key`, and alerts are modelled as PagerDuty
models them (`pagerduty_incidents`): a trigger with the `dedup_key` of an open incident is
merged into it, acknowledge and resolve change its state, and a trigger after resolve opens a
new incident. Acknowledge or resolve without an open incident is accepted and dropped, as
PagerDuty does.

Faults are injected per call (`pagerduty_faults`): answer 429 or 5xx for the next N calls or
for every call during a period (`fail_for`), or delay the next N answers. The server runs in
a thread with its own event loop, so synchronous tests and async code use the same object.
`GET /_receiver/state` shows everything as JSON. Run it as
`python -m canaryguard_testbed.pagerduty_receiver`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import logging
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import Any, Final

from aiohttp import web

from canaryguard_testbed.pagerduty_contract import (
    MAX_BODY_BYTES,
    accepted,
    invalid,
    read_event,
    throttled,
    validate_event,
)
from canaryguard_testbed.pagerduty_faults import Delay, Fault, Faults, Period
from canaryguard_testbed.pagerduty_incidents import Incidents, RateLimit

__all__ = ["ENQUEUE_PATH", "STATE_PATH", "PagerDutyReceiver", "main", "validate_event"]

log = logging.getLogger(__name__)

ENQUEUE_PATH: Final = "/v2/enqueue"
STATE_PATH: Final = "/_receiver/state"
FAIL_PATH: Final = "/_receiver/fail"
DELAY_PATH: Final = "/_receiver/delay"
RESET_PATH: Final = "/_receiver/reset"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


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
        self._port: int | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stop_event: asyncio.Event | None = None
        # Everything below is guarded by `_lock`; `_epoch` counts resets, so an answer still
        # in flight from before a reset is not recorded after it.
        self._epoch = 0
        self._calls: list[dict[str, Any]] = []
        self._incidents = Incidents()
        self._rate_limit = RateLimit(rate_limit_per_minute)
        self._faults = Faults()

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
            return copy.deepcopy(self._incidents.events)

    def calls(self) -> list[dict[str, Any]]:
        """Every call to the enqueue endpoint: raw `body`, `status`, `response`, times."""
        with self._lock:
            return copy.deepcopy(self._calls)

    def incidents(self) -> list[dict[str, Any]]:
        """Incidents in the order they were opened, each with its `status` and `log`."""
        with self._lock:
            return copy.deepcopy(self._incidents.incidents)

    def fail_next(self, n: int, status: int = 500, *, retry_after: float | None = None) -> None:
        """Answer the next `n` enqueue calls with `status` (429 or 5xx), without processing."""
        if n < 0 or not 400 <= status <= 599:
            raise ValueError("fail_next needs n >= 0 and a 4xx or 5xx status")
        with self._lock:
            if n:
                self._faults.add_fault(Fault(n, status, retry_after))

    def fail_for(
        self, seconds: float, status: int = 500, *, retry_after: float | None = None
    ) -> None:
        """Answer every enqueue call with `status` (429 or 5xx, with Retry-After when set)
        for the next `seconds`, without processing: a period of throttling or an outage.
        Calls `fail_next` queued are answered first."""
        if seconds < 0 or not 400 <= status <= 599:
            raise ValueError("fail_for needs seconds >= 0 and a 4xx or 5xx status")
        with self._lock:
            if seconds:
                until = time.monotonic() + seconds
                self._faults.add_period(Period(until, Fault(0, status, retry_after)))

    def clear_faults(self) -> None:
        """Forget pending faults and delays (counted and periods), keeping every record."""
        with self._lock:
            self._faults.clear()

    def delay_next(self, n: int, seconds: float) -> None:
        """Hold the answer to the next `n` enqueue calls for `seconds` before processing."""
        if n < 0 or seconds < 0:
            raise ValueError("delay_next needs n >= 0 and seconds >= 0")
        with self._lock:
            if n:
                self._faults.add_delay(Delay(n, seconds))

    def reset(self) -> None:
        """Forget events, calls, incidents and pending faults; answers still in flight from
        before the reset are not recorded."""
        with self._lock:
            self._epoch += 1
            self._calls.clear()
            self._incidents.clear()
            self._faults.clear()
            self._rate_limit.clear()

    def state(self) -> dict[str, Any]:
        """Everything the receiver knows, as served by `GET /_receiver/state`."""
        with self._lock:
            faults, delays = self._faults.pending()
            return copy.deepcopy(
                {
                    "url": self.url,
                    "events": self._incidents.events,
                    "calls": self._calls,
                    "incidents": self._incidents.incidents,
                    "pending_faults": faults,
                    "pending_delays": delays,
                }
            )

    # -------------------------------------------------------------------- handlers

    async def _handle_enqueue(self, request: web.Request) -> web.Response:
        received_at = _now_iso()
        with self._lock:
            epoch = self._epoch
        raw = await request.read()
        with self._lock:
            delay = self._faults.take_delay()
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            fault = self._faults.take_fault(time.monotonic())
        if fault is not None:
            status, body, headers = fault.answer()
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

    def _process(self, raw: bytes, epoch: int, received_at: str) -> tuple[int, dict[str, Any]]:
        event, errors = read_event(raw)
        if event is None:
            return 400, invalid(errors)
        with self._lock:
            if self._rate_limit.exceeded(event["routing_key"], time.monotonic()):
                return 429, throttled()
            dedup_key = event.get("dedup_key") or uuid.uuid4().hex
            if epoch == self._epoch:
                self._incidents.apply(event, dedup_key, received_at)
        return 202, accepted(dedup_key)

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


def main(argv: list[str] | None = None) -> int:
    """Run the receiver until SIGINT or SIGTERM; print its enqueue URL on the first line."""
    parser = argparse.ArgumentParser(
        prog="python -m canaryguard_testbed.pagerduty_receiver",
        description="Local PagerDuty Events API v2 receiver.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a Pod)"
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
    receiver = PagerDutyReceiver(args.port, host=args.host, rate_limit_per_minute=args.rate_limit)
    receiver.start()
    try:
        print(receiver.url, flush=True)
        done.wait()
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
