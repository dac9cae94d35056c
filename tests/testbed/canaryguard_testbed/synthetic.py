"""Synthetic mesh: Istio and model metrics for hundreds of services with no real requests,
for scale benchmarks of the operator.

    python -m canaryguard_testbed.synthetic --services 500 --namespace bench --rps 20 \\
        [--scenario healthy] [--regress 25 --regress-scenario error-spike] \\
        [--kubeconfig K] --port 0 --port-file F

Every service `svc-0000`... has versions v1 and v2. The Istio metrics carry the labels
analysis reads (`--labels full` for all of Istio's). Each scrape of `/metrics` advances every
service by the time since the previous one: a Poisson number of requests at `rps`, split
between versions by the service's current weights, then errors, duration buckets, flags,
conversions and score buckets drawn (seeded) from each version's scenario behaviour. Weights
come from the VirtualService of the same name as the service (with `--kubeconfig`, watched
in the API server), or are set by hand with `POST /weights`. `POST /control` overrides a
version's behaviour as the model server's control endpoint does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from canaryguard.runtime import logs
from canaryguard_testbed.childproc import write_port_file
from canaryguard_testbed.exposition import CONTENT_TYPE, CounterFamily, HistogramFamily
from canaryguard_testbed.fraudmodel import logit, random_transaction
from canaryguard_testbed.istio_telemetry import (
    DURATION_BUCKETS_MS,
    LABEL_NAMES,
    MINIMAL_LABEL_NAMES,
    IstioTelemetry,
    Source,
    Workload,
    service_fqdn,
)
from canaryguard_testbed.modelserver import SCORE_BUCKETS
from canaryguard_testbed.scenario import (
    Behaviour,
    Latency,
    Scenario,
    ScenarioError,
    load_scenario,
)
from canaryguard_testbed.weights import (
    RouteSnapshot,
    StaticWeightSource,
    WeightSource,
    traffic_shares,
)

log = logging.getLogger("canaryguard_testbed.synthetic")

_MODEL_LABELS = ("namespace", "app", "version")


# -- seeded samplers (the standard library has no Poisson or binomial) --------------------


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw; exact for small means, normal approximation above 30."""
    if lam <= 0:
        return 0
    if lam < 30:
        limit, k, product = math.exp(-lam), 0, rng.random()
        while product > limit:
            k += 1
            product *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw; exact for small n, Poisson or normal approximation otherwise."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    if n < 40:
        return sum(1 for _ in range(n) if rng.random() < p)
    if n * p < 15:
        return min(n, poisson(rng, n * p))
    if n * (1 - p) < 15:
        return n - min(n, poisson(rng, n * (1 - p)))
    return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))


def multinomial(rng: random.Random, n: int, probs: Sequence[float]) -> list[int]:
    """Split n draws over categories of probability `probs` (conditional binomials)."""
    counts: list[int] = []
    remaining, mass = n, 1.0
    for p in probs:
        if remaining <= 0 or mass <= 0:
            counts.append(0)
            continue
        k = binomial(rng, remaining, min(1.0, p / mass)) if p < mass else remaining
        counts.append(k)
        remaining -= k
        mass -= p
    if remaining > 0:
        counts[-1] += remaining
    return counts


# -- distributions of the model versions --------------------------------------------------


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@functools.lru_cache(maxsize=256)
def latency_bucket_probabilities(latency: Latency) -> tuple[tuple[float, ...], float]:
    """Probability of each Istio duration bucket (+Inf last) and the mean, in ms."""

    def cdf(bound: float) -> float:
        def lognormal(x: float) -> float:
            if x <= 0:
                return 0.0
            if latency.sigma == 0:
                return 1.0 if x >= latency.median_ms else 0.0
            return _normal_cdf((math.log(x) - math.log(latency.median_ms)) / latency.sigma)

        q = latency.spike_probability
        return (1 - q) * lognormal(bound) + q * lognormal(bound - latency.spike_ms)

    cumulative = [cdf(b) for b in DURATION_BUCKETS_MS] + [1.0]
    probs = tuple(max(0.0, c - p) for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True))
    mean = (
        latency.median_ms * math.exp(latency.sigma**2 / 2)
        + latency.spike_probability * latency.spike_ms
    )
    return probs, mean


