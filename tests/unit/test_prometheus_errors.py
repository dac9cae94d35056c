"""The Prometheus adapter tells a refused query (with Prometheus's own words) from an outage,
against a local HTTP server answering as Prometheus does."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from canaryguard.adapters.prometheus import (
    PrometheusClient,
    PrometheusQueryError,
    PrometheusUnavailable,
)

# Byte for byte what Prometheus 2.x answers to `... +* 2` (Go escapes < and > in JSON).
PARSE_ERROR = (
    b'{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": '
    b'1:56: parse error: unexpected \\u003cop:*\\u003e"}'
)


class _Handler(BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b"")
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def client(httpd: ThreadingHTTPServer, answer: tuple[int, bytes]) -> PrometheusClient:
    _Handler.answer = answer
    return PrometheusClient(f"http://127.0.0.1:{httpd.server_address[1]}", retry_budget=0.5)


def test_a_parse_error_is_a_rejected_query_quoting_prometheus(server: ThreadingHTTPServer) -> None:
    with pytest.raises(PrometheusQueryError) as caught:
        client(server, (400, PARSE_ERROR)).query_blocking("x +* 2")
    assert str(caught.value) == (
        'HTTP 400: invalid parameter "query": 1:56: parse error: unexpected <op:*>'
    )


def test_an_error_body_that_is_not_json_is_quoted_as_it_came(
    server: ThreadingHTTPServer,
) -> None:
    with pytest.raises(PrometheusQueryError, match=r"^HTTP 422: .*no json here"):
        client(server, (422, b"no json here")).query_blocking("up")


def test_a_5xx_is_an_outage_not_a_rejection(server: ThreadingHTTPServer) -> None:
    with pytest.raises(PrometheusUnavailable, match="HTTP 503"):
        client(server, (503, b'{"status":"error","error":"overloaded"}')).query_blocking("up")


def test_an_instant_query_is_evaluated_at_the_time_given_to_the_millisecond(
    server: ThreadingHTTPServer,
) -> None:
    answer = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
    _Handler.paths.clear()
    at = datetime(2024, 6, 1, 12, 0, 30, 250000, tzinfo=UTC)
    assert client(server, (200, answer)).query_blocking("up", at) == []
    assert client(server, (200, answer)).query_blocking("up") == []
    sent = [parse_qs(urlsplit(path).query) for path in _Handler.paths]
    assert sent[0]["time"] == [f"{at.timestamp():.3f}"] == ["1717243230.250"]
    assert "time" not in sent[1]  # none given: when Prometheus receives it
