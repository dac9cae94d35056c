"""End to end, the spec side: invalid specs (missing VirtualService, unknown route, a query
Prometheus rejects) and their recovery, a spec the CRD schema refuses, weights edited by hand,
`paused: true`, and deleting a rollout while the operator is down.

The real operator runs under the shipped RBAC against the real API server, Prometheus and
PagerDuty receiver; real HTTP flows through the router. Time is accelerated: 1 s ticks."""

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.fixtures_e2e import INTERVAL, EndToEnd
from tests.integration.fixtures_operator import condition, ts, wait_for

# What a loaded 2-core CI machine adds to a tick (queries, engine, writes) on top of INTERVAL.
SLACK = 1.0
PARKED = [{"weight": 20, "hold": "300s"}, {"weight": 100, "hold": "300s"}]  # stays at step 1


def business_errors_slo(namespace: str, function: str = "") -> dict[str, Any]:
    """A query SLO on the model servers' own counters: the share of failed predictions,
    optionally passed through `function`."""
    sel = f'namespace="{namespace}",version="{{{{ version }}}}"'
    template = (
        f"{function}(sum(rate(model_prediction_errors_total{{{sel}}}[{{{{ lookback }}}}]))"
        f" / sum(rate(model_predictions_total{{{sel}}}[{{{{ lookback }}}}])))"
    )
    return {
        "name": "prediction-errors",
        "query": {"template": template},
        "margin": {"absolute": 0.02},
        "window": "6s",
        "lookback": "10s",
    }


# --- 10. invalid specs ------------------------------------------------------------------------


INVALID_CASES: dict[str, dict[str, Any]] = {
    "missing-virtualservice": {
        "overrides": lambda ns: {
            "virtualService": {"name": "fraud-model-nope", "routes": ["primary"]}
        },
        "problem": lambda ns: [f"VirtualService {ns}/fraud-model-nope not found"],
        "fix": lambda ns: {"virtualService": {"name": "fraud-model", "routes": ["primary"]}},
    },
    "unknown-route": {
        "overrides": lambda ns: {"virtualService": {"name": "fraud-model", "routes": ["primari"]}},
        "problem": lambda ns: [
            "VirtualService fraud-model has no http route named primari",
            "named routes: primary, qa",
        ],
        "fix": lambda ns: {"virtualService": {"name": "fraud-model", "routes": ["primary"]}},
    },
    # Valid PromQL to the operator's parser (Prometheus has histogram_avg since 2.50) but
    # unknown to the test bed's Prometheus 2.42: only Prometheus can refuse it.
    "query-rejected-by-prometheus": {
        "overrides": lambda ns: {"slos": [business_errors_slo(ns, "histogram_avg")]},
        "problem": lambda ns: [
            "SLO prediction-errors: Prometheus rejected its query",
            "HTTP 400",
            "parse error: unknown function with name",
            "histogram_avg",
        ],
        "fix": lambda ns: {"analysis": {"slos": [business_errors_slo(ns)]}},
    },
}


