"""The controller is nobody's deputy: a rollout naming an address its installer did not allow
is Invalid before any Secret is read, any request sent or any weight moved; a Secret not made
available to the rollout is never read, whatever the address.

The scenario's rollout `ml/scorer` queries http://prometheus:9090 (allowed in
`tests.unit.fakes.SETTINGS`) and pages through PagerDuty's default URL (allowed by default).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canaryguard.core.access import Allowlist, parse_address
from canaryguard.runtime.controller import (
    ALLOW_PAGERDUTY_FLAG,
    ALLOW_PROMETHEUS_FLAG,
    Controller,
    Settings,
)
from tests.unit.fakes import World
from tests.unit.scenario import BREACH, HEALTHY, obs, spec_dict

ATTACKER = "http://127.0.0.1:8000"


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def with_headers_secret(address: str = "http://prometheus:9090") -> dict[str, Any]:
    data = spec_dict()
    data["metrics"]["prometheus"]["address"] = address
    data["metrics"]["prometheus"]["headersSecretRef"] = {"name": "prom", "key": "auth"}
    return data


def with_pagerduty_url(url: str) -> dict[str, Any]:
    data = spec_dict()
    data["paging"]["pagerDuty"]["url"] = url
    return data


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (with_headers_secret(ATTACKER), "spec.metrics.prometheus.address"),
        (with_pagerduty_url(ATTACKER + "/v2/enqueue"), "spec.paging.pagerDuty.url"),
        # A scheme, host or port that differs is another address, whatever the prefix.
        (with_headers_secret("https://prometheus:9090"), "spec.metrics.prometheus.address"),
        (with_headers_secret("http://prometheus:90"), "spec.metrics.prometheus.address"),
        (with_headers_secret("http://prometheus.evil:9090"), "spec.metrics.prometheus.address"),
    ],
)
def test_an_address_not_allowed_is_invalid_before_anything_is_read_or_sent(
    spec: dict[str, Any], field: str
) -> None:
    world = World(spec_data=copy.deepcopy(spec))
    world.kube.add_secret("ml", "prom", {"auth": "Bearer s3cr3t-token"})
    controller = world.controller()

    for second in (0, 30, 60):
        world.tick(controller, second, obs(HEALTHY))

    status = world.kube.status()
    assert status["phase"] == "Invalid"
    assert status["message"].startswith(f"invalid: {field}: ")
    assert "is not an address this operator may send requests to" in status["message"]
    spec_valid = condition(status, "SpecValid")
    assert (spec_valid["status"], spec_valid["reason"]) == ("False", "AddressNotAllowed")
    assert condition(status, "Progressing")["reason"] == "AddressNotAllowed"
    assert world.kube.reasons() == [("Warning", "AddressNotAllowed")]
    flag = ALLOW_PROMETHEUS_FLAG if "prometheus" in field else ALLOW_PAGERDUTY_FLAG
    assert world.kube.events[0].message.endswith(f"allows addresses with {flag}")
    # Nothing was read, nothing was sent, no traffic moved.
    assert world.kube.secret_reads == []
    assert world.metrics.connections == [] and world.metrics.queries == []
    assert world.pager.triggers == []
    assert world.router.writes == []


def test_an_omitted_pagerduty_url_is_the_default_and_must_be_allowed_too() -> None:
    world = World()
    only_a_proxy = Settings(
        allow_prometheus=Allowlist((parse_address("http://prometheus:9090"),), "x"),
        allow_pagerduty=Allowlist((parse_address("http://pd-proxy:8080"),), "--allow-pagerduty"),
    )
    controller = Controller(
        world.kube, world.router, world.metrics, world.pager, only_a_proxy, clock=lambda: world.now
    )
    controller.seen("ADDED", world.kube.get())
    world.tick(controller, 0, obs(HEALTHY))

    status = world.kube.status()
    assert status["phase"] == "Invalid"
    assert (
        "spec.paging.pagerDuty.url (default): https://events.pagerduty.com/v2/enqueue "
        in (status["message"])
    )
    assert world.router.writes == []


def test_allowing_the_address_lets_the_rollout_start_where_it_was() -> None:
    world = World(spec_data=with_pagerduty_url(ATTACKER + "/v2/enqueue"))
    world.tick(world.controller(), 0, obs(HEALTHY))
    assert world.kube.status()["phase"] == "Invalid"

    allowing = Settings(
        allow_prometheus=Allowlist((parse_address("http://prometheus:9090"),), "x"),
        allow_pagerduty=Allowlist((parse_address(ATTACKER),), "y"),
    )
    controller = Controller(
        world.kube, world.router, world.metrics, world.pager, allowing, clock=lambda: world.now
    )
    controller.seen("ADDED", world.kube.get())
    world.tick(controller, 30, obs(HEALTHY))
    status = world.kube.status()
    assert status["phase"] == "Progressing"
    assert condition(status, "SpecValid")["status"] == "True"
    assert world.router.writes == [(90, 10)]


def test_a_headers_secret_not_made_available_is_not_read_and_the_rollout_is_invalid() -> None:
    world = World(spec_data=with_headers_secret())
    world.kube.add_secret("ml", "prom", {"auth": "Bearer s3cr3t-token"}, allowed="other")
    controller = world.controller()

    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 30, obs(HEALTHY))

    status = world.kube.status()
    assert status["phase"] == "Invalid"
    assert "Secret ml/prom is not made available to CanaryRollout scorer" in status["message"]
    assert 'canaryguard.io/allowed-rollouts: "scorer"' in status["message"]
    assert condition(status, "SpecValid")["reason"] == "SecretNotAllowed"
    assert world.kube.reasons() == [("Warning", "SecretNotAllowed")]
    assert world.metrics.connections == []
    assert world.router.writes == []

    # Its owner opts in: the next tick reads it, sends it to the allowed Prometheus, starts.
    world.kube.add_secret("ml", "prom", {"auth": "Bearer s3cr3t-token"}, allowed="other,scorer")
    world.tick(controller, 60, obs(HEALTHY))
    assert world.kube.status()["phase"] == "Progressing"
    assert world.metrics.connections[-1].headers == {"Authorization": "Bearer s3cr3t-token"}
    assert world.kube.secret_reads[-1] == ("ml", "prom", "scorer")


def test_a_routing_key_not_made_available_is_not_read_and_the_page_waits_for_it() -> None:
    world = World()
    world.kube.add_secret("ml", "pd", {"key": "routing-key-0123"}, allowed=None)
    controller = world.controller()
    world.tick(controller, 0)
    for second in (30, 60, 90, 120):  # rolled back at 90, one more delivery at 120
        world.tick(controller, second, obs(BREACH))

    status = world.kube.status()
    assert status["phase"] == "RolledBack"
    assert world.router.weights() == [(100, 0)]  # protection does not wait for the page
    page = status["page"]
    assert (page["state"], page["attempts"]) == ("Pending", 2)
    assert "Secret ml/pd is not made available to CanaryRollout scorer" in page["lastError"]
    assert world.pager.triggers == []
    failed = [e for e in world.kube.events if e.reason == "PageFailed"]
    assert len(failed) == 1 and "canaryguard.io/allowed-rollouts" in failed[0].message

    world.kube.add_secret("ml", "pd", {"key": "routing-key-0123"}, allowed="scorer")
    world.tick(controller, 150, obs(BREACH))
    assert world.kube.status()["page"]["state"] == "Delivered"
    assert [t.routing_key for t in world.pager.triggers] == ["routing-key-0123"]
