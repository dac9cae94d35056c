"""End to end, an error-rate SLO with `confidence`: the operator counts each version's
requests and errors since the step began with increase() on the real Prometheus, keeps one
stratum per step in status, promotes a healthy canary and rolls back (and pages once) a canary
that the anytime-valid test shows worse.

The real operator runs under the shipped RBAC; real HTTP goes through the router to v1 and v2;
Prometheus scrapes every second; ticks are 1 s. And `canaryguard plan --prometheus` reads
the traffic it simulates from that Prometheus."""

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from canaryguard.adapters.prometheus import PrometheusClient
from canaryguard.cli.plan import read_rates
from canaryguard.core.spec import parse_spec
from tests.integration.fixtures_e2e import EndToEnd
from tests.integration.fixtures_operator import condition, slo_of, wait_for


def confident_slo(window: str = "3s") -> dict[str, Any]:
    return {
        "name": "error-rate",
        "errorRate": {},
        "margin": {"relative": 0},
        "confidence": 0.99,
        "window": window,
        "lookback": "10s",
    }


def test_a_healthy_canary_is_promoted_with_its_evidence_per_step(e2e: EndToEnd) -> None:
    r = e2e.rollout(
        steps=[{"weight": 20, "hold": "10s"}, {"weight": 50, "hold": "10s"}, {"weight": 100}],
        slos=[confident_slo()],
    )
    with e2e.traffic(rate=80):
        e2e.operator()
        status = r.wait_phase("Promoted", timeout=90)
    errors = slo_of(status, "error-rate")
    evidence = errors["evidence"]
    assert [e["weight"] for e in evidence][:2] == [20, 50], evidence
    for stratum in evidence[:2]:
        # Requests counted on both versions within the step; the split follows the weight.
        assert stratum["baselineRequests"] > 0 and stratum["canaryRequests"] > 0, stratum
        share = stratum["canaryRequests"] / (
            stratum["canaryRequests"] + stratum["baselineRequests"]
        )
        assert abs(share - stratum["weight"] / 100) < 0.15, stratum
    assert not any(h["action"] == "RolledBack" for h in status.get("history", []))
    assert not e2e.pagerduty.events()


def test_a_canary_shown_worse_is_rolled_back_and_paged_once(e2e: EndToEnd) -> None:
    r = e2e.rollout(
        steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}],
        slos=[confident_slo()],
    )
    e2e.mesh.control("v2", {"error_rate": 0.2})
    with e2e.traffic(rate=80):
        e2e.operator()
        status = r.wait_phase("RolledBack", timeout=60)
        r.wait_page("Delivered", timeout=20)
    assert r.weights() == (100, 0)
    rollback = status["rollback"]
    assert (rollback["reason"], rollback["slo"]) == ("SLOBreach", "error-rate")
    errors = slo_of(status, "error-rate")
    assert errors["verdict"] == "breach"
    assert "shown worse by more than relative 0%" in errors["reason"], errors["reason"]
    (stratum,) = errors["evidence"]
    assert stratum["weight"] == 50
    assert stratum["canaryEvents"] > stratum["baselineEvents"], stratum
    assert condition(status, "Progressing")["reason"] == "RolledBack"
    assert len(e2e.pagerduty.events()) == 1


def test_plan_reads_the_traffic_from_prometheus(e2e: EndToEnd, tmp_path: Path) -> None:
    """`canaryguard plan --prometheus`: the service's rate and the baseline's error share,
    read with the rollout's own selector, drive the simulation."""
    r = e2e.rollout(create=False, slos=[confident_slo()])
    manifest = tmp_path / "rollout.yaml"
    manifest.write_text(yaml.safe_dump(r.body))
    spec = parse_spec(r.body)
    client = PrometheusClient(address=e2e.prometheus.url)

    def scraped_until() -> float | None:
        found = client.query_blocking(
            'max(timestamp(istio_requests_total{reporter="destination"}))'
        )
        return found[0].value if found else None

    e2e.mesh.control("v1", {"error_rate": 0.05})
    with e2e.traffic(rate=80):
        started = time.time()
        # Prometheus holds 20 s of this traffic once a scrape 22 s after its start is in.
        wait_for(
            "22 s of traffic scraped",
            lambda: (scraped_until() or 0) >= started + 22,
            timeout=120,
        )
        rps, rate = read_rates(spec, client.query_blocking, 20)
        command = [sys.executable, "-m", "canaryguard.cli.main", "plan", "-f", str(manifest)]
        done = subprocess.run(
            [*command, "--prometheus", e2e.prometheus.url, "--over", "20s", "--rollouts", "10"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    # All traffic is on v1 before the rollout; 5% of it fails.
    assert 40 < rps < 120 and 0.02 < rate < 0.1, (rps, rate)
    assert re.match(r"SLO error-rate at \d+(\.\d+)? req/s, baseline error rate 0\.0", done.stdout)
