"""The CanaryRollout CRD in a real kube-apiserver: the example is accepted and defaulted like
the parser defaults it, the CEL rules reject what they should with their messages, and the
engine's status survives the status subresource (merge patch) without pruning."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard.core import engine
from canaryguard.core.spec import parse_spec
from canaryguard.core.status import status_from_dict
from canaryguard_testbed.controlplane import ControlPlane, KubectlError
from tests.unit.scenario import BREACH, Rollout, make_spec, obs, spec_dict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples/fraud-model/canaryrollout.yaml").read_text())


def body(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "canaryguard.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create(cp: ControlPlane, resource: dict[str, Any]) -> None:
    cp.kubectl("create", "-f", "-", input=json.dumps(resource))


def read(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "canaryrollout", name, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def test_the_example_is_accepted_and_defaulted_like_the_parser_does(
    control_plane: ControlPlane, namespace: str
) -> None:
    resource = copy.deepcopy(EXAMPLE)
    resource["metadata"]["namespace"] = namespace
    create(control_plane, resource)

    stored = read(control_plane, namespace, "fraud-model")

    slo = stored["spec"]["analysis"]["slos"][1]
    assert (slo["direction"], slo["window"], slo["lookback"]) == ("HigherIsWorse", "3m", "2m")
    assert stored["spec"]["paused"] is False
    assert parse_spec(stored) == replace(
        parse_spec(resource), generation=1, uid=stored["metadata"]["uid"]
    )
    short = control_plane.kubectl("get", "cro", "-n", namespace, "-o", "name").stdout
    assert short.strip() == "canaryrollout.canaryguard.io/fraud-model"


def edited(change: str) -> dict[str, Any]:
    spec = spec_dict()
    slos = spec["analysis"]["slos"]
    if change == "weights-not-increasing":
        spec["steps"][1]["weight"] = 10
    elif change == "last-not-100":
        spec["steps"][2]["weight"] = 90
    elif change == "same-destination":
        spec["canary"]["subset"] = "v1"
    elif change == "same-version":
        spec["metrics"]["canaryVersion"] = "v1"
    elif change == "version-label-in-selector":
        spec["metrics"]["selector"]["destination_version"] = "v1"
    elif change == "two-kinds":
        slos[0]["latency"] = {"quantile": 0.99}
    elif change == "no-margin-or-limit":
        del slos[0]["margin"]
    elif change == "template-without-version":
        slos[0] = {"name": "q", "query": {"template": "x[{{ lookback }}]"}, "limit": 1}
    elif change == "bad-duration":
        slos[0]["window"] = "1.5m"
    elif change == "duplicate-slo":
        slos.append(copy.deepcopy(slos[0]))
    elif change == "credentials-in-address":
        spec["metrics"]["prometheus"]["address"] = "http://admin:hunter2@prometheus:9090"
    elif change == "token-in-address":
        spec["metrics"]["prometheus"]["address"] = "http://prometheus:9090/?token=hunter2"
    elif change == "credentials-in-pagerduty-url":
        spec["paging"]["pagerDuty"]["url"] = "https://k:hunter2@events.pagerduty.com/v2/enqueue"
    return spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("weights-not-increasing", "step weights must be strictly increasing"),
        ("last-not-100", "the last step's weight must be 100"),
        ("same-destination", "canary must differ from baseline"),
        ("same-version", "canaryVersion must differ from baselineVersion"),
        ("version-label-in-selector", "selector must not match on the version label"),
        ("two-kinds", "set exactly one of errorRate, latency, query"),
        ("no-margin-or-limit", "set a margin, a limit or both"),
        ("template-without-version", "spec.analysis.slos[0].query.template"),
        ("bad-duration", "spec.analysis.slos[0].window"),
        ("duplicate-slo", "Duplicate value"),
        ("credentials-in-address", "must not hold credentials (user:password@host), a query"),
        ("token-in-address", "spec.metrics.prometheus.address"),
        ("credentials-in-pagerduty-url", "spec.paging.pagerDuty.url: Invalid value"),
    ],
)
def test_the_api_server_rejects_invalid_rollouts(
    control_plane: ControlPlane, namespace: str, change: str, message: str
) -> None:
    with pytest.raises(KubectlError) as rejected:
        create(control_plane, body(namespace, "bad", edited(change)))
    assert message in rejected.value.stderr
    assert "hunter2" not in rejected.value.stderr  # the refusal does not repeat a password


def test_the_engine_status_survives_the_status_subresource(
    control_plane: ControlPlane, namespace: str
) -> None:
    create(control_plane, body(namespace, "scorer", spec_dict()))
    r = Rollout()
    r.started()
    r.tick(60, obs(BREACH))
    r.tick(120, obs(BREACH))
    statuses = [r.status]
    r.spec = make_spec({**spec_dict(), "revision": "build-2"})  # clears rollback and page
    r.tick(150)
    statuses.append(r.status)
    statuses.append(engine.invalid(r.status, "spec.x: bad", r.status.history[-1].at).status)

    for status in statuses:
        patch = json.dumps({"status": status.to_dict()})
        control_plane.kubectl(
            "patch",
            "cro",
            "scorer",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        )
        stored = read(control_plane, namespace, "scorer")["status"]
        assert status_from_dict(stored).to_dict() == status.to_dict()
    assert "rollback" not in stored and "page" not in stored