@pytest.mark.parametrize("case", list(INVALID_CASES))
def test_invalid_spec_is_reported_leaves_traffic_alone_and_recovers_when_fixed(
    case: str, e2e: EndToEnd
) -> None:
    spec = INVALID_CASES[case]
    namespace = e2e.namespace
    r = e2e.rollout(**spec["overrides"](namespace))
    # A healthy rollout of VirtualService fraud-model-b: the same operator drives it.
    other = e2e.rollout("fraud-model-b", steps=PARKED)
    untouched = r.vs()
    assert r.weights() == (100, 0)
    with e2e.traffic(rate=60):
        op = e2e.operator()
        status = r.wait_phase("Invalid", timeout=30)
        for fragment in spec["problem"](namespace):
            assert fragment in status["message"], (fragment, status["message"])
        assert status["message"].startswith("invalid: ")
        spec_valid = condition(status, "SpecValid")
        assert (spec_valid["status"], spec_valid["reason"]) == ("False", "InvalidSpec")
        assert all(f in spec_valid["message"] for f in spec["problem"](namespace))
        assert condition(status, "Progressing")["status"] == "False"
        warnings = r.events_with("InvalidSpec")
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        assert all(f in warnings[0]["message"] for f in spec["problem"](namespace))

        # The same operator keeps going: it drives the other rollout and keeps ticking both.
        wait_for(
            "the other rollout at 80/20",
            lambda: other.phase() == "Progressing" and other.weights() == (80, 20),
            timeout=20,
        )
        op.wait_ticks(3, rollouts=2)
        if case == "query-rejected-by-prometheus":
            rejected = op.metric("canaryguard_prometheus_query_errors_total", kind="rejected")
            assert rejected is not None and rejected >= 1
        # Still Invalid, reported once (not an event per tick), and the VirtualService was
        # never written: not a weight, not a field.
        assert r.phase() == "Invalid"
        assert len(r.events_with("InvalidSpec")) == 1
        now = r.vs()
        assert now["metadata"]["resourceVersion"] == untouched["metadata"]["resourceVersion"]
        assert r.weights() == (100, 0)
        assert op.proc is not None and op.proc.poll() is None

        r.patch_spec(spec["fix"](namespace))
        wait_for(
            "Progressing at 80/20 after the fix",
            lambda: r.phase() == "Progressing" and r.weights() == (80, 20),
            timeout=20,
        )
        if case == "query-rejected-by-prometheus":
            # The fixed query answers with real data for both versions.
            wait_for(
                "a verdict from the fixed query",
                lambda: any(
                    s.get("verdict") == "healthy" and s.get("canary") is not None
                    for s in r.status().get("slos", [])
                ),
                timeout=40,
            )
    status = r.status()
    spec_valid = condition(status, "SpecValid")
    assert (spec_valid["status"], spec_valid["reason"]) == ("True", "Valid")
    assert condition(status, "Progressing")["status"] == "True"
    assert status["observedGeneration"] == r.get()["metadata"]["generation"]
    assert "Started" in r.event_reasons()
    assert other.phase() == "Progressing"
    assert e2e.pagerduty.events() == []
    assert op.proc is not None and op.proc.poll() is None


def test_a_spec_the_crd_schema_refuses_never_reaches_the_operator(e2e: EndToEnd) -> None:
    op = e2e.operator()
    r = e2e.rollout(
        create=False,
        mesh=False,
        steps=[{"weight": 50, "hold": "5s"}, {"weight": 20, "hold": "5s"}, {"weight": 100}],
    )
    result = e2e.cp.kubectl("apply", "-f", "-", input=json.dumps(r.body), check=False)
    assert result.returncode != 0
    assert "spec.steps: Invalid value" in result.stderr, result.stderr
    assert "step weights must be strictly increasing" in result.stderr, result.stderr
    missing = e2e.cp.kubectl("get", "canaryrollout", "-n", r.namespace, "-o=name")
    assert missing.stdout.strip() == ""
    assert r.events() == []
    assert op.proc is not None and op.proc.poll() is None


# --- 11. weights edited by hand ---------------------------------------------------------------


