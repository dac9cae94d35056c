"""The mesh end to end: a VirtualService in the real API server, real requests through the
router to model-server processes, and what the real Prometheus sees. Tolerances are five
standard deviations of the binomial counts."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.mesh import Mesh
from canaryguard_testbed.prometheus_server import PrometheusQueryError, PrometheusServer
from tests.integration.fixtures_mesh import MeshFactory


def five_sigma(n: float, p: float) -> float:
    return 5 * math.sqrt(n * p * (1 - p))


def apply_virtual_service(
    control_plane: ControlPlane, namespace: str, weights: dict[str, int]
) -> None:
    """fraud-model's VirtualService: a header-match route for testers, then the weighted
    catch-all route the router serves."""
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "fraud-model", "namespace": namespace},
        "spec": {
            "hosts": ["fraud-model"],
            "http": [
                {
                    "name": "testers",
                    "match": [{"headers": {"end-user": {"exact": "qa"}}}],
                    "route": [{"destination": {"host": "fraud-model", "subset": "v2"}}],
                },
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": "fraud-model", "subset": s}, "weight": w}
                        for s, w in weights.items()
                    ],
                },
            ],
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(vs))


def set_weights(control_plane: ControlPlane, namespace: str, v1: int, v2: int) -> None:
    patch = [
        {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": v1},
        {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": v2},
    ]
    control_plane.kubectl(
        "patch", "virtualservice", "fraud-model", "-n", namespace,
        "--type=json", "-p", json.dumps(patch),
    )  # fmt: skip


def requests_by(
    prometheus: PrometheusServer, namespace: str, expected_total: int, extra: str = ""
) -> dict[str, float]:
    """istio_requests_total by destination_version, once Prometheus has scraped all
    `expected_total` requests."""
    query = (
        "sum by (destination_version) (istio_requests_total{"
        f'reporter="destination",destination_service_namespace="{namespace}",'
        f'destination_service_name="fraud-model"{extra}}})'
    )
    prometheus.wait_for(
        query,
        lambda r: sum(float(s["value"][1]) for s in r) >= expected_total,
        timeout=15,
    )
    return prometheus.query_by(query, "destination_version")


def test_a_90_10_split_shows_in_prometheus_within_tolerance(
    control_plane: ControlPlane, namespace: str, mesh: MeshFactory, prometheus: PrometheusServer
) -> None:
    apply_virtual_service(control_plane, namespace, {"v1": 90, "v2": 10})
    m: Mesh = mesh(namespace)
    m.wait_route({"v1": 0.9, "v2": 0.1})

    result = m.load(rate=200, max_requests=2000, max_duration=30)

    assert result.sent == 2000 and result.answered == 2000
    by_version = requests_by(prometheus, namespace, 2000)
    assert sum(by_version.values()) == 2000
    assert abs(by_version["v2"] - 200) <= five_sigma(2000, 0.1), by_version
    # The model servers' own counters agree with what the router reported per version.
    answered = (
        f'sum by (version) (model_predictions_total{{namespace="{namespace}"}})'
        f' + sum by (version) (model_prediction_errors_total{{namespace="{namespace}"}})'
    )
    # The model servers are scraped on their own schedule: wait until they show every request.
    prometheus.wait_for(
        answered, lambda r: sum(float(s["value"][1]) for s in r) >= 2000, timeout=15
    )
    models = prometheus.query_by(answered, "version")
    assert models == by_version
    flagged = prometheus.query_by(
        f'sum by (version) (model_flagged_total{{namespace="{namespace}"}})', "version"
    )
    assert 0 < flagged["v1"] < 0.1 * by_version["v1"]


def test_a_weight_change_is_followed_within_seconds(
    control_plane: ControlPlane, namespace: str, mesh: MeshFactory, prometheus: PrometheusServer
) -> None:
    apply_virtual_service(control_plane, namespace, {"v1": 90, "v2": 10})
    m = mesh(namespace)
    m.wait_route({"v1": 0.9, "v2": 0.1})
    m.load(rate=200, max_requests=400, max_duration=10)
    before = requests_by(prometheus, namespace, 400)

    set_weights(control_plane, namespace, 20, 80)
    waited = m.wait_route({"v1": 0.2, "v2": 0.8}, timeout=5)
    assert waited < 3.0
    m.load(rate=200, max_requests=1000, max_duration=10)

    after = requests_by(prometheus, namespace, 1400)
    v2_new = after["v2"] - before.get("v2", 0)
    assert after["v1"] + after["v2"] - 400 == 1000
    assert abs(v2_new - 800) <= five_sigma(1000, 0.8), (before, after)


def test_a_canary_error_phase_shows_as_its_5xx_ratio(
    control_plane: ControlPlane,
    namespace: str,
    mesh: MeshFactory,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "spike-now.yaml"
    scenario.write_text(
        "seed: 7\n"
        "defaults: {error_rate: 0.0, latency: {median_ms: 5, sigma: 0.3}}\n"
        "versions:\n  v2:\n    phases:\n      - {at: 1s, error_rate: 0.05}\n"
    )
    apply_virtual_service(control_plane, namespace, {"v1": 50, "v2": 50})
    m = mesh(namespace, scenario=scenario)
    m.wait_route({"v1": 0.5, "v2": 0.5})
    assert m.epoch is not None
    time.sleep(max(0.0, m.epoch + 1.2 - time.time()))  # into the error phase

    m.load(rate=200, max_requests=2000, max_duration=30)

    by_version = requests_by(prometheus, namespace, 2000)
    errors = requests_by(prometheus, namespace, 0, ',response_code=~"5.."')
    n2 = by_version["v2"]
    assert errors.get("v1", 0) == 0
    assert abs(errors["v2"] - 0.05 * n2) <= five_sigma(n2, 0.05), (errors, by_version)
    ratio = prometheus.query(
        f'sum(istio_requests_total{{destination_service_namespace="{namespace}",'
        f'destination_version="v2",response_code=~"5.."}}) / '
        f'sum(istio_requests_total{{destination_service_namespace="{namespace}",'
        f'destination_version="v2"}})'
    )
    assert float(ratio[0]["value"][1]) == errors["v2"] / n2


def test_a_regression_injected_at_runtime_shows_in_latency_and_business_metrics(
    control_plane: ControlPlane, namespace: str, mesh: MeshFactory, prometheus: PrometheusServer
) -> None:
    apply_virtual_service(control_plane, namespace, {"v1": 50, "v2": 50})
    m = mesh(namespace)
    m.wait_route({"v1": 0.5, "v2": 0.5})
    m.control("v2", {"latency": {"median_ms": 80}, "conversion_rate": 0.1})

    m.load(rate=200, max_requests=1000, max_duration=20)

    requests_by(prometheus, namespace, 1000)
    p90 = prometheus.query_by(
        "histogram_quantile(0.9, sum by (destination_version, le) ("
        f'istio_request_duration_milliseconds_bucket{{destination_service_namespace="{namespace}"}}'
        "))",
        "destination_version",
    )
    assert p90["v1"] < 50 and p90["v2"] > 100
    conversion = prometheus.query_by(
        f'sum by (version) (model_conversions_total{{namespace="{namespace}"}})'
        f' / sum by (version) (model_predictions_total{{namespace="{namespace}"}})',
        "version",
    )
    assert conversion["v1"] > 0.2 and conversion["v2"] < 0.15


def test_prometheus_outage_and_back_keeps_the_counts(
    control_plane: ControlPlane, namespace: str, mesh: MeshFactory, prometheus: PrometheusServer
) -> None:
    apply_virtual_service(control_plane, namespace, {"v1": 90, "v2": 10})
    m = mesh(namespace)
    m.wait_route({"v1": 0.9, "v2": 0.1})
    m.load(rate=200, max_requests=300, max_duration=10)
    requests_by(prometheus, namespace, 300)

    prometheus.stop()
    try:
        try:
            prometheus.query("up", timeout=2)
            raise AssertionError("a stopped Prometheus answered")
        except PrometheusQueryError:
            pass
        m.load(rate=200, max_requests=300, max_duration=10)  # traffic during the outage
    finally:
        prometheus.start()

    by_version = requests_by(prometheus, namespace, 600)
    assert sum(by_version.values()) == 600


def test_the_router_follows_the_virtualservice_coming_and_going(
    control_plane: ControlPlane, namespace: str, mesh: MeshFactory
) -> None:
    m = mesh(namespace, wait_scraped=False)
    assert m.current_route()["origin"] == "service (no virtualservice)"
    m.wait_route({"*": 1.0})  # plain Service balancing over every version

    apply_virtual_service(control_plane, namespace, {"v1": 100, "v2": 0})
    m.wait_route({"v1": 1.0}, timeout=5)
    result = m.load(rate=200, max_requests=200, max_duration=10)
    assert result.by_status[200] >= 199

    control_plane.kubectl("delete", "virtualservice", "fraud-model", "-n", namespace)
    m.wait_route({"*": 1.0}, timeout=5)
