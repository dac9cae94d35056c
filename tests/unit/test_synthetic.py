"""Synthetic mode: seeded samplers, traffic split by the current weights, errors and business
counters from the scenario, and a valid exposition with Istio's label names."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from canaryguard_testbed.istio_telemetry import MINIMAL_LABEL_NAMES
from canaryguard_testbed.scenario import load_scenario
from canaryguard_testbed.synthetic import (
    SyntheticMesh,
    binomial,
    build_services,
    latency_bucket_probabilities,
    multinomial,
    poisson,
    version_shares,
)
from canaryguard_testbed.weights import RouteDestination, RouteSnapshot


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def istio_totals(mesh: SyntheticMesh) -> dict[tuple[str, str, str], float]:
    """istio_requests_total by (service, version, code), parsed from the exposition."""
    totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(mesh.render().decode()):
        for s in family.samples:
            if s.name == "istio_requests_total":
                key = (
                    s.labels["destination_service_name"],
                    s.labels["destination_version"],
                    s.labels["response_code"],
                )
                totals[key] += s.value
    return totals


@pytest.mark.parametrize("lam", [3.0, 200.0])
def test_poisson_mean_is_right(lam: float) -> None:
    rng = random.Random(1)
    n = 4000
    mean = sum(poisson(rng, lam) for _ in range(n)) / n
    assert abs(mean - lam) <= 5 * math.sqrt(lam / n)


@pytest.mark.parametrize(("n", "p"), [(20, 0.3), (1000, 0.01), (1000, 0.5), (1000, 0.995)])
def test_binomial_mean_is_right_and_bounded(n: int, p: float) -> None:
    rng = random.Random(2)
    draws = [binomial(rng, n, p) for _ in range(2000)]
    assert all(0 <= d <= n for d in draws)
    assert abs(sum(draws) / len(draws) - n * p) <= 5 * math.sqrt(n * p * (1 - p) / len(draws))


def test_multinomial_keeps_the_total() -> None:
    rng = random.Random(3)
    probs, _ = latency_bucket_probabilities(load_scenario("healthy").defaults.latency)
    assert math.isclose(sum(probs), 1.0)
    for n in (0, 1, 37, 5000):
        assert sum(multinomial(rng, n, probs)) == n


def test_version_shares_follow_istio_semantics() -> None:
    snap = RouteSnapshot(
        (RouteDestination("svc", "v1", 75), RouteDestination("svc.ns.svc.cluster.local", "v2", 25))
    )
    assert version_shares(snap, "svc", "ns", ("v1", "v2")) == {"v1": 0.75, "v2": 0.25}
    assert version_shares(None, "svc", "ns", ("v1", "v2")) == {"v1": 0.5, "v2": 0.5}
    other = RouteSnapshot((RouteDestination("other", "v1", 1), RouteDestination("svc", "v2", 1)))
    assert version_shares(other, "svc", "ns", ("v1", "v2")) == {"v1": 0.0, "v2": 0.5}


def test_traffic_follows_weights_and_rate() -> None:
    clock = Clock()
    services = build_services(20, "bench", load_scenario("healthy"), rps=50)
    mesh = SyntheticMesh(services, clock=clock, seed=4)
    mesh.set_weights("*", {"v1": 80, "v2": 20})
    clock.now += 60
    totals = istio_totals(mesh)
    v1 = sum(v for (_, ver, _), v in totals.items() if ver == "v1")
    v2 = sum(v for (_, ver, _), v in totals.items() if ver == "v2")
    expected = 20 * 50 * 60
    assert abs(v1 + v2 - expected) <= 5 * math.sqrt(expected)
    assert abs(v2 / (v1 + v2) - 0.2) < 0.01


def test_a_weight_change_applies_from_then_on() -> None:
    clock = Clock()
    mesh = SyntheticMesh(build_services(1, "b", load_scenario("healthy"), rps=100), clock=clock)
    clock.now += 10
    mesh.set_weights("b/svc-0000", {"v1": 0, "v2": 100})  # v1 had the first 10 s
    clock.now += 10
    totals = istio_totals(mesh)
    v1 = sum(v for (_, ver, _), v in totals.items() if ver == "v1")
    v2 = sum(v for (_, ver, _), v in totals.items() if ver == "v2")
    assert abs(v1 - 1000) <= 5 * math.sqrt(1000) and abs(v2 - 1000) <= 5 * math.sqrt(1000)


def test_regressed_services_show_the_canary_error_rate_after_the_phase() -> None:
    clock = Clock()
    services = build_services(
        4,
        "bench",
        load_scenario("healthy"),
        rps=200,
        regress=2,
        regress_scenario=load_scenario("error-spike"),
    )
    mesh = SyntheticMesh(services, clock=clock, epoch=clock.now - 31, seed=5)
    mesh.set_weights("*", {"v1": 50, "v2": 50})
    clock.now += 100
    totals = istio_totals(mesh)
    for name, rate in (("svc-0000", 0.04), ("svc-0001", 0.04), ("svc-0002", 0.001)):
        errors = totals[(name, "v2", "500")]
        total = errors + totals[(name, "v2", "200")]
        assert abs(errors - rate * total) <= 5 * math.sqrt(total * rate * (1 - rate)) + 1


def test_control_overrides_a_version_for_chosen_services() -> None:
    clock = Clock()
    mesh = SyntheticMesh(build_services(2, "b", load_scenario("healthy"), rps=100), clock=clock)
    mesh.set_weights("*", {"v1": 0, "v2": 100})
    mesh.set_overrides(["b/svc-0001"], "v2", {"error_rate": 0.5})
    clock.now += 20
    totals = istio_totals(mesh)
    assert totals[("svc-0001", "v2", "500")] > 700
    assert totals[("svc-0000", "v2", "500")] < 20


def test_the_exposition_has_istio_and_model_metrics() -> None:
    clock = Clock()
    mesh = SyntheticMesh(build_services(2, "b", load_scenario("healthy"), rps=100), clock=clock)
    clock.now += 10
    names: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(mesh.render().decode()):
        for s in family.samples:
            names[s.name] |= set(s.labels)
    assert names["istio_requests_total"] == set(MINIMAL_LABEL_NAMES)
    assert "le" in names["istio_request_duration_milliseconds_bucket"]
    for name in ("model_predictions_total", "model_flagged_total", "model_conversions_total"):
        assert names[name] == {"namespace", "app", "version"}
    assert "model_prediction_score_bucket" in names


def test_istio_only_exports_no_model_metrics() -> None:
    clock = Clock()
    services = build_services(2, "b", load_scenario("healthy"), rps=100)
    mesh = SyntheticMesh(services, clock=clock, model_metrics=False)
    clock.now += 10
    text = mesh.render().decode()
    assert "istio_requests_total{" in text
    assert "model_" not in text
    assert sum(istio_totals(mesh).values()) > 0


def test_static_weights_cannot_be_set_for_unknown_services() -> None:
    mesh = SyntheticMesh(build_services(1, "b", load_scenario("healthy")))
    with pytest.raises(KeyError, match="unknown services"):
        mesh.set_weights(["b/nope"], {"v1": 100})
