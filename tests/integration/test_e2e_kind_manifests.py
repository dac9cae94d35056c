"""hack/e2e-kind.sh cannot run here (no Docker), but what it applies can be checked: its
templates, filled in as the script fills them, are accepted by a real API server with the
Istio and canaryguard CRDs (schemas and CEL rules included), its Prometheus config passes
promtool, the operator it installs may reach the stack's Prometheus and PagerDuty receiver
with the Secret the rollouts name, and the script itself parses."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard.cli.main import build_parser
from canaryguard.cli.run import operator_settings
from canaryguard.core.access import check_address, secret_allows
from canaryguard.core.spec import parse_spec
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.prometheus_server import find_prometheus
from tests.integration.kustomize import operator_args
from tests.integration.kustomize import render as render_kustomization

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack/e2e-kind.sh"
E2E = ROOT / "hack/e2e"
INSTALL = E2E / "install"  # manifests/ with this stack's allowlist
SERVICES = {"fraud-promote": "healthy", "fraud-rollback": "error-spike"}


def render(template: Path, service: str = "", scenario: str = "") -> list[dict[str, Any]]:
    """The script's `render`: every @NAME@ placeholder filled in."""
    text = template.read_text()
    for key, value in {
        "IMAGE": "canaryguard:0.1.0",
        "PROMETHEUS_IMAGE": "prom/prometheus:v2.53.0",
        "SERVICE": service,
        "V2_SCENARIO": scenario,
    }.items():
        text = text.replace(f"@{key}@", value)
    assert not re.search(r"@[A-Z_0-9]+@", text), f"{template.name}: a placeholder is left"
    return [doc for doc in yaml.safe_load_all(text) if doc]


def everything() -> list[dict[str, Any]]:
    objs = render(E2E / "stack.yaml")
    for service, scenario in SERVICES.items():
        objs += render(E2E / "service.yaml.tmpl", service, scenario)
        objs += render(E2E / "rollout.yaml.tmpl", service)
    return objs


def test_the_script_parses_and_fills_every_placeholder_it_uses() -> None:
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    script = SCRIPT.read_text()
    templates = [p for p in E2E.iterdir() if p.is_file()]
    used = set(re.findall(r"@([A-Z_0-9]+)@", "".join(p.read_text() for p in templates)))
    for name in used:
        assert f"s|@{name}@|" in script, f"the script does not fill @{name}@"


def test_the_stack_is_accepted_by_the_api_server(
    control_plane: ControlPlane, namespace: str
) -> None:
    objs = [o for o in everything() if o["kind"] != "Namespace"]
    for obj in objs:
        assert obj["metadata"]["namespace"] == "e2e"
        obj["metadata"]["namespace"] = namespace
    moved = yaml.safe_dump_all(objs).replace(".e2e:", f".{namespace}:")
    out = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-", input=moved
    ).stdout
    assert out.count("serverside-applied") == len(objs), out


def test_the_rollouts_parse_and_finish_within_the_scripts_timeout() -> None:
    for obj in everything():
        if obj["kind"] != "CanaryRollout":
            continue
        spec = parse_spec(copy.deepcopy(obj))
        schedule = sum(step.hold.total_seconds() for step in spec.steps)
        assert schedule < 120, "the promote scenario must finish well inside TIMEOUT=300s"
        assert spec.paging is not None
        assert spec.paging.pager_duty.url == "http://pagerduty.e2e:8080/v2/enqueue"


def test_every_scrape_target_is_a_service_of_the_stack(tmp_path: Path) -> None:
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
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
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
    for service in SERVICES:
        router = next(
            o
            for o in objs
            if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{service}-router"
        )
        args = router["spec"]["template"]["spec"]["containers"][0]["args"]
        backends = [a.split("=", 2)[2] for a in args if a.startswith("--backend=")]
        assert [b.removeprefix("http://").split(":")[0] for b in backends] == [
            f"{service}-v1",
            f"{service}-v2",
        ]
        assert {f"{service}-v1", f"{service}-v2", f"{service}-router"} <= names


def test_the_install_allows_the_stacks_prometheus_and_pagerduty_and_nothing_else(
    control_plane: ControlPlane,
) -> None:
    settings = operator_settings(
        build_parser().parse_args(operator_args(render_kustomization(control_plane, INSTALL)))
    )
    for obj in everything():
        if obj["kind"] != "CanaryRollout":
            continue
        spec = parse_spec(copy.deepcopy(obj))
        assert spec.paging is not None and spec.paging.pager_duty.url is not None
        check_address("address", spec.metrics.prometheus.address, settings.allow_prometheus)
        check_address("url", spec.paging.pager_duty.url, settings.allow_pagerduty)
    assert str(settings.allow_prometheus) == "http://prometheus.e2e:9090"
    assert str(settings.allow_pagerduty) == "http://pagerduty.e2e:8080/v2/enqueue"


def test_the_routing_key_secret_is_made_available_to_both_rollouts() -> None:
    secret = next(o for o in everything() if o["kind"] == "Secret")
    for service in SERVICES:
        assert secret_allows(secret["metadata"].get("annotations"), service), service
