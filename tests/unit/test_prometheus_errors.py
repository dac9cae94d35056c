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
    POST_ABOVE_CHARS,
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
    # (method, path, body, Authorization header) of each request
    requests: ClassVar[list[tuple[str, str, str, str | None]]] = []

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def _answer(self, sent: bytes) -> None:
        self.paths.append(self.path)
        self.requests.append(
            (self.command, self.path, sent.decode(), self.headers.get("Authorization"))
        )
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


def client(
    httpd: ThreadingHTTPServer, answer: tuple[int, bytes], headers: dict[str, str] | None = None
) -> PrometheusClient:
    _Handler.answer = answer
    return PrometheusClient(
        f"http://127.0.0.1:{httpd.server_address[1]}", retry_budget=0.5, headers=headers or {}
    )


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


def test_a_long_query_goes_in_a_post_body_with_its_headers_and_its_time(
    server: ThreadingHTTPServer,
) -> None:
    answer = (
        b'{"status":"success","data":{"resultType":"vector","result":'
        b'[{"metric":{"destination_service_name":"svc-0001"},"value":[1717243230.25,"0.5"]}]}}'
    )
    _Handler.requests.clear()
    services = "|".join(f"svc-{i:04d}" for i in range(POST_ABOVE_CHARS // 9 + 1))
    promql = f'sum by (destination_service_name) (up{{destination_service_name=~"{services}"}})'
    at = datetime(2024, 6, 1, 12, 0, 30, 250000, tzinfo=UTC)
    auth = {"Authorization": "Bearer t0ken"}
    samples = client(server, (200, answer), auth).query_blocking(promql, at)
    assert [(s.labels, s.value) for s in samples] == [
        ({"destination_service_name": "svc-0001"}, 0.5)
    ]
    client(server, (200, answer), auth).query_blocking("up", at)
    (method, path, body, authorization), (short_method, short_path, _, short_auth) = (
        _Handler.requests
    )
    assert (method, path, authorization) == ("POST", "/api/v1/query", "Bearer t0ken")
    assert parse_qs(body) == {"query": [promql], "timeout": ["5s"], "time": ["1717243230.250"]}
    # a short one stays a GET, its parameters in the URL
    assert (short_method, short_auth) == ("GET", "Bearer t0ken")
    assert parse_qs(urlsplit(short_path).query)["query"] == ["up"]


def test_a_refused_post_is_a_rejection_quoting_prometheus(server: ThreadingHTTPServer) -> None:
    with pytest.raises(PrometheusQueryError) as caught:
        client(server, (400, PARSE_ERROR)).query_blocking("x" * (POST_ABOVE_CHARS + 1))
    assert str(caught.value).startswith('HTTP 400: invalid parameter "query"')
    with pytest.raises(PrometheusUnavailable, match="HTTP 503"):
        client(server, (503, b"busy")).query_blocking("x" * (POST_ABOVE_CHARS + 1))
