"""The synthetic mode as the scale benchmarks run it: one process, services' weights read from
their VirtualServices in the real API server, metrics scraped by the real Prometheus."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canaryguard_testbed.childproc import (
    python_module_args,
    spawn,
    terminate,
    wait_for_port_file,
)
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.prometheus_server import PrometheusServer


def virtual_service(namespace: str, name: str, v1: int, v2: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "route": [
                        {"destination": {"host": name, "subset": "v1"}, "weight": v1},
                        {"destination": {"host": name, "subset": "v2"}, "weight": v2},
                    ]
                }
            ],
        },
    }


@pytest.fixture
def synthetic(
    control_plane: ControlPlane, namespace: str, prometheus: PrometheusServer, tmp_path: Path
) -> Iterator[str]:
    """A synthetic mesh of 3 services in `namespace`, scraped by Prometheus; yields its URL."""
    port_file, log_path = tmp_path / "synthetic.port", tmp_path / "synthetic.log"
    proc = spawn(
        python_module_args(
            "canaryguard_testbed.synthetic",
            "--services=3",
            f"--namespace={namespace}",
            "--rps=100",
            f"--kubeconfig={control_plane.admin_kubeconfig}",
            f"--port-file={port_file}",
            "--max-duration=300",
        ),
        log_path,
    )
    address = ""
    try:
        address = f"127.0.0.1:{wait_for_port_file(port_file, proc, log_path)}"
        prometheus.add_target("synthetic", address, {"bench": namespace})
        yield f"http://{address}"
    finally:
        if address:
            prometheus.remove_target("synthetic", address)
        terminate(proc)


def services(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/services", timeout=5) as resp:  # noqa: S310 - loopback
        data: dict[str, Any] = json.loads(resp.read())
    return data


def test_synthetic_traffic_follows_each_services_virtualservice(
    control_plane: ControlPlane, namespace: str, prometheus: PrometheusServer, synthetic: str
) -> None:
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(virtual_service(namespace, "svc-0000", 0, 100))
    )
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(virtual_service(namespace, "svc-0001", 75, 25))
    )
    deadline = time.monotonic() + 5
    while services(synthetic)[f"{namespace}/svc-0000"]["shares"] != {"v1": 0.0, "v2": 1.0}:
        assert time.monotonic() < deadline, services(synthetic)
        time.sleep(0.1)
    routed_at = time.monotonic()
    shares = services(synthetic)
    assert shares[f"{namespace}/svc-0001"]["shares"] == {"v1": 0.75, "v2": 0.25}
    assert shares[f"{namespace}/svc-0002"]["shares"] == {"v1": 0.5, "v2": 0.5}  # no VS

    query = (
        "sum by (destination_service_name, destination_version) (increase(istio_requests_total{"
        f'destination_service_namespace="{namespace}"}}[5s]))'
    )
    prometheus.wait_for(
        query,
        lambda r: any(
            s["metric"]["destination_service_name"] == "svc-0000"
            and s["metric"]["destination_version"] == "v2"
            and float(s["value"][1]) > 0
            for s in r
        ),
        timeout=30,
    )
    # Over a window that starts after the routes were applied, v1 of svc-0000 got nothing.
    time.sleep(max(0.0, routed_at + 6.5 - time.monotonic()))
    result = prometheus.query(query)
    recent = {
        (s["metric"]["destination_service_name"], s["metric"]["destination_version"]): float(
            s["value"][1]
        )
        for s in result
    }
    assert recent.get(("svc-0000", "v1"), 0.0) == 0.0
    assert recent[("svc-0002", "v1")] > 0 and recent[("svc-0002", "v2")] > 0
