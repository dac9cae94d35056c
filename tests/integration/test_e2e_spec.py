"""End to end, the spec side: invalid specs (missing VirtualService, unknown route, a query
Prometheus rejects) and their recovery, a spec the CRD schema refuses, weights edited by hand,
`paused: true`, and deleting a rollout while the operator is down.

The real operator runs under the shipped RBAC against the real API server, Prometheus and
PagerDuty receiver; real HTTP flows through the router. Time is accelerated: 1 s ticks."""

import json
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from canaryguard_testbed.prometheus_server import PrometheusServer
from tests.integration.fixtures_mesh import MeshFactory
from tests.integration.fixtures_operator import (
    Operator,
    Rollout,
    condition,
    fraud_virtual_service,
    rollout_body,
    ts,
    wait_for,
)
from tests.integration.traffic import Traffic

INTERVAL = 1.0  # spec.analysis.interval of every rollout here
# What a loaded 2-core CI machine adds to a tick (queries, engine, writes) on top of INTERVAL.
SLACK = 1.0


def vs_json(cp: ControlPlane, namespace: str, name: str = "fraud-model") -> dict[str, Any]:
    out = cp.kubectl("get", "virtualservice", name, "-n", namespace, "-o=json")
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def primary_weights(vs: dict[str, Any]) -> tuple[int, int]:
    """(v1, v2) weights of the `primary` route, in Istio's semantics."""
    for http in vs["spec"]["http"]:
        if http.get("name") == "primary":
            dests = http["route"]
            found = {
                d["destination"].get("subset"): d.get("weight", 100 if len(dests) == 1 else 0)
                for d in dests
            }
            return found.get("v1", 0), found.get("v2", 0)
    raise AssertionError(f"no primary route in {vs}")


def metric(op: Operator, name: str, **labels: str) -> float:
    """One sample of the operator's /metrics (0 when the series is absent)."""
    with urllib.request.urlopen(op.metrics_url, timeout=5) as resp:  # noqa: S310
        text = resp.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{want}}}" if want else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def ticks(op: Operator) -> float:
    return metric(op, "canaryguard_tick_duration_seconds_count")


def tracked(op: Operator) -> int:
    """How many rollouts the operator's scheduler tracks (its liveness probe)."""
    with urllib.request.urlopen(op.liveness_url, timeout=5) as resp:  # noqa: S310
        count: int = json.loads(resp.read())["rollouts"]
    return count


def events_with(r: Rollout, reason: str) -> list[dict[str, Any]]:
    return [e for e in r.events() if e["reason"] == reason]


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


