"""The local control plane itself: the pinned release answers, the Istio CRDs keep real Istio
objects intact, RBAC applies to ServiceAccount kubeconfigs, and stopping leaves nothing."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from canaryguard_testbed.bins import MissingBinaryError, read_versions
from canaryguard_testbed.controlplane import ControlPlane, KubectlError

SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)

# The shape of Istio's bookinfo `reviews` routing: a header-matched route before a weighted
# catch-all, with the fields an operator must leave alone around the weights it drives.
REVIEWS_VS: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews"},
    "spec": {
        "hosts": ["reviews"],
        "gateways": ["mesh"],
        "http": [
            {
                "name": "jason",
                "match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/"}}],
                "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
            },
            {
                "name": "primary",
                "route": [
                    {
                        "destination": {
                            "host": "reviews",
                            "subset": "v1",
                            "port": {"number": 9080},
                        },
                        "weight": 90,
                        "headers": {"response": {"set": {"x-version": "v1"}}},
                    },
                    {
                        "destination": {
                            "host": "reviews",
                            "subset": "v2",
                            "port": {"number": 9080},
                        },
                        "weight": 10,
                    },
                ],
                "timeout": "10s",
                "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,reset"},
                "mirror": {"host": "reviews-shadow", "subset": "v3"},
                "mirrorPercentage": {"value": 5.5},
                "fault": {"delay": {"percentage": {"value": 0.1}, "fixedDelay": "5s"}},
                "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "maxAge": "24h"},
            },
        ],
    },
}

REVIEWS_DR: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "reviews"},
    "spec": {
        "host": "reviews",
        "trafficPolicy": {
            "loadBalancer": {"simple": "RANDOM"},
            "connectionPool": {"http": {"http1MaxPendingRequests": 100}},
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {
                "name": "v2",
                "labels": {"version": "v2"},
                "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
            },
            {"name": "v3", "labels": {"version": "v3"}},
        ],
    },
}


def _apply(cp: ControlPlane, namespace: str, obj: dict[str, Any]) -> None:
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def _get(cp: ControlPlane, namespace: str, resource: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "-n", namespace, resource, name, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def test_version_is_the_pinned_release(control_plane: ControlPlane) -> None:
    pinned = read_versions().kube
    with control_plane.api_client() as client:
        info = kubernetes.client.VersionApi(client).get_code()
    assert info.git_version == pinned
    assert SEMVER.match(info.git_version)
    assert (info.major, info.minor) == ("1", pinned.split(".")[1])
    assert info.git_tree_state == "clean"
    both = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert both["clientVersion"]["gitVersion"] == pinned
    assert both["serverVersion"]["gitVersion"] == pinned


def test_virtualservice_round_trips_every_field(
    control_plane: ControlPlane, namespace: str
) -> None:
    _apply(control_plane, namespace, REVIEWS_VS)
    stored = _get(control_plane, namespace, "virtualservices.v1.networking.istio.io", "reviews")
    assert stored["spec"] == REVIEWS_VS["spec"]
    weights = [r["weight"] for r in stored["spec"]["http"][1]["route"]]
    assert weights == [90, 10]
    # The older served versions and the short name read the same object.
    for resource in ("virtualservices.v1beta1.networking.istio.io", "vs"):
        assert _get(control_plane, namespace, resource, "reviews")["spec"] == REVIEWS_VS["spec"]
    alpha = _get(
        control_plane, namespace, "virtualservices.v1alpha3.networking.istio.io", "reviews"
    )
    assert alpha["apiVersion"] == "networking.istio.io/v1alpha3"
    assert alpha["spec"] == REVIEWS_VS["spec"]


def test_virtualservice_weights_patch_and_status(
    control_plane: ControlPlane, namespace: str
) -> None:
    _apply(control_plane, namespace, REVIEWS_VS)
    patch = [
        {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 50},
        {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 50},
    ]
    control_plane.kubectl(
        "patch", "-n", namespace, "vs", "reviews", "--type=json", f"-p={json.dumps(patch)}"
    )
    with control_plane.api_client() as client:
        api = kubernetes.client.CustomObjectsApi(client)
        vs = cast(
            dict[str, Any],
            api.get_namespaced_custom_object(
                "networking.istio.io", "v1", namespace, "virtualservices", "reviews"
            ),
        )
        # Free-form status through the status subresource, as istiod writes it.
        api.patch_namespaced_custom_object_status(
            "networking.istio.io",
            "v1",
            namespace,
            "virtualservices",
            "reviews",
            {"status": {"observedGeneration": vs["metadata"]["generation"]}},
        )
        vs = cast(
            dict[str, Any],
            api.get_namespaced_custom_object(
                "networking.istio.io", "v1", namespace, "virtualservices", "reviews"
            ),
        )
    assert [r["weight"] for r in vs["spec"]["http"][1]["route"]] == [50, 50]
    assert vs["spec"]["http"][0] == REVIEWS_VS["spec"]["http"][0]
    assert vs["status"] == {"observedGeneration": vs["metadata"]["generation"]}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # Istio's schema types the weight (int32) but sets no minimum: a negative weight is
        # refused by istiod's validating webhook, which does not run here.
        ("/spec/http/1/route/0/weight", "ninety", 'Invalid value: "string"'),
        ("/spec/http/1/timeout", "soon", "must be a valid duration"),
        ("/spec/http/0/match/0/uri", {"exact": "/a", "prefix": "/"}, "oneOf"),
    ],
)
def test_virtualservice_schema_rejects_invalid(
    control_plane: ControlPlane, namespace: str, path: str, value: Any, message: str
) -> None:
    bad = json.loads(json.dumps(REVIEWS_VS))
    node = bad
    *parents, leaf = path.strip("/").split("/")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[leaf] = value
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_destinationrule_applies(control_plane: ControlPlane, namespace: str) -> None:
    _apply(control_plane, namespace, REVIEWS_DR)
    stored = _get(control_plane, namespace, "dr", "reviews")
    assert stored["spec"] == REVIEWS_DR["spec"]
    table = control_plane.kubectl("get", "-n", namespace, "destinationrules").stdout
    assert re.search(r"^reviews\s+reviews\s", table, re.MULTILINE), table
    missing_host = {**REVIEWS_DR, "spec": {"subsets": REVIEWS_DR["spec"]["subsets"]}}
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(missing_host), check=False
    )
    assert result.returncode != 0
    assert "spec.host: Required value" in result.stderr


def _can_list_virtualservices(client: kubernetes.client.ApiClient, namespace: str) -> bool:
    api = kubernetes.client.CustomObjectsApi(client)
    try:
        api.list_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices")
    except ApiException as exc:
        if exc.status == 403:
            return False
        raise
    return True


def test_service_account_kubeconfig_follows_rbac(
    control_plane: ControlPlane, namespace: str
) -> None:
    _apply(control_plane, namespace, REVIEWS_VS)
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "router")
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    who = json.loads(
        control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout
    )
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:router"

    # No Role yet: denied, through kubectl and through the Python client alike.
    denied = control_plane.kubectl("get", "-n", namespace, "vs", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and "virtualservices" in denied.stderr
    with control_plane.api_client(kubeconfig) as sa_client:
        assert not _can_list_virtualservices(sa_client, namespace)

    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "vs-weights"},
        "rules": [
            {
                "apiGroups": ["networking.istio.io"],
                "resources": ["virtualservices"],
                "verbs": ["get", "list", "watch", "patch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "vs-weights"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vs-weights"},
        "subjects": [{"kind": "ServiceAccount", "name": "router", "namespace": namespace}],
    }
    _apply(control_plane, namespace, role)
    _apply(control_plane, namespace, binding)

    # The RBAC authorizer reads through an informer: allow it a moment to see the binding.
    with control_plane.api_client(kubeconfig) as sa_client:
        deadline = time.monotonic() + 10
        while not _can_list_virtualservices(sa_client, namespace):
            assert time.monotonic() < deadline, "RoleBinding never took effect"
            time.sleep(0.1)
    sa = ["-n", namespace]
    patch = '{"spec":{"http":[{"name":"only","route":[{"destination":{"host":"reviews"}}]}]}}'
    control_plane.kubectl(
        *sa, "patch", "vs", "reviews", "--type=merge", "-p", patch, kubeconfig=kubeconfig
    )
    for forbidden in (
        [*sa, "delete", "vs", "reviews"],
        [*sa, "get", "secrets"],
        [*sa, "get", "destinationrules"],
        ["get", "vs", "-n", "default"],
        ["get", "namespaces"],
    ):
        result = control_plane.kubectl(*forbidden, kubeconfig=kubeconfig, check=False)
        assert result.returncode != 0, forbidden
        assert "Forbidden" in result.stderr, (forbidden, result.stderr)


def test_kubectl_failure_carries_stderr(control_plane: ControlPlane) -> None:
    with pytest.raises(KubectlError) as raised:
        control_plane.kubectl("get", "namespace", "does-not-exist")
    assert 'namespaces "does-not-exist" not found' in str(raised.value)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


def test_stop_leaves_no_process_and_no_temp_dir() -> None:
    cp = ControlPlane()
    began = time.monotonic()
    cp.start()
    startup = time.monotonic() - began
    workdir = cp.workdir
    pids = cp.pids()
    assert len(pids) == 2
    assert _processes_mentioning(str(workdir))
    print(f"control plane start-up: {startup:.2f} s")  # shown with -s; figures for the notes

    cp.stop()
    cp.stop()  # idempotent
    assert not workdir.exists()
    assert _processes_mentioning(str(workdir)) == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_missing_binary_names_make_bins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CANARYGUARD_BIN_DIR", str(tmp_path / "empty"))
    cp = ControlPlane()
    with pytest.raises(MissingBinaryError, match="make bins"):
        cp.start()
    cp.stop()


def test_admin_kubeconfig_is_self_contained(control_plane: ControlPlane) -> None:
    config = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == control_plane.server
    assert control_plane.server.startswith("https://127.0.0.1:")
    with control_plane.api_client() as client:
        review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
            kubernetes.client.V1SelfSubjectReview()
        )
    assert review.status is not None and review.status.user_info is not None
    assert review.status.user_info.username == "admin"
    assert "system:masters" in (review.status.user_info.groups or [])


EXAMPLE_ROLLOUT = Path(__file__).resolve().parents[2] / "examples/fraud-model/canaryrollout.yaml"


def _rollout_in(namespace: str) -> dict[str, Any]:
    rollout: dict[str, Any] = yaml.safe_load(EXAMPLE_ROLLOUT.read_text())
    rollout["metadata"]["namespace"] = namespace
    return rollout


def _contains(actual: Any, expected: Any) -> bool:
    """Every field of `expected` is in `actual` with the same value (the CRD may add defaults)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