def test_weights_raised_by_hand_are_set_back_and_lowered_by_hand_are_respected(
    e2e: EndToEnd,
) -> None:
    """Fail-safe traffic: a canary share raised by hand is set back to the decided 20%; an
    emergency edit to 100/0 is respected (never reverted), reported once, and holds the
    rollout until the weight is restored."""
    r = e2e.rollout(steps=PARKED)
    with e2e.traffic(rate=60):
        op = e2e.operator()
        r.wait_weights(80, 20)
        generation_before = r.get()["metadata"]["generation"]
        status_before = r.status()

        edited = time.monotonic()
        r.set_weights(60, 40)
        r.wait_weights(80, 20)  # set back
        took = time.monotonic() - edited
        wait_for("a WeightsReasserted event", lambda: r.events_with("WeightsReasserted"), 10)

        r.set_weights(100, 0)  # on-call's emergency edit
        wait_for("a WeightsLowered event", lambda: r.events_with("WeightsLowered"), 10)

        def still_lowered() -> None:
            assert r.weights() == (100, 0)

        op.wait_ticks(3, check=still_lowered)
        status = r.status()
        assert condition(status, "Traffic")["reason"] == "LoweredOutside"
        assert condition(status, "Progressing")["reason"] == "WeightsLowered"
        e2e.mesh.wait_route({"v1": 1.0, "v2": 0.0}, timeout=15)  # the router follows it

        r.set_weights(80, 20)  # restored by the person
        wait_for(
            "the Traffic condition back to AsDecided",
            lambda: condition(r.status(), "Traffic")["reason"] == "AsDecided",
            timeout=10,
        )
    print(f"raised share set back after {took:.2f}s")
    # Within two intervals of the edit (the next tick reads the VirtualService afresh).
    assert took <= 2 * INTERVAL + SLACK, took
    (raised,) = r.events_with("WeightsReasserted")
    assert raised["type"] == "Warning"
    assert "VirtualService fraud-model" in raised["message"]
    assert "raised outside canaryguard to 40%" in raised["message"]
    assert "set back to the decided 20%" in raised["message"]
    (lowered,) = r.events_with("WeightsLowered")
    assert lowered["type"] == "Warning" and "is 0%, below the decided 20%" in lowered["message"]
    assert op.metric("canaryguard_weight_reasserts_total") == 1
    # The rollout itself did not move: same step, same hold start, no rollback, no page.
    status = r.status()
    assert status["phase"] == "Progressing"
    assert status["stepIndex"] == status_before["stepIndex"] == 0
    assert status["stepStartedAt"] == status_before["stepStartedAt"]
    assert r.get()["metadata"]["generation"] == generation_before
    assert "RolledBack" not in r.event_reasons()
    assert e2e.pagerduty.events() == []
    # The header-match route was not touched by the re-assert either.
    qa = r.cp.kubectl("get", "vs", "fraud-model", "-n", r.namespace, "-o=jsonpath={.spec.http[0]}")
    assert '"subset":"v2"' in qa.stdout and "weight" not in qa.stdout


# --- 12. paused -------------------------------------------------------------------------------


def test_paused_rollout_holds_its_weight_and_continues_when_unpaused(e2e: EndToEnd) -> None:
    hold = 4.0
    r = e2e.rollout(
        paused=True,
        steps=[
            {"weight": 20, "hold": "4s"},
            {"weight": 50, "hold": "4s"},
            {"weight": 100, "hold": "4s"},
        ],
    )
    with e2e.traffic(rate=80):
        op = e2e.operator()
        # Paused from creation: no traffic moves at all.
        r.wait_phase("Paused", timeout=20)
        op.wait_ticks(3)
        assert r.phase() == "Paused" and r.weights() == (100, 0)
        assert r.status().get("stepIndex") is None

        r.patch_spec({"paused": False})
        r.wait_weights(80, 20, timeout=10)
        r.wait_healthy()
        r.patch_spec({"paused": True})
        status = r.wait_phase("Paused", timeout=10)
        started_stamp = status["stepStartedAt"]
        step_started = ts(started_stamp)
        # Wait until the hold has elapsed, then for three ticks that each would have
        # advanced the step were it not paused, and watch that nothing moves meanwhile.
        hold_over = step_started + timedelta(seconds=hold)
        seen = set()

        def record() -> None:
            seen.add((r.phase(), r.weights(), r.status().get("stepIndex")))

        def past_hold() -> bool:
            record()
            return datetime.now(UTC) >= hold_over

        wait_for("the hold to elapse while paused", past_hold, timeout=hold + 20)
        op.wait_ticks(3, check=record)
        assert seen == {("Paused", (80, 20), 0)}, seen
        status = r.status()
        assert status["stepStartedAt"] == started_stamp  # a pause does not restart the hold
        progressing = condition(status, "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "Paused")
        assert "paused (spec.paused) at step 1/3, canary 20%" in status["message"]
        paused_events = r.events_with("Paused")
        assert len(paused_events) == 2, [e["message"] for e in paused_events]
        assert "a sustained breach still rolls back" in paused_events[-1]["message"]

        # Unpaused: the hold already elapsed (a pause does not reset it), so the next step
        # applies at the next tick, then the schedule runs on to Promoted.
        unpaused = time.monotonic()
        r.patch_spec({"paused": False})
        r.wait_weights(50, 50, timeout=15)
        took = time.monotonic() - unpaused
        r.wait_phase("Promoted")
    print(f"next step applied {took:.2f}s after unpausing")
    assert took <= 2 * INTERVAL + SLACK, took
    status = r.status()
    assert r.weights() == (0, 100)
    actions = [h["action"] for h in status["history"]]
    resumed = actions.index("Resumed")
    assert actions[resumed + 1] == "StepAdvanced", actions
    assert "RolledBack" not in actions
    assert e2e.pagerduty.events() == []


def test_paused_rollout_still_rolls_back_on_a_sustained_breach_and_pages(e2e: EndToEnd) -> None:
    r = e2e.rollout(steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}])
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        r.wait_healthy()
        r.patch_spec({"paused": True})
        r.wait_phase("Paused", timeout=10)
        e2e.mesh.control("v2", {"error_rate": 0.3})
        r.wait_phase("RolledBack")
        r.wait_page("Delivered", timeout=20)
    status = r.status()
    assert r.weights() == (100, 0)
    rollback = status["rollback"]
    assert (rollback["reason"], rollback["slo"]) == ("SLOBreach", "error-rate")
    held = (ts(rollback["at"]) - ts(rollback["breachingSince"])).total_seconds()
    print(f"paused rollout rolled back {held:.2f}s after the breach was first seen (window 6s)")
    # The pause changes nothing to protection: no earlier than the 6 s window, within two
    # ticks after it.
    assert 6 <= held <= 6 + 2 * INTERVAL + 0.5, held
    actions = [h["action"] for h in status["history"]]
    assert actions.index("Paused") < actions.index("RolledBack")
    assert "Resumed" not in actions
    events = e2e.pagerduty.events()
    assert len(events) == 1
    event = events[0]["event"]
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == status["page"]["dedupKey"]
    assert "error-rate" in event["payload"]["summary"]
    assert len(e2e.pagerduty.incidents()) == 1
    reasons = r.event_reasons()
    assert "Paused" in reasons and "RolledBack" in reasons and "PageDelivered" in reasons


