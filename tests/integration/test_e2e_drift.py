"""End to end, prediction drift as a distribution: v2 starts answering hard 0/1 labels for
most predictions (drawn with the score's probability, so its mean score stays where v1's is).
The drift SLO (PSI of v2's score histogram against v1's) rolls it back and pages once; the
mean-score SLO, judged on the same ticks, never sees a breach.

The real operator runs under the shipped RBAC; real HTTP goes through the router to v1 and v2;
Prometheus scrapes the router and the model servers every second; ticks are 1 s."""

from typing import Any

from tests.integration.fixtures_e2e import EndToEnd, error_rate_slo
from tests.integration.fixtures_operator import slo_of, ts, wait_for


def test_a_distribution_shift_with_the_same_mean_rolls_back_on_drift_alone(
    e2e: EndToEnd,
) -> None:
    window = 6.0
    namespace = e2e.namespace
    # The model servers' histogram, scraped with the mesh's target labels namespace and app.
    sel = f'namespace="{namespace}",app="fraud-model",version="{{{{ version }}}}"'
    mean_score = {
        "name": "mean-score",  # the demo's mean-score SLO (examples/fraud-model/demo)
        "query": {
            "template": f"sum(rate(model_prediction_score_sum{{{sel}}}[{{{{ lookback }}}}]))"
            f" / sum(rate(model_prediction_score_count{{{sel}}}[{{{{ lookback }}}}]))",
            "samplesTemplate": (
                f"sum(increase(model_prediction_score_count{{{sel}}}[{{{{ lookback }}}}]))"
            ),
        },
        "margin": {"absolute": 0.03, "relative": 0.5},
        "window": f"{window:g}s",
        "lookback": "20s",
        "minRequests": 300,
    }
    score_drift = {
        "name": "score-drift",
        "drift": {
            "histogram": "model_prediction_score",
            "selector": {"namespace": namespace, "app": "fraud-model"},
            "versionLabel": "version",
        },
        "window": f"{window:g}s",
        # 30 s at 40/s per side: about 1200 scores each. Two samples of one distribution
        # have a PSI of 0.060 on average at 800 a side, 0.097 at the 95th percentile, less
        # with more (bench/bench_drift.py): well below the threshold.
        "lookback": "30s",
        "minRequests": 1000,
    }
    r = e2e.rollout(
        steps=[{"weight": 50, "hold": "90s"}, {"weight": 100, "hold": "60s"}],
        slos=[error_rate_slo(), mean_score, score_drift],
    )
    seen: list[dict[str, Any]] = []

    def record() -> dict[str, Any]:
        status = r.status()
        seen.append(status)
        return status

    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        healthy = r.wait_healthy("error-rate", "mean-score", "score-drift", timeout=90)
        e2e.mesh.control("v2", {"score_polarize": 0.8})
        shifted_from = len(seen)
        wait_for("RolledBack", lambda: record().get("phase") == "RolledBack", timeout=90)
        r.wait_page("Delivered", timeout=30)

    status = r.status()
    rollback = status["rollback"]
    assert (rollback["reason"], rollback["slo"]) == ("SLOBreach", "score-drift"), rollback
    assert rollback["margin"] == "PSI threshold 0.2"
    assert rollback["baseline"] == 0 and rollback["canary"] > 0.2, rollback
    assert "also breaching" not in rollback["message"]
    held = (ts(rollback["at"]) - ts(rollback["breachingSince"])).total_seconds()
    assert window <= held <= window + 2.5, held
    # The mean-score SLO judged every one of those ticks and never saw a breach.
    means = [slo_of(s, "mean-score") for s in seen[shifted_from:]]
    assert means and all(m.get("verdict") == "healthy" for m in means), means
    assert all(not m.get("breachingSince") for m in means)
    last = slo_of(status, "mean-score")
    assert abs(last["canary"] - last["baseline"]) < 0.03, last
    assert slo_of(status, "error-rate")["verdict"] == "healthy"
    before = slo_of(healthy, "score-drift")
    assert before["canary"] < 0.2, before
    events = e2e.pagerduty.events()
    assert len(events) == 1 and events[0]["event"]["payload"]["custom_details"]["slo"] == (
        "score-drift"
    )
    print(
        f"\nPSI {before['canary']} before the shift, {rollback['canary']} at the rollback "
        f"({held:.2f}s after breachingSince); mean score baseline {last['baseline']} "
        f"canary {last['canary']}"
    )
