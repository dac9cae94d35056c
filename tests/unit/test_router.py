"""The local router: Istio weight semantics, VirtualService reading, backend parsing, the
weighted choice (statistically) and the Istio metrics it writes for real proxied requests."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from canaryguard_testbed.istio_telemetry import DURATION_BUCKETS_MS, LABEL_NAMES
from canaryguard_testbed.loadgen import run_load
from canaryguard_testbed.modelserver import ModelServer
from canaryguard_testbed.router import Backend, Router, parse_backend
from canaryguard_testbed.scenario import load_scenario
from canaryguard_testbed.weights import (
    RouteDestination,
    RouteSnapshot,
    StaticWeightSource,
    VirtualServiceError,
    httproute_snapshot,
    route_snapshot,
    traffic_shares,
)

NS = "shop"


def five_sigma(n: int, p: float) -> float:
    """Five standard deviations of a binomial count."""
    return 5 * math.sqrt(n * p * (1 - p))


# -- Istio weight semantics -----------------------------------------------------------------


def shares_of(*dests: RouteDestination) -> dict[str | None, float]:
    return {d.subset: share for d, share in traffic_shares(dests)}


def test_weights_are_shared_relative_to_their_sum() -> None:
    shares = shares_of(RouteDestination("m", "v1", 3), RouteDestination("m", "v2", 1))
    assert shares == {"v1": 0.75, "v2": 0.25}


def test_a_weight_zero_destination_gets_nothing() -> None:
    shares = shares_of(RouteDestination("m", "v1", 100), RouteDestination("m", "v2", 0))
    assert shares == {"v1": 1.0}


def test_a_destination_without_weight_among_several_gets_nothing() -> None:
    shares = shares_of(RouteDestination("m", "v1", 10), RouteDestination("m", "v2"))
    assert shares == {"v1": 1.0}


@pytest.mark.parametrize("weight", [None, 0, 30])
def test_a_lone_destination_gets_all_traffic_whatever_its_weight(weight: int | None) -> None:
    assert shares_of(RouteDestination("m", "v1", weight)) == {"v1": 1.0}


def test_all_zero_weights_route_nowhere() -> None:
    assert shares_of(RouteDestination("m", "v1", 0), RouteDestination("m", "v2", 0)) == {}


# -- reading a VirtualService ---------------------------------------------------------------


def bookinfo_like_vs() -> dict[str, Any]:
    """A header-match route before the catch-all, as in Istio's bookinfo samples."""
    return {
        "metadata": {"namespace": NS, "name": "fraud-model"},
        "spec": {
            "hosts": ["fraud-model"],
            "http": [
                {
                    "name": "testers",
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": "fraud-model", "subset": "v2"}}],
                },
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": "fraud-model", "subset": "v1"}, "weight": 90},
                        {"destination": {"host": "fraud-model", "subset": "v2"}, "weight": 10},
                    ],
                },
            ],
        },
    }


def test_the_first_route_without_match_is_served_by_default() -> None:
    snapshot = route_snapshot(bookinfo_like_vs())
    assert snapshot.destinations == (
        RouteDestination("fraud-model", "v1", 90),
        RouteDestination("fraud-model", "v2", 10),
    )
    assert snapshot.origin == f"virtualservice {NS}/fraud-model route primary"


def test_a_named_route_is_served_when_asked() -> None:
    snapshot = route_snapshot(bookinfo_like_vs(), "testers")
    assert snapshot.destinations == (RouteDestination("fraud-model", "v2", None),)


def test_a_missing_route_is_a_clear_error() -> None:
    with pytest.raises(VirtualServiceError, match="no route named 'canary'"):
        route_snapshot(bookinfo_like_vs(), "canary")


def test_a_route_without_host_is_rejected() -> None:
    vs = {"spec": {"http": [{"route": [{"destination": {"subset": "v1"}}]}]}}
    with pytest.raises(VirtualServiceError, match=r"route\[0\]\.destination\.host"):
        route_snapshot(vs)


# -- backends -------------------------------------------------------------------------------


def test_a_backend_defaults_version_workload_and_app_from_subset_and_service() -> None:
    backend = parse_backend("fraud-model/v2=http://127.0.0.1:9000/", NS)
    assert backend.host == f"fraud-model.{NS}.svc.cluster.local"
    assert backend.subset == "v2"
    assert backend.url == "http://127.0.0.1:9000"
    assert backend.workload.version == "v2"
    assert backend.workload.workload_name == "fraud-model-v2"
    assert backend.workload.app_name == "fraud-model"


def test_a_backend_can_name_its_version_label_and_workload() -> None:
    backend = parse_backend("fraud-model/canary=http://127.0.0.1:1,version=v7,workload=fm-c", NS)
    assert (backend.subset, backend.workload.version) == ("canary", "v7")
    assert backend.workload.workload_name == "fm-c"


