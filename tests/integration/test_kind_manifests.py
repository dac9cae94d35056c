"""What the kind tier (tests/kind, `make e2e-kind`) applies, checked without Docker: its test
bed manifests and the scenarios' CanaryRollouts, filled in as tests/kind/stack.py fills them,
are accepted by a real API server with the Istio and canaryguard CRDs (schemas and CEL rules
included), its Prometheus config passes promtool and scrapes only Services that exist, its
install overlay (tests/kind/manifests/install) is manifests/ with an allowlist that lets the
rollouts reach the stack's Prometheus and receiver and nothing else, the receiver's Secret is
opted in for every rollout, and its cluster config asks for what the node image provides."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard.cli.main import build_parser
from canaryguard.core.access import (
    AddressNotAllowed,
    Allowlist,
    check_address,
    parse_address,
    secret_allows,
)
from canaryguard.core.spec import parse_spec
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.prometheus_server import find_prometheus
from tests.integration.kustomize import Obj, one, operator_args, render
from tests.kind import stack

ROOT = Path(__file__).resolve().parents[2]
NODE_IMAGE_FILES = ROOT / "hack" / "images" / "kind-node"


def everything() -> list[dict[str, Any]]:
    objs = [doc for doc in yaml.safe_load_all(stack.stack_manifests()) if doc]
    slo = stack.error_rate_slo("10s", "30s")
    steps = [{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}]
    for service in stack.SERVICES:
        objs.append(stack.rollout_body(service, steps, [slo]))
    return objs


def test_the_stack_is_accepted_by_the_api_server(
    control_plane: ControlPlane, namespace: str
) -> None:
    objs = [o for o in everything() if o["kind"] != "Namespace"]
    for obj in objs:
        assert obj["metadata"]["namespace"] == stack.NAMESPACE
        obj["metadata"]["namespace"] = namespace
    moved = yaml.safe_dump_all(objs).replace(f".{stack.NAMESPACE}:", f".{namespace}:")
    out = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-", input=moved
    ).stdout
    assert out.count("serverside-applied") == len(objs), out


def test_the_rollouts_parse_and_name_the_stacks_prometheus_and_receiver() -> None:
    for obj in everything():
        if obj["kind"] != "CanaryRollout":
            continue
        spec = parse_spec(copy.deepcopy(obj))
        assert spec.paging is not None
        assert spec.paging.pager_duty.url == "http://pagerduty.e2e:8080/v2/enqueue"
        assert obj["spec"]["metrics"]["prometheus"]["address"] == "http://prometheus.e2e:9090"


def test_every_scrape_target_is_a_service_of_the_stack_or_the_operators(tmp_path: Path) -> None:
    objs = everything()
    config_map = next(
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "prometheus"
    )
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    services = {
        (o["metadata"]["name"], p["port"])
        for o in objs
        if o["kind"] == "Service"
        for p in o["spec"]["ports"]
    }
    operator_service = yaml.safe_load((ROOT / "manifests" / "service.yaml").read_text())
    (operator_port,) = operator_service["spec"]["ports"]
    services.add(
        (
            f"{operator_service['metadata']['name']}.{stack.OPERATOR_NAMESPACE}",
            operator_port["port"],
        )
    )
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert len(targets) == 3 * len(stack.SERVICES) + 1
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert (host, int(port)) in services, target
    promtool = Path(find_prometheus()).with_name("promtool")
    tool = str(promtool) if promtool.exists() else shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool not found (it ships with Debian's prometheus package)")
    (tmp_path / "prometheus.yml").write_text(config_map["data"]["prometheus.yml"])
    result = subprocess.run(
        [tool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_router_backends_and_selectors_name_the_stacks_services() -> None:
    objs = everything()
    names = {o["metadata"]["name"] for o in objs if o["kind"] == "Service"}
    for service in stack.SERVICES:
        router = next(
            o
            for o in objs
            if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{service}-router"
        )
        pod = router["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "router"
        args = pod["containers"][0]["args"]
        backends = [a.split("=", 2)[2] for a in args if a.startswith("--backend=")]
        assert [b.removeprefix("http://").split(":")[0] for b in backends] == [
            f"{service}-v1",
            f"{service}-v2",
        ]
        assert {f"{service}-v1", f"{service}-v2", f"{service}-router"} <= names


def test_nothing_is_pulled_every_pod_names_a_loaded_image() -> None:
    loaded = {stack.testbed_image(), stack.PROMETHEUS_IMAGE}
    for obj in everything():
        if obj["kind"] != "Deployment":
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            assert container["image"] in loaded, container["image"]
            assert container["imagePullPolicy"] == "Never"


def test_the_cluster_config_asks_for_what_the_node_image_provides() -> None:
    config = yaml.safe_load((ROOT / "tests" / "kind" / "manifests" / "cluster.yaml").read_text())
    networking = config["networking"]
    # No kindnetd in the node image: its own bridge CNI configuration, one node.
    assert networking["disableDefaultCNI"] is True
    assert [n["role"] for n in config["nodes"]] == ["control-plane"]
    # The node image's kube-proxy has nft and no iptables.
    assert networking["kubeProxyMode"] == "nftables"
    conflist = yaml.safe_load((NODE_IMAGE_FILES / "10-canaryguard-bridge.conflist").read_text())
    (bridge,) = [p for p in conflist["plugins"] if p["type"] == "bridge"]
    # Inside kind's default pod subnet (the cluster config leaves it at 10.244.0.0/16).
    assert "podSubnet" not in networking
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]


# --- the install overlay ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def overlay(control_plane: ControlPlane) -> list[Obj]:
    return render(control_plane, stack.INSTALL)


def without_allowlist(objs: list[Obj]) -> list[Obj]:
    """The objects with the allowlist ConfigMap left out and its (hashed) name blanked where
    the Deployment refers to it."""
    kept = []
    for obj in copy.deepcopy(objs):
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith(
            "canaryguard-allowlist"
        ):
            continue
        if obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:
                        ref["name"] = "canaryguard-allowlist"
        kept.append(obj)
    return kept


def test_the_overlay_is_the_shipped_install_but_for_the_allowlist(
    control_plane: ControlPlane, overlay: list[Obj]
) -> None:
    base = render(control_plane, ROOT / "manifests")
    assert without_allowlist(overlay) == without_allowlist(base)
    assert one(overlay, "Deployment", "canaryguard")["spec"]["replicas"] >= 1


def test_the_overlay_allows_the_stacks_prometheus_and_receiver_and_nothing_else(
    overlay: list[Obj],
) -> None:
    args = build_parser().parse_args(operator_args(overlay))
    assert args.allow_prometheus == [parse_address(stack.PROMETHEUS_URL)]
    assert args.allow_pagerduty == [parse_address(stack.PAGERDUTY_URL)]
    prometheus = Allowlist(tuple(args.allow_prometheus), "--allow-prometheus")
    pagerduty = Allowlist(tuple(args.allow_pagerduty), "--allow-pagerduty")
    rollouts = [o for o in everything() if o["kind"] == "CanaryRollout"]
    assert len(rollouts) == len(stack.SERVICES)
    for rollout in rollouts:
        spec = rollout["spec"]
        check_address("prometheus", spec["metrics"]["prometheus"]["address"], prometheus)
        check_address("pagerDuty", spec["paging"]["pagerDuty"]["url"], pagerduty)
    # The shipped defaults are not allowed here.
    with pytest.raises(AddressNotAllowed):
        check_address("prometheus", "http://prometheus.monitoring:9090", prometheus)
    with pytest.raises(AddressNotAllowed):
        check_address("pagerDuty", "https://events.pagerduty.com/v2/enqueue", pagerduty)


def test_the_routing_key_secret_is_opted_in_for_every_rollout_that_names_it() -> None:
    objs = everything()
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    for rollout in (o for o in objs if o["kind"] == "CanaryRollout"):
        ref = rollout["spec"]["paging"]["pagerDuty"]["routingKeySecretRef"]
        secret = secrets[ref["name"]]
        assert ref["key"] in secret["stringData"]
        name = rollout["metadata"]["name"]
        assert secret_allows(secret["metadata"].get("annotations"), name), name
