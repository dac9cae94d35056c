"""The install manifests, rendered by kubectl's kustomize and sent to a real API server.

Cluster-scoped objects (Namespace, CRD, ClusterRole, ClusterRoleBinding) go through a
server-side dry run, so the shared control plane keeps the RBAC other tests run under; the
namespaced ones are applied for real into the test's namespace. The ServiceMonitor and
PrometheusRule are checked against a typed subset of the Prometheus Operator's CRDs with
strict field validation, and the operator's pod against Pod Security "restricted".
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from canaryguard.cli.main import build_parser
from canaryguard.cli.run import election_from
from canaryguard.core.access import Address, parse_address
from canaryguard.core.paging import DEFAULT_EVENTS_URL
from canaryguard_testbed.controlplane import ControlPlane, KubectlError
from tests.integration.kustomize import Obj, one, operator_args, render

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
WITH_MONITORING = ROOT / "examples/install-with-monitoring"
NAMESPACED = ROOT / "examples/install-namespaced"
CRD_FILE = ROOT / "crds/canaryrollout.yaml"
PROMETHEUS_OPERATOR_CRDS = Path(__file__).parent / "data/prometheus-operator-crds.yaml"
SYSTEM_NAMESPACE = "canaryguard-system"
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def apply(cp: ControlPlane, objs: list[Obj], *flags: str) -> str:
    """Server-side apply with strict field validation; returns kubectl's output."""
    doc = yaml.safe_dump_all(objs)
    args = ["apply", "--server-side", "--field-manager=canaryguard-tests", "--validate=strict"]
    return cp.kubectl(*args, *flags, "-f", "-", input=doc).stdout


def into(namespace: str, objs: list[Obj]) -> list[Obj]:
    moved = copy.deepcopy(objs)
    for obj in moved:
        obj["metadata"]["namespace"] = namespace
    return moved


@pytest.fixture(scope="module")
def base(control_plane: ControlPlane) -> list[Obj]:
    return render(control_plane, MANIFESTS)


# --- what the base holds --------------------------------------------------------------------


def test_the_base_installs_namespace_crd_rbac_operator_and_metrics_service(
    base: list[Obj],
) -> None:
    kinds = sorted(o["kind"] for o in base)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    assert one(base, "Namespace")["metadata"]["name"] == SYSTEM_NAMESPACE
    for obj in base:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == SYSTEM_NAMESPACE, obj["kind"]


def test_the_base_ships_the_crd_the_operator_and_tests_use(base: list[Obj]) -> None:
    shipped = one(base, "CustomResourceDefinition")
    source = yaml.safe_load(CRD_FILE.read_text())
    assert shipped["spec"] == source["spec"]
    assert shipped["metadata"]["name"] == source["metadata"]["name"]


def test_the_operator_deployment_is_locked_down(base: list[Obj]) -> None:
    deployment = one(base, "Deployment", "canaryguard")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(base, "ServiceAccount")["metadata"]["name"]
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert isinstance(pod_security["runAsUser"], int) and pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security or security["privileged"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys(), kind
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_the_container_runs_the_operator_with_probe_and_metrics_where_the_manifests_look(
    base: list[Obj],
) -> None:
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["canaryguard"]
    args = build_parser().parse_args(operator_args(base))
    assert args.command == "run"
    assert args.all_namespaces is True
    assert args.log_format == "json"
    # Rollouts may use the in-cluster Prometheus and PagerDuty's public Events API, no more.
    assert args.allow_prometheus == [Address("http", "prometheus.monitoring", 9090)]
    assert args.allow_pagerduty == [parse_address(DEFAULT_EVENTS_URL)]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"  # kopf's liveness endpoint
    assert ports[probe["port"]] == args.liveness[1] == 8080
    assert args.liveness[0] == "0.0.0.0"  # noqa: S104 - the kubelet probes the pod's IP
    service = one(base, "Service")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9095
    assert ports[port["targetPort"]] == args.metrics[1] == 9095
    labels = one(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_rbac_binds_the_operators_account_and_uses_no_wildcard(base: list[Obj]) -> None:
    account = one(base, "ServiceAccount")
    binding = one(base, "ClusterRoleBinding")
    role = one(base, "ClusterRole")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert role["rules"]
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            values = rule.get(field, [])
            assert not any("*" in v for v in values), f"wildcard in {field}: {rule}"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


# --- two replicas, one leading ----------------------------------------------------------------


def test_two_replicas_one_per_node_where_possible_and_never_both_evicted_at_once(
    base: list[Obj],
) -> None:
    deployment = one(base, "Deployment", "canaryguard")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    # A new replica is up before an old one goes: an upgrade never leaves none.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    labels = spec["template"]["metadata"]["labels"]
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    )
    budget = one(base, "PodDisruptionBudget", "canaryguard")
    assert budget["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": spec["selector"]["matchLabels"]},
    }
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < spec["replicas"]  # a drain can still proceed


