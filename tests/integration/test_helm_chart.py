"""The Helm chart (manifests/helm/canaryguard), checked with the helm built from its Go module
(`make bins`): `helm lint`, `helm template | kubectl apply --dry-run=server` against the local
API server, and the rendered objects against the kustomize base they must equal (the base,
examples/install-namespaced and examples/install-with-monitoring, rendered by kubectl's
kustomize), apart from Helm's own labels, the allowlist ConfigMap's name (kustomize appends a
hash of its content; the chart restarts the Pods through an annotation instead) and the
Namespace, which `helm install` cannot own.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard_testbed import bins
from canaryguard_testbed.controlplane import ControlPlane
from tests.integration.kustomize import Obj, one, operator_args, render
from tests.kind import stack

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "manifests/helm/canaryguard"
MANIFESTS = ROOT / "manifests"
NAMESPACED = ROOT / "examples/install-namespaced"
WITH_MONITORING = ROOT / "examples/install-with-monitoring"
CRD_FILE = ROOT / "crds/canaryrollout.yaml"
PROMETHEUS_OPERATOR_CRDS = Path(__file__).parent / "data/prometheus-operator-crds.yaml"
SYSTEM_NAMESPACE = "canaryguard-system"
HELM_LABELS = {"app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "helm.sh/chart"}
ALLOWLIST = "canaryguard-allowlist"
# kubectl's kustomize gives the admission policy and its binding the base's namespace (its
# schema does not know them as cluster-scoped); the API server ignores it.
CLUSTER_SCOPED = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def helm_version() -> str:
    """The pin in this checkout's hack/versions.env (the binaries' folder is shared)."""
    text = (ROOT / "hack/versions.env").read_text()
    match = re.search(r"^HELM_VERSION=(\S+)$", text, re.MULTILINE)
    assert match, "no HELM_VERSION in hack/versions.env"
    return match.group(1)


@pytest.fixture(scope="module")
def helm() -> Path:
    return bins.find_binary("helm", helm_version())


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


def template(helm: Path, *sets: str, namespace: str = SYSTEM_NAMESPACE, crds: bool = False) -> str:
    """`helm template canaryguard CHART -n NAMESPACE --set ...`, as YAML text."""
    args = ["template", "canaryguard", str(CHART), "-n", namespace]
    if crds:
        args.append("--include-crds")
    for value in sets:
        args += ["--set", value]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def comparable(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    """Objects keyed by kind, namespace and name, without what may differ between the chart
    and kustomize: Helm's labels, the allowlist's hash suffix and the chart's checksum."""
    out = {}
    for original in objs:
        obj = copy.deepcopy(original)
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED:
            meta.pop("namespace", None)
        # part-of: the chart puts it on every template, kustomize on the base's objects but
        # not on those a component adds; Helm installs crds/ as written, unlabelled.
        for key in (*HELM_LABELS, "app.kubernetes.io/part-of"):
            meta.get("labels", {}).pop(key, None)
        if not meta.get("labels", True):
            del meta["labels"]
        if obj["kind"] == "ConfigMap" and meta["name"].startswith(f"{ALLOWLIST}-"):
            meta["name"] = ALLOWLIST
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]
            pod["metadata"].get("annotations", {}).pop("checksum/allowlist", None)
            if not pod["metadata"].get("annotations", True):
                del pod["metadata"]["annotations"]
            for container in pod["spec"]["containers"]:
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("configMapKeyRef")
                    if ref and ref["name"].startswith(f"{ALLOWLIST}-"):
                        ref["name"] = ALLOWLIST
        out[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return out


def assert_same(chart: list[Obj], kustomize: list[Obj]) -> None:
    ours, theirs = comparable(chart), comparable(kustomize)
    assert sorted(ours) == sorted(theirs)
    for key, obj in theirs.items():
        assert ours[key] == obj, key


@pytest.fixture(scope="module")
def monitoring_crds(control_plane: ControlPlane) -> None:
    control_plane.install_crds(PROMETHEUS_OPERATOR_CRDS)


# --- helm lint --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("watchNamespaces={ml,payments}", "replicas=1"),
        ("serviceMonitor.enabled=true", "prometheusRule.enabled=true", "namespace.create=true"),
    ],
    ids=["defaults", "namespaced-one-replica", "monitoring"],
)
def test_helm_lint_passes_strict(helm: Path, sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART), "-n", SYSTEM_NAMESPACE]
    for value in sets:
        args += ["--set", value]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_lint_fails_on_a_broken_template(helm: Path, tmp_path: Path) -> None:
    """The control: lint does read the templates."""
    broken = tmp_path / "canaryguard"
    for path in CHART.rglob("*"):
        target = broken / path.relative_to(CHART)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())  # links read through
    service = broken / "templates/service.yaml"
    service.write_text(service.read_text().replace("{{- include", "{{- inclde", 1))
    result = run_helm(helm, "lint", "--strict", str(broken))
    assert result.returncode != 0
    assert "inclde" in result.stdout + result.stderr


# --- the same objects as the kustomize base ---------------------------------------------------


