"""End to end: the real operator (under the shipped RBAC) drives a real VirtualService while
real HTTP traffic flows through the router to v1 and v2, Prometheus scrapes it, and the
PagerDuty receiver records pages. Time is accelerated: 1 s ticks, windows of seconds."""

import itertools

from tests.integration.fixtures_e2e import ROUTING_KEY, EndToEnd
from tests.integration.fixtures_operator import Rollout, history, ts, wait_for


def test_healthy_canary_walks_every_step_and_is_promoted_without_a_page(e2e: EndToEnd) -> None:
    r = e2e.rollout()
    with e2e.traffic(rate=80):
        op = e2e.operator()
        r.wait_weights(80, 20)
        seen = set()

        def promoted() -> bool:
            seen.add(r.weights())
            return r.phase() == "Promoted"

        wait_for("Promoted", promoted, timeout=90)
    status = r.status()
    assert r.weights() == (0, 100)
    assert {(80, 20), (50, 50)} <= seen | {(80, 20)}
    reasons = r.event_reasons()
    assert reasons.count("StepAdvanced") == 2
    assert "Promoted" in reasons
    assert "RolledBack" not in reasons
    steps = [h for h in status["history"] if h["action"] in ("Started", "StepAdvanced")]
    # Each step held at least its 6 s hold before the next one.
    times = [ts(h["at"]) for h in steps]
    assert all((b - a).total_seconds() >= 6 for a, b in itertools.pairwise(times))
    assert e2e.pagerduty.events() == []
    # The header-match route the rollout does not drive is untouched.
    vs = r.cp.kubectl("get", "vs", "fraud-model", "-n", r.namespace, "-o=jsonpath={.spec.http[0]}")
    assert '"subset":"v2"' in vs.stdout and "weight" not in vs.stdout
    assert op.proc is not None and op.proc.poll() is None


def test_sustained_5xx_regression_rolls_back_on_time_and_pages_once(e2e: EndToEnd) -> None:
    r = e2e.rollout(steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}])
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        r.wait_healthy()
        e2e.mesh.control("v2", {"error_rate": 0.3})
        r.wait_phase("RolledBack")
        r.wait_page("Delivered", timeout=20)
    status = r.status()
    assert r.weights() == (100, 0)
    rollback = status["rollback"]
    assert rollback["reason"] == "SLOBreach"
    assert rollback["slo"] == "error-rate"
    assert rollback["canary"] > rollback["baseline"] + 0.02
    held = (ts(rollback["at"]) - ts(rollback["breachingSince"])).total_seconds()
    # No earlier than the 6 s window after the breach was first seen, within two 1 s ticks.
    assert 6 <= held <= 6 + 2 + 0.5, held
    incidents = e2e.pagerduty.incidents()
    assert len(incidents) == 1
    events = e2e.pagerduty.events()
    assert len(events) == 1
    event = events[0]["event"]
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == status["page"]["dedupKey"]
    assert "error-rate" in event["payload"]["summary"]
    assert event["payload"]["custom_details"]["slo"] == "error-rate"
    assert any("g0.expr" in link["href"] for link in event.get("links", []))
    assert "RolledBack" in r.event_reasons()


def judged_against_the_reference(r: Rollout) -> bool:
    """v1 has had no traffic for a whole lookback and the canary is judged against its
    baseline reference."""
    slos = r.status().get("slos", [])
    return bool(slos) and all(
        not s.get("baselineSamples")
        and s.get("verdict") == "healthy"
        and "vs baseline reference" in s.get("reason", "")
        for s in slos
    )


def test_a_last_step_held_past_the_lookback_promotes_against_the_baseline_reference(
    e2e: EndToEnd,
) -> None:
    # The last hold is three lookbacks (10 s): at 100% v1 gets no traffic, so for most of it
    # v1 has no requests at all in Prometheus.
    r = e2e.rollout(steps=[{"weight": 50, "hold": "6s"}, {"weight": 100, "hold": "30s"}])
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(0, 100, timeout=30)
        wait_for("judged against the reference", lambda: judged_against_the_reference(r), 25)
        r.wait_phase("Promoted", timeout=40)
    status = r.status()
    (slo,) = status["slos"]
    assert slo["baselineReferenceSamples"] >= 20, slo
    assert isinstance(slo["baselineReference"], int | float), slo
    started = history(status, "StepAdvanced")[-1]
    promoted = history(status, "Promoted")[-1]
    assert (ts(promoted["at"]) - ts(started["at"])).total_seconds() >= 30
    assert "vs baseline reference" in promoted["message"]
    assert e2e.pagerduty.events() == []


def test_a_regression_at_100_rolls_back_against_the_baseline_reference(e2e: EndToEnd) -> None:
    r = e2e.rollout(steps=[{"weight": 50, "hold": "6s"}, {"weight": 100, "hold": "120s"}])
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(0, 100, timeout=30)
        wait_for("judged against the reference", lambda: judged_against_the_reference(r), 25)
        e2e.mesh.control("v2", {"error_rate": 0.3})
        r.wait_phase("RolledBack", timeout=40)
        r.wait_page("Delivered", timeout=20)
    status = r.status()
    rollback = status["rollback"]
    assert (rollback["reason"], rollback["slo"]) == ("SLOBreach", "error-rate")
    assert rollback["baselineReferenceAt"] == status["slos"][0]["baselineReferenceAt"]
    assert rollback["canary"] > rollback["baseline"] + 0.02
    held = (ts(rollback["at"]) - ts(rollback["breachingSince"])).total_seconds()
    assert 6 <= held <= 6 + 2 + 0.5, held
    assert "vs baseline reference" in rollback["message"]
    (event,) = e2e.pagerduty.events()
    assert "vs baseline reference" in event["event"]["payload"]["summary"]
    assert r.weights() == (100, 0)
