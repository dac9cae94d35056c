"""The controller with batched queries: rollouts ticking together cost Prometheus one query
per shape, and decide exactly as they would on their own queries; `--no-batch-queries`
sends each rollout's own."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from typing import Any

import pytest

from canaryguard.core.batching import Builtin
from canaryguard.core.ports import Sample
from canaryguard.core.queries import plan
from canaryguard.core.spec import parse_spec
from canaryguard.runtime.controller import Controller
from canaryguard.runtime.scheduler import Scheduler
from tests.unit.fakes import (
    SETTINGS,
    FakeKube,
    FakeMetrics,
    FakePager,
    FakeRouter,
    rollout_body,
    virtual_service,
)
from tests.unit.scenario import T0, at, spec_dict
from tests.unit.test_scheduler import run_for
from tests.unit.virtual_time import VirtualClock, run_virtual

SERVICES = ("alpha", "beta", "gamma")
# Per service: (v1 errors, v2 errors) per second and (v1, v2) requests per second.
ERRORS = {"alpha": (0.1, 0.01), "beta": (0.1, 0.5), "gamma": (0.0, 0.0)}
REQUESTS = {"alpha": (100.0, 10.0), "beta": (100.0, 10.0), "gamma": (100.0, 10.0)}


def body(name: str) -> dict[str, Any]:
    data = spec_dict(
        slos=[
            {"name": "errors", "errorRate": {}, "margin": {"absolute": 0.01}, "window": "60s"},
            {"name": "p99", "latency": {"quantile": 0.99}, "margin": {"relative": 0.5}},
        ]
    )
    data["virtualService"]["name"] = name
    data["metrics"]["selector"] = {"destination_service_name": name}
    out = rollout_body(data)
    out["metadata"]["name"] = name
    return out


def prometheus(text: str) -> list[Sample]:
    """A Prometheus over the three services' series: answers a batch (regex over services,
    rows by service and version) and a single query (rows by version) alike."""
    batched = "destination_service_name=~" in text
    services = [s for s in SERVICES if f'"{s}"' in text or f"{s}|" in text or f"|{s}" in text]
    rows = []
    for service in services:
        for i, version in enumerate(("v1", "v2")):
            if text.startswith("histogram_quantile"):
                value = 12.0 if version == "v1" else 13.0
            elif "response_code" in text:
                value = ERRORS[service][i] / REQUESTS[service][i]
            else:
                value = REQUESTS[service][i] * 60
            labels = {"destination_version": version}
            if batched:
                labels.update(destination_service_name=service, reporter="destination")
            rows.append(Sample(labels, value))
    return rows


def cluster() -> tuple[FakeKube, FakeRouter]:
    kube = FakeKube()
    router = FakeRouter(
        *(replace_name(virtual_service(), name) for name in SERVICES), journal=kube.journal
    )
    for name in SERVICES:
        kube.create(body(name))
    kube.add_secret("ml", "pd", {"key": "routing-key-0123"})
    return kube, router


def replace_name(vs: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(vs)
    out["metadata"]["name"] = name
    return out


def run_ticks(batch: bool) -> tuple[FakeKube, FakeRouter, FakeMetrics]:
    kube, router = cluster()
    metrics = FakeMetrics(prometheus)
    now = [T0]
    controller = Controller(
        kube,
        router,
        metrics,
        FakePager(journal=kube.journal),
        replace(SETTINGS, batch_queries=batch, batch_window=5.0),
        clock=lambda: now[0],
    )
    for name in SERVICES:
        controller.seen("ADDED", kube.get("ml", name))

    async def all_at(seconds: float) -> None:
        now[0] = at(seconds)
        await asyncio.gather(*(controller.tick_key(("ml", name)) for name in SERVICES))

    for seconds in (0, 30, 60, 90, 120):
        asyncio.run(all_at(seconds))
    return kube, router, metrics


def test_rollouts_ticking_together_cost_one_query_per_shape() -> None:
    _, _, metrics = run_ticks(batch=True)
    # requests, errors and p99 (3 shapes) per tick slot, for the three rollouts together
    assert len(metrics.queries) == 5 * 3
    assert all("destination_service_name=~" in q for q in metrics.queries)


def test_batched_or_not_the_decisions_are_the_same() -> None:
    batched_kube, batched_router, _ = run_ticks(batch=True)
    alone_kube, alone_router, alone_metrics = run_ticks(batch=False)
    # Three queries per rollout and tick; beta, rolled back at 90 s, is not queried at 120 s.
    assert len(alone_metrics.queries) == (5 * 3 - 1) * 3
    for name in SERVICES:
        assert batched_kube.status("ml", name) == alone_kube.status("ml", name)
        assert batched_router.weights("ml", name) == alone_router.weights("ml", name)
    assert batched_kube.reasons() == alone_kube.reasons()
    # beta's canary fails 5% against 0.1%: rolled back; alpha and gamma moved on.
    assert batched_kube.status("ml", "beta")["phase"] == "RolledBack"
    assert batched_router.weights("ml", "alpha") == [(50, 50)]


def test_each_rollout_s_builtin_queries_are_described_for_batching() -> None:
    spec = parse_spec(body("alpha"))
    builtins = [q.value_builtin for q in plan(spec).values()]
    assert all(isinstance(b, Builtin) for b in builtins)


@pytest.mark.parametrize("flag", ["--no-batch-queries", "--batch-queries"])
def test_the_flag_turns_batching_off_and_on(flag: str) -> None:
    from canaryguard.cli.main import build_parser
    from canaryguard.cli.run import operator_settings

    args = build_parser().parse_args(["run", flag, "--batch-window=250ms"])
    settings = operator_settings(args)
    assert settings.batch_queries is (flag == "--batch-queries")
    assert settings.batch_window == 0.25


def test_rollouts_outnumbering_the_concurrency_still_share_one_query_per_shape() -> None:
    """The controller's own scheduler at `--concurrency 1`: the three rollouts dispatched
    together reach the batcher together (each lends its place while it waits), so their
    first ticks cost one query per shape, not one per rollout."""
    kube, router = cluster()
    metrics = FakeMetrics(prometheus)

    async def main(clock: VirtualClock) -> None:
        controller = Controller(
            kube,
            router,
            metrics,
            FakePager(journal=kube.journal),
            replace(SETTINGS, concurrency=1, batch_window=5.0),
            clock=lambda: T0,
            scheduler_factory=lambda tick, n: Scheduler(tick, n, clock=clock, wall=clock),
        )
        for name in SERVICES:
            controller.seen("ADDED", kube.get("ml", name))
        await run_for(controller.scheduler, 1.0)

    run_virtual(main)
    assert len(metrics.queries) == 3
    assert all("destination_service_name=~" in q for q in metrics.queries)
