"""Batched builtin queries on the local stack: the real Prometheus scraping the synthetic
mesh answers one batched query with exactly what each service's own query answers, and the
operator carrying several rollouts sends fewer queries than one per rollout and SLO."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard.adapters.prometheus import POST_ABOVE_CHARS, PrometheusClient
from canaryguard.core.batching import Builtin, pick, render
from canaryguard.core.ports import Sample
from canaryguard.core.queries import split
from canaryguard_testbed.childproc import python_module_args, spawn, terminate, wait_for_port_file
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.prometheus_server import PrometheusServer
from tests.integration.fixtures_operator import Operator, wait_for

SERVICES = 6
# (v1, v2) weights per service; svc-0003 has no VirtualService (an even split).
ROUTES = {"svc-0000": (50, 50), "svc-0001": (90, 10), "svc-0002": (0, 100), "svc-0004": (50, 50)}
ROUTES["svc-0005"] = (100, 0)


def virtual_service(namespace: str, name: str, v1: int, v2: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": name, "subset": "v1"}, "weight": v1},
                        {"destination": {"host": name, "subset": "v2"}, "weight": v2},
                    ],
                }
            ],
        },
    }


def post(url: str, body: dict[str, Any]) -> None:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
        assert resp.status == 200


@pytest.fixture
def synthetic(
    control_plane: ControlPlane, namespace: str, prometheus: PrometheusServer, tmp_path: Path
) -> Iterator[str]:
    """A synthetic mesh of 6 services in `namespace` following their VirtualServices,
    scraped by the session's Prometheus; yields its URL."""
    for name, (v1, v2) in ROUTES.items():
        control_plane.kubectl(
            "apply", "-f", "-", input=json.dumps(virtual_service(namespace, name, v1, v2))
        )
    port_file, log_path = tmp_path / "synthetic.port", tmp_path / "synthetic.log"
    proc = spawn(
        python_module_args(
            "canaryguard_testbed.synthetic",
            f"--services={SERVICES}",
            f"--namespace={namespace}",
            "--rps=60",
            f"--kubeconfig={control_plane.admin_kubeconfig}",
            f"--port-file={port_file}",
            "--max-duration=300",
        ),
        log_path,
    )
    address = ""
    try:
        address = f"127.0.0.1:{wait_for_port_file(port_file, proc, log_path)}"
        url = f"http://{address}"
        # svc-0004's canary fails a fifth of its requests, and is slow.
        post(
            url + "/control",
            {
                "services": [f"{namespace}/svc-0004"],
                "version": "v2",
                "set": {"error_rate": 0.2, "latency": {"median_ms": 60}},
            },
        )
        prometheus.add_target("synthetic", address, {"bench": namespace})
        yield url
    finally:
        if address:
            prometheus.remove_target("synthetic", address)
        terminate(proc)


def members(namespace: str, absent: int = 1) -> list[Builtin]:
    """Every builtin query shape, for each service (and `absent` that match nothing)."""
    out = []
    for i in [*range(SERVICES), *range(9999, 9999 - absent, -1)]:
        selector = {
            "destination_service_name": f"svc-{i:04d}",
            "destination_service_namespace": namespace,
        }
        args = (selector, "destination_version", "v1", "v2")
        out += [
            Builtin.of("requests", *args, 10.0),
            Builtin.of("requests", *args, 30.0),
            Builtin.of("errors", *args, 30.0, codes="5.."),
            Builtin.of("errors", *args, 10.0, codes="5..|429"),
            Builtin.of("latency", *args, 30.0, quantile=0.5),
            Builtin.of("latency", *args, 10.0, quantile=0.99),
        ]
    return out


def samples(result: list[dict[str, Any]]) -> list[Sample]:
    return [Sample(dict(r["metric"]), float(r["value"][1])) for r in result]


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_a_batched_query_answers_each_service_exactly_as_its_own_query(
    namespace: str, prometheus: PrometheusServer, synthetic: str
) -> None:
    prometheus.wait_for(
        f'sum(increase(istio_requests_total{{destination_service_namespace="{namespace}"}}[10s]))',
        lambda r: bool(r) and float(r[0]["value"][1]) > 0,
        timeout=30,
    )
    time.sleep(12)  # more than the shortest lookback of data
    at = time.time() - 1.0  # one instant for every query: both see the same data
    key = ("destination_version", "v1", "v2")
    by_shape: dict[tuple[object, ...], list[Builtin]] = {}
    for member in members(namespace):
        by_shape.setdefault(member.shape, []).append(member)
    compared = 0
    seen_missing = seen_nan = seen_values = False
    for group in by_shape.values():
        batched = samples(prometheus.query(render(group), at=at))
        for member in group:
            alone = split(samples(prometheus.query(member.single(), at=at)), key)
            together = split(pick(batched, member), key)
            assert all(same(x, y) for x, y in zip(alone, together, strict=True)), (
                member,
                alone,
                together,
            )
            compared += 1
            seen_missing |= None in alone
            seen_values |= all(v is not None for v in alone)
            seen_nan |= any(v is not None and math.isnan(v) for v in alone)
    assert compared == 7 * 6
    # The comparison covered values, missing sides (no traffic, no service) alike.
    assert seen_values and seen_missing, (seen_values, seen_missing, seen_nan)


