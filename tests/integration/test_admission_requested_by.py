"""Who asked for a manual promote or abort is what the API server authenticated: the shipped
ValidatingAdmissionPolicy (manifests/admission) on the real API server refuses a request
annotation whose canaryguard.io/requested-by is not the requesting user, and the CLI writes
the right one. Run as a tenant ServiceAccount allowed to patch CanaryRollouts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from canaryguard.cli.main import main as cli
from canaryguard.core.manual import REQUEST_ANNOTATION, REQUESTED_BY_ANNOTATION, parse_request
from canaryguard_testbed.bins import find_binaries
from canaryguard_testbed.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fraud-model" / "canaryrollout.yaml"


@pytest.fixture
def tenant(control_plane: ControlPlane, namespace: str) -> Path:
    """A kubeconfig of ServiceAccount `tenant`, which may read and patch CanaryRollouts of
    the test's namespace (what `kubectl canary promote|abort` needs) and nothing else."""
    control_plane.kubectl(
        "apply",
        "--server-side",
        "--field-manager=canaryguard-tests",
        "--force-conflicts",
        "-f",
        str(ROOT / "manifests" / "admission"),
    )
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "rollout-requests", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["canaryguard.io"],
                    "resources": ["canaryrollouts"],
                    "verbs": ["get", "list", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "rollout-requests", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "rollout-requests",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
        },
    ]
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "tenant")
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac})
    )
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(body))
    return kubeconfig


def as_tenant(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = find_binaries().kubectl
    return subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def annotations(cp: ControlPlane, namespace: str) -> dict[str, str]:
    out = cp.kubectl("get", "canaryrollout", "fraud-model", "-n", namespace, "-o=json")
    found: dict[str, str] = json.loads(out.stdout)["metadata"].get("annotations") or {}
    return found


def test_a_request_signed_with_another_name_is_refused_by_the_api_server(
    control_plane: ControlPlane, namespace: str, tenant: Path
) -> None:
    me = f"system:serviceaccount:{namespace}:tenant"
    request = json.dumps({"action": "abort", "id": "a1"})

    def annotate(*pairs: str) -> subprocess.CompletedProcess[str]:
        return as_tenant(
            tenant,
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            "canaryrollout",
            "fraud-model",
            *pairs,
        )

    forged = annotate(f"{REQUEST_ANNOTATION}={request}", f"{REQUESTED_BY_ANNOTATION}=alice")
    assert forged.returncode != 0
    assert "canaryguard-requested-by" in forged.stderr
    assert f'set it to "{me}"' in forged.stderr
    unsigned = annotate(f"{REQUEST_ANNOTATION}={request}")
    assert unsigned.returncode != 0 and "requested-by" in unsigned.stderr
    assert REQUEST_ANNOTATION not in annotations(control_plane, namespace)

    signed = annotate(f"{REQUEST_ANNOTATION}={request}", f"{REQUESTED_BY_ANNOTATION}={me}")
    assert signed.returncode == 0, signed.stderr
    # The name cannot be changed afterwards to someone else's, not even alone.
    assert annotate(f"{REQUESTED_BY_ANNOTATION}=alice").returncode != 0
    parsed = parse_request(annotations(control_plane, namespace))
    assert parsed is not None and getattr(parsed, "by", None) == me
    # Withdrawing the request (both annotations) is allowed.
    withdrawn = annotate(f"{REQUEST_ANNOTATION}-", f"{REQUESTED_BY_ANNOTATION}-")
    assert withdrawn.returncode == 0, withdrawn.stderr
    assert REQUEST_ANNOTATION not in annotations(control_plane, namespace)


def test_the_cli_signs_requests_with_the_name_the_api_server_knows(
    control_plane: ControlPlane, namespace: str, tenant: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        ["abort", "fraud-model", "-n", namespace, "--kubeconfig", str(tenant), "--reason", "x"]
    )
    assert code == 0, capsys.readouterr().err
    found = annotations(control_plane, namespace)
    assert found[REQUESTED_BY_ANNOTATION] == f"system:serviceaccount:{namespace}:tenant"
    parsed = parse_request(found)
    assert parsed is not None and getattr(parsed, "action", None) == "abort"
