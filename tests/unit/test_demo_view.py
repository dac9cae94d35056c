"""The demo's pure parts: its rollout is valid, each scenario's regression and SLO exist, the
plain view prints one line per change, and the live view fits a 100x30 terminal."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

from rich.console import Console

from canaryguard.core.spec import parse_spec
from canaryguard_testbed import demo
from canaryguard_testbed.demo_view import (
    LiveView,
    PageView,
    PlainView,
    SloView,
    Snapshot,
    TimelineEntry,
    demo_times,
    short_reason,
    traffic_follows,
)


def test_the_demo_rollout_parses_and_has_an_slo_for_every_regression() -> None:
    body = demo.rollout_manifest("http://127.0.0.1:1", "http://127.0.0.1:2/v2/enqueue")
    spec = parse_spec(body)
    assert spec.metrics.prometheus.address == "http://127.0.0.1:1"
    assert spec.paging is not None and spec.paging.pager_duty.url == "http://127.0.0.1:2/v2/enqueue"
    names = {slo.name for slo in spec.analysis.slos}
    for scenario, story in demo.STORIES.items():
        assert story.slo is None or story.slo in names, scenario
        assert bool(demo.regression(scenario)) == (story.slo is not None), scenario


def test_regressions_are_the_scenario_files_changes_to_v2() -> None:
    assert demo.regression("error-spike") == {"error_rate": 0.04}
    assert demo.regression("latency") == {"latency": {"spike_probability": 0.05, "spike_ms": 400}}
    assert demo.describe_changes(demo.regression("latency")) == (
        "latency.spike_probability=0.05, latency.spike_ms=400"
    )
    assert demo.regression("healthy") == {}


def test_tolerances_read_in_the_slos_units() -> None:
    assert (
        demo.tolerance(
            {"errorRate": {}, "margin": {"absolute": 0.01, "relative": 0.5}, "limit": 0.05}
        )
        == "+1 pt & +50%, or > 5%"
    )
    assert demo.tolerance({"latency": {"quantile": 0.99}, "margin": {"absolute": 25}}) == "+25 ms"
    assert (
        demo.tolerance({"query": {}, "direction": "LowerIsWorse", "margin": {"absolute": 0.045}})
        == "-0.045"
    )


def test_weights_are_read_from_the_driven_route_only() -> None:
    vs = {
        "spec": {
            "http": [
                {"name": "qa", "route": [{"destination": {"subset": "v2"}}]},
                {"name": "primary", "route": [{"destination": {"subset": "v1"}}]},
            ]
        }
    }
    assert demo.vs_weights(vs) == (100, 0)
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"subset": "v1"}, "weight": 80},
        {"destination": {"subset": "v2"}, "weight": 20},
    ]
    assert demo.vs_weights(vs) == (80, 20)
    assert demo.vs_weights({"spec": {"http": []}}) is None


def test_short_reasons_and_times() -> None:
    assert short_reason("canary has 14.7028 samples, needs 200") == "canary n=15/200"
    assert short_reason("canary requests unknown (no data)") == "no canary data yet"
    assert short_reason("query failed: timeout") == "query failed: timeout"
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert demo_times("since 2026-01-01T00:01:05.500Z: x", start) == "since 1:05: x"
    assert traffic_follows({"v1": 44.0, "v2": 46.0}, (50, 50))
    assert not traffic_follows({"v1": 80.0, "v2": 10.0}, (50, 50))
    assert not traffic_follows({}, (100, 0))


def snapshot(phase: str, weights: tuple[int, int], verdict: str, timeline: int) -> Snapshot:
    now = datetime.now(UTC)
    slos = tuple(
        SloView(
            name=name,
            kind=kind,
            tolerance="+1 pt & +50%, or > 5%",
            window_s=8,
            verdict=verdict,
            reason="canary 0.04 vs baseline 0.001: worse by 0.039, more than absolute 0.01",
            baseline=0.001,
            canary=0.04,
            breaching_s=5.0,
        )
        for name, kind in (
            ("error-rate", "errorRate"),
            ("p99-latency", "latency"),
            ("conversion-rate", "query"),
            ("prediction-drift", "query"),
        )
    )
    return Snapshot(
        elapsed=30,
        rollout="ml/fraud-model",
        phase=phase,
        message=f"breaching since {(now - timedelta(seconds=5)).isoformat()[:23]}Z; " + "x" * 200,
        step_index=1,
        steps=((20, 8.0), (50, 25.0), (100, 5.0)),
        step_elapsed=12,
        weights=weights,
        traffic={"v1": 45.0, "v2": 45.0},
        slos=slos,
        timeline=tuple(
            TimelineEntry(float(i), "StepAdvanced", "a long decision message " * 10)
            for i in range(timeline)
        ),
    )


def test_live_view_fits_a_100x30_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, height=30, force_terminal=True, color_system=None)
    view = LiveView("canaryguard demo", "scenario error-spike", "story", console=console)
    view.update(snapshot("Progressing", (50, 50), "breach", timeline=40))
    console.print(view._render())
    lines = out.getvalue().splitlines()
    assert len(lines) <= 30, "\n".join(lines)
    assert all(len(line) <= 100 for line in lines)
    text = out.getvalue()
    assert "breach 5s of 8s" in text and "4.00%" in text and "50% of traffic" in text
    assert "step 2/3: canary 50% for 25s, held 12s" in text


def test_plain_view_prints_each_change_once() -> None:
    out = io.StringIO()
    view = PlainView(out, clock=time.monotonic())
    first = snapshot("Progressing", (80, 20), "healthy", timeline=1)
    view.update(first)
    view.update(first)
    second = snapshot("RolledBack", (100, 0), "breach", timeline=2)
    view.update(second)
    lines = out.getvalue().splitlines()
    assert sum("VirtualService weights v1 80% / v2 20%" in line for line in lines) == 1
    assert sum("VirtualService weights v1 100% / v2 0%" in line for line in lines) == 1
    assert sum("decision StepAdvanced" in line for line in lines) == 2
    assert sum("SLO error-rate: breach" in line for line in lines) == 1
    assert sum("phase RolledBack" in line for line in lines) == 1
    assert all(line.startswith("[") for line in lines)


def test_the_page_shows_its_fields_but_never_the_routing_key() -> None:
    event = {
        "dedup_key": "canaryguard/ml/fraud-model/r1",
        "event": {
            "routing_key": "SECRET0123456789abcdefABCDEF0123",
            "event_action": "trigger",
            "payload": {
                "summary": "canaryguard rolled back ml/fraud-model [error-rate]",
                "severity": "critical",
                "source": "canaryguard/ml/fraud-model",
                "custom_details": {
                    "slo": "error-rate",
                    "slos": [{"name": "error-rate", "verdict": "breach", "baseline": 0.001}],
                },
            },
            "links": [{"href": "http://127.0.0.1:1/graph", "text": "Prometheus"}],
        },
    }
    page = PageView.of(event)
    assert ("slo", "error-rate") in page.details
    assert page.slos == ("error-rate breach (v1 0.001, v2 None)",)
    out = io.StringIO()
    PlainView(out).page(event)
    console_out = io.StringIO()
    console = Console(file=console_out, width=100, height=30, color_system=None)
    LiveView("t", "s", "story", console=console).page(event)
    for text in (out.getvalue(), console_out.getvalue()):
        assert "SECRET" not in text
        assert "canaryguard/ml/fraud-model/r1" in text
        assert "[error-rate]" in text  # brackets are text, not markup