def second_rollout(
    cp: ControlPlane, namespace: str, prometheus: PrometheusServer, pagerduty: PagerDutyReceiver
) -> Rollout:
    """A healthy rollout `fraud-model-b` of VirtualService `fraud-model-b` in the same
    namespace: the same operator drives it while the rollout under test is invalid."""
    vs = fraud_virtual_service(namespace)
    vs["metadata"]["name"] = "fraud-model-b"
    cp.kubectl("apply", "-f", "-", input=json.dumps(vs))
    body = rollout_body(
        namespace,
        prometheus.url,
        pagerduty.url,
        virtualService={"name": "fraud-model-b", "routes": ["primary"]},
        steps=[{"weight": 20, "hold": "300s"}, {"weight": 100, "hold": "300s"}],
    )
    body["metadata"]["name"] = "fraud-model-b"
    b = Rollout(cp, namespace, "fraud-model-b", body)
    b.apply()
    return b


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
    case: str,
    control_plane: ControlPlane,
    namespace: str,
    mesh: MeshFactory,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
    prometheus: PrometheusServer,
    pagerduty: PagerDutyReceiver,
) -> None:
    spec = INVALID_CASES[case]
    m = mesh(namespace, scenario="healthy")
    r = rollout(**spec["overrides"](namespace))
    other = second_rollout(control_plane, namespace, prometheus, pagerduty)
    untouched = vs_json(control_plane, namespace)
    assert primary_weights(untouched) == (100, 0)
    with Traffic(m, rate=60):
        op = operator()
        wait_for("phase Invalid", lambda: r.phase() == "Invalid", timeout=30)
        status = r.status()
        for fragment in spec["problem"](namespace):
            assert fragment in status["message"], (fragment, status["message"])
        assert status["message"].startswith("invalid: ")
        spec_valid = condition(status, "SpecValid")
        assert (spec_valid["status"], spec_valid["reason"]) == ("False", "InvalidSpec")
        assert all(f in spec_valid["message"] for f in spec["problem"](namespace))
        assert condition(status, "Progressing")["status"] == "False"
        warnings = events_with(r, "InvalidSpec")
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        assert all(f in warnings[0]["message"] for f in spec["problem"](namespace))

        # The same operator keeps going: it drives the other rollout and keeps ticking both.
        wait_for(
            "the other rollout at 80/20",
            lambda: (
                other.phase() == "Progressing"
                and primary_weights(vs_json(control_plane, namespace, "fraud-model-b")) == (80, 20)
            ),
            timeout=20,
        )
        before = ticks(op)
        wait_for("six more ticks", lambda: ticks(op) >= before + 6, timeout=6 * INTERVAL + 10)
        if case == "query-rejected-by-prometheus":
            assert metric(op, "canaryguard_prometheus_query_errors_total", kind="rejected") >= 1
        # Still Invalid, reported once (not an event per tick), and the VirtualService was
        # never written: not a weight, not a field.
        assert r.phase() == "Invalid"
        assert len(events_with(r, "InvalidSpec")) == 1
        now = vs_json(control_plane, namespace)
        assert now["metadata"]["resourceVersion"] == untouched["metadata"]["resourceVersion"]
        assert primary_weights(now) == (100, 0)
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
    assert pagerduty.events() == []
    assert op.proc is not None and op.proc.poll() is None


def test_a_spec_the_crd_schema_refuses_never_reaches_the_operator(
    control_plane: ControlPlane,
    namespace: str,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
) -> None:
    op = operator()
    r = rollout(
        create=False,
        steps=[{"weight": 50, "hold": "5s"}, {"weight": 20, "hold": "5s"}, {"weight": 100}],
    )
    result = control_plane.kubectl("apply", "-f", "-", input=json.dumps(r.body), check=False)
    assert result.returncode != 0
    assert "spec.steps: Invalid value" in result.stderr, result.stderr
    assert "step weights must be strictly increasing" in result.stderr, result.stderr
    missing = control_plane.kubectl("get", "canaryrollout", "-n", namespace, "-o=name")
    assert missing.stdout.strip() == ""
    assert r.events() == []
    assert op.proc is not None and op.proc.poll() is None


# --- 11. weights edited by hand ---------------------------------------------------------------