@functools.cache
def _reference_logits() -> tuple[float, ...]:
    rng = random.Random(20240601)
    return tuple(logit(random_transaction(rng)) for _ in range(4000))


@functools.lru_cache(maxsize=256)
def score_distribution(shift: float, threshold: float) -> tuple[tuple[float, ...], float, float]:
    """Probability of each score bucket (+Inf last), of a flag, and the mean score, for a
    logit shift."""
    scores = [1.0 / (1.0 + math.exp(-(z + shift))) for z in _reference_logits()]
    n = len(scores)
    counts = [0] * (len(SCORE_BUCKETS) + 1)
    for s in scores:
        i = next((j for j, b in enumerate(SCORE_BUCKETS) if s <= b), len(SCORE_BUCKETS))
        counts[i] += 1
    flagged = sum(1 for s in scores if s > threshold) / n
    return tuple(c / n for c in counts), flagged, sum(scores) / n


# -- the mesh -----------------------------------------------------------------------------


@dataclass
class SyntheticService:
    """One service of the synthetic mesh and its per-version overrides."""

    namespace: str
    name: str
    scenario: Scenario
    weights: WeightSource
    rps: float = 20.0
    versions: tuple[str, ...] = ("v1", "v2")
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(init=False)
    last: float | None = None

    def __post_init__(self) -> None:
        self.workloads = {v: Workload(self.name, self.namespace, v) for v in self.versions}

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def shares(self) -> dict[str, float]:
        """Traffic share per version under the current route."""
        return version_shares(self.weights.current(), self.name, self.namespace, self.versions)

    def behaviour(self, version: str, t: float) -> Behaviour:
        planned = self.scenario.behaviour(version, t)
        changes = self.overrides.get(version)
        return planned.updated(changes, "control") if changes else planned


def version_shares(
    snapshot: RouteSnapshot | None, service: str, namespace: str, versions: Sequence[str]
) -> dict[str, float]:
    """Share of traffic per version; destinations without a subset (or no VirtualService)
    spread evenly, destinations of other hosts or unknown subsets take their share away."""
    shares = dict.fromkeys(versions, 0.0)
    if snapshot is None:
        return {v: 1.0 / len(versions) for v in versions}
    host = service_fqdn(service, namespace)
    for dest, share in traffic_shares(snapshot.destinations):
        if service_fqdn(dest.host, namespace) != host:
            continue
        if dest.subset is None:
            for v in versions:
                shares[v] += share / len(versions)
        elif dest.subset in shares:
            shares[dest.subset] += share
    return shares


