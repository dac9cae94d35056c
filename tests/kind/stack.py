"""What the kind tier installs in its cluster: Istio's CRDs, the operator as users install it
(`kubectl apply -k` of manifests/ through the overlay tests/kind/manifests/install, which only
allows the test bed's Prometheus and PagerDuty receiver; its image loaded with `kind load`),
and the test bed in
namespace e2e (tests/kind/manifests/): Prometheus, the PagerDuty receiver and, per service,
model servers v1 and v2, a router that follows the VirtualService, and steady load."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.kind.cluster import ROOT, KindCluster

MANIFESTS = Path(__file__).resolve().parent / "manifests"
# manifests/ with the allowlist replaced by the addresses below.
INSTALL = MANIFESTS / "install"
NAMESPACE = "e2e"
OPERATOR_NAMESPACE = "canaryguard-system"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, like a real one
PROMETHEUS_URL = f"http://prometheus.{NAMESPACE}:9090"
PAGERDUTY_URL = f"http://pagerduty.{NAMESPACE}:8080/v2/enqueue"
# One service (mesh) per scenario, so no scenario sees another's metrics.
SERVICES = ("fraud-promote", "fraud-rollback", "fraud-restart")
RATE = 30  # requests/s of each service's load


def operator_image() -> str:
    """The image `kubectl apply -k manifests/` runs: `canaryguard:<newTag>`."""
    text = (ROOT / "manifests" / "kustomization.yaml").read_text()
    match = re.search(r"^\s*newTag:\s*(\S+)", text, re.MULTILINE)
    assert match, "no newTag in manifests/kustomization.yaml"
    return f"canaryguard:{match.group(1)}"


def testbed_image() -> str:
    text = (ROOT / "tests" / "testbed" / "pyproject.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match, "no version in tests/testbed/pyproject.toml"
    return f"canaryguard/testbed:{match.group(1)}"


PROMETHEUS_IMAGE = "canaryguard/prometheus:bookworm"


def render(path: Path, **values: str) -> str:
    """A manifest with its @NAME@ placeholders filled in; a placeholder left is an error."""
    text = path.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_0-9]+@", text)
    assert not left, f"{path.name}: placeholders not filled: {sorted(set(left))}"
    return text


def stack_manifests(
    services: tuple[str, ...] = SERVICES, testbed: str | None = None, rate: int = RATE
) -> str:
    """Everything the test bed applies in namespace e2e, as one multi-document YAML."""
    image = testbed or testbed_image()
    routers = [f"{s}-router:8080" for s in services]
    models = [f"{s}-{v}:8000" for s in services for v in ("v1", "v2")]
    docs = [
        render(
            MANIFESTS / "stack.yaml",
            TESTBED_IMAGE=image,
            PROMETHEUS_IMAGE=PROMETHEUS_IMAGE,
            ROUTING_KEY=ROUTING_KEY,
            # The Secret's opt-in (canaryguard.io/allowed-rollouts): every scenario's rollout.
            ALLOWED_ROLLOUTS=",".join(services),
            SCRAPE_ROUTERS=json.dumps(routers),
            SCRAPE_MODELS=json.dumps(models),
        )
    ]
    for service in services:
        docs.append(
            render(MANIFESTS / "service.yaml", SERVICE=service, TESTBED_IMAGE=image, RATE=str(rate))
        )
    return "\n---\n".join(docs)


def error_rate_slo(window: str, lookback: str) -> dict[str, Any]:
    """The 5xx share of the canary against the baseline's, with a 2-point margin."""
    return {
        "name": "error-rate",
        "errorRate": {},
        "margin": {"absolute": 0.02},
        "window": window,
        "lookback": lookback,
    }


def rollout_body(
    service: str,
    steps: list[dict[str, Any]],
    slos: list[dict[str, Any]],
    revision: str = "kind-1",
) -> dict[str, Any]:
    """The CanaryRollout of `service` (named after it), with accelerated time: 1 s ticks,
    windows of seconds, Prometheus and PagerDuty the ones in namespace e2e."""
    return {
        "apiVersion": "canaryguard.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": service, "namespace": NAMESPACE},
        "spec": {
            "virtualService": {"name": service, "routes": ["primary"]},
            "baseline": {"host": service, "subset": "v1"},
            "canary": {"host": service, "subset": "v2"},
            "revision": revision,
            "metrics": {
                "prometheus": {"address": PROMETHEUS_URL, "timeout": "3s"},
                "selector": {
                    "destination_service_name": service,
                    "destination_service_namespace": NAMESPACE,
                },
                "baselineVersion": "v1",
                "canaryVersion": "v2",
            },
            "steps": steps,
            "analysis": {
                "interval": "1s",
                "minRequests": 20,
                "maxMetricsOutage": "30s",
                "onMetricsOutage": "rollback",
                "slos": slos,
            },
            "paging": {
                "pagerDuty": {
                    "routingKeySecretRef": {"name": "pagerduty", "key": "routing-key"},
                    "severity": "critical",
                    "url": PAGERDUTY_URL,
                }
            },
        },
    }


def reset(cluster: KindCluster) -> None:
    """What an earlier run left in a reused cluster: its namespaces, deleted and waited for.
    Their Pods go first without a grace period, or the deletion waits out each one's."""
    for namespace in (NAMESPACE, OPERATOR_NAMESPACE):
        cluster.kubectl(
            "delete", "deployments,pods", "--all", "-n", namespace,
            "--grace-period=0", "--force", "--ignore-not-found", "--wait=false",
        )  # fmt: skip
        cluster.kubectl(
            "delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=180
        )


def install_istio_crds(cluster: KindCluster, crds: Path) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(crds), timeout=120)
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/virtualservices.networking.istio.io",
        "crd/destinationrules.networking.istio.io",
        timeout=90,
    )


def install_operator(cluster: KindCluster) -> None:
    """`kubectl apply -k` of the overlay (manifests/ as the README tells users to apply it,
    allowlist aside), then wait for the Deployment."""
    cluster.kubectl("apply", "--server-side", "-k", str(INSTALL), timeout=120)
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/canaryrollouts.canaryguard.io",
        timeout=90,
    )
    cluster.kubectl(
        "-n",
        OPERATOR_NAMESPACE,
        "rollout",
        "status",
        "deployment/canaryguard",
        "--timeout=180s",
        timeout=200,
    )


def install_stack(cluster: KindCluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=stack_manifests(), timeout=120)
    cluster.kubectl(
        "-n",
        NAMESPACE,
        "wait",
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=240s",
        timeout=260,
    )
