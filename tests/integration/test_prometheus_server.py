"""The real Prometheus of the local stack: targets added and removed at runtime, a stop and
start on the same port with the data kept (a metrics outage), a frozen server, and a clear
error when the binary is missing. Each test runs its own Prometheus."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from canaryguard_testbed.childproc import (
    python_module_args,
    spawn,
    terminate,
    wait_for_port_file,
)
from canaryguard_testbed.fraudmodel import random_transaction
from canaryguard_testbed.prometheus_server import (
    PrometheusNotInstalledError,
    PrometheusQueryError,
    PrometheusServer,
)


@pytest.fixture
def own_prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path / "prom", scrape_interval="1s")
    try:
        server.start()
    except PrometheusNotInstalledError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[str]:
    """A v1 model server process; yields its host:port."""
    port_file, log_path = tmp_path / "model.port", tmp_path / "model.log"
    args = python_module_args(
        "canaryguard_testbed.modelserver", "--version=v1", f"--port-file={port_file}"
    )
    proc = spawn(args, log_path)
    try:
        port = wait_for_port_file(port_file, proc, log_path)
        yield f"127.0.0.1:{port}"
    finally:
        terminate(proc)


def predict(address: str, n: int) -> None:
    rng = random.Random(1)
    for _ in range(n):
        body = json.dumps({"features": random_transaction(rng).to_dict()}).encode()
        request = urllib.request.Request(
            f"http://{address}/predict", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - loopback
                pass
        except urllib.error.HTTPError:
            pass  # the scenario's 0.1% of 500s


def answered(prom: PrometheusServer, address: str) -> float:
    query = (
        f'sum(model_predictions_total{{instance="{address}"}})'
        f' + sum(model_prediction_errors_total{{instance="{address}"}})'
    )
    result = prom.query(query)
    return float(result[0]["value"][1]) if result else -1.0


def test_a_target_added_at_runtime_is_scraped_with_its_labels_and_removed_again(
    own_prometheus: PrometheusServer, model_server: str
) -> None:
    own_prometheus.add_target("models", model_server, {"namespace": "shop", "app": "fraud"})
    own_prometheus.wait_for_targets([model_server], timeout=20)
    predict(model_server, 25)
    own_prometheus.wait_for(
        f'model_predictions_total{{instance="{model_server}"}}',
        lambda r: answered(own_prometheus, model_server) == 25,
        timeout=10,
    )
    (series,) = own_prometheus.query(f'model_predictions_total{{instance="{model_server}"}}')
    assert series["metric"]["job"] == "models"
    assert series["metric"]["namespace"] == "shop"
    assert series["metric"]["version"] == "v1"  # the metric's own label, not renamed

    own_prometheus.remove_target("models", model_server)
    deadline = time.monotonic() + 20
    while any(t["labels"]["instance"] == model_server for t in own_prometheus.targets()):
        assert time.monotonic() < deadline, "target still active 20 s after removal"
        time.sleep(0.2)


def test_a_stop_is_an_outage_and_start_brings_back_port_and_data(
    own_prometheus: PrometheusServer, model_server: str
) -> None:
    own_prometheus.add_target("models", model_server)
    own_prometheus.wait_for_targets([model_server], timeout=20)
    predict(model_server, 10)
    own_prometheus.wait_for("up", lambda r: answered(own_prometheus, model_server) == 10)
    before_outage = time.time()
    url = own_prometheus.url

    own_prometheus.stop()
    with pytest.raises(PrometheusQueryError):
        own_prometheus.query("up", timeout=2)
    predict(model_server, 5)  # traffic goes on while metrics are down

    own_prometheus.start()
    assert own_prometheus.url == url
    assert own_prometheus.startup_seconds is not None and own_prometheus.startup_seconds < 10
    old = own_prometheus.query(
        f'sum(model_predictions_total{{instance="{model_server}"}})', at=before_outage
    )
    assert old and float(old[0]["value"][1]) > 0  # data from before the outage is still there
    own_prometheus.wait_for(
        "up", lambda r: answered(own_prometheus, model_server) == 15, timeout=15
    )


def test_a_frozen_server_times_out_queries_until_thawed(own_prometheus: PrometheusServer) -> None:
    own_prometheus.freeze()
    try:
        began = time.monotonic()
        with pytest.raises(PrometheusQueryError):
            own_prometheus.query("up", timeout=1)
        assert time.monotonic() - began < 5
    finally:
        own_prometheus.thaw()
    assert own_prometheus.query("vector(1)")[0]["value"][1] == "1"


def test_a_missing_binary_names_make_prometheus(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path, binary="no-such-prometheus-binary")
    with pytest.raises(PrometheusNotInstalledError, match="make prometheus"):
        server.start()