def test_the_chart_renders_the_objects_of_the_kustomize_base(
    helm: Path, control_plane: ControlPlane
) -> None:
    chart = objects(template(helm, "namespace.create=true", crds=True))
    assert_same(chart, render(control_plane, MANIFESTS))
    # The CRD is the one file in crds/, linked into the chart's crds/ (installed by helm
    # before the templates, never deleted by `helm uninstall`).
    crd = one(chart, "CustomResourceDefinition")
    assert crd == yaml.safe_load(CRD_FILE.read_text())
    # Helm's labels and part-of on every templated object; the image is the base's.
    for obj in chart:
        if obj["kind"] != "CustomResourceDefinition":
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "Helm", obj
            assert labels["app.kubernetes.io/part-of"] == "canaryguard", obj
    (container,) = one(chart, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "canaryguard:0.1.0"


def test_without_namespace_create_the_chart_leaves_the_namespace_to_helm_install(
    helm: Path,
) -> None:
    kinds = [o["kind"] for o in objects(template(helm))]
    assert "Namespace" not in kinds
    assert "CustomResourceDefinition" not in kinds  # crds/ is not a template
    assert "Deployment" in kinds


def test_watch_namespaces_renders_the_namespaced_install(
    helm: Path, control_plane: ControlPlane
) -> None:
    chart = objects(template(helm, "namespace.create=true", "watchNamespaces={ml}", crds=True))
    assert_same(chart, render(control_plane, NAMESPACED))


def test_several_watched_namespaces_get_a_role_each_and_a_flag_each(helm: Path) -> None:
    chart = objects(template(helm, "watchNamespaces={ml,payments}"))
    kinds = [o["kind"] for o in chart]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    roles = {o["metadata"]["namespace"]: o for o in chart if o["kind"] == "Role"}
    assert sorted(roles) == ["canaryguard-system", "ml", "payments"]
    assert roles["ml"]["rules"] == roles["payments"]["rules"]
    bindings = [o for o in chart if o["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(roles)
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "canaryguard", "namespace": SYSTEM_NAMESPACE}
        ]
    args = operator_args(chart)
    assert args[:3] == ["run", "--namespace=ml", "--namespace=payments"]
    assert "--all-namespaces" not in args


def test_the_monitoring_values_render_the_monitoring_example(
    helm: Path, control_plane: ControlPlane
) -> None:
    chart = objects(
        template(
            helm,
            "namespace.create=true",
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "grafanaDashboard.enabled=true",
            crds=True,
        )
    )
    kustomized = render(control_plane, WITH_MONITORING)
    # The PrometheusRule's spec is compared with its source: kubectl's kustomize re-folds the
    # `>-` scalars of two alerts' expressions with a blank line in them (same PromQL).
    rule = one(chart, "PrometheusRule")
    source = yaml.safe_load(
        (MANIFESTS / "components/prometheusrule/prometheusrule.yaml").read_text()
    )
    assert rule["spec"] == source["spec"]
    one(kustomized, "PrometheusRule")["spec"] = rule["spec"]
    assert_same(chart, kustomized)
    # The alerts' own templates ({{ $labels.kind }}) are not Helm's to expand.
    text = json.dumps(rule)
    assert "{{ $labels.kind }}" in text and "{{ $value | humanize }}" in text


def test_values_set_image_replicas_resources_and_monitoring_labels(helm: Path) -> None:
    chart = objects(
        template(
            helm,
            "image.repository=team/canaryguard",
            "image.tag=0.1.0-rc1",
            "replicas=3",
            "resources.limits.memory=1Gi",
            "allowlist.prometheus=http://prometheus.obs:9090",
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=kube-prometheus-stack",
        )
    )
    deployment = one(chart, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "team/canaryguard:0.1.0-rc1"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert "--allow-prometheus=http://prometheus.obs:9090" in operator_args(chart)
    monitor = one(chart, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert one(chart, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_one_replica_has_no_disruption_budget_that_would_block_every_drain(helm: Path) -> None:
    chart = objects(template(helm, "replicas=1"))
    assert one(chart, "Deployment")["spec"]["replicas"] == 1
    assert "PodDisruptionBudget" not in [o["kind"] for o in chart]


def test_a_changed_allowlist_changes_the_pod_template(helm: Path) -> None:
    """What kustomize's hashed ConfigMap name does: a new allowlist restarts the Pods."""

    def checksum(*sets: str) -> Any:
        pod = one(objects(template(helm, *sets)), "Deployment")["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/allowlist"]

    assert checksum() == checksum()
    assert checksum() != checksum("allowlist.pagerduty=http://pagerduty.e2e:8080/v2/enqueue")


# --- the API server accepts it ----------------------------------------------------------------


@pytest.mark.parametrize(
    "sets",
    [
        (),
        (
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "grafanaDashboard.enabled=true",
        ),
    ],
    ids=["defaults", "monitoring"],
)
def test_helm_template_is_accepted_by_the_api_server_in_a_dry_run(
    helm: Path,
    control_plane: ControlPlane,
    namespace: str,
    monitoring_crds: None,
    sets: tuple[str, ...],
) -> None:
    text = template(helm, *sets, namespace=namespace, crds=True)
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text, check=False
    )
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(objects(text)), result.stdout


def test_the_api_server_refuses_a_chart_rendered_with_a_bad_value(
    helm: Path, control_plane: ControlPlane, namespace: str
) -> None:
    """The control: the dry run does validate what the chart renders."""
    text = template(helm, "replicas=-1", namespace=namespace)
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text, check=False
    )
    assert result.returncode != 0
    assert "replicas" in result.stderr


def test_the_kind_tiers_chart_install_is_its_kustomize_install(
    helm: Path, control_plane: ControlPlane
) -> None:
    """The kind tier installs once with the overlay and once with the chart and the same
    allowlist (tests/kind/stack.py): both are the same objects."""
    chart = objects(
        template(
            helm,
            "namespace.create=true",
            f"allowlist.prometheus={stack.PROMETHEUS_URL}",
            f"allowlist.pagerduty={stack.PAGERDUTY_URL}",
            crds=True,
        )
    )
    assert_same(chart, render(control_plane, stack.INSTALL))
