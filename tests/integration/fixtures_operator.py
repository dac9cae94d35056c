"""Fixtures that run the real operator: as a separate process, logged in as the
ServiceAccount that `manifests/rbac/` ship, so a missing or excess permission shows.

Each test gets its own operator watching only the test's namespace, so a test can kill
(SIGKILL) and restart it without touching any other test. It may send requests to the
session's Prometheus and PagerDuty receiver only (`--allow-prometheus`, `--allow-pagerduty`),
and the Secrets the rollouts name are made available to them by annotation, as an installer
and a Secret's owner would do.
"""

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from canaryguard.core.access import SECRET_OPT_IN
from canaryguard_testbed.childproc import ChildProcessError
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from canaryguard_testbed.prometheus_server import PrometheusServer
from canaryguard_testbed.stack import OperatorProcess, allow_flags

__all__ = [
    "Operator",
    "Rollout",
    "operator",
    "operator_kubeconfig",
    "rollout",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[2]
RBAC_DIR = ROOT / "manifests" / "rbac"
OPERATOR_NAMESPACE = "canaryguard-system"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, like a real one
T = TypeVar("T")
Obj = dict[str, Any]


def ts(text: str) -> datetime:
    """A time as the status writes it (RFC 3339, `Z`)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    """The status condition of that type; fails the test when there is none."""
    for cond in status.get("conditions", []):
        if cond.get("type") == type_:
            return dict(cond)
    raise AssertionError(f"no condition {type_} in {status.get('conditions')}")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane) -> Path:
    """A kubeconfig of the operator's ServiceAccount, bound to the shipped ClusterRole."""
    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    control_plane.kubectl("apply", "-f", str(RBAC_DIR))
    return control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE, "canaryguard")


class Operator(OperatorProcess):
    """The operator process of one test's namespace (the demo's launcher), with what tests
    need on top: SIGKILL, a failing start that fails the test, and the log."""

    def __init__(
        self, kubeconfig: Path, namespace: str, log_path: Path, args: Sequence[str]
    ) -> None:
        super().__init__(kubeconfig, [namespace], log_path, args)
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start (again) and wait until the liveness endpoint answers."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
        try:
            super().start(timeout)
        except ChildProcessError as exc:
            pytest.fail(str(exc), pytrace=False)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last status write."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self) -> list[dict[str, Any]]:
        """The operator's JSON log lines."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


@pytest.fixture
def operator(
    operator_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    prometheus: PrometheusServer,
    pagerduty_receiver_session: PagerDutyReceiver,
) -> Iterator[Callable[..., Operator]]:
    """`operator()` starts the operator for this test's namespace, allowed to send requests to
    the session's Prometheus and PagerDuty receiver; stopped after the test, and its log is
    printed when the test fails. `operator(kubeconfig=..., args=[...])` logs in as someone
    else or replaces the allow flags."""
    started: list[Operator] = []

    def start(kubeconfig: Path | None = None, args: Sequence[str] | None = None) -> Operator:
        op = Operator(
            kubeconfig or operator_kubeconfig,
            namespace,
            tmp_path / f"operator-{len(started)}.log",
            allow_flags(prometheus.url, pagerduty_receiver_session.url) if args is None else args,
        )
        started.append(op)
        op.start()
        return op

    yield start
    for op in started:
        op.stop()
        sys.stderr.write(f"\n--- operator log ({op.log_path}) ---\n{op.log_tail(80)}\n")


@dataclass
class Rollout:
    """A CanaryRollout under test, with readers for what the tests assert on."""

    cp: ControlPlane
    namespace: str
    name: str
    body: dict[str, Any] = field(default_factory=dict)

    def apply(self) -> None:
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(self.body))

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.cp.kubectl(
            "patch",
            "canaryrollout",
            self.name,
            "-n",
            self.namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": spec}),
        )

    def get(self) -> dict[str, Any]:
        out = self.cp.kubectl("get", "canaryrollout", self.name, "-n", self.namespace, "-o=json")
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def status(self) -> dict[str, Any]:
        return self.get().get("status") or {}

    def phase(self) -> str | None:
        return self.status().get("phase")

    def weights(self, route: str = "primary") -> tuple[int, int]:
        """(baseline, canary) weights of the driven route, in Istio's semantics."""
        out = self.cp.kubectl(
            "get", "virtualservice", "fraud-model", "-n", self.namespace, "-o=json"
        )
        vs = json.loads(out.stdout)
        for http in vs["spec"]["http"]:
            if http.get("name") == route:
                dests = http["route"]
                found = {
                    d["destination"].get("subset"): d.get("weight", 100 if len(dests) == 1 else 0)
                    for d in dests
                }
                return found.get("v1", 0), found.get("v2", 0)
        raise AssertionError(f"no route {route} in {vs}")

    def set_weights(self, baseline: int, canary: int, route: str = "primary") -> None:
        """Edit the VirtualService by hand, as a person with kubectl would."""
        out = self.cp.kubectl(
            "get", "virtualservice", "fraud-model", "-n", self.namespace, "-o=json"
        )
        vs = json.loads(out.stdout)
        for http in vs["spec"]["http"]:
            if http.get("name") == route:
                http["route"] = [
                    {"destination": {"host": "fraud-model", "subset": "v1"}, "weight": baseline},
                    {"destination": {"host": "fraud-model", "subset": "v2"}, "weight": canary},
                ]
        self.cp.kubectl("replace", "-f", "-", input=json.dumps(vs))

    def events(self) -> list[dict[str, Any]]:
        out = self.cp.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            f"--field-selector=involvedObject.name={self.name}",
            "-o=json",
        )
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return sorted(items, key=lambda e: e.get("metadata", {}).get("creationTimestamp", ""))

    def event_reasons(self) -> list[str]:
        return [e["reason"] for e in self.events()]