def test_example_canaryrollout_applies_and_reads_back(
    control_plane: ControlPlane, namespace: str
) -> None:
    rollout = _rollout_in(namespace)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(rollout))
    stored = _get(control_plane, namespace, "canaryrollouts.canaryguard.io", "fraud-model")
    assert _contains(stored["spec"], rollout["spec"]), stored["spec"]
    assert _get(control_plane, namespace, "cro", "fraud-model")["spec"] == stored["spec"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["steps"].pop(), "the last step's weight must be 100"),
        (lambda s: s["steps"].reverse(), "step weights must be strictly increasing"),
        (lambda s: s.pop("steps"), "spec.steps: Required value"),
    ],
    ids=["last-step-not-100", "weights-decreasing", "no-steps"],
)
def test_invalid_canaryrollout_is_rejected_with_a_clear_message(
    control_plane: ControlPlane, namespace: str, change: Any, message: str
) -> None:
    rollout = _rollout_in(namespace)
    change(rollout["spec"])
    result = control_plane.kubectl("apply", "-f", "-", input=json.dumps(rollout), check=False)
    assert result.returncode != 0
    assert 'The CanaryRollout "fraud-model" is invalid' in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    missing = control_plane.kubectl("get", "-n", namespace, "cro", "fraud-model", check=False)
    assert "NotFound" in missing.stderr


NO_ROUTE_SCRIPT = """
import subprocess, time
from canaryguard_testbed.controlplane import ControlPlane
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with ControlPlane() as cp:
    jsonpath = "jsonpath={.subsets[0].addresses[0].ip}"
    deadline = time.monotonic() + 20
    ip = ""
    while not ip and time.monotonic() < deadline:  # the endpoint reconciler runs after /readyz
        get = cp.kubectl("get", "endpoints", "kubernetes", "-o", jsonpath, check=False)
        ip = get.stdout.strip()
        time.sleep(0.2)
    print(ip)
"""


def test_starts_in_a_network_namespace_without_default_route() -> None:
    # kube-apiserver refuses to start without a default route unless told what to advertise.
    result = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", NO_ROUTE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "192.0.2.1", result.stderr[-2000:]