def test_the_replicas_elect_a_leader_on_a_lease_their_role_allows(
    base: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = one(base, "Deployment", "canaryguard")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container["env"]
        if "fieldRef" in e["valueFrom"]
    }
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    # What the downward API gives the pod, then what `canaryguard run` makes of it.
    monkeypatch.setenv("POD_NAME", "canaryguard-5d8f7c9b4-x2x9q")
    monkeypatch.setenv("POD_NAMESPACE", deployment["metadata"]["namespace"])
    election = election_from(build_parser().parse_args(operator_args(base)))
    assert election is not None
    assert election.identity == "canaryguard-5d8f7c9b4-x2x9q"
    assert election.lease_duration == 15
    role = one(base, "Role", "canaryguard-leader-election")
    assert election.namespace == role["metadata"]["namespace"] == SYSTEM_NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [election.name],
            "verbs": ["get", "update"],
        },
    ]
    binding = one(base, "RoleBinding", "canaryguard-leader-election")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one(base, "ServiceAccount")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    # Leases are not in the ClusterRole: no replica can touch another namespace's Leases.
    cluster_role = one(base, "ClusterRole")
    assert not [r for r in cluster_role["rules"] if "coordination.k8s.io" in r["apiGroups"]]


def test_a_standby_is_live_and_ready_on_the_same_endpoint(base: list[Obj]) -> None:
    (container,) = one(base, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == container["livenessProbe"]["httpGet"]


def test_the_shipped_rbac_allows_the_lease_and_nothing_more_on_leases(
    control_plane: ControlPlane, operator_kubeconfig: Path
) -> None:
    account = f"system:serviceaccount:{SYSTEM_NAMESPACE}:canaryguard"

    def can(verb: str, what: str, namespace: str) -> bool:
        result = control_plane.kubectl(
            "auth", "can-i", verb, what, "-n", namespace, f"--as={account}", check=False
        )
        return result.stdout.strip() == "yes"

    assert can("create", "leases.coordination.k8s.io", SYSTEM_NAMESPACE)
    for verb in ("get", "update"):
        assert can(verb, "leases.coordination.k8s.io/canaryguard", SYSTEM_NAMESPACE), verb
        assert not can(verb, "leases.coordination.k8s.io/other", SYSTEM_NAMESPACE), verb
        assert not can(verb, "leases.coordination.k8s.io/canaryguard", "default"), verb
    for verb in ("delete", "patch", "list", "watch"):
        assert not can(verb, "leases.coordination.k8s.io/canaryguard", SYSTEM_NAMESPACE), verb
    assert not can("create", "leases.coordination.k8s.io", "kube-system")


# --- the API server accepts it --------------------------------------------------------------


def test_every_object_of_the_base_is_accepted_by_the_api_server(
    control_plane: ControlPlane, namespace: str, base: list[Obj]
) -> None:
    cluster = [o for o in base if o["kind"] in CLUSTER_SCOPED]
    namespaced = [o for o in base if o["kind"] not in CLUSTER_SCOPED]
    out = apply(control_plane, cluster, "--dry-run=server")
    assert out.count("serverside-applied") == len(cluster), out
    out = apply(control_plane, into(namespace, namespaced))
    assert out.count("serverside-applied") == len(namespaced), out
    stored = json.loads(
        control_plane.kubectl(
            "get", "deployment", "canaryguard", "-n", namespace, "-o", "json"
        ).stdout
    )
    assert stored["spec"]["replicas"] == 2
    assert stored["spec"]["strategy"]["type"] == "RollingUpdate"
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "canaryguard:0.1.0"


def test_the_operator_pod_passes_pod_security_restricted(
    control_plane: ControlPlane, namespace: str, base: list[Obj]
) -> None:
    for key, value in one(base, "Namespace")["metadata"]["labels"].items():
        if key.startswith("pod-security.kubernetes.io/"):
            control_plane.kubectl("label", "namespace", namespace, f"{key}={value}")
    template = one(base, "Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "canaryguard-pod-security", "namespace": namespace},
        "spec": template["spec"],
    }
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    # The control: the same pod without its security settings is refused here.
    loose = copy.deepcopy(pod)
    loose["spec"].pop("securityContext")
    for container in loose["spec"]["containers"]:
        container.pop("securityContext")
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(loose), check=False
    )
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


