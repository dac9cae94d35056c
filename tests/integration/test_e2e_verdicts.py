"""End to end, the verdicts: a breach shorter than its window is forgiven, a latency p99
regression and a business-proxy drop (lower is worse) each roll back with one page, a canary
starved of traffic waits for evidence and is never promoted, and the operator's own /metrics
and liveness endpoints tell the truth about what it did.

The real operator runs under the shipped RBAC; real HTTP goes through the router to v1 and v2;
Prometheus scrapes the router and the model servers every second; ticks are 1 s."""

import json
import re
import time
from typing import Any

from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from tests.integration.fixtures_e2e import ROUTING_KEY, EndToEnd, error_rate_slo
from tests.integration.fixtures_operator import (
    Rollout,
    condition,
    fetch,
    history,
    slo_of,
    ts,
    wait_for,
)

LONG_HOLD = [{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}]


def assert_rolled_back_once_for(
    r: Rollout, pagerduty: PagerDutyReceiver, slo: str, window: float
) -> dict[str, Any]:
    """The common end of a rollback scenario: weights 100/0, the reason names `slo`, on time
    (no earlier than the window after breachingSince, within two 1 s ticks), one page."""
    status = r.status()
    assert r.weights() == (100, 0)
    rollback = status["rollback"]
    assert rollback["reason"] == "SLOBreach"
    assert rollback["slo"] == slo, rollback
    assert slo in rollback["message"] and "also breaching" not in rollback["message"]
    held = (ts(rollback["at"]) - ts(rollback["breachingSince"])).total_seconds()
    assert window <= held <= window + 2 + 0.5, held
    print(
        f"\n{slo}: baseline {rollback['baseline']} canary {rollback['canary']}, "
        f"rolled back {held:.2f}s after breachingSince (window {window:g}s)"
    )
    assert condition(status, "Progressing")["reason"] == "RolledBack"
    assert pagerduty.incidents() and len(pagerduty.incidents()) == 1
    events = pagerduty.events()
    assert len(events) == 1, events
    event = events[0]["event"]
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == status["page"]["dedupKey"]
    assert f"SLO {slo}" in event["payload"]["summary"]
    assert event["payload"]["custom_details"]["slo"] == slo
    reasons = r.event_reasons()
    assert reasons.count("RolledBack") == 1
    assert "Promoted" not in reasons
    return status


def test_breach_shorter_than_the_window_is_forgiven_and_the_rollout_continues(
    e2e: EndToEnd,
) -> None:
    window = 12.0
    r = e2e.rollout(
        # The first hold outlasts the blip, so the advance that proves "continues" comes after;
        # the last is short, as at 100% the baseline's requests leave the 4 s lookback.
        steps=[{"weight": 50, "hold": "30s"}, {"weight": 100, "hold": "1s"}],
        # A short lookback lets the 3 s blip leave the query well inside the window.
        slos=[error_rate_slo(window=f"{window:g}s", lookback="4s")],
    )
    m = e2e.mesh
    seen: list[dict[str, Any]] = []

    def record() -> dict[str, Any]:
        status = r.status()
        seen.append(status)
        return status

    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        r.wait_healthy("error-rate")
        m.control("v2", {"error_rate": 0.3})
        try:
            wait_for(
                "the blip seen as a breach",
                lambda: slo_of(record(), "error-rate").get("breachingSince"),
                timeout=15,
            )
            # The stimulus: 30% 5xx for about 3 s, then back to normal. A duration of the
            # scenario (shorter than the window), not a wait before an assertion.
            time.sleep(3)
        finally:
            m.reset("v2")
        wait_for(
            "the breach cleared by a healthy verdict",
            lambda: slo_of(record(), "error-rate").get("verdict") == "healthy",
            timeout=30,
        )
        wait_for(
            "Promoted", lambda: record().get("phase") in ("Promoted", "RolledBack"), timeout=60
        )

    breaching = [slo_of(s, "error-rate") for s in seen]
    since = {s["breachingSince"] for s in breaching if s.get("breachingSince")}
    assert len(since) == 1, since  # one breach run
    breach_start = ts(since.pop())
    assert any(s.get("verdict") == "breach" for s in breaching)
    # While breaching, the rollout said what would happen and when.
    assert any(
        condition(s, "Progressing", {}).get("reason") == "Breaching"
        and "rollback at" in condition(s, "Progressing", {}).get("message", "")
        for s in seen
    )
    assert all(s.get("phase") != "RolledBack" for s in seen)

    status = r.status()
    assert status["phase"] == "Promoted"
    assert status.get("rollback") is None and status.get("page") is None
    # The breach cleared inside the window: the Healthy condition went back to True.
    cleared = ts(condition(status, "Healthy")["lastTransitionTime"])
    assert condition(status, "Healthy")["status"] == "True"
    lasted = (cleared - breach_start).total_seconds()
    assert 0 < lasted < window, lasted
    # The rollout continued after the breach: the next step and the promotion came later.
    advanced = history(status, "StepAdvanced")
    assert len(advanced) == 1
    assert ts(advanced[0]["at"]) >= cleared
    assert r.weights() == (0, 100)
    reasons = r.event_reasons()
    assert "RolledBack" not in reasons
    assert reasons.count("StepAdvanced") == 1 and "Promoted" in reasons
    assert e2e.pagerduty.events() == []
    print(f"\nblip breach lasted {lasted:.1f}s of a {window:g}s window")


