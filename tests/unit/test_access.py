"""The guard against a confused deputy: which addresses an allowlist lets through (parsed,
never matched as strings), and which Secrets a rollout may read (the Secret's own opt-in)."""

from __future__ import annotations

import pytest

from canaryguard.core.access import (
    SECRET_OPT_IN,
    Address,
    AddressError,
    AddressNotAllowed,
    Allowlist,
    check_address,
    parse_address,
    secret_allows,
    secret_not_allowed,
    strip_credentials,
)


def allow(*urls: str) -> Allowlist:
    return Allowlist(tuple(parse_address(u) for u in urls), "--allow-prometheus")


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("http://prometheus.monitoring:9090", Address("http", "prometheus.monitoring", 9090)),
        ("HTTPS://Prom.Example", Address("https", "prom.example", 443)),
        ("http://prom", Address("http", "prom", 80)),
        ("http://prom:80/", Address("http", "prom", 80)),
        ("http://10.0.0.7:9090/prom/", Address("http", "10.0.0.7", 9090, "/prom")),
        ("http://[::1]:9090", Address("http", "[::1]", 9090)),
        (
            "https://events.pagerduty.com/v2/enqueue",
            Address("https", "events.pagerduty.com", 443, "/v2/enqueue"),
        ),
    ],
)
def test_addresses_parse_to_scheme_host_port_and_path(url: str, parsed: Address) -> None:
    assert parse_address(url) == parsed


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("prometheus:9090", "must be an http(s) URL"),
        ("ftp://prom:21", "must be an http(s) URL"),
        ("http:/prom", "must be an http(s) URL"),
        ("http://user:hunter2@prom:9090", "must not hold credentials"),
        ("http://prom.example@evil:9090", "must not hold credentials"),
        ("http://evil\\@prom:9090", "must not hold credentials"),
        ("http://evil\\prom:9090", "the host must be a DNS name"),
        ("http://prom:9090.evil", "the host must be a DNS name"),
        ("http://prom%2eevil:9090", "the host must be a DNS name"),
        ("http://:9090", "the host must be a DNS name"),
        ("http://prom..x:9090", "the host must be a DNS name"),
        ("http://prom:99999", "the port must be between 1 and 65535"),
        ("http://prom:0", "the port must be between 1 and 65535"),
        ("http://prom:9090/?token=hunter2", "must not have a query"),
        ("http://prom:9090#x", "must not have a query"),
        ("http://prom:9090/a b", "the path may hold only URL path characters"),
        ("http://prom:9090/a\\b", "the path may hold only URL path characters"),
        ("http://prom:9090/\nX-Injected: 1", "the path may hold only URL path characters"),
        ("http://prom:9090/v2/../../x", "must not have '.' or '..' segments"),
        ("http://prom:9090/v2/%2E%2e/x", "must not have '.' or '..' segments"),
    ],
)
def test_anything_but_a_plain_http_url_is_refused_without_repeating_it(
    url: str, problem: str
) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(url)
    assert problem in str(caught.value)
    assert "hunter2" not in str(caught.value)
    # Userinfo and a query string are where credentials get written into an address.
    assert caught.value.credentials == problem.startswith(
        ("must not hold credentials", "must not have a query")
    )


# --- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://prometheus.monitoring:9090",
        "http://prometheus.monitoring:9090/",
        "HTTP://PROMETHEUS.monitoring:9090",
        "http://prometheus.monitoring:9090/api/v1",
    ],
)
def test_an_allowed_prometheus_matches_on_scheme_host_and_port(url: str) -> None:
    assert allow("http://prometheus.monitoring:9090").allows(parse_address(url))


@pytest.mark.parametrize(
    "url",
    [
        "https://prometheus.monitoring:9090",  # another scheme
        "http://prometheus.monitoring:9091",  # another port
        "http://prometheus.monitoring",  # port 80
        "http://prometheus.monitoring.evil:9090",  # a host that starts the same
        "http://evil.prometheus.monitoring:9090",  # a host that ends the same
        "http://prometheus:9090",  # a shorter name of the same service is not listed
        "http://127.0.0.1:9090",
    ],
)
def test_anything_else_is_not_allowed(url: str) -> None:
    assert not allow("http://prometheus.monitoring:9090").allows(parse_address(url))


def test_a_path_prefix_matches_whole_segments() -> None:
    allowed = allow("https://events.pagerduty.com/v2/enqueue")
    assert allowed.allows(parse_address("https://events.pagerduty.com/v2/enqueue"))
    assert allowed.allows(parse_address("https://events.pagerduty.com/v2/enqueue/"))
    assert allowed.allows(parse_address("https://events.pagerduty.com/v2/enqueue/x"))
    assert not allowed.allows(parse_address("https://events.pagerduty.com/v2/enqueuex"))
    assert not allowed.allows(parse_address("https://events.pagerduty.com/v2"))
    assert not allowed.allows(parse_address("https://events.pagerduty.com/"))
    # The default port written or not is the same address.
    assert allowed.allows(parse_address("https://events.pagerduty.com:443/v2/enqueue"))


def test_an_empty_allowlist_allows_nothing_and_says_so() -> None:
    empty = Allowlist((), "--allow-prometheus")
    assert not empty.allows(parse_address("http://prom:9090"))
    assert str(empty) == "none"


def test_a_refusal_names_the_field_the_allowlist_and_the_flag() -> None:
    allowed = allow("http://prometheus.monitoring:9090", "http://thanos.monitoring:10902/")
    assert check_address("spec.x", "http://thanos.monitoring:10902", allowed) == Address(
        "http", "thanos.monitoring", 10902
    )
    with pytest.raises(AddressNotAllowed) as caught:
        check_address("spec.metrics.prometheus.address", "http://127.0.0.1:8000/", allowed)
    assert caught.value.path == "spec.metrics.prometheus.address"
    assert str(caught.value) == (
        "spec.metrics.prometheus.address: http://127.0.0.1:8000 is not an address this "
        "operator may send requests to (allowed: http://prometheus.monitoring:9090, "
        "http://thanos.monitoring:10902); the operator's installer allows addresses with "
        "--allow-prometheus"
    )


def test_credentials_are_stripped_from_urls_built_for_links_and_logs() -> None:
    assert strip_credentials("http://user:pass@prom:9090/graph") == "http://prom:9090/graph"
    assert strip_credentials("https://tok@prom") == "https://prom"
    assert strip_credentials("http://prom:9090/a@b") == "http://prom:9090/a@b"


# --- Secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("fraud-model", True),
        ("other, fraud-model", True),
        ("*", True),
        ("fraud-model-b", False),
        ("fraud", False),
        ("", False),
        (None, False),
    ],
)
def test_a_secret_is_available_only_to_the_rollouts_its_annotation_names(
    value: str | None, allowed: bool
) -> None:
    annotations = {} if value is None else {SECRET_OPT_IN: value}
    assert secret_allows(annotations, "fraud-model") is allowed


def test_a_secret_without_annotations_is_not_available() -> None:
    assert not secret_allows(None, "fraud-model")
    assert not secret_allows({"canaryguard.io/allowed-rollout": "*"}, "fraud-model")


def test_the_refusal_says_how_the_secret_is_made_available() -> None:
    message = secret_not_allowed("ml", "pagerduty", "fraud-model")
    assert message == (
        "Secret ml/pagerduty is not made available to CanaryRollout fraud-model: its owner "
        'opts in with the annotation canaryguard.io/allowed-rollouts: "fraud-model" '
        '(rollout names, comma-separated, or "*" for every rollout of the namespace)'
    )