# --- the namespace-scoped install -----------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced(control_plane: ControlPlane) -> list[Obj]:
    return render(control_plane, NAMESPACED)


def test_the_namespaced_install_has_roles_in_the_watched_namespace_and_no_cluster_role(
    base: list[Obj], namespaced: list[Obj]
) -> None:
    kinds = sorted(o["kind"] for o in namespaced)
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    # The leader election's Role (in the operator's namespace) is the base's, unchanged.
    election = ("canaryguard-leader-election",)
    for kind in ("Role", "RoleBinding"):
        assert one(namespaced, kind, *election) == one(base, kind, *election)
    role, binding = (
        one(namespaced, "Role", "canaryguard"),
        one(namespaced, "RoleBinding", "canaryguard"),
    )
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ml"
    # The same rules as the cluster-wide install, granted in the watched namespace only.
    assert role["rules"] == one(base, "ClusterRole")["rules"]
    account = one(namespaced, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    args = build_parser().parse_args(operator_args(namespaced))
    assert (args.namespace, args.all_namespaces) == (["ml"], False)
    # Everything else is the base's: same operator, same allowlist, same lockdown.
    assert operator_args(namespaced) == [
        "--namespace=ml" if a == "--all-namespaces" else a for a in operator_args(base)
    ]
    own = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Deployment")
    assert [o for o in namespaced if o["kind"] not in own] == [
        o for o in base if o["kind"] not in own
    ]


def test_every_object_of_the_namespaced_install_is_accepted_by_the_api_server(
    control_plane: ControlPlane, namespace: str, namespaced: list[Obj]
) -> None:
    cluster = [o for o in namespaced if o["kind"] in CLUSTER_SCOPED]
    rest = [o for o in namespaced if o["kind"] not in CLUSTER_SCOPED]
    out = apply(control_plane, cluster, "--dry-run=server")
    assert out.count("serverside-applied") == len(cluster), out
    out = apply(control_plane, into(namespace, rest))
    assert out.count("serverside-applied") == len(rest), out


# --- the optional components ----------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring_crds(control_plane: ControlPlane) -> None:
    control_plane.install_crds(PROMETHEUS_OPERATOR_CRDS)


def test_the_monitoring_example_adds_servicemonitor_rules_and_dashboard(
    control_plane: ControlPlane, base: list[Obj]
) -> None:
    full = render(control_plane, WITH_MONITORING)
    extra = sorted(o["kind"] for o in full if o not in base)
    assert extra == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    monitor = one(full, "ServiceMonitor")
    service = one(full, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    dashboard = one(full, "ConfigMap", "canaryguard-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (MANIFESTS / "grafana/canaryguard-dashboard.json").read_text()
    assert json.loads(dashboard["data"]["canaryguard-dashboard.json"]) == json.loads(shipped)


def test_servicemonitor_and_prometheusrule_are_accepted_with_strict_validation(
    control_plane: ControlPlane, namespace: str, monitoring_crds: None, base: list[Obj]
) -> None:
    full = render(control_plane, WITH_MONITORING)
    wanted = [o for o in full if o not in base]
    out = apply(control_plane, into(namespace, wanted), "--dry-run=server")
    assert out.count("serverside-applied") == 3, out
    # The control: a misspelt field is an error, not silently dropped.
    broken = into(namespace, [one(full, "ServiceMonitor")])
    broken[0]["spec"]["endpoints"][0]["interva1"] = "30s"
    with pytest.raises(KubectlError, match="interva1"):
        apply(control_plane, broken, "--dry-run=server")