# --- deletion while the operator is down ------------------------------------------------------


def test_deleting_a_rollout_while_the_operator_is_down_completes_and_leaves_traffic(
    e2e: EndToEnd,
) -> None:
    r = e2e.rollout(steps=PARKED, mesh=False)
    op = e2e.operator()
    r.wait_weights(80, 20)
    assert not r.get()["metadata"].get("finalizers")
    vs_before = r.vs()
    op.kill()

    began = time.monotonic()
    e2e.cp.kubectl(
        "delete", "canaryrollout", r.name, "-n", r.namespace, "--wait=true", "--timeout=10s"
    )
    took = time.monotonic() - began
    gone = e2e.cp.kubectl(
        "get", "canaryrollout", r.name, "-n", r.namespace, "--ignore-not-found", "-o=name"
    )
    assert gone.stdout.strip() == ""
    print(f"deleted in {took:.2f}s with the operator down")
    assert took < 5, took
    vs_after = r.vs()
    assert vs_after["metadata"]["resourceVersion"] == vs_before["metadata"]["resourceVersion"]
    assert r.weights() == (80, 20)

    # Back up, the operator never tracks the deleted rollout nor touches its VirtualService.
    # What shows it has listed the namespace since, and run its schedule: a second rollout,
    # created while it was down, tracked and ticked three times.
    other = e2e.rollout("fraud-model-b", steps=PARKED, mesh=False)
    op.start()
    other.wait_weights(80, 20)
    op.wait_ticks(3)
    # One rollout tracked, not two (kopf answers from a probe run up to 10 s ago).
    wait_for("liveness to count one rollout", lambda: op.tracked() == 1, timeout=15)
    # Every rollout the operator sees gets its weight gauge: the deleted one has none.
    gauge = "canaryguard_canary_weight"
    assert op.metric(gauge, namespace=r.namespace, rollout="fraud-model-b") == 20
    assert op.metric(gauge, namespace=r.namespace, rollout=r.name) is None
    assert r.vs()["metadata"]["resourceVersion"] == vs_before["metadata"]["resourceVersion"]
    assert e2e.pagerduty.events() == []
    assert op.proc is not None and op.proc.poll() is None
