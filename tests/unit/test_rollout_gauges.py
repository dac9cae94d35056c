"""The per-rollout gauges the dashboard draws: canary weight and SLO values by side."""

from prometheus_client import REGISTRY

from canaryguard.core.status import SloStatus, Status
from canaryguard.runtime import metrics


def _sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_status_publishes_weight_and_both_sides_of_each_slo() -> None:
    status = Status(
        phase="Progressing",
        canary_weight=25,
        slos=(SloStatus("error-rate", "healthy", baseline=0.01, canary=0.012),),
    )
    metrics.record_rollout("ml", "gauges-a", status)
    assert _sample("canaryguard_canary_weight", namespace="ml", rollout="gauges-a") == 25
    for side, value in (("baseline", 0.01), ("canary", 0.012)):
        labels = {"namespace": "ml", "rollout": "gauges-a", "slo": "error-rate", "side": side}
        assert _sample("canaryguard_slo_value", **labels) == value


def test_a_value_that_goes_missing_drops_its_series_rather_than_going_stale() -> None:
    seen = SloStatus("p99", "healthy", baseline=100.0, canary=110.0)
    metrics.record_rollout("ml", "gauges-b", Status(canary_weight=5, slos=(seen,)))
    gone = SloStatus("p99", "inconclusive", baseline=100.0, canary=None)
    metrics.record_rollout("ml", "gauges-b", Status(canary_weight=5, slos=(gone,)))
    labels = {"namespace": "ml", "rollout": "gauges-b", "slo": "p99"}
    assert _sample("canaryguard_slo_value", side="baseline", **labels) == 100.0
    assert _sample("canaryguard_slo_value", side="canary", **labels) is None


def test_forgetting_a_rollout_drops_all_its_series() -> None:
    slo = SloStatus("p99", "healthy", baseline=1.0, canary=2.0)
    metrics.record_rollout("ml", "gauges-c", Status(canary_weight=50, slos=(slo,)))
    metrics.forget_rollout("ml", "gauges-c")
    assert _sample("canaryguard_canary_weight", namespace="ml", rollout="gauges-c") is None
    labels = {"namespace": "ml", "rollout": "gauges-c", "slo": "p99", "side": "canary"}
    assert _sample("canaryguard_slo_value", **labels) is None
    metrics.forget_rollout("ml", "never-seen")  # harmless


def test_a_dry_run_publishes_no_canary_weight_but_its_slo_values() -> None:
    metrics.record_rollout("ml", "gauges-d", Status(canary_weight=50))
    slo = SloStatus("errors", "breach", baseline=0.01, canary=0.3)
    metrics.record_rollout("ml", "gauges-d", Status(canary_weight=50, slos=(slo,), dry_run=True))
    assert _sample("canaryguard_canary_weight", namespace="ml", rollout="gauges-d") is None
    labels = {"namespace": "ml", "rollout": "gauges-d", "slo": "errors", "side": "canary"}
    assert _sample("canaryguard_slo_value", **labels) == 0.3