def test_weights_edited_by_hand_are_reasserted_with_a_warning(
    namespace: str,
    mesh: MeshFactory,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
    pagerduty: PagerDutyReceiver,
) -> None:
    m = mesh(namespace, scenario="healthy")
    r = rollout(steps=[{"weight": 20, "hold": "300s"}, {"weight": 100, "hold": "300s"}])
    with Traffic(m, rate=60):
        op = operator()
        wait_for("step 1 weights 80/20", lambda: r.weights() == (80, 20), timeout=20)
        generation_before = r.get()["metadata"]["generation"]
        status_before = r.status()
        took = []
        for by_hand in ((60, 40), (100, 0)):
            edited = time.monotonic()
            r.set_weights(*by_hand)
            wait_for("weights set back to 80/20", lambda: r.weights() == (80, 20), timeout=20)
            took.append(time.monotonic() - edited)
            found = f"{by_hand[0]}/{by_hand[1]}"
            wait_for(
                f"a WeightsReasserted event naming {found}",
                lambda found=found: any(
                    f"({found})" in e["message"] for e in events_with(r, "WeightsReasserted")
                ),
                timeout=10,
            )
        # The router follows the restored split.
        m.wait_route({"v1": 0.8, "v2": 0.2}, timeout=15)
    print(f"weights re-asserted after {', '.join(f'{t:.2f}s' for t in took)}")
    # Within two intervals of the edit (the next tick reads the VirtualService afresh).
    assert all(t <= 2 * INTERVAL + SLACK for t in took), took
    warnings = events_with(r, "WeightsReasserted")
    assert len(warnings) == 2, [e["message"] for e in warnings]
    for event, found in zip(warnings, ("60/40", "100/0"), strict=True):
        assert event["type"] == "Warning"
        message = event["message"]
        assert "VirtualService fraud-model" in message
        assert f"({found})" in message and "set back to 80/20" in message
    assert metric(op, "canaryguard_weight_reasserts_total") == 2
    # The rollout itself did not move: same step, same hold start, no new decision.
    status = r.status()
    assert status["phase"] == "Progressing"
    assert status["stepIndex"] == status_before["stepIndex"] == 0
    assert status["stepStartedAt"] == status_before["stepStartedAt"]
    assert r.get()["metadata"]["generation"] == generation_before
    assert "RolledBack" not in r.event_reasons()
    assert pagerduty.events() == []
    # The header-match route was not touched by the re-assert either.
    qa = r.cp.kubectl("get", "vs", "fraud-model", "-n", namespace, "-o=jsonpath={.spec.http[0]}")
    assert '"subset":"v2"' in qa.stdout and "weight" not in qa.stdout


# --- 12. paused -------------------------------------------------------------------------------


def test_paused_rollout_holds_its_weight_and_continues_when_unpaused(
    namespace: str,
    mesh: MeshFactory,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
    pagerduty: PagerDutyReceiver,
) -> None:
    m = mesh(namespace, scenario="healthy")
    hold = 4.0
    r = rollout(
        paused=True,
        steps=[
            {"weight": 20, "hold": "4s"},
            {"weight": 50, "hold": "4s"},
            {"weight": 100, "hold": "4s"},
        ],
    )
    with Traffic(m, rate=80):
        op = operator()
        # Paused from creation: no traffic moves at all.
        wait_for("phase Paused", lambda: r.phase() == "Paused", timeout=20)
        before = ticks(op)
        wait_for("three more ticks", lambda: ticks(op) >= before + 3, timeout=3 * INTERVAL + 10)
        assert r.phase() == "Paused" and r.weights() == (100, 0)
        assert r.status().get("stepIndex") is None

        r.patch_spec({"paused": False})
        wait_for("step 1 at 80/20", lambda: r.weights() == (80, 20), timeout=10)
        wait_for(
            "healthy verdicts",
            lambda: any(s.get("verdict") == "healthy" for s in r.status().get("slos", [])),
            timeout=30,
        )
        r.patch_spec({"paused": True})
        wait_for("phase Paused again", lambda: r.phase() == "Paused", timeout=10)
        status = r.status()
        started_stamp = status["stepStartedAt"]
        step_started = ts(started_stamp)
        # Wait until the hold has long elapsed (three intervals past it) and watch that
        # nothing moves meanwhile.
        hold_over = step_started + timedelta(seconds=hold + 3 * INTERVAL)
        seen = set()

        def past_hold() -> bool:
            seen.add((r.phase(), r.weights(), r.status().get("stepIndex")))
            return datetime.now(UTC) >= hold_over

        wait_for("the hold to elapse while paused", past_hold, timeout=hold + 20)
        assert seen == {("Paused", (80, 20), 0)}, seen
        status = r.status()
        assert status["stepStartedAt"] == started_stamp  # a pause does not restart the hold
        progressing = condition(status, "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "Paused")
        assert "paused (spec.paused) at step 1/3, canary 20%" in status["message"]
        paused_events = events_with(r, "Paused")
        assert len(paused_events) == 2, [e["message"] for e in paused_events]
        assert "a sustained breach still rolls back" in paused_events[-1]["message"]

        # Unpaused: the hold already elapsed (a pause does not reset it), so the next step
        # applies at the next tick, then the schedule runs on to Promoted.
        unpaused = time.monotonic()
        r.patch_spec({"paused": False})
        wait_for("step 2 at 50/50", lambda: r.weights() == (50, 50), timeout=15)
        took = time.monotonic() - unpaused
        wait_for("Promoted", lambda: r.phase() == "Promoted", timeout=60)
    print(f"next step applied {took:.2f}s after unpausing")
    assert took <= 2 * INTERVAL + SLACK, took
    status = r.status()
    assert r.weights() == (0, 100)
    actions = [h["action"] for h in status["history"]]
    resumed = actions.index("Resumed")
    assert actions[resumed + 1] == "StepAdvanced", actions
    assert "RolledBack" not in actions
    assert pagerduty.events() == []


def test_paused_rollout_still_rolls_back_on_a_sustained_breach_and_pages(
    namespace: str,
    mesh: MeshFactory,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
    pagerduty: PagerDutyReceiver,
) -> None:
    m = mesh(namespace, scenario="healthy")
    r = rollout(steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}])
    with Traffic(m, rate=80):
        operator()
        wait_for("canary at 50%", lambda: r.weights() == (50, 50), timeout=20)
        wait_for(
            "healthy verdicts",
            lambda: any(s.get("verdict") == "healthy" for s in r.status().get("slos", [])),
            timeout=30,
        )
        r.patch_spec({"paused": True})
        wait_for("phase Paused", lambda: r.phase() == "Paused", timeout=10)
        m.control("v2", {"error_rate": 0.3})
        wait_for("RolledBack", lambda: r.phase() == "RolledBack", timeout=60)
        wait_for(
            "page delivered",
            lambda: r.status().get("page", {}).get("state") == "Delivered",
            timeout=20,
        )
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
    events = pagerduty.events()
    assert len(events) == 1
    event = events[0]["event"]
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == status["page"]["dedupKey"]
    assert "error-rate" in event["payload"]["summary"]
    assert len(pagerduty.incidents()) == 1
    reasons = r.event_reasons()
    assert "Paused" in reasons and "RolledBack" in reasons and "PageDelivered" in reasons


# --- deletion while the operator is down ------------------------------------------------------


def test_deleting_a_rollout_while_the_operator_is_down_completes_and_leaves_traffic(
    control_plane: ControlPlane,
    namespace: str,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
    pagerduty: PagerDutyReceiver,
) -> None:
    r = rollout(steps=[{"weight": 20, "hold": "300s"}, {"weight": 100, "hold": "300s"}])
    op = operator()
    wait_for("step 1 weights 80/20", lambda: r.weights() == (80, 20), timeout=20)
    assert not r.get()["metadata"].get("finalizers")
    vs_before = vs_json(control_plane, namespace)
    op.kill()

    began = time.monotonic()
    control_plane.kubectl(
        "delete", "canaryrollout", r.name, "-n", namespace, "--wait=true", "--timeout=10s"
    )
    took = time.monotonic() - began
    gone = control_plane.kubectl(
        "get", "canaryrollout", r.name, "-n", namespace, "--ignore-not-found", "-o=name"
    )
    assert gone.stdout.strip() == ""
    print(f"deleted in {took:.2f}s with the operator down")
    assert took < 5, took
    vs_after = vs_json(control_plane, namespace)
    assert vs_after["metadata"]["resourceVersion"] == vs_before["metadata"]["resourceVersion"]
    assert primary_weights(vs_after) == (80, 20)

    # Back up, the operator tracks nothing and never touches the VirtualService: over three
    # intervals it ticks no rollout.
    op.start()
    deadline = time.monotonic() + 3 * INTERVAL
    wait_for("three intervals", lambda: time.monotonic() >= deadline, timeout=10)
    assert tracked(op) == 0
    assert ticks(op) == 0
    assert (
        vs_json(control_plane, namespace)["metadata"]["resourceVersion"]
        == (vs_before["metadata"]["resourceVersion"])
    )
    assert pagerduty.events() == []
    assert op.proc is not None and op.proc.poll() is None
