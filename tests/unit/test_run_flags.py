"""`canaryguard run --allow-prometheus/--allow-pagerduty`: addresses parsed as the operator
matches them, several per value or per flag, refused with the reason at start-up."""

from __future__ import annotations

import argparse

import pytest

from canaryguard.cli.main import build_parser
from canaryguard.cli.run import operator_settings
from canaryguard.core.access import Address, parse_address
from canaryguard.core.paging import DEFAULT_EVENTS_URL


def run(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *flags])


def test_without_flags_nothing_is_listed() -> None:
    args = run()
    assert args.allow_prometheus is None
    assert args.allow_pagerduty is None


def test_repeated_flags_and_space_separated_values_add_up() -> None:
    args = run(
        "--allow-prometheus=http://prometheus.monitoring:9090 https://thanos:10902/prom",
        "--allow-prometheus",
        "http://vm:8428",
        "--allow-pagerduty=",
    )
    assert args.allow_prometheus == [
        Address("http", "prometheus.monitoring", 9090),
        Address("https", "thanos", 10902, "/prom"),
        Address("http", "vm", 8428),
    ]
    assert args.allow_pagerduty == []  # given empty: nothing allowed


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("prometheus:9090", "must be an http(s) URL"),
        ("http://admin:hunter2@prom:9090", "must not hold credentials"),
    ],
)
def test_a_bad_address_stops_the_operator_before_it_starts(
    value: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        run(f"--allow-prometheus={value}")
    err = capsys.readouterr().err
    assert "argument --allow-prometheus" in err and problem in err
    assert "hunter2" not in err


def test_the_defaults_allow_no_prometheus_and_pagerduty_s_public_events_api_only() -> None:
    settings = operator_settings(run())
    assert settings.allow_prometheus.entries == ()
    assert str(settings.allow_pagerduty) == DEFAULT_EVENTS_URL
    assert settings.allow_pagerduty.allows(parse_address(DEFAULT_EVENTS_URL))
    assert not settings.allow_pagerduty.allows(parse_address("https://pd.example/v2/enqueue"))


def test_flags_replace_the_defaults() -> None:
    settings = operator_settings(
        run("--allow-prometheus=http://prom:9090", "--allow-pagerduty=http://pd-proxy:8080")
    )
    assert str(settings.allow_prometheus) == "http://prom:9090"
    assert settings.allow_prometheus.flag == "--allow-prometheus"
    assert str(settings.allow_pagerduty) == "http://pd-proxy:8080"
    assert settings.allow_pagerduty.flag == "--allow-pagerduty"
