"""End to end on a real cluster: kind, with the operator installed from its image and
`kubectl apply -k manifests/`, real HTTP through an in-cluster router that follows the
VirtualService, Prometheus in the cluster scraping it and the operator, and the PagerDuty
receiver as a Deployment. Time is accelerated (1 s ticks, windows of seconds); every timing
assertion is a bound on what the status records. Each scenario drives its own service, so no
scenario sees another's metrics.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.fixtures_operator import Rollout, history, ts, wait_for
from tests.kind.cluster import FIGURES, TIMINGS, KindCluster
from tests.kind.stack import (
    NAMESPACE,
    OPERATOR_NAMESPACE,
    ROUTING_KEY,
    error_rate_slo,
    rollout_body,
)

# Two 1 s ticks plus API, scheduling and the in-cluster network on a loaded 2-core machine.
LATE = 3.0
OPERATOR_PODS = "app.kubernetes.io/name=canaryguard,app.kubernetes.io/component=operator"


def now() -> datetime:
    return datetime.now(UTC)


def wait_until(moment: datetime) -> None:
    """Let wall-clock time reach `moment` (a scenario's pacing, never an assertion)."""
    wait_for(f"the clock to reach {moment.isoformat()}", lambda: now() >= moment, timeout=120)


def start_rollout(
    cluster: KindCluster, service: str, steps: list[dict[str, Any]], slos: list[dict[str, Any]]
) -> Rollout:
    r = Rollout(cluster, NAMESPACE, service, rollout_body(service, steps, slos), service)
    r.apply()
    return r


def set_errors(cluster: KindCluster, service: str, rate: float) -> None:
    """Make the service's v2 model servers answer `rate` of requests with HTTP 500."""
    cluster.service_post(NAMESPACE, f"{service}-v2", 8000, "/control", {"error_rate": rate})


def pages(cluster: KindCluster, r: Rollout) -> dict[str, list[dict[str, Any]]]:
    """What the PagerDuty receiver got for this rollout: events, incidents, calls."""
    state = json.loads(cluster.service_get(NAMESPACE, "pagerduty", 8080, "/_receiver/state"))
    prefix = f"canaryguard/{NAMESPACE}/{r.name}/"
    return {
        "events": [e for e in state["events"] if e["dedup_key"].startswith(prefix)],
        "incidents": [i for i in state["incidents"] if i["dedup_key"].startswith(prefix)],
        "calls": [c for c in state["calls"] if prefix in c["body"]],
    }


def figure(text: str) -> None:
    """A measured figure, printed with the timings at the end of the run."""
    FIGURES.append(text)


# --- a healthy canary -----------------------------------------------------------------------


def test_a_healthy_canary_is_promoted_step_by_step_without_a_page(
    kind_cluster: KindCluster,
) -> None:
    steps = [
        {"weight": 20, "hold": "6s"},
        {"weight": 50, "hold": "6s"},
        {"weight": 100, "hold": "6s"},
    ]
    r = start_rollout(kind_cluster, "fraud-promote", steps, [error_rate_slo("6s", "10s")])
    seen: set[tuple[int, int]] = set()

    def promoted() -> bool:
        seen.add(r.weights())
        return r.phase() == "Promoted"

    started = time.monotonic()
    wait_for("Promoted", promoted, timeout=120)
    figure(f"created to Promoted {time.monotonic() - started:.1f} s (3 holds of 6 s)")
    status = r.status()
    assert r.weights() == (0, 100)
    assert {(80, 20), (50, 50)} <= seen | {(80, 20)}, seen
    reasons = r.event_reasons()
    assert reasons.count("StepAdvanced") == 2, reasons
    assert reasons.count("Promoted") == 1, reasons
    assert "RolledBack" not in reasons
    advances = [h for h in status["history"] if h["action"] in ("Started", "StepAdvanced")]
    times = [ts(h["at"]) for h in [*advances, *history(status, "Promoted")]]
    assert all((b - a).total_seconds() >= 6 for a, b in itertools.pairwise(times))
    assert "page" not in status and "rollback" not in status
    assert pages(kind_cluster, r) == {"events": [], "incidents": [], "calls": []}


# --- a canary failing 4% of requests ---------------------------------------------------------

ROLLBACK_WINDOW = 10.0


@pytest.fixture(scope="module")
def rolled_back(kind_cluster: KindCluster) -> tuple[Rollout, dict[str, Any]]:
    """fraud-rollback at 50%, then v2 fails 4% of its requests: the status once rolled back
    and paged."""
    with TIMINGS.phase("scenario: 4% errors to RolledBack and paged"):
        steps = [{"weight": 50, "hold": "120s"}, {"weight": 100, "hold": "60s"}]
        slo = error_rate_slo(f"{ROLLBACK_WINDOW:g}s", "30s")
        r = start_rollout(kind_cluster, "fraud-rollback", steps, [slo])
        r.wait_weights(50, 50, timeout=30)
        r.wait_healthy(timeout=60)
        set_errors(kind_cluster, "fraud-rollback", 0.04)
        failing_since = now()
        r.wait_phase("RolledBack", timeout=150)
        final = r.wait_page("Delivered", timeout=40)
    figure(
        "4% errors to rollback "
        f"{(ts(final['rollback']['at']) - failing_since).total_seconds():.1f} s "
        f"(lookback 30 s, window {ROLLBACK_WINDOW:g} s)"
    )
    return r, final


def test_a_canary_failing_4_percent_is_rolled_back_on_time_with_exactly_one_incident(
    kind_cluster: KindCluster, rolled_back: tuple[Rollout, dict[str, Any]]
) -> None:
    r, final = rolled_back
    assert r.weights() == (100, 0)
    assert final["phase"] == "RolledBack" and final["canaryWeight"] == 0
    rollback = final["rollback"]
    assert (rollback["reason"], rollback["slo"]) == ("SLOBreach", "error-rate")
    assert rollback["baseline"] < 0.02, rollback
    assert rollback["baseline"] + 0.02 < rollback["canary"] < 0.12, rollback
    held = (ts(rollback["at"]) - ts(rollback["breachingSince"])).total_seconds()
    figure(f"breachingSince to rollback {held:.3f} s (window {ROLLBACK_WINDOW:g} s)")
    assert ROLLBACK_WINDOW <= held <= ROLLBACK_WINDOW + LATE, held
    reasons = r.event_reasons()
    assert reasons.count("RolledBack") == 1, reasons
    assert reasons.count("PageDelivered") == 1, reasons
    got = pages(kind_cluster, r)
    assert len(got["incidents"]) == 1, got["incidents"]
    assert [c["status"] for c in got["calls"]] == [202]
    (event,) = got["events"]
    body = event["event"]
    assert body["routing_key"] == ROUTING_KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == final["page"]["dedupKey"] == got["incidents"][0]["dedup_key"]
    assert "error-rate" in body["payload"]["summary"]
    assert body["payload"]["custom_details"]["slo"] == "error-rate"


def test_kubectl_canary_status_and_explain_against_the_cluster(
    kind_cluster: KindCluster, rolled_back: tuple[Rollout, dict[str, Any]]
) -> None:
    r, _ = rolled_back
    # kubectl finds the plugin kubectl-canary on PATH, next to this interpreter.
    env = kind_cluster.env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"

    def kubectl_canary(*args: str) -> str:
        result = subprocess.run(
            [str(kind_cluster.kubectl_bin), "canary", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    table = kubectl_canary("status", "-n", NAMESPACE)
    (row,) = [line for line in table.splitlines() if line.startswith("fraud-rollback")]
    assert "RolledBack" in row
    detail = kubectl_canary("status", "-n", NAMESPACE, r.name)
    assert "RolledBack" in detail and "error-rate" in detail
    explained = kubectl_canary("explain", "-n", NAMESPACE, r.name)
    assert f"{NAMESPACE}/{r.name} was rolled back" in explained
    assert "because an SLO stayed in breach for its whole window" in explained
    assert "SLO error-rate had the canary at" in explained
    assert "On-call was paged: PagerDuty accepted the trigger" in explained


# --- the operator Pod deleted mid-breach -----------------------------------------------------

RESTART_WINDOW = 20.0


def operator_pods(cluster: KindCluster) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.get_json(
        "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_PODS
    )["items"]
    return pods


def ready_since(pod: dict[str, Any]) -> datetime | None:
    """When the Pod's operator container started, if the Pod is Ready and not terminating."""
    if pod["metadata"].get("deletionTimestamp"):
        return None
    conditions = pod.get("status", {}).get("conditions") or []
    if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
        return None
    (container,) = pod["status"]["containerStatuses"]
    started = container.get("state", {}).get("running", {}).get("startedAt")
    return ts(started) if started else None


def test_the_operator_pod_deleted_mid_breach_rolls_back_on_time_from_the_new_pod_and_pages_once(
    kind_cluster: KindCluster,
) -> None:
    steps = [{"weight": 50, "hold": "180s"}, {"weight": 100, "hold": "60s"}]
    slo = error_rate_slo(f"{RESTART_WINDOW:g}s", "10s")
    r = start_rollout(kind_cluster, "fraud-restart", steps, [slo])
    r.wait_weights(50, 50, timeout=30)
    r.wait_healthy(timeout=60)
    # Every operator Pod goes, so this holds with more than one replica (leader election)
    # as with the one manifests/ ships.
    old = {p["metadata"]["name"] for p in operator_pods(kind_cluster)}
    replicas = kind_cluster.get_json("deployment", "canaryguard", "-n", OPERATOR_NAMESPACE)["spec"][
        "replicas"
    ]
    assert len(old) == replicas, old
    set_errors(kind_cluster, "fraud-restart", 0.3)
    breaching = wait_for(
        "breachingSince in status",
        lambda: (r.status().get("slos") or [{}])[0].get("breachingSince"),
        timeout=30,
    )
    since = ts(breaching)
    wait_until(since + timedelta(seconds=2))
    kind_cluster.kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, *sorted(old), "--wait=false")
    deleted_at = now()
    assert r.phase() == "Progressing"

    def new_pods() -> dict[str, datetime] | None:
        ready = {
            pod["metadata"]["name"]: started
            for pod in operator_pods(kind_cluster)
            if pod["metadata"]["name"] not in old and (started := ready_since(pod))
        }
        return ready if len(ready) >= replicas else None

    new = wait_for("new operator Pods, Ready", new_pods, timeout=60)
    new_started = min(new.values())
    figure(f"operator Pod deleted to new Pod Ready {(now() - deleted_at).total_seconds():.1f} s")
    seen_since: set[str | None] = set()

    def rolled_back() -> dict[str, Any] | None:
        status = r.status()
        if status.get("phase") == "RolledBack":
            return status
        seen_since.add((status.get("slos") or [{}])[0].get("breachingSince"))
        return None

    wait_for("RolledBack", rolled_back, timeout=60)
    final = r.wait_page("Delivered", timeout=40)
    assert seen_since <= {breaching}, seen_since  # the window was not reset by the restart
    rollback = final["rollback"]
    assert (rollback["reason"], rollback["slo"]) == ("SLOBreach", "error-rate")
    assert rollback["breachingSince"] == breaching
    held = (ts(rollback["at"]) - since).total_seconds()
    figure(f"breachingSince to rollback {held:.3f} s (window {RESTART_WINDOW:g} s, Pod deleted)")
    assert new_started < since + timedelta(seconds=RESTART_WINDOW), (
        "the restart outlasted the window"
    )
    assert RESTART_WINDOW <= held <= RESTART_WINDOW + LATE, held
    assert ts(rollback["at"]) > new_started
    # A new Pod took the decision (the old ones are gone, and so are their logs).
    logs = [kind_cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, name).stdout for name in new]
    decisions = [
        line for log in logs for line in log.splitlines() if "decision" in line and r.name in line
    ]
    assert any("RolledBack" in line for line in decisions), decisions
    assert r.weights() == (100, 0)
    assert r.event_reasons().count("RolledBack") == 1
    got = pages(kind_cluster, r)
    assert len(got["incidents"]) == 1, got["incidents"]
    assert len(got["events"]) == 1, got["events"]
    assert [c["status"] for c in got["calls"]] == [202]
    assert got["events"][0]["dedup_key"] == final["page"]["dedupKey"]


# --- the operator's own metrics --------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_in_the_cluster_scrapes_the_operator_pods_own_metrics(
    kind_cluster: KindCluster,
) -> None:
    (up,) = kind_cluster.prometheus_query('up{job="canaryguard"}')
    assert up["value"][1] == "1"
    assert up["metric"]["instance"] == "canaryguard-metrics.canaryguard-system:9095"
    # The Pod's /metrics, read through its Service, and what Prometheus has of them.
    direct = samples(
        kind_cluster.service_get(OPERATOR_NAMESPACE, "canaryguard-metrics", 9095, "/metrics")
    )
    ticks = direct[("canaryguard_tick_duration_seconds_count", frozenset())]
    assert ticks > 0

    def scraped_ticks() -> float | None:
        result = kind_cluster.prometheus_query(
            'canaryguard_tick_duration_seconds_count{job="canaryguard"}'
        )
        value = float(result[0]["value"][1]) if result else None
        return value if value is not None and value >= ticks else None

    wait_for("Prometheus to scrape the ticks the Pod reports", scraped_ticks, timeout=15)
    for result in ("delivered", "rejected", "exhausted", "secret_error"):
        series = kind_cluster.prometheus_query(
            f'canaryguard_pages_total{{job="canaryguard",result="{result}"}}'
        )
        assert len(series) == 1, (result, series)
    phases = {
        s["metric"]["phase"]: float(s["value"][1])
        for s in kind_cluster.prometheus_query('canaryguard_rollouts{job="canaryguard"}')
    }
    assert sum(phases.values()) >= 1, phases
