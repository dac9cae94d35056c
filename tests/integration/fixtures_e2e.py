"""The end-to-end set-up every operator scenario shares, as one fixture: `e2e`.

    def test_something(e2e: EndToEnd) -> None:
        r = e2e.rollout(steps=[...])            # mesh, VirtualService, Secret, CanaryRollout
        with e2e.traffic(rate=80):              # real HTTP through the router
            op = e2e.operator()                 # the operator, under the shipped RBAC
            r.wait_weights(80, 20)
            ...
            op.wait_ticks(3)                    # before asserting that nothing happened

The world of one test: its own namespace in the session's API server, the session's
Prometheus (scraping every second) and PagerDuty receiver (reset per test), a mesh of model
servers v1 and v2 behind a router that follows the VirtualService `fraud-model`, and
rollouts with accelerated time (1 s ticks, windows of seconds).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from canaryguard.core.access import SECRET_OPT_IN
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.mesh import Mesh
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from canaryguard_testbed.prometheus_server import PrometheusServer
from tests.integration.fixtures_mesh import MeshFactory
from tests.integration.fixtures_operator import Operator, Rollout
from tests.integration.traffic import Traffic

__all__ = ["EndToEnd", "e2e"]

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, like a real one
INTERVAL = 1.0  # spec.analysis.interval of every rollout `rollout_body` makes


def error_rate_slo(window: str = "6s", lookback: str = "10s") -> dict[str, Any]:
    """The 5xx share of the canary against the baseline's, with a 2-point margin."""
    return {
        "name": "error-rate",
        "errorRate": {},
        "margin": {"absolute": 0.02},
        "window": window,
        "lookback": lookback,
    }


def fraud_virtual_service(namespace: str, name: str = "fraud-model") -> dict[str, Any]:
    """The service's VirtualService as users have it before a rollout: all traffic on v1,
    behind a header-match route the operator must leave alone."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": ["fraud-model"],
            "http": [
                {
                    "name": "qa",
                    "match": [{"headers": {"x-qa": {"exact": "canary"}}}],
                    "route": [{"destination": {"host": "fraud-model", "subset": "v2"}}],
                },
                {
                    "name": "primary",
                    "timeout": "5s",
                    "route": [{"destination": {"host": "fraud-model", "subset": "v1"}}],
                },
            ],
        },
    }


def pagerduty_secret(namespace: str, allowed: str | None = "*") -> dict[str, Any]:
    """The routing key's Secret, made available to the rollouts `allowed` names (its
    owner's opt-in, canaryguard.io/allowed-rollouts; None: not made available)."""
    annotations = {} if allowed is None else {SECRET_OPT_IN: allowed}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pagerduty", "namespace": namespace, "annotations": annotations},
        "stringData": {"routing-key": ROUTING_KEY},
    }


def rollout_body(
    namespace: str,
    prometheus_url: str,
    pagerduty_url: str,
    *,
    name: str = "fraud-model",
    steps: list[dict[str, Any]] | None = None,
    slos: list[dict[str, Any]] | None = None,
    analysis: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A CanaryRollout `name` of VirtualService `name` for the local fraud-model mesh, with
    accelerated time: 1 s ticks, windows of seconds. Keyword arguments override spec fields."""
    return {
        "apiVersion": "canaryguard.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "virtualService": {"name": name, "routes": ["primary"]},
            "baseline": {"host": "fraud-model", "subset": "v1"},
            "canary": {"host": "fraud-model", "subset": "v2"},
            "metrics": {
                "prometheus": {"address": prometheus_url, "timeout": "2s"},
                "selector": {
                    "destination_service_name": "fraud-model",
                    "destination_service_namespace": namespace,
                },
                "baselineVersion": "v1",
                "canaryVersion": "v2",
            },
            "steps": steps
            or [
                {"weight": 20, "hold": "6s"},
                {"weight": 50, "hold": "6s"},
                {"weight": 100, "hold": "6s"},
            ],
            "analysis": {
                "interval": f"{INTERVAL:g}s",
                "minRequests": 20,
                "maxMetricsOutage": "8s",
                "onMetricsOutage": "rollback",
                "slos": slos or [error_rate_slo()],
                **(analysis or {}),
            },
            "paging": {
                "pagerDuty": {
                    "routingKeySecretRef": {"name": "pagerduty", "key": "routing-key"},
                    "severity": "critical",
                    "url": pagerduty_url,
                }
            },
            **spec,
        },
    }


@dataclass
class EndToEnd:
    """One test's end-to-end world (see the module's docstring). Everything it starts is
    stopped after the test by the fixtures it is built on."""

    cp: ControlPlane
    namespace: str
    prometheus: PrometheusServer
    pagerduty: PagerDutyReceiver
    _mesh_factory: MeshFactory
    _operator_factory: Callable[..., Operator]
    _mesh: Mesh | None = None

    def start_mesh(self, scenario: str = "healthy", **options: Any) -> Mesh:
        """The namespace's mesh, started (once) and scraped by Prometheus; `options` go to
        the `mesh` fixture (e.g. `http_route=`)."""
        if self._mesh is None:
            self._mesh = self._mesh_factory(self.namespace, scenario=scenario, **options)
        return self._mesh

    @property
    def mesh(self) -> Mesh:
        return self.start_mesh()

    def rollout(
        self, name: str = "fraud-model", *, create: bool = True, mesh: bool = True, **overrides: Any
    ) -> Rollout:
        """Start the mesh (unless `mesh=False`), then apply the VirtualService `name` (all
        traffic on v1), the PagerDuty Secret and (unless `create=False`) the CanaryRollout
        `name` driving that VirtualService. `overrides` go to `rollout_body`."""
        if mesh:
            self.start_mesh()
        self.cp.kubectl(
            "apply", "-f", "-", input=json.dumps(fraud_virtual_service(self.namespace, name))
        )
        self.cp.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(pagerduty_secret(self.namespace)),
            check=False,  # already there for a second rollout
        )
        body = rollout_body(
            self.namespace, self.prometheus.url, self.pagerduty.url, name=name, **overrides
        )
        r = Rollout(self.cp, self.namespace, name, body, virtual_service=name)
        if create:
            r.apply()
        return r

    def operator(self, **options: Any) -> Operator:
        """Start an operator for this namespace (stopped after the test, its log printed);
        `options` go to the `operator` fixture (`kubeconfig=`, `args=`, `env=`)."""
        return self._operator_factory(**options)

    def traffic(self, rate: float = 80.0) -> Traffic:
        """Requests through the mesh's router at `rate`/s while the `with` block runs."""
        return Traffic(self.mesh, rate=rate)


@pytest.fixture
def e2e(
    control_plane: ControlPlane,
    namespace: str,
    prometheus: PrometheusServer,
    pagerduty: PagerDutyReceiver,
    mesh: MeshFactory,
    operator: Callable[..., Operator],
) -> EndToEnd:
    """The end-to-end world of this test, with Prometheus up whatever an earlier test left
    behind."""
    if not prometheus.running:
        prometheus.start()
    return EndToEnd(control_plane, namespace, prometheus, pagerduty, mesh, operator)