def test_a_batch_too_long_for_a_url_is_posted_and_answers_as_each_query_alone(
    namespace: str, prometheus: PrometheusServer, synthetic: str
) -> None:
    """The operator's own client sends a batch of 406 services (400 with no traffic) as a POST
    body; the real Prometheus answers it at the time given, as each service's query alone."""
    prometheus.wait_for(
        f'sum(increase(istio_requests_total{{destination_service_namespace="{namespace}"}}[10s]))',
        lambda r: bool(r) and float(r[0]["value"][1]) > 0,
        timeout=30,
    )
    time.sleep(12)  # more than the shortest lookback of data
    at = datetime.fromtimestamp(round(time.time() - 1.0, 3), UTC)
    client = PrometheusClient(prometheus.url)
    key = ("destination_version", "v1", "v2")
    by_shape: dict[tuple[object, ...], list[Builtin]] = {}
    for member in members(namespace, absent=400):
        by_shape.setdefault(member.shape, []).append(member)
    compared = 0
    for group in by_shape.values():
        promql = render(group)
        assert len(promql) > POST_ABOVE_CHARS
        batched = client.query_blocking(promql, at)
        for member in group[:SERVICES]:
            alone = split(client.query_blocking(member.single(), at), key)
            together = split(pick(batched, member), key)
            assert all(same(x, y) for x, y in zip(alone, together, strict=True)), (
                member,
                alone,
                together,
            )
            compared += alone != (None, None)
    assert compared >= 6 * 4  # every shape, for the services with traffic at least


def rollout(namespace: str, name: str, prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "canaryguard.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "virtualService": {"name": name},
            "baseline": {"host": name, "subset": "v1"},
            "canary": {"host": name, "subset": "v2"},
            "metrics": {
                "prometheus": {"address": prometheus_url},
                "selector": {
                    "destination_service_name": name,
                    "destination_service_namespace": namespace,
                },
                "baselineVersion": "v1",
                "canaryVersion": "v2",
            },
            "steps": [{"weight": 50, "hold": "1h"}, {"weight": 100, "hold": "1h"}],
            "analysis": {
                "interval": "1s",
                "minRequests": 5,
                "slos": [
                    {
                        "name": "error-rate",
                        "errorRate": {},
                        "margin": {"absolute": 0.05},
                        "lookback": "10s",
                    },
                    {
                        "name": "p99-latency",
                        "latency": {"quantile": 0.99},
                        "margin": {"relative": 2.0},
                        "lookback": "10s",
                    },
                ],
            },
        },
    }


def test_the_operator_answers_rollouts_ticking_together_with_batched_queries(
    control_plane: ControlPlane,
    namespace: str,
    prometheus: PrometheusServer,
    synthetic: str,
    operator: Callable[..., Operator],
) -> None:
    names = ["svc-0000", "svc-0001", "svc-0005"]
    docs = [rollout(namespace, name, prometheus.url) for name in names]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    op = operator()

    def progressing_and_healthy() -> bool:
        out = control_plane.kubectl("get", "cro", "-n", namespace, "-o", "json").stdout
        items = json.loads(out)["items"]
        return len(items) == len(names) and all(
            (i.get("status") or {}).get("phase") == "Progressing"
            and [s.get("verdict") for s in i["status"].get("slos") or []] == ["healthy"] * 2
            for i in items
        )

    wait_for("every rollout Progressing and healthy", progressing_and_healthy, timeout=60)
    before = op.metrics()
    op.wait_ticks(10, rollouts=len(names))
    after = op.metrics()

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    ticks = delta("canaryguard_tick_duration_seconds_count")
    batched = delta("canaryguard_prometheus_queries_total", batched="true")
    alone = delta("canaryguard_prometheus_queries_total", batched="false")
    members = delta("canaryguard_query_batch_members_sum")
    batches = delta("canaryguard_query_batch_members_count")
    assert alone == 0  # builtin SLOs only: nothing goes unbatched
    # Three queries per rollout tick alone (requests, errors, p99); rollouts that tick
    # together share them.
    assert batched < 3 * ticks * 0.8, (batched, ticks)
    assert members / batches > 1.2, (members, batches)
    assert op.metric("canaryguard_prometheus_query_errors_total", kind="unavailable") == 0