@pytest.mark.parametrize(
    "spec", ["fraud-model=http://x", "fraud-model/v1", "m/v1=ftp://x", "m/v1=http://x,colour=red"]
)
def test_a_malformed_backend_is_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="backend"):
        parse_backend(spec, NS)


# -- the weighted choice --------------------------------------------------------------------


def backends() -> list[Backend]:
    return [parse_backend(f"fraud-model/{v}=http://127.0.0.1:{p}", NS) for v, p in
            (("v1", 1), ("v2", 2))]  # fmt: skip


def choices(router: Router, n: int) -> Counter[str | None]:
    picked: Counter[str | None] = Counter()
    for _ in range(n):
        backend = router.choose()
        picked[backend.subset if backend else None] += 1
    return picked


def test_choices_follow_the_weights_within_five_sigma() -> None:
    source = StaticWeightSource()
    source.set_weights("fraud-model", {"v1": 90, "v2": 10})
    router = Router(backends(), source, namespace=NS, service="fraud-model", seed=7)
    n = 20_000
    picked = choices(router, n)
    assert abs(picked["v2"] - 0.1 * n) <= five_sigma(n, 0.1)
    assert picked["v1"] + picked["v2"] == n


def test_choices_follow_a_weight_change_at_once() -> None:
    source = StaticWeightSource()
    source.set_weights("fraud-model", {"v1": 90, "v2": 10})
    router = Router(backends(), source, namespace=NS, service="fraud-model", seed=7)
    choices(router, 100)
    source.set_weights("fraud-model", {"v1": 0, "v2": 100})
    assert choices(router, 500) == Counter({"v2": 500})


def test_without_a_virtualservice_the_service_spreads_evenly() -> None:
    router = Router(backends(), StaticWeightSource(), namespace=NS, service="fraud-model", seed=3)
    n = 10_000
    picked = choices(router, n)
    assert abs(picked["v1"] - n / 2) <= five_sigma(n, 0.5)


def test_a_subset_without_backend_answers_nothing_for_its_share() -> None:
    source = StaticWeightSource()
    source.set_weights("fraud-model", {"v1": 50, "v3": 50})
    router = Router(backends(), source, namespace=NS, service="fraud-model", seed=5)
    n = 10_000
    picked = choices(router, n)
    assert abs(picked[None] - n / 2) <= five_sigma(n, 0.5)
    assert set(picked) == {"v1", None}


def test_a_fqdn_destination_host_matches_a_short_backend_host() -> None:
    source = StaticWeightSource(
        [RouteDestination(f"fraud-model.{NS}.svc.cluster.local", "v2", 100)]
    )
    router = Router(backends(), source, namespace=NS, service="fraud-model", seed=1)
    assert choices(router, 50) == Counter({"v2": 50})


# -- real requests through the router -------------------------------------------------------


async def _serve_split(
    weights: dict[str, int], n: int, error_rate_v2: float, mirror_percent: float = 0.0
) -> tuple[Router, dict[str, Any]]:
    scenario = load_scenario("healthy")
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    for version in ("v1", "v2"):
        server = ModelServer(version, scenario, sleep=lambda _s: asyncio.sleep(0))
        server.set_overrides({"error_rate": error_rate_v2 if version == "v2" else 0.0})
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        urls[version] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    source = StaticWeightSource()
    source.set_weights("fraud-model", weights)
    if mirror_percent:
        snapshot = source.current()
        assert snapshot is not None
        source._snapshot = RouteSnapshot(
            snapshot.destinations, "test", RouteDestination("fraud-model", "v2"), mirror_percent
        )
    router = Router(
        [parse_backend(f"fraud-model/{v}={u}", NS) for v, u in urls.items()],
        source,
        namespace=NS,
        service="fraud-model",
        seed=11,
    )
    port = await router.start()
    try:
        result = await run_load(
            f"http://127.0.0.1:{port}/predict", rate=5000, max_requests=n, max_duration=30
        )
        # A request to an unknown path is proxied too: the model answers 404.
        await run_load(f"http://127.0.0.1:{port}/nope", rate=100, max_requests=1, max_duration=5)
        await router.mirrors_done()
    finally:
        await router.stop()
        for runner in runners:
            await runner.cleanup()
    return router, result.summary()


def samples(router: Router, name: str) -> list[tuple[dict[str, str], float]]:
    text = router.telemetry.render().decode()
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found.append((sample.labels, sample.value))
    return found


