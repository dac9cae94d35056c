"""Scenario files: the shipped ones load, phases apply over time, errors name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from canaryguard_testbed.scenario import (
    Behaviour,
    ScenarioError,
    builtin_scenarios,
    load_scenario,
    parse_duration,
    parse_scenario,
)


def test_the_shipped_scenarios_are_there_and_valid() -> None:
    names = builtin_scenarios()
    assert {"healthy", "error-spike", "latency", "business-drop", "drift"} <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert isinstance(scenario.seed, int)


def test_error_spike_raises_the_canary_error_rate_at_30s_only() -> None:
    scenario = load_scenario("error-spike")
    assert scenario.behaviour("v2", 29.9).error_rate == pytest.approx(0.001)
    assert scenario.behaviour("v2", 30.0).error_rate == pytest.approx(0.04)
    assert scenario.behaviour("v1", 300).error_rate == pytest.approx(0.001)


def test_a_version_the_file_does_not_name_follows_the_defaults() -> None:
    scenario = load_scenario("latency")
    assert scenario.behaviour("v9", 100) == scenario.defaults


def test_phases_are_cumulative_and_partial_for_latency() -> None:
    scenario = parse_scenario(
        {
            "seed": 1,
            "defaults": {"latency": {"median_ms": 10, "sigma": 0.2}},
            "versions": {
                "v2": {
                    "phases": [
                        {"at": "1s", "latency": {"median_ms": 20}},
                        {"at": "2m", "error_rate": 0.5},
                    ]
                }
            },
        }
    )
    late = scenario.behaviour("v2", 121)
    assert late.latency.median_ms == 20 and late.latency.sigma == 0.2
    assert late.error_rate == 0.5
    assert scenario.behaviour("v2", 60).error_rate == Behaviour().error_rate


def test_a_scenario_file_loads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("seed: 5\nversions:\n  v2:\n    error_rate: 0.5\n")
    scenario = load_scenario(path)
    assert scenario.name == "mine"
    assert scenario.behaviour("v2", 0).error_rate == 0.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"versions": {}}, r"seed: required"),
        ({"seed": 1, "colour": "red"}, r"unknown field\(s\) \['colour'\]"),
        ({"seed": 1, "defaults": {"error_rate": 4}}, r"defaults\.error_rate: must be in \[0, 1\]"),
        (
            {"seed": 1, "versions": {"v2": {"phases": [{"at": "30s", "error_rate": 1.5}]}}},
            r"versions\.v2\.phases\[0\]\.error_rate",
        ),
        (
            {"seed": 1, "versions": {"v2": {"phases": [{"error_rate": 0.1}]}}},
            r"phases\[0\]: at: required",
        ),
        (
            {"seed": 1, "versions": {"v2": {"phases": [{"at": 5}, {"at": 5}]}}},
            r"increasing time order",
        ),
        (
            {"seed": 1, "defaults": {"latency": {"median_ms": 0}}},
            r"latency\.median_ms: must be in \(0",
        ),
        ({"seed": 1, "defaults": {"latency": {"p99": 3}}}, r"latency: unknown field"),
        ({"seed": 1, "versions": {"v2": {"phases": [{"at": "soon"}]}}}, r"expected a duration"),
        ({"seed": True}, r"seed: required, an integer"),
        ([1, 2], r"expected a mapping"),
    ],
)
def test_invalid_scenarios_are_rejected_naming_the_field(data: Any, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data, "bad.yaml")


def test_an_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match=r"shipped: .*error-spike"):
        load_scenario("no-such-scenario")


def test_invalid_yaml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("seed: [1\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: invalid YAML"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("2m", 120), ("1h", 3600), (7, 7.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds
