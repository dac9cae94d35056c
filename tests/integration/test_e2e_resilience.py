"""End to end, resilience: a Prometheus outage mid-rollout, the operator SIGKILLed mid-step and
mid-breach, and PagerDuty failing (5xx then 202, 400, and down across an operator restart).

The real operator runs under the shipped RBAC against the real API server; real HTTP flows
through the router, the real Prometheus scrapes it, and the PagerDuty receiver records every
call. Time is accelerated (1 s ticks, windows of seconds); every timing assertion is a bound
on what the status records, never a sleep.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from canaryguard_testbed.prometheus_server import PrometheusServer
from tests.integration.fixtures_e2e import INTERVAL, EndToEnd, error_rate_slo
from tests.integration.fixtures_operator import (
    Operator,
    Rollout,
    condition,
    history,
    ts,
    wait_for,
)

# Two ticks plus scheduling and API latency on a loaded 2-core machine.
LATE = 2 * INTERVAL + 0.5


def now() -> datetime:
    return datetime.now(UTC)


def seconds(text: str) -> float:
    """A duration of the form the tests write ("6s")."""
    assert text.endswith("s") and text[:-1].isdigit(), text
    return float(text[:-1])


def wait_until(moment: datetime) -> None:
    """Let wall-clock time reach `moment` (a scenario's pacing, never an assertion)."""
    wait_for(f"the clock to reach {moment.isoformat()}", lambda: now() >= moment, timeout=120)


def start_healthy(e2e: EndToEnd, r: Rollout, weights: tuple[int, int]) -> Operator:
    """Start the operator and wait for the first step with every SLO healthy."""
    op = e2e.operator()
    r.wait_weights(*weights, timeout=30)
    r.wait_healthy(timeout=40)
    return op


def call_keys(calls: list[dict[str, Any]]) -> set[str]:
    return {json.loads(c["body"])["dedup_key"] for c in calls}


# --- 7. Prometheus stopped mid-rollout ------------------------------------------------------

OUTAGE_STEPS = [
    {"weight": 20, "hold": "4s"},
    {"weight": 50, "hold": "4s"},
    {"weight": 100, "hold": "30s"},
]


def _stop_prometheus_and_see_outage(prometheus: PrometheusServer, r: Rollout) -> dict[str, Any]:
    prometheus.stop()
    return wait_for(
        "metricsOutageSince in status",
        lambda: (s := r.status()).get("metricsOutageSince") and s,
        timeout=20,
    )


def test_prometheus_outage_freezes_weights_then_rolls_back_after_max_metrics_outage(
    e2e: EndToEnd,
) -> None:
    prometheus = e2e.prometheus
    r = e2e.rollout(
        steps=OUTAGE_STEPS, analysis={"maxMetricsOutage": "8s", "onMetricsOutage": "rollback"}
    )
    with e2e.traffic(rate=80):
        start_healthy(e2e, r, (80, 20))
        try:
            outage = _stop_prometheus_and_see_outage(prometheus, r)
            step = outage["stepIndex"]
            assert step in (0, 1), outage  # stopped before the last step, so a hold can elapse
            frozen = r.weights()
            assert frozen == (100 - OUTAGE_STEPS[step]["weight"], OUTAGE_STEPS[step]["weight"])
            seen: set[tuple[int | None, tuple[int, int]]] = set()

            def rolled_back() -> dict[str, Any] | None:
                weights = r.weights()  # read first: if the status is not yet RolledBack,
                status = r.status()  # these weights are from before the rollback
                if status.get("phase") == "RolledBack":
                    return status
                seen.add((status.get("stepIndex"), weights))
                return None

            final = wait_for("RolledBack after maxMetricsOutage", rolled_back, timeout=40)
            final = r.wait_page("Delivered")
        finally:
            if not prometheus.running:
                prometheus.start()
    since = ts(outage["metricsOutageSince"])
    # Weights never moved during the outage, although the hold ran out well before its end.
    assert seen == {(step, frozen)}, seen
    rollback = final["rollback"]
    hold_end = ts(outage["stepStartedAt"]) + timedelta(seconds=seconds(OUTAGE_STEPS[step]["hold"]))
    assert (ts(rollback["at"]) - hold_end).total_seconds() >= 2, (rollback, outage)
    assert not [h for h in history(final, "StepAdvanced") if ts(h["at"]) >= since]
    # Then the configured action, no earlier than maxMetricsOutage, within two ticks.
    assert rollback["reason"] == "MetricsOutage"
    assert ts(rollback["breachingSince"]) == since
    lasted = (ts(rollback["at"]) - since).total_seconds()
    print(f"figure: outage start to rollback {lasted:.3f} s (maxMetricsOutage 8 s)")
    assert 8 <= lasted <= 8 + LATE, lasted
    assert r.weights() == (100, 0)
    assert final["phase"] == "RolledBack" and final["canaryWeight"] == 0
    reasons = r.event_reasons()
    assert reasons.count("MetricsOutage") == 1
    assert reasons.count("RolledBack") == 1
    assert len(e2e.pagerduty.incidents()) == 1
    (event,) = e2e.pagerduty.events()
    assert event["event"]["dedup_key"] == final["page"]["dedupKey"]
    assert event["event"]["payload"]["custom_details"]["reason"] == "MetricsOutage"
    assert len(e2e.pagerduty.calls()) == 1


def test_prometheus_outage_with_pause_policy_pauses_without_paging_then_resumes(
    e2e: EndToEnd,
) -> None:
    prometheus = e2e.prometheus
    # The last hold is shorter than the 10 s lookback: at 100% the baseline gets no traffic,
    # and with no baseline evidence the last step would wait for evidence forever.
    steps = [*OUTAGE_STEPS[:2], {"weight": 100, "hold": "4s"}]
    r = e2e.rollout(steps=steps, analysis={"maxMetricsOutage": "4s", "onMetricsOutage": "pause"})
    with e2e.traffic(rate=80):
        op = start_healthy(e2e, r, (80, 20))
        try:
            outage = _stop_prometheus_and_see_outage(prometheus, r)
            step = outage["stepIndex"]
            assert step in (0, 1), outage
            frozen = r.weights()

            def paused() -> dict[str, Any] | None:
                weights = r.weights()
                status = r.status()
                assert weights == frozen, (weights, status.get("phase"))
                assert status.get("phase") != "RolledBack", status.get("rollback")
                return status if status.get("phase") == "Paused" else None

            pause = wait_for("Paused for the metrics outage", paused, timeout=30)
            assert pause["pausedReason"] == "MetricsOutage"
            assert pause["stepIndex"] == step

            # Paused, it stays paused with the same weights for as long as the outage lasts:
            # five more ticks, each finding Prometheus down.
            def still_paused() -> None:
                assert (r.weights(), r.phase()) == (frozen, "Paused")

            op.wait_ticks(5, check=still_paused)
            during = r.status()
            prometheus.start()
            resumed = r.wait_phase("Progressing", timeout=40)  # Prometheus is back
            wait_for("the next step after the outage", lambda: r.weights() != frozen, timeout=40)
            promoted = r.wait_phase("Promoted", timeout=90)
        finally:
            if not prometheus.running:
                prometheus.start()
    since = ts(outage["metricsOutageSince"])
    (paused_entry,) = [h for h in history(promoted, "Paused") if ts(h["at"]) >= since]
    assert paused_entry["reason"] == "MetricsOutage"
    lasted = (ts(paused_entry["at"]) - since).total_seconds()
    print(f"figure: outage start to pause {lasted:.3f} s (maxMetricsOutage 4 s)")
    assert 4 <= lasted <= 4 + LATE, lasted
    assert (
        during["phase"] == "Paused" and during["metricsOutageSince"] == outage["metricsOutageSince"]
    )
    assert condition(during, "MetricsAvailable")["status"] == "False"
    assert condition(during, "Progressing")["reason"] == "Paused"
    assert resumed.get("pausedReason") is None
    (resume_entry,) = history(promoted, "Resumed")
    assert resume_entry["reason"] == "MetricsRecovered"
    assert ts(resume_entry["at"]) > ts(paused_entry["at"])
    advanced = [h for h in history(promoted, "StepAdvanced") if ts(h["at"]) > since]
    assert advanced and all(ts(h["at"]) >= ts(resume_entry["at"]) for h in advanced)
    assert r.weights() == (0, 100)
    reasons = r.event_reasons()
    assert "Paused" in reasons and "Resumed" in reasons and "MetricsRecovered" in reasons
    assert "RolledBack" not in reasons
    assert "rollback" not in promoted and "page" not in promoted
    assert e2e.pagerduty.calls() == []


# --- 8. the operator SIGKILLed and restarted ------------------------------------------------


def test_operator_killed_mid_step_resumes_the_same_step_and_hold_from_status(
    e2e: EndToEnd,
) -> None:
    hold = 12.0
    r = e2e.rollout(
        steps=[
            {"weight": 20, "hold": f"{hold:g}s"},
            {"weight": 50, "hold": "60s"},
            {"weight": 100, "hold": "60s"},
        ]
    )
    with e2e.traffic(rate=80):
        op = start_healthy(e2e, r, (80, 20))
        before = r.status()
        assert before["stepIndex"] == 0
        started = ts(before["stepStartedAt"])
        wait_until(started + timedelta(seconds=4))
        op.kill()
        killed_at = now()
        assert r.status()["stepIndex"] == 0
        wait_until(killed_at + timedelta(seconds=3))  # down for 3 s
        assert r.weights() == (80, 20)
        op.start()
        restarted_at = now()
        print(f"figure: operator restart {(restarted_at - killed_at).total_seconds() - 3:.3f} s")
        step_starts: set[str] = set()

        def advanced() -> dict[str, Any] | None:
            status = r.status()
            if status.get("stepIndex") == 0:
                step_starts.add(status["stepStartedAt"])
                return None
            return status

        after = wait_for("step 2 after the restart", advanced, timeout=40)
        assert r.weights() == (50, 50)
    # Same step, same start: the hold was measured from the status, not from the restart.
    assert step_starts == {before["stepStartedAt"]}
    assert after["stepIndex"] == 1
    (advance,) = history(after, "StepAdvanced")
    assert advance["stepIndex"] == 1
    late = (ts(advance["at"]) - started).total_seconds()
    print(f"figure: step start to next step {late:.3f} s (hold {hold:g} s, restart inside)")
    assert hold <= late <= hold + LATE, late
    assert (restarted_at - started).total_seconds() >= 5  # a restart-based hold would be later
    assert ts(advance["at"]) < restarted_at + timedelta(seconds=hold - 3)
    assert len(history(after, "Started")) == 1
    assert r.event_reasons().count("Started") == 1
    assert after["revision"] == before["revision"]
    assert e2e.pagerduty.calls() == []


def test_operator_killed_mid_breach_keeps_the_window_and_rolls_back_on_time(
    e2e: EndToEnd,
) -> None:
    window = 12.0
    r = e2e.rollout(
        steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}],
        slos=[error_rate_slo(window=f"{window:g}s")],
    )
    with e2e.traffic(rate=80):
        op = start_healthy(e2e, r, (50, 50))
        e2e.mesh.control("v2", {"error_rate": 0.3})
        breaching = wait_for(
            "breachingSince in status",
            lambda: r.status().get("slos", [{}])[0].get("breachingSince"),
            timeout=30,
        )
        since = ts(breaching)
        wait_until(since + timedelta(seconds=2))
        op.kill()
        killed_at = now()
        assert r.phase() == "Progressing"
        wait_until(killed_at + timedelta(seconds=3))  # down for 3 s, well inside the window
        op.start()
        restarted_at = now()
        assert restarted_at < since + timedelta(seconds=window), "restart outlasted the window"
        seen_since: set[str | None] = set()

        def rolled_back() -> dict[str, Any] | None:
            status = r.status()
            if status.get("phase") == "RolledBack":
                return status
            seen_since.add(status["slos"][0].get("breachingSince"))
            return None

        final = wait_for("RolledBack", rolled_back, timeout=40)
        final = r.wait_page("Delivered")
    assert seen_since == {breaching}, seen_since  # the window was not reset by the restart
    rollback = final["rollback"]
    assert rollback["reason"] == "SLOBreach" and rollback["slo"] == "error-rate"
    assert rollback["breachingSince"] == breaching
    held = (ts(rollback["at"]) - since).total_seconds()
    print(f"figure: breachingSince to rollback {held:.3f} s (window {window:g} s, restart inside)")
    assert window <= held <= window + LATE, held
    assert ts(rollback["at"]) > restarted_at  # the restarted operator rolled back
    assert r.weights() == (100, 0)
    assert r.event_reasons().count("RolledBack") == 1
    assert len(e2e.pagerduty.incidents()) == 1
    assert len(e2e.pagerduty.events()) == 1
    assert len(e2e.pagerduty.calls()) == 1


# --- 9. PagerDuty failures ------------------------------------------------------------------

BREACH_STEPS = [{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}]


def _breach_until_rolled_back(e2e: EndToEnd, r: Rollout) -> dict[str, Any]:
    e2e.mesh.control("v2", {"error_rate": 0.3})
    return r.wait_phase("RolledBack")


def test_pagerduty_5xx_twice_then_accepted_is_one_incident_with_attempts_recorded(
    e2e: EndToEnd,
) -> None:
    r = e2e.rollout(steps=BREACH_STEPS)
    e2e.pagerduty.fail_next(2, status=500)
    with e2e.traffic(rate=80):
        start_healthy(e2e, r, (50, 50))
        _breach_until_rolled_back(e2e, r)
        final = r.wait_page("Delivered")
    calls = e2e.pagerduty.calls()
    assert [c["status"] for c in calls] == [500, 500, 202]
    assert call_keys(calls) == {final["page"]["dedupKey"]}
    (incident,) = e2e.pagerduty.incidents()
    assert incident["trigger_count"] == 1
    assert len(e2e.pagerduty.events()) == 1
    page = final["page"]
    assert page["attempts"] == 3
    assert "deliveredAt" in page and "lastError" not in page
    paged = condition(final, "Paged")
    assert (paged["status"], paged["reason"]) == ("True", "Delivered")
    assert r.weights() == (100, 0)
    assert r.event_reasons().count("PageDelivered") == 1


def test_pagerduty_400_is_not_retried_and_leaves_the_rollback_done(
    e2e: EndToEnd,
) -> None:
    r = e2e.rollout(steps=BREACH_STEPS)
    e2e.pagerduty.fail_next(1, status=400)
    with e2e.traffic(rate=80):
        op = start_healthy(e2e, r, (50, 50))
        _breach_until_rolled_back(e2e, r)
        final = r.wait_page("Failed")

        # Never retried: no call at the ticks that follow either.
        def one_call() -> None:
            assert len(e2e.pagerduty.calls()) == 1

        op.wait_ticks(4, check=one_call)
    (call,) = e2e.pagerduty.calls()
    assert call["status"] == 400
    assert call_keys([call]) == {final["page"]["dedupKey"]}
    assert e2e.pagerduty.incidents() == []
    page = final["page"]
    assert page["attempts"] == 1
    assert "400" in page["lastError"]
    paged = condition(final, "Paged")
    assert (paged["status"], paged["reason"]) == ("False", "Failed")
    assert final["phase"] == "RolledBack"
    assert r.weights() == (100, 0)
    reasons = r.event_reasons()
    assert reasons.count("RolledBack") == 1
    assert reasons.count("PageFailed") == 1
    assert r.status()["page"]["state"] == "Failed"


def test_page_not_delivered_before_a_kill_is_delivered_after_the_restart(
    e2e: EndToEnd,
) -> None:
    r = e2e.rollout(steps=BREACH_STEPS)
    e2e.pagerduty.fail_next(1000, status=500)
    with e2e.traffic(rate=80):
        op = start_healthy(e2e, r, (50, 50))
        rolled = _breach_until_rolled_back(e2e, r)
        wait_for("a failed delivery attempt", lambda: e2e.pagerduty.calls(), timeout=20)
        op.kill()
        before = r.status()
        failed = e2e.pagerduty.calls()
        e2e.pagerduty.reset()  # PagerDuty is back (and forgets the failed calls)
    assert before["page"]["state"] == "Pending"
    assert failed and {c["status"] for c in failed} == {500}
    assert call_keys(failed) == {before["page"]["dedupKey"]}
    op.start()
    final = r.wait_page("Delivered")
    assert final["rollback"] == rolled["rollback"]  # the same rollback, not a second one
    assert final["page"]["dedupKey"] == before["page"]["dedupKey"]
    (incident,) = e2e.pagerduty.incidents()
    assert incident["dedup_key"] == before["page"]["dedupKey"]
    assert incident["trigger_count"] == 1
    assert [c["status"] for c in e2e.pagerduty.calls()] == [202]
    assert r.weights() == (100, 0)
    reasons = r.event_reasons()
    assert reasons.count("RolledBack") == 1
    assert reasons.count("PageDelivered") == 1