def test_latency_p99_regression_alone_rolls_back_and_pages_once(e2e: EndToEnd) -> None:
    window = 6.0
    r = e2e.rollout(
        steps=LONG_HOLD,
        slos=[
            error_rate_slo(),
            {
                "name": "latency-p99",
                "latency": {"quantile": 0.99},
                # p99 more than twice the baseline's (Envoy's buckets: 25, 50, 100, 250 ms).
                "margin": {"relative": 1.0},
                "window": f"{window:g}s",
                "lookback": "10s",
            },
        ],
    )
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        r.wait_healthy("error-rate", "latency-p99")
        before = r.slo("latency-p99")
        # Slower, not failing: a median of 100 ms puts the canary's p99 near 200 ms.
        e2e.mesh.control("v2", {"latency": {"median_ms": 100, "sigma": 0.3}})
        r.wait_phase("RolledBack")
        r.wait_page("Delivered", timeout=20)
    status = assert_rolled_back_once_for(r, e2e.pagerduty, "latency-p99", window)
    rollback = status["rollback"]
    assert rollback["canary"] > 2 * rollback["baseline"], rollback
    assert rollback["canary"] >= 100, rollback  # milliseconds
    assert "relative 100%" in rollback["margin"]
    assert before["baseline"] < 100 and before["canary"] < 100, before
    # The error rate stayed healthy throughout: it is not what rolled the canary back.
    errors = slo_of(status, "error-rate")
    assert errors["verdict"] == "healthy" and not errors.get("breachingSince"), errors
    event = e2e.pagerduty.events()[0]["event"]
    assert any("histogram_quantile" in link["href"] for link in event.get("links", []))


def test_business_proxy_drop_lower_is_worse_rolls_back_and_pages_once(e2e: EndToEnd) -> None:
    window = 6.0
    namespace = e2e.namespace
    # The model servers' business counters (prometheus_client adds _total), scraped with the
    # mesh's target labels namespace and app: conversions per answered prediction.
    sel = f'namespace="{namespace}",app="fraud-model",version="{{{{ version }}}}"'
    template = (
        f"sum(rate(model_conversions_total{{{sel}}}[{{{{ lookback }}}}]))"
        f" / sum(rate(model_predictions_total{{{sel}}}[{{{{ lookback }}}}]))"
    )
    r = e2e.rollout(
        steps=LONG_HOLD,
        slos=[
            error_rate_slo(),
            {
                "name": "conversion-rate",
                "query": {"template": template},
                "direction": "LowerIsWorse",
                "margin": {"relative": 0.25},
                "window": f"{window:g}s",
                "lookback": "15s",
            },
        ],
    )
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        r.wait_healthy("error-rate", "conversion-rate", timeout=40)
        before = r.slo("conversion-rate")
        # Fewer approved transactions convert: 0.30 -> 0.10, no errors, no latency change.
        e2e.mesh.control("v2", {"conversion_rate": 0.1})
        r.wait_phase("RolledBack")
        r.wait_page("Delivered", timeout=20)
    # Both versions converted alike before the drop (a share of predictions near 0.3).
    assert 0.15 < before["baseline"] < 0.35 and 0.15 < before["canary"] < 0.35, before
    status = assert_rolled_back_once_for(r, e2e.pagerduty, "conversion-rate", window)
    rollback = status["rollback"]
    assert rollback["canary"] < 0.75 * rollback["baseline"], rollback
    assert "relative 25%" in rollback["margin"]
    errors = slo_of(status, "error-rate")
    assert errors["verdict"] == "healthy" and not errors.get("breachingSince"), errors
    event = e2e.pagerduty.events()[0]["event"]
    assert any("model_conversions_total" in link["href"] for link in event.get("links", []))