class SyntheticMesh:
    """Metrics of many services computed from rates, weights and scenario behaviours."""

    def __init__(
        self,
        services: Sequence[SyntheticService],
        *,
        seed: int = 1,
        epoch: float | None = None,
        clock: Callable[[], float] = time.time,
        source: Source | None = None,
        label_names: tuple[str, ...] = MINIMAL_LABEL_NAMES,
        model_metrics: bool = True,
    ) -> None:
        """`model_metrics=False` exports Istio's metrics only (half the series, for scale
        benchmarks whose SLOs are builtins)."""
        self.services = {s.key: s for s in services}
        self.model_metrics = model_metrics
        self._rng = random.Random(seed)
        self._clock = clock
        self.epoch = clock() if epoch is None else epoch
        self.source = source or Source(workload="loadgen", namespace="loadgen")
        self.telemetry = IstioTelemetry(label_names)
        self.predictions = CounterFamily(
            "model_predictions_total", "Predictions answered (HTTP 200).", _MODEL_LABELS
        )
        self.errors = CounterFamily(
            "model_prediction_errors_total", "Prediction requests that failed.", _MODEL_LABELS
        )
        self.flagged = CounterFamily(
            "model_flagged_total", "Transactions flagged as fraud.", _MODEL_LABELS
        )
        self.conversions = CounterFamily(
            "model_conversions_total", "Approved transactions that converted.", _MODEL_LABELS
        )
        self.scores = HistogramFamily(
            "model_prediction_score",
            "Fraud score of answered predictions.",
            _MODEL_LABELS,
            SCORE_BUCKETS,
        )
        self.advance()

    def advance(self, now: float | None = None) -> None:
        """Add the traffic of every service since its last advance."""
        now = self._clock() if now is None else now
        t = now - self.epoch
        for service in self.services.values():
            last, service.last = service.last, now
            if last is None or now <= last:
                continue
            dt = now - last
            for version, share in service.shares().items():
                if share > 0:
                    self._advance_version(service, version, service.rps * share * dt, t)

    def _advance_version(
        self, service: SyntheticService, version: str, expected: float, t: float
    ) -> None:
        rng = self._rng
        n = poisson(rng, expected)
        if n == 0:
            return
        b = service.behaviour(version, t)
        workload = service.workloads[version]
        latency_probs, mean_ms = latency_bucket_probabilities(b.latency)
        errors = binomial(rng, n, b.error_rate)
        ok = n - errors
        for code, count in ((200, ok), (500, errors)):
            if count:
                buckets = multinomial(rng, count, latency_probs)
                self.telemetry.record_many(self.source, workload, code, buckets, count * mean_ms)
        labels = (service.namespace, service.name, version)
        if not self.model_metrics:
            return
        if errors:
            self.errors.inc(labels, errors)
        if ok:
            score_probs, flag_p, mean_score = score_distribution(b.score_shift, b.flag_threshold)
            flagged = binomial(rng, ok, flag_p)
            converted = binomial(rng, ok - flagged, b.conversion_rate)
            self.predictions.inc(labels, ok)
            self.flagged.inc(labels, flagged)
            self.conversions.inc(labels, converted)
            score_buckets = multinomial(rng, ok, score_probs)
            self.scores.add_counts(labels, score_buckets, ok * mean_score)

    def render(self) -> bytes:
        """Advance to now and return the text exposition."""
        self.advance()
        out: list[str] = []
        families = (self.predictions, self.errors, self.flagged, self.conversions, self.scores)
        for family in families if self.model_metrics else ():
            family.render(out)
        return self.telemetry.render() + "".join(out).encode()

    # -- control ----------------------------------------------------------------------------

    def select(self, services: str | Iterable[str]) -> list[SyntheticService]:
        """Services by key ("ns/name"), or all for "*"."""
        if services == "*":
            return list(self.services.values())
        keys = [services] if isinstance(services, str) else list(services)
        unknown = [k for k in keys if k not in self.services]
        if unknown:
            raise KeyError(f"unknown services {unknown[:5]}")
        return [self.services[k] for k in keys]

    def set_weights(self, services: str | Iterable[str], weights: dict[str, int]) -> int:
        """Set the route of static-weight services to {subset: weight}; returns the count."""
        selected = self.select(services)
        for s in selected:
            if not isinstance(s.weights, StaticWeightSource):
                raise TypeError(f"{s.key}: weights come from the API server, not from /weights")
        self.advance()  # traffic so far went by the old weights
        for s in selected:
            assert isinstance(s.weights, StaticWeightSource)
            s.weights.set_weights(s.name, weights)
        return len(selected)

    def set_overrides(
        self, services: str | Iterable[str], version: str, changes: dict[str, Any] | None
    ) -> int:
        """Override (or with None, reset) a version's behaviour; returns the count."""
        selected = self.select(services)
        if changes:
            Behaviour().updated(changes, "control")  # validate before touching anything
        self.advance()
        for s in selected:
            if changes:
                s.overrides[version] = {**s.overrides.get(version, {}), **changes}
            else:
                s.overrides.pop(version, None)
        return len(selected)

    # -- HTTP -------------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def _services(self, request: web.Request) -> web.Response:
        t = self._clock() - self.epoch
        return web.json_response(
            {
                s.key: {
                    "shares": s.shares(),
                    "scenario": s.scenario.name,
                    "overrides": s.overrides,
                    "error_rate": {v: s.behaviour(v, t).error_rate for v in s.versions},
                }
                for s in self.services.values()
            }
        )

    async def _post_weights(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            weights = {str(k): int(v) for k, v in body["weights"].items()}
            count = self.set_weights(body.get("services", "*"), weights)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response({"updated": count})

    async def _post_control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            version = str(body["version"])
            changes = None if body.get("reset") else dict(body.get("set") or {})
            count = self.set_overrides(body.get("services", "*"), version, changes)
        except (ValueError, KeyError, TypeError, AttributeError, ScenarioError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response({"updated": count})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/-/ready", self._ready)
        app.router.add_get("/services", self._services)
        app.router.add_post("/weights", self._post_weights)
        app.router.add_post("/control", self._post_control)
        return app


def build_services(
    count: int,
    namespace: str,
    scenario: Scenario,
    *,
    rps: float = 20.0,
    regress: int = 0,
    regress_scenario: Scenario | None = None,
    weight_source: Callable[[str, str], WeightSource] | None = None,
    name_format: str = "svc-{i:04d}",
) -> list[SyntheticService]:
    """`count` services in `namespace`; the first `regress` follow `regress_scenario`.
    Without `weight_source`, each starts static at v1=100, v2=0."""
    services: list[SyntheticService] = []
    for i in range(count):
        name = name_format.format(i=i)
        source: WeightSource
        if weight_source is None:
            static = StaticWeightSource()
            static.set_weights(name, {"v1": 100, "v2": 0})
            source = static
        else:
            source = weight_source(namespace, name)
        chosen = regress_scenario if (i < regress and regress_scenario) else scenario
        services.append(SyntheticService(namespace, name, chosen, source, rps))
    return services


async def _serve(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    regress_scenario = load_scenario(args.regress_scenario) if args.regress else None
    watcher = None
    weight_source: Callable[[str, str], WeightSource] | None = None
    if args.kubeconfig is not None:
        from canaryguard_testbed.vswatch import (
            KubeEndpoint,
            KubeVirtualServiceSource,
            VirtualServiceWatcher,
        )

        kube = KubeEndpoint.from_kubeconfig(args.kubeconfig)
        vs_watcher = VirtualServiceWatcher(kube, args.namespace, resync_s=args.resync)
        watcher = vs_watcher

        def weight_source(ns: str, name: str) -> WeightSource:
            return KubeVirtualServiceSource(vs_watcher, ns, name)

        await vs_watcher.start()
        if not await vs_watcher.wait_synced(30.0):
            log.error("could not list virtualservices in %s", args.namespace)
            await vs_watcher.stop()
            return 1
    services = build_services(
        args.services,
        args.namespace,
        scenario,
        rps=args.rps,
        regress=args.regress,
        regress_scenario=regress_scenario,
        weight_source=weight_source,
        name_format=args.name_format,
    )
    mesh = SyntheticMesh(
        services,
        seed=args.seed if args.seed is not None else scenario.seed,
        epoch=args.epoch,
        label_names=LABEL_NAMES if args.labels == "full" else MINIMAL_LABEL_NAMES,
        model_metrics=not args.istio_only,
    )
    runner = web.AppRunner(mesh.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    port = int(runner.addresses[0][1])
    log.info(
        "listening address=%s:%s services=%s namespace=%s rps=%s regress=%s",
        args.host, port, args.services, args.namespace, args.rps, args.regress,
    )  # fmt: skip
    if args.port_file is not None:
        write_port_file(args.port_file, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.max_duration:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.max_duration)
        else:
            await stop.wait()
    finally:
        await runner.cleanup()
        if watcher is not None:
            await watcher.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m canaryguard_testbed.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--name-format", default="svc-{i:04d}")
    parser.add_argument("--rps", type=float, default=20.0, help="requests/s per service")
    parser.add_argument("--scenario", default="healthy")
    parser.add_argument("--regress", type=int, default=0, help="first N services regress")
    parser.add_argument("--regress-scenario", default="error-spike")
    parser.add_argument("--kubeconfig", type=Path, help="follow VirtualServices named as services")
    parser.add_argument("--resync", type=float, default=30.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--epoch", type=float, help="UNIX time of scenario t=0 (default: now)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument(
        "--labels",
        choices=("minimal", "full"),
        default="minimal",
        help="Istio label set: the ones analysis reads (default) or all of Istio's",
    )
    parser.add_argument(
        "--istio-only",
        action="store_true",
        help="export Istio's metrics only, not the model's (for scale benchmarks)",
    )
    parser.add_argument("--max-duration", type=float, help="exit by itself after this many s")
    args = parser.parse_args(argv)
    logs.configure("text")
    try:
        return asyncio.run(_serve(args))
    except ScenarioError as err:
        parser.error(str(err))


if __name__ == "__main__":
    raise SystemExit(main())
