"""Prometheus adapter: instant queries with a client and a server-side timeout.

An instant query is evaluated at the time it is given (`time=`, to the millisecond): a tick
asks at its own time on the grid, so its answer does not depend on when the query reached the
server, and a range query stepped on the same grid (the backtest) gives the same values.

prometheus-api-client is synchronous, so queries run in worker threads, each with clients
of its own (a requests session is not promised thread-safe), kept per thread and server so
connections are reused. Its urllib3 retry is turned off:
tenacity owns retries, with jittered backoff inside a budget kept below the tick interval.
Redirects are never followed: the address the installer allowed is the only host a query
(and the Authorization header with it) goes to. A long query (a batch of many rollouts'
builtin queries) is sent as a form body (POST), which Prometheus's query API takes as it
takes URL parameters; the client would put even a POST's parameters in the URL, whose
length servers and proxies cap (8 KiB is common), so that request is made on the client's
own session here.
Failures fall into two kinds the engine treats differently: `PrometheusUnavailable`
(network, timeout, 429, 5xx: an outage) and `PrometheusQueryError` (4xx: the query itself
is wrong, a spec problem that retrying cannot fix).
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from urllib3.util.retry import Retry

from canaryguard.core.access import strip_credentials
from canaryguard.core.ports import MetricsUnavailable, QueryRefused, Sample, Series

log = logging.getLogger(__name__)

_STATUS = re.compile(r"HTTP Status Code (\d{3})")

# A query longer than this goes in a POST's body, not in the URL.
POST_ABOVE_CHARS = 2000


class PrometheusUnavailable(MetricsUnavailable):
    """Prometheus could not answer (network error, timeout, 429 or 5xx)."""


class PrometheusQueryError(QueryRefused):
    """Prometheus refused the query itself (4xx): a malformed or failing expression."""


@dataclass
class PrometheusClient:
    """Instant queries against one Prometheus server.

    `headers` (for example an Authorization header read from a Secret) are sent with every
    request and never logged. `retry_budget` bounds the time spent retrying one query.
    """

    address: str
    timeout: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    retry_budget: float = 10.0
    attempts: int = 3

    def query_blocking(self, promql: str, at: datetime | None = None) -> list[Sample]:
        """Run an instant query evaluated at `at` (None: when Prometheus receives it),
        retrying outages within the budget."""
        retrying = Retrying(
            retry=retry_if_exception_type(PrometheusUnavailable),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.retry_budget),
            wait=wait_random_exponential(multiplier=0.25, max=2.0),
            before_sleep=self._log_retry,
            reraise=True,
        )
        result: list[Sample] = retrying(self._query_once, promql, at)
        return result

    async def query(self, promql: str, at: datetime | None = None) -> list[Sample]:
        """`query_blocking` in a worker thread, so a slow Prometheus never blocks the event
        loop."""
        return await asyncio.to_thread(self.query_blocking, promql, at)

    def query_range_blocking(
        self, promql: str, start: datetime, end: datetime, step: float
    ) -> list[Series]:
        """Run a range query (evaluated at `start`, `start + step`, ... up to `end`),
        retrying outages within the budget; for replaying history (the backtest)."""
        retrying = Retrying(
            retry=retry_if_exception_type(PrometheusUnavailable),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.retry_budget),
            wait=wait_random_exponential(multiplier=0.25, max=2.0),
            before_sleep=self._log_retry,
            reraise=True,
        )
        result: list[Series] = retrying(self._range_once, promql, start, end, step)
        return result

    def _range_once(self, promql: str, start: datetime, end: datetime, step: float) -> list[Series]:
        client, _ = _connection(self.address, self.timeout, tuple(sorted(self.headers.items())))
        raw = self._guarded(
            lambda: client.custom_query_range(
                promql,
                start_time=start,
                end_time=end,
                step=f"{step:g}s",
                # The client rounds start and end to whole seconds; its params win over its
                # own, so the evaluation grid keeps the milliseconds the ticks have.
                params={
                    "timeout": f"{self.timeout:g}s",
                    "start": f"{start.timestamp():.3f}",
                    "end": f"{end.timestamp():.3f}",
                },
            )
        )
        return [_series(item) for item in raw]

    def _query_once(self, promql: str, at: datetime | None) -> list[Sample]:
        client, session = _connection(
            self.address, self.timeout, tuple(sorted(self.headers.items()))
        )
        # The server-side timeout stops Prometheus evaluating a query nobody waits for.
        params = {"timeout": f"{self.timeout:g}s"}
        if at is not None:  # milliseconds, as the range queries' grid has them
            params["time"] = f"{at.timestamp():.3f}"
        if len(promql) > POST_ABOVE_CHARS:
            form = {"query": promql, **params}
            raw = self._guarded(lambda: _posted(session, client.url, form, self.timeout))
        else:
            raw = self._guarded(lambda: client.custom_query(promql, params=params))
        return [_sample(item) for item in raw]

    @staticmethod
    def _guarded(call: Callable[[], Any]) -> Any:
        """Call Prometheus, its failures told apart: an outage (retried) or a refusal."""
        try:
            return call()
        except requests.TooManyRedirects:
            raise PrometheusUnavailable(
                "answered with a redirect, which is not followed: the address must be "
                "Prometheus's own"
            ) from None
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"{type(exc).__name__}: {exc}") from None
        except PrometheusApiClientException as exc:
            match = _STATUS.search(str(exc))
            status = int(match.group(1)) if match else 0
            if status == 429 or status >= 500 or status == 0:
                raise PrometheusUnavailable(f"HTTP {status}") from None
            raise PrometheusQueryError(_error_message(str(exc), status)) from None
        except ValueError as exc:  # a body that is not Prometheus's JSON
            raise PrometheusUnavailable(f"unreadable answer: {exc}") from None

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "prometheus query retry address=%s attempt=%d error=%s",
            strip_credentials(self.address),
            state.attempt_number,
            exc,
        )


class PrometheusConnector:
    """The `MetricsConnector` port: a client per rollout's Prometheus settings (cheap: the
    connections behind it are kept per worker thread)."""

    def connect(
        self, address: str, timeout: float, headers: Mapping[str, str], retry_budget: float
    ) -> PrometheusClient:
        return PrometheusClient(
            address=address, timeout=timeout, headers=headers, retry_budget=retry_budget
        )


_local = threading.local()
_MAX_CONNECTIONS_PER_THREAD = 64
_Connection = tuple[PrometheusConnect, requests.Session]


def _connection(address: str, timeout: float, headers: tuple[tuple[str, str], ...]) -> _Connection:
    """This worker thread's client for one server and the session it sends on (with the
    headers, no retries and no redirects), kept so its connections are reused.

    A requests session is not promised thread-safe, so each thread has clients of its own.
    """
    cache: dict[tuple[str, float, tuple[tuple[str, str], ...]], _Connection]
    cache = _local.__dict__.setdefault("clients", {})
    key = (address, timeout, headers)
    connection = cache.get(key)
    if connection is None:
        if len(cache) >= _MAX_CONNECTIONS_PER_THREAD:
            for old, _ in cache.values():
                old.close()
            cache.clear()
        session = requests.Session()
        session.max_redirects = 0  # a redirect raises TooManyRedirects instead
        session.headers.update(dict(headers))
        client = PrometheusConnect(
            url=address,
            headers=dict(headers),
            session=session,
            retry=Retry(total=0, raise_on_status=False),
            timeout=timeout,  # type: ignore[arg-type]  # annotated int, passed to requests
        )
        connection = cache[key] = (client, session)
    return connection


def _posted(session: requests.Session, url: str, form: Mapping[str, str], timeout: float) -> Any:
    """An instant query sent as a form body, its failures raised as the client raises them
    (so `_guarded` tells them apart the same way)."""
    response = session.post(f"{url}/api/v1/query", data=form, timeout=timeout)
    if response.status_code != 200:
        raise PrometheusApiClientException(
            f"HTTP Status Code {response.status_code} ({response.content!r})"
        )
    return response.json()["data"]["result"]


def _sample(item: Mapping[str, Any]) -> Sample:
    labels = {str(k): str(v) for k, v in dict(item.get("metric", {})).items()}
    try:
        value = float(item["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        value = math.nan
    return Sample(labels, value)


def _series(item: Mapping[str, Any]) -> Series:
    labels = {str(k): str(v) for k, v in dict(item.get("metric", {})).items()}
    points = []
    for point in item.get("values") or []:
        try:
            points.append((float(point[0]), float(point[1])))
        except (IndexError, TypeError, ValueError):
            continue
    return Series(labels, tuple(points))


def _error_message(text: str, status: int) -> str:
    """Prometheus's own error text (e.g. a parse error) out of the client's exception.

    The client puts the body in its message as a bytes repr, `HTTP Status Code 400
    (b'{"status":"error","error":"..."}')`, so the body is decoded from that repr before its
    JSON is read: a regex over the repr stops at the first escaped quote.
    """
    detail = text
    match = re.search(r"\((b(['\"]).*\2)\)\s*$", text, re.DOTALL)
    if match:
        try:
            body = json.loads(ast.literal_eval(match.group(1)))
        except (ValueError, SyntaxError, TypeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            detail = body["error"]
    return f"HTTP {status}: {detail}"
