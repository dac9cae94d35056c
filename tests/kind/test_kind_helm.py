"""The operator installed with the Helm chart (manifests/helm/canaryguard) instead of
kustomize, in the same cluster, after the other scenarios: everything the overlay created but
the Namespace and the CRD is deleted, `helm install` (the allowlist as the overlay sets it,
otherwise the chart's defaults: two replicas, leader election) must bring up an operator on
its own RBAC, ConfigMap and Service, and that operator promotes a healthy canary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixtures_operator import Rollout, wait_for
from tests.kind.cluster import FIGURES, TIMINGS, KindCluster
from tests.kind.stack import (
    NAMESPACE,
    OPERATOR_NAMESPACE,
    error_rate_slo,
    install_chart,
    rollout_body,
    uninstall_kustomize,
)

OPERATOR_PODS = "app.kubernetes.io/name=canaryguard,app.kubernetes.io/component=operator"
SERVICE = "fraud-promote"  # the healthy scenario's mesh, driven again under the chart


def operator_pod_names(cluster: KindCluster) -> set[str]:
    pods = cluster.get_json("pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_PODS)["items"]
    return {p["metadata"]["name"] for p in pods}


@pytest.fixture(scope="module")
def chart_installed(kind_cluster: KindCluster, helm: Path) -> set[str]:
    """The kustomize install replaced by the chart's; the names of the chart's Pods."""
    old = operator_pod_names(kind_cluster)
    assert old, "no operator Pod from the kustomize install"
    with TIMINGS.phase("helm: delete the kustomize install (CRD and Namespace kept)"):
        uninstall_kustomize(kind_cluster)
        wait_for(
            "the kustomize install's Pods to go",
            lambda: not operator_pod_names(kind_cluster) & old,
            timeout=90,
        )
    started = time.monotonic()
    with TIMINGS.phase("helm install --wait (the chart's operator Ready)"):
        install_chart(kind_cluster, helm)
    FIGURES.append(f"helm install to Deployment ready {time.monotonic() - started:.1f} s")
    new = operator_pod_names(kind_cluster)
    assert new and not new & old, (old, new)
    return new


def test_the_chart_installs_an_operator_on_its_own_objects(
    kind_cluster: KindCluster, chart_installed: set[str]
) -> None:
    deployment = kind_cluster.get_json("deployment", "canaryguard", "-n", OPERATOR_NAMESPACE)
    meta = deployment["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert meta["annotations"]["meta.helm.sh/release-name"] == "canaryguard"
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"].get("readyReplicas") == 2, deployment["status"]
    assert len(chart_installed) == 2
    for kind, name, namespace in (
        ("clusterrole", "canaryguard", None),
        ("clusterrolebinding", "canaryguard", None),
        ("role", "canaryguard-leader-election", OPERATOR_NAMESPACE),
        ("configmap", "canaryguard-allowlist", OPERATOR_NAMESPACE),
        ("service", "canaryguard-metrics", OPERATOR_NAMESPACE),
        ("poddisruptionbudget", "canaryguard", OPERATOR_NAMESPACE),
        ("validatingadmissionpolicy", "canaryguard-requested-by", None),
    ):
        args = [kind, name] + (["-n", namespace] if namespace else [])
        labels = kind_cluster.get_json(*args)["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", (kind, labels)
    # One of the chart's Pods holds the Lease.

    def holder() -> str | None:
        lease = kind_cluster.get_json("lease", "canaryguard", "-n", OPERATOR_NAMESPACE)
        identity: str | None = lease["spec"].get("holderIdentity")
        return identity if identity in chart_installed else None

    wait_for("a chart Pod to hold the Lease", holder, timeout=60)


def test_the_chart_installed_operator_promotes_a_healthy_canary(
    kind_cluster: KindCluster, chart_installed: set[str]
) -> None:
    kind_cluster.kubectl(
        "delete", "canaryrollout", SERVICE, "-n", NAMESPACE, "--ignore-not-found", "--wait=true"
    )
    steps = [{"weight": 20, "hold": "6s"}, {"weight": 100, "hold": "6s"}]
    body = rollout_body(SERVICE, steps, [error_rate_slo("6s", "10s")], revision="kind-helm")
    r = Rollout(kind_cluster, NAMESPACE, SERVICE, body, SERVICE)
    r.set_weights(100, 0)  # where the kustomize scenario left it: 0/100
    r.apply()
    uid = r.get()["metadata"]["uid"]
    seen: set[tuple[int, int]] = set()

    def promoted() -> bool:
        seen.add(r.weights())
        return r.phase() == "Promoted"

    started = time.monotonic()
    wait_for("Promoted", promoted, timeout=120)
    FIGURES.append(f"chart install: created to Promoted {time.monotonic() - started:.1f} s")
    assert r.weights() == (0, 100)
    assert (80, 20) in seen, seen
    status = r.status()
    assert "page" not in status and "rollback" not in status
    events: list[dict[str, Any]] = [e for e in r.events() if e["involvedObject"]["uid"] == uid]
    reasons = [e["reason"] for e in events]
    assert reasons.count("StepAdvanced") == 1, reasons
    assert reasons.count("Promoted") == 1, reasons
    assert "RolledBack" not in reasons
    # The decisions came from a chart Pod: its log has them.
    logs = [
        kind_cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, name).stdout
        for name in chart_installed
    ]
    decisions = [
        line
        for log in logs
        for line in log.splitlines()
        if "decision" in line and SERVICE in line and "Promoted" in line
    ]
    assert decisions, "no Promoted decision in the chart Pods' logs"
