"""The model server: predictions, injected errors and latency, the control endpoint, metrics
labelled by version, and scenario phases driven by its clock."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from canaryguard.core import drift
from canaryguard.core.judge import judge
from canaryguard.core.observations import SloObservation
from canaryguard.core.spec import Drift, Margin, Query, Slo
from canaryguard_testbed.fraudmodel import Transaction, fraud_score, random_transaction
from canaryguard_testbed.modelserver import ModelServer
from canaryguard_testbed.scenario import load_scenario, parse_scenario


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


async def with_server(
    server: ModelServer, body: Callable[[aiohttp.ClientSession, str], Awaitable[Any]]
) -> Any:
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            return await body(session, url)
    finally:
        await runner.cleanup()


def metric_values(server: ModelServer) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(server.metrics.render().decode()):
        for sample in family.samples:
            if sample.labels.get("version") == server.version and "le" not in sample.labels:
                values[sample.name] = sample.value
    return values


def features(seed: int = 1) -> dict[str, float]:
    return random_transaction(random.Random(seed)).to_dict()


def test_a_prediction_returns_the_model_score_and_counts_it() -> None:
    server = ModelServer("v1", load_scenario("healthy"), sleep=no_sleep)
    server.set_overrides({"error_rate": 0})

    async def body(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        async with session.post(url + "/predict", json={"features": features()}) as resp:
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer

    answer = asyncio.run(with_server(server, body))
    expected = fraud_score(Transaction.from_mapping(features()))
    assert answer["version"] == "v1"
    assert math.isclose(answer["score"], expected, abs_tol=1e-6)
    values = metric_values(server)
    assert values["model_predictions_total"] == 1
    assert values["model_prediction_score_count"] == 1


def test_bad_features_are_a_400_not_an_error() -> None:
    server = ModelServer("v1", load_scenario("healthy"), sleep=no_sleep)

    async def body(session: aiohttp.ClientSession, url: str) -> int:
        async with session.post(url + "/predict", json={"features": {"amount": "x"}}) as resp:
            return resp.status

    assert asyncio.run(with_server(server, body)) == 400
    assert metric_values(server).get("model_prediction_errors_total", 0) == 0


def test_control_injects_errors_now_and_reset_removes_them() -> None:
    server = ModelServer("v2", load_scenario("healthy"), sleep=no_sleep)

    async def body(session: aiohttp.ClientSession, url: str) -> tuple[list[int], list[int]]:
        async with session.post(url + "/control", json={"error_rate": 1.0}) as resp:
            state = await resp.json()
            assert state["behaviour"]["error_rate"] == 1.0
        failing = []
        for i in range(20):
            async with session.post(url + "/predict", json={"features": features(i)}) as resp:
                failing.append(resp.status)
        async with session.post(url + "/control", json={"reset": True, "error_rate": 0}) as r:
            assert r.status == 200
        healthy = []
        for i in range(20):
            async with session.post(url + "/predict", json={"features": features(i)}) as resp:
                healthy.append(resp.status)
        return failing, healthy

    failing, healthy = asyncio.run(with_server(server, body))
    assert failing == [500] * 20
    assert healthy == [200] * 20
    values = metric_values(server)
    assert values["model_prediction_errors_total"] == 20
    assert values["model_predictions_total"] == 20


def test_an_invalid_control_change_is_rejected_naming_the_field() -> None:
    server = ModelServer("v2", load_scenario("healthy"), sleep=no_sleep)

    async def body(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
        async with session.post(url + "/control", json={"error_rate": 2}) as resp:
            return resp.status, (await resp.json())["error"]

    status, error = asyncio.run(with_server(server, body))
    assert status == 400 and "control.error_rate" in error
    assert server.behaviour().error_rate == 0.001


def test_the_scenario_phase_follows_the_servers_clock() -> None:
    now = [1000.0]
    server = ModelServer("v2", load_scenario("error-spike"), epoch=1000.0, clock=lambda: now[0])
    assert server.behaviour().error_rate == 0.001
    now[0] = 1031.0
    assert server.behaviour().error_rate == 0.04


def test_overrides_stay_on_top_of_later_phases() -> None:
    now = [0.0]
    scenario = parse_scenario(
        {"seed": 1, "versions": {"v2": {"phases": [{"at": 10, "conversion_rate": 0.1}]}}}
    )
    server = ModelServer("v2", scenario, epoch=0.0, clock=lambda: now[0])
    server.set_overrides({"latency": {"median_ms": 50}})
    now[0] = 11
    behaviour = server.behaviour()
    assert behaviour.conversion_rate == 0.1 and behaviour.latency.median_ms == 50


def test_latency_follows_the_lognormal_median_and_the_spike_tail() -> None:
    server = ModelServer("v2", load_scenario("latency"), seed=3)
    base = load_scenario("latency").behaviour("v2", 60)
    draws = sorted(server.latency_ms(base) for _ in range(20_000))
    median = draws[len(draws) // 2]
    p99 = draws[int(0.99 * len(draws))]
    assert 11 < median < 14  # median_ms 12, spike moves it a little
    assert p99 > 400  # 5% of requests get +400 ms


def test_drift_moves_scores_and_flag_rate_up() -> None:
    rng = random.Random(9)
    txs = [random_transaction(rng) for _ in range(5000)]
    base = sum(fraud_score(t) > 0.5 for t in txs) / len(txs)
    drifted = sum(fraud_score(t, 1.5) > 0.5 for t in txs) / len(txs)
    assert 0.02 < base < 0.05
    assert drifted > base * 1.5


def score_histogram(server: ModelServer) -> tuple[dict[float, float], float, float]:
    """The exported score histogram: cumulative counts by bound, the sum and the count."""
    cumulative: dict[float, float] = {}
    total = count = 0.0
    for family in text_string_to_metric_families(server.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "model_prediction_score_bucket":
                cumulative[float(sample.labels["le"])] = sample.value
            elif sample.name == "model_prediction_score_sum":
                total = sample.value
            elif sample.name == "model_prediction_score_count":
                count = sample.value
    return cumulative, total, count


def test_polarized_scores_keep_the_mean_and_move_the_distribution() -> None:
    """`score_polarize` turns scores into hard 0/1 labels drawn with the score's probability:
    the mean score stays (what a mean-score SLO sees), the histogram parts (what a drift SLO
    sees)."""
    servers = {v: ModelServer(v, load_scenario("healthy"), seed=3, sleep=no_sleep) for v in "AB"}
    for server in servers.values():
        server.set_overrides({"error_rate": 0})
    servers["B"].set_overrides({"score_polarize": 0.8})
    rng = random.Random(5)
    txs = [{"features": random_transaction(rng).to_dict()} for _ in range(2000)]

    for server in servers.values():

        async def body(session: aiohttp.ClientSession, url: str) -> None:
            for tx in txs:
                async with session.post(url + "/predict", json=tx) as resp:
                    assert resp.status == 200

        asyncio.run(with_server(server, body))

    (a, a_sum, a_n), (b, b_sum, b_n) = score_histogram(servers["A"]), score_histogram(servers["B"])
    assert a_n == b_n == 2000
    mean_a, mean_b = a_sum / a_n, b_sum / b_n
    assert 0.05 < mean_a < 0.09
    assert abs(mean_b - mean_a) < 0.015, (mean_a, mean_b)  # the same mean, within noise
    psi, _, _ = drift.histogram_psi(a, b)
    assert psi is not None and psi > 0.3, psi
    # The demo's mean-score SLO (examples/fraud-model/demo) judges these means healthy; the
    # drift SLO, at its default threshold, a breach.
    mean_slo = Slo("mean", Query('x{v="{{ version }}"}'), 300, margin=Margin(0.03, 0.5))
    assert judge(mean_slo, SloObservation(mean_a, mean_b, a_n, b_n)).verdict == "healthy"
    drift_slo = Slo("drift", Drift("model_prediction_score"), 300)
    assert judge(drift_slo, SloObservation(0.0, psi, a_n, b_n)).verdict == "breach"
    print(f"\npolarize 0.8: mean {mean_a:.4f} -> {mean_b:.4f}, PSI {psi:.3f}")
