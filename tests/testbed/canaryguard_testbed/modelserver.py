"""A model server: one version of the fraud model behind HTTP, behaving as a scenario says.

    python -m canaryguard_testbed.modelserver --port 0 --port-file F --version v2 \\
        --scenario error-spike [--seed N] [--epoch UNIX_SECONDS]

Endpoints: `POST /predict` (`{"features": {...}}` -> `{"score", "flagged", "converted",
"version"}`, or 500 as the scenario's error rate says), `GET /metrics`, `GET /healthz`,
`GET /control` (current behaviour) and `POST /control` (a partial behaviour that overrides
the scenario from now on, or `{"reset": true}` to drop the overrides).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from canaryguard.runtime import logs
from canaryguard_testbed.childproc import write_port_file
from canaryguard_testbed.fraudmodel import FeatureError, Transaction, fraud_score
from canaryguard_testbed.scenario import Behaviour, Scenario, ScenarioError, load_scenario

log = logging.getLogger("canaryguard_testbed.modelserver")

SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_MAX_LATENCY_MS = 30_000.0


class ModelMetrics:
    """The model server's own metrics (prometheus_client), all labelled by `version`."""

    def __init__(self, version: str, scenario: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.predictions = Counter(
            "model_predictions",
            "Predictions answered (HTTP 200).",
            ["version"],
            registry=self.registry,
        ).labels(version)
        self.errors = Counter(
            "model_prediction_errors",
            "Prediction requests that failed (HTTP 5xx).",
            ["version"],
            registry=self.registry,
        ).labels(version)
        self.flagged = Counter(
            "model_flagged",
            "Transactions flagged as fraud (score above the flag threshold).",
            ["version"],
            registry=self.registry,
        ).labels(version)
        self.conversions = Counter(
            "model_conversions",
            "Approved transactions that converted (business proxy).",
            ["version"],
            registry=self.registry,
        ).labels(version)
        self.score = Histogram(
            "model_prediction_score",
            "Fraud score of answered predictions.",
            ["version"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        ).labels(version)
        self.inference = Histogram(
            "model_inference_duration_seconds",
            "Time to answer a prediction request, including injected latency.",
            ["version"],
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        ).labels(version)
        Gauge(
            "model_info",
            "The running model version and its scenario.",
            ["version", "scenario"],
            registry=self.registry,
        ).labels(version, scenario).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelServer:
    """The HTTP app of one model version; `behaviour()` is the scenario at the current time
    with runtime overrides on top."""

    def __init__(
        self,
        version: str,
        scenario: Scenario,
        *,
        seed: int | None = None,
        epoch: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.version = version
        self.scenario = scenario
        self.epoch = clock() if epoch is None else epoch
        self._clock = clock
        self._sleep = sleep
        base_seed = scenario.seed if seed is None else seed
        self._rng = random.Random(f"{base_seed}/{version}")
        self._overrides: dict[str, Any] = {}
        self._override_behaviour: Behaviour | None = None
        self._override_from: Behaviour | None = None
        self.metrics = ModelMetrics(version, scenario.name)

    def scenario_time(self) -> float:
        """Seconds since the scenario's epoch."""
        return self._clock() - self.epoch

    def behaviour(self) -> Behaviour:
        """Scenario behaviour now, with the control overrides applied."""
        planned = self.scenario.behaviour(self.version, self.scenario_time())
        if not self._overrides:
            return planned
        if self._override_from is not planned:  # the scenario moved to another phase
            self._override_behaviour = planned.updated(self._overrides, "control")
            self._override_from = planned
        assert self._override_behaviour is not None
        return self._override_behaviour

    def set_overrides(self, changes: dict[str, Any]) -> Behaviour:
        """Merge `changes` (validated) into the overrides; returns the new behaviour."""
        planned = self.scenario.behaviour(self.version, self.scenario_time())
        merged = _merge(self._overrides, changes)
        planned.updated(merged, "control")  # raises ScenarioError naming the field
        self._overrides = merged
        self._override_from = None
        return self.behaviour()

    def reset_overrides(self) -> Behaviour:
        self._overrides = {}
        self._override_from = None
        return self.behaviour()

    def latency_ms(self, behaviour: Behaviour) -> float:
        lat = behaviour.latency
        ms = lat.median_ms * math.exp(lat.sigma * self._rng.gauss(0.0, 1.0))
        if lat.spike_probability and self._rng.random() < lat.spike_probability:
            ms += lat.spike_ms
        return min(ms, _MAX_LATENCY_MS)

    # -- handlers ---------------------------------------------------------------------------

    async def predict(self, request: web.Request) -> web.Response:
        began = time.perf_counter()
        try:
            body = await request.json()
            tx = Transaction.from_mapping(body.get("features") if isinstance(body, dict) else None)
        except (ValueError, FeatureError) as err:
            return web.json_response({"error": str(err)}, status=400)
        behaviour = self.behaviour()
        fail = self._rng.random() < behaviour.error_rate
        converts = self._rng.random() < behaviour.conversion_rate
        await self._sleep(self.latency_ms(behaviour) / 1000.0)
        if fail:
            self.metrics.errors.inc()
            self.metrics.inference.observe(time.perf_counter() - began)
            return web.json_response({"error": "injected failure"}, status=500)
        score = fraud_score(tx, behaviour.score_shift)
        if behaviour.score_polarize and self._rng.random() < behaviour.score_polarize:
            # A hard label, 1 with the score's probability: the mean stays, the shape goes.
            score = 1.0 if self._rng.random() < score else 0.0
        flagged = score > behaviour.flag_threshold
        converted = converts and not flagged
        m = self.metrics
        m.predictions.inc()
        m.score.observe(score)
        if flagged:
            m.flagged.inc()
        if converted:
            m.conversions.inc()
        m.inference.observe(time.perf_counter() - began)
        return web.json_response(
            {
                "version": self.version,
                "score": round(score, 6),
                "flagged": flagged,
                "converted": converted,
            }
        )

    async def get_control(self, request: web.Request) -> web.Response:
        return web.json_response(self._control_state())

    async def post_control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            if body.pop("reset", False):
                self.reset_overrides()
            if body:
                self.set_overrides(body)
        except ScenarioError as err:
            return web.json_response({"error": str(err)}, status=400)
        log.info("control version=%s overrides=%s", self.version, json.dumps(self._overrides))
        return web.json_response(self._control_state())

    async def metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def _control_state(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "scenario": self.scenario.name,
            "scenario_time_s": round(self.scenario_time(), 3),
            "overrides": self._overrides,
            "behaviour": self.behaviour().to_dict(),
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/predict", self.predict)
        app.router.add_get("/control", self.get_control)
        app.router.add_post("/control", self.post_control)
        app.router.add_get("/metrics", self.metrics_handler)
        app.router.add_get("/healthz", self.healthz)
        return app


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


async def serve(server: ModelServer, host: str, port: int, port_file: Path | None) -> None:
    """Serve until SIGTERM or SIGINT."""
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    log.info(
        "listening version=%s address=%s:%s scenario=%s",
        server.version,
        host,
        bound,
        server.scenario.name,
    )
    if port_file is not None:
        write_port_file(port_file, int(bound))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m canaryguard_testbed.modelserver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here when ready")
    parser.add_argument("--version", required=True, help="model version, e.g. v1 or v2")
    parser.add_argument("--scenario", default="healthy", help="scenario YAML path or shipped name")
    parser.add_argument("--seed", type=int, help="RNG seed (default: the scenario's)")
    parser.add_argument(
        "--epoch", type=float, help="UNIX time of scenario t=0 (default: now), to align versions"
    )
    args = parser.parse_args(argv)
    logs.configure("text")
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as err:
        parser.error(str(err))
    server = ModelServer(args.version, scenario, seed=args.seed, epoch=args.epoch)
    asyncio.run(serve(server, args.host, args.port, args.port_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