def fraud_virtual_service(namespace: str) -> dict[str, Any]:
    """The service's VirtualService as users have it before a rollout: all traffic on v1,
    behind a header-match route the operator must leave alone."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "fraud-model", "namespace": namespace},
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


def rollout_body(
    namespace: str,
    prometheus_url: str,
    pagerduty_url: str,
    *,
    steps: list[dict[str, Any]] | None = None,
    slos: list[dict[str, Any]] | None = None,
    analysis: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A CanaryRollout for the local fraud-model mesh with accelerated time: 1 s ticks,
    windows of seconds. Keyword arguments override spec fields."""
    return {
        "apiVersion": "canaryguard.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": "fraud-model", "namespace": namespace},
        "spec": {
            "virtualService": {"name": "fraud-model", "routes": ["primary"]},
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
                "interval": "1s",
                "minRequests": 20,
                "maxMetricsOutage": "8s",
                "onMetricsOutage": "rollback",
                "slos": slos
                or [
                    {
                        "name": "error-rate",
                        "errorRate": {},
                        "margin": {"absolute": 0.02},
                        "window": "6s",
                        "lookback": "10s",
                    }
                ],
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


def pagerduty_secret(namespace: str, allowed: str | None = "fraud-model,fraud-model-b") -> Obj:
    """The routing key's Secret, made available to the rollouts `allowed` names (its
    owner's opt-in; None: not made available)."""
    annotations = {} if allowed is None else {SECRET_OPT_IN: allowed}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pagerduty", "namespace": namespace, "annotations": annotations},
        "stringData": {"routing-key": ROUTING_KEY},
    }


@pytest.fixture
def rollout(
    control_plane: ControlPlane,
    namespace: str,
    prometheus: PrometheusServer,
    pagerduty: PagerDutyReceiver,
) -> Callable[..., Rollout]:
    """`rollout(**overrides)` creates the VirtualService (all traffic on v1), the PagerDuty
    Secret and a CanaryRollout for this namespace; the operator is started separately."""

    def make(*, create: bool = True, **overrides: Any) -> Rollout:
        control_plane.kubectl(
            "apply", "-f", "-", input=json.dumps(fraud_virtual_service(namespace))
        )
        control_plane.kubectl(
            "create", "-f", "-", input=json.dumps(pagerduty_secret(namespace)), check=False
        )
        r = Rollout(
            control_plane,
            namespace,
            "fraud-model",
            rollout_body(namespace, prometheus.url, pagerduty.url, **overrides),
        )
        if create:
            r.apply()
        return r

    return make