def test_proxied_requests_are_counted_with_istio_labels() -> None:
    router, summary = asyncio.run(_serve_split({"v1": 90, "v2": 10}, 2000, 0.2))
    assert summary["sent"] == 2000
    requests = samples(router, "istio_requests_total")
    labels, _ = requests[0]
    assert set(labels) == set(LABEL_NAMES)
    assert labels["reporter"] == "destination"
    assert labels["destination_service"] == f"fraud-model.{NS}.svc.cluster.local"
    assert labels["destination_service_name"] == "fraud-model"
    assert labels["destination_service_namespace"] == NS
    assert labels["request_protocol"] == "http"
    by_version: Counter[str] = Counter()
    by_code: Counter[tuple[str, str]] = Counter()
    for labels, value in requests:
        if labels["response_code"] == "404":
            continue
        by_version[labels["destination_version"]] += int(value)
        by_code[(labels["destination_version"], labels["response_code"])] += int(value)
        assert labels["destination_workload"] == f"fraud-model-{labels['destination_version']}"
    assert by_version["v1"] + by_version["v2"] == 2000
    assert abs(by_version["v2"] - 200) <= five_sigma(2000, 0.1)
    assert by_code[("v1", "500")] == 0
    v2 = by_version["v2"]
    assert abs(by_code[("v2", "500")] - 0.2 * v2) <= five_sigma(v2, 0.2)
    assert any(labels["response_code"] == "404" for labels, _ in requests)


def test_durations_use_envoys_default_buckets_written_without_exponents() -> None:
    router, _ = asyncio.run(_serve_split({"v1": 50, "v2": 50}, 200, 0.0))
    text = router.telemetry.render().decode()
    assert 'le="3600000"' in text and 'le="0.5"' in text and 'le="1"' in text
    assert "e+06" not in text
    buckets = samples(router, "istio_request_duration_milliseconds_bucket")
    bounds = sorted({float(labels["le"]) for labels, _ in buckets})
    assert bounds == [*DURATION_BUCKETS_MS, math.inf]
    counts = {
        labels["destination_version"]: value
        for labels, value in samples(router, "istio_request_duration_milliseconds_count")
        if labels["response_code"] == "200"
    }
    assert sum(counts.values()) == 200


# -- mirroring, as Istio does it ------------------------------------------------------------


def test_mirrored_requests_are_counted_under_v2_and_never_answer_a_client() -> None:
    """v1 serves everyone; half the requests are mirrored to a v2 that fails every one. No
    client sees a failure, the served counts say v1 answered all 1000, and Istio's metrics
    carry the mirrored requests (all 500s) under v2."""
    router, summary = asyncio.run(_serve_split({"v1": 100, "v2": 0}, 1000, 1.0, 50.0))
    assert summary["sent"] == 1000
    assert summary["by_status"] == {"200": 1000}
    served = {labels[0]: s.value for labels, s in router.served.series.items()}
    assert served == {"v1": 1001.0}  # and the one request to /nope
    by_code: Counter[tuple[str, str]] = Counter()
    for labels, value in samples(router, "istio_requests_total"):
        by_code[(labels["destination_version"], labels["response_code"])] += int(value)
    assert by_code[("v1", "200")] == 1000
    mirrored = sum(v for (version, _), v in by_code.items() if version == "v2")
    assert abs(mirrored - 500.5) <= five_sigma(1001, 0.5)
    assert mirrored == by_code[("v2", "500")] + by_code[("v2", "404")]
    assert {labels[0]: s.value for labels, s in router.mirrored.series.items()} == {
        "v2": float(mirrored)
    }


def test_mirror_read_from_a_virtualservice_and_an_httproute() -> None:
    vs = bookinfo_like_vs()
    catch_all = vs["spec"]["http"][1]
    catch_all["mirror"] = {"host": "fraud-model", "subset": "v2"}
    catch_all["mirrorPercentage"] = {"value": 12.5}
    snapshot = route_snapshot(vs)
    assert (snapshot.mirror, snapshot.mirror_percent) == (
        RouteDestination("fraud-model", "v2"),
        12.5,
    )
    del catch_all["mirrorPercentage"]
    assert route_snapshot(vs).mirror_percent == 100.0
    route = {
        "metadata": {"namespace": NS, "name": "fraud-model"},
        "spec": {
            "rules": [
                {
                    "backendRefs": [{"name": "fraud-model-v1", "port": 80}],
                    "filters": [
                        {
                            "type": "RequestMirror",
                            "requestMirror": {
                                "backendRef": {"name": "fraud-model-v2", "port": 80},
                                "percent": 30,
                            },
                        }
                    ],
                }
            ]
        },
    }
    snapshot = httproute_snapshot(route)
    assert (snapshot.mirror, snapshot.mirror_percent) == (RouteDestination("fraud-model-v2"), 30.0)