def test_canary_starved_of_traffic_waits_for_evidence_and_is_never_promoted(
    e2e: EndToEnd,
) -> None:
    min_requests = 150
    # At 10% of 40 requests/s the canary serves ~40 requests in the 10 s lookback, the
    # baseline ~360: the baseline has the evidence, the canary never will.
    r = e2e.rollout(
        steps=[{"weight": 10, "hold": "2s"}, {"weight": 100, "hold": "2s"}],
        analysis={"minRequests": min_requests},
    )
    needs = re.compile(rf"error-rate: canary has ([0-9.e+]+) requests, needs {min_requests}")
    with e2e.traffic(rate=40):
        op = e2e.operator()
        r.wait_weights(90, 10)
        wait_for(
            "a condition saying the canary lacks requests",
            lambda: needs.search(condition(r.status(), "Healthy", {}).get("message", "")),
            timeout=30,
        )
        started = ts(r.status()["stepStartedAt"])
        looks: list[str] = []

        def still_waiting() -> None:
            status = r.status()
            assert status["phase"] == "Progressing", status
            assert status["stepIndex"] == 0 and status["canaryWeight"] == 10, status
            assert ts(status["stepStartedAt"]) == started
            healthy = condition(status, "Healthy")
            assert healthy["status"] == "Unknown" and healthy["reason"] == "Inconclusive"
            found = needs.search(healthy["message"])
            assert found and float(found.group(1)) < min_requests, healthy
            progressing = condition(status, "Progressing")
            assert progressing["reason"] == "WaitingForEvidence", progressing
            assert f"needs {min_requests}" in progressing["message"]
            assert f"needs {min_requests}" in status["message"]
            errors = slo_of(status, "error-rate")
            assert errors["verdict"] == "inconclusive"
            assert errors["baselineSamples"] >= min_requests > errors["canarySamples"], errors
            assert r.weights() == (90, 10)
            looks.append(found.group(0))

        # Sustained: for seven holds' worth of ticks, every look finds the rollout waiting.
        op.wait_ticks(14, check=still_waiting)
        assert len(looks) >= 10
        print(f"\nstarved canary: {len(looks)} looks, last {looks[-1]!r}")
    status = r.status()
    assert [h["action"] for h in status["history"]] == ["Started"]
    reasons = r.event_reasons()
    assert "StepAdvanced" not in reasons and "Promoted" not in reasons
    assert "RolledBack" not in reasons
    assert e2e.pagerduty.events() == []


def test_operator_metrics_and_liveness_after_a_promotion(e2e: EndToEnd) -> None:
    r = e2e.rollout(steps=[{"weight": 50, "hold": "3s"}, {"weight": 100, "hold": "3s"}])
    rollout_labels = {"namespace": r.namespace, "rollout": "fraud-model"}
    with e2e.traffic(rate=80):
        op = e2e.operator()
        r.wait_weights(50, 50)
        wait_for(
            "the weight gauge at 50",
            lambda: op.metric("canaryguard_canary_weight", **rollout_labels) == 50,
            timeout=10,
        )
        r.wait_phase("Promoted")
        wait_for(
            "the weight gauge at 100",
            lambda: op.metric("canaryguard_canary_weight", **rollout_labels) == 100,
            timeout=10,
        )
    samples = op.metrics()

    def get(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    # Every decision counted once, by event type and reason.
    decisions = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples.items()
        if name == "canaryguard_decisions_total"
    }
    assert decisions == {"Started": 1, "StepAdvanced": 1, "Promoted": 1}, decisions
    assert get("canaryguard_decisions_total", action="Normal", reason="Promoted") == 1
    phases = {
        dict(labels)["phase"]: v
        for (name, labels), v in samples.items()
        if name == "canaryguard_rollouts"
    }
    assert phases.get("Promoted") == 1 and sum(phases.values()) == 1, phases
    # Ticks: at least one per second of the 6 s of holds; each far below the 1 s interval.
    count = get("canaryguard_tick_duration_seconds_count")
    total = get("canaryguard_tick_duration_seconds_sum")
    assert count is not None and total is not None and count >= 6, (count, total)
    assert 0 < total / count < 1.0, total / count
    assert get("canaryguard_tick_duration_seconds_bucket", le="+Inf") == count
    # No page, no query error, no weight tampering: their series exist at 0.
    for result in ("delivered", "rejected", "exhausted", "secret_error"):
        assert get("canaryguard_pages_total", result=result) == 0
    for kind in ("unavailable", "rejected"):
        assert get("canaryguard_prometheus_query_errors_total", kind=kind) == 0
    assert get("canaryguard_weight_reasserts_total") == 0
    # The last judged error rates of both versions, as in the status.
    status = r.status()
    errors = slo_of(status, "error-rate")
    for side in ("baseline", "canary"):
        gauge = get("canaryguard_slo_value", **rollout_labels, slo="error-rate", side=side)
        assert gauge is not None and 0 <= gauge <= 0.02, (side, gauge)
        assert gauge == errors[side]
    assert e2e.pagerduty.events() == []

    code, body = fetch(op.liveness_url)
    assert code == 200
    assert "rollouts" in json.loads(body)
    # kopf answers from a probe run up to 10 s ago (the first one, at start-up, found none).
    wait_for("liveness to count the rollout", lambda: op.tracked() == 1, timeout=15)
