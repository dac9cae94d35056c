"""The read/write commands without a cluster: every command has --help, the outputs read
right from a status, and API failures become one line that says what went wrong."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from canaryguard.cli.cluster import _api_error
from canaryguard.cli.explain import explain
from canaryguard.cli.main import build_parser, main
from canaryguard.cli.status import render_detail, render_table
from canaryguard.core.status import HistoryEntry, PageStatus, Rollback, SloStatus, Status

NOW = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
COMMANDS = ("run", "status", "explain", "pause", "resume")


def rollout(name: str, status: Status | None, namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    body = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "virtualService": {"name": name},
            "baseline": {"host": name, "subset": "v1"},
            "canary": {"host": name, "subset": "v2"},
            "steps": [{"weight": 10, "hold": "2m"}, {"weight": 100, "hold": "5m"}],
            "analysis": {"slos": [{"name": "errors", "window": "2m"}]},
            **spec,
        },
    }
    if status is not None:
        body["status"] = json.loads(json.dumps(status.to_dict()))
    return body


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: canaryguard {command}")


def test_the_plugin_names_itself_kubectl_canary(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/kubectl-canary", "status", "--help"])
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert capsys.readouterr().out.startswith("usage: kubectl canary status")


def test_read_commands_take_the_kubectl_flags() -> None:
    args = build_parser().parse_args(
        ["status", "-A", "--kubeconfig", "k", "--context", "c", "-o", "json"]
    )
    assert (args.all_namespaces, args.kubeconfig, args.context, args.output) == (
        True,
        "k",
        "c",
        "json",
    )
    args = build_parser().parse_args(["pause", "fraud", "-n", "ml"])
    assert (args.name, args.namespace) == ("fraud", "ml")


def test_the_table_shows_phase_step_weight_and_message() -> None:
    running = Status(phase="Progressing", step_index=0, canary_weight=10, message="holding")
    table = render_table([rollout("a", running), rollout("b", None)], with_namespace=True)
    lines = table.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "STEP", "CANARY", "MESSAGE"]
    assert lines[1].split() == ["ml", "a", "Progressing", "1/2", "10%", "holding"]
    assert lines[2].split() == ["ml", "b", "Pending", "-", "-", "-"]


def test_a_long_message_is_clipped_in_the_table_only() -> None:
    status = Status(phase="Progressing", message="x" * 300)
    table = render_table([rollout("a", status)], with_namespace=False)
    assert table.splitlines()[1].endswith("...")
    assert "x" * 300 in render_detail(rollout("a", status), NOW)


def _rolled_back() -> Status:
    since = NOW - timedelta(minutes=5)
    return Status(
        phase="RolledBack",
        step_index=1,
        canary_weight=0,
        slos=(SloStatus("errors", "breach", "too many", 0.01, 0.2, 900.0, 100.0, since),),
        rollback=Rollback(
            at=NOW - timedelta(minutes=2),
            reason="SLOBreach",
            message="SLO errors breached",
            slo="errors",
            baseline=0.01,
            canary=0.2,
            margin="absolute 0.01",
            window="2m",
            breaching_since=since,
        ),
        page=PageStatus("key", "Failed", attempts=1, last_error="400 invalid routing key"),
        history=(
            HistoryEntry(NOW - timedelta(minutes=2), "RolledBack", "SLOBreach", "rolled", 1, 0),
        ),
    )


def test_explain_warns_loudly_when_the_page_failed() -> None:
    text = explain(rollout("a", _rolled_back()), NOW)
    assert "ml/a was rolled back" in text
    assert (
        "SLO errors had the canary at 0.2 against the baseline's 0.01, beyond absolute 0.01" in text
    )
    assert "The page FAILED and will not be retried: 400 invalid routing key" in text
    assert "RolledBack because an SLO stayed in breach for its whole window: rolled" in text


def test_explain_names_the_baseline_reference_used_at_100() -> None:
    since = NOW - timedelta(minutes=1)
    taken = NOW - timedelta(minutes=10)
    reason = "canary 0.2 vs baseline reference 0.01 (from 2024-06-01T12:20:00Z): worse by 0.19"
    breaching = Status(
        phase="Progressing",
        step_index=1,
        canary_weight=100,
        step_started_at=NOW - timedelta(minutes=3),
        slos=(
            SloStatus("errors", "breach", reason, None, 0.2, 0.0, 100.0, since, 0.01, 900.0, taken),
        ),
    )
    text = explain(rollout("a", breaching), NOW)
    assert "(baseline reference 0.01, canary 0.2)" in text

    rolled_back = _rolled_back()
    assert rolled_back.rollback is not None
    rollback = replace(rolled_back.rollback, baseline_reference_at=taken)
    text = explain(rollout("a", replace(rolled_back, rollback=rollback)), NOW)
    assert (
        "SLO errors had the canary at 0.2 against the baseline reference 0.01 (taken at "
        "2024-06-01T12:20:00Z; the baseline had no traffic), beyond absolute 0.01" in text
    )
    limit_only = replace(rolled_back.rollback, baseline=None)
    text = explain(rollout("a", replace(rolled_back, rollback=limit_only)), NOW)
    assert "had the canary at 0.2 with no baseline value to compare (judged by its limit)" in text


def test_explain_an_inconclusive_slo_says_the_rollout_waits() -> None:
    status = Status(
        phase="Progressing",
        step_index=0,
        canary_weight=10,
        step_started_at=NOW - timedelta(minutes=3),
        slos=(SloStatus("errors", "inconclusive", "canary has 12 requests, needs 50"),),
    )
    text = explain(rollout("a", status), NOW)
    assert "held 3m (hold 2m done)" in text
    assert "SLO errors is inconclusive: canary has 12 requests, needs 50. The rollout waits" in text


def test_detail_shows_the_rollback_and_the_page() -> None:
    text = render_detail(rollout("a", _rolled_back()), NOW)
    assert "Rollback:" in text and "SLOBreach" in text
    assert "state Failed, 1 attempt(s), dedup key key" in text
    assert "2024-06-01T12:25:00Z (5m ago)" in text


def test_detail_shows_the_router_kind() -> None:
    assert "Route:      VirtualService a: a/v1 (baseline)" in render_detail(rollout("a", None), NOW)
    body = rollout("a", None, baseline={"host": "a-v1"}, canary={"host": "a-v2"})
    del body["spec"]["virtualService"]
    body["spec"]["httpRoute"] = {"name": "web", "rules": [{"name": "api"}, {"index": 2}]}
    text = render_detail(body, NOW)
    assert "Route:      HTTPRoute web (rules api, rules[2]): a-v1 (baseline) -> a-v2" in text


def _api_exception(status: int, body: dict[str, Any] | str) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = body if isinstance(body, str) else json.dumps(body)
    return exc


def test_api_errors_say_what_failed_and_why() -> None:
    what = 'get CanaryRollout "x" in namespace "ml"'
    missing = _api_exception(
        404, {"kind": "Status", "reason": "NotFound", "details": {"name": "x"}}
    )
    assert _api_error(missing, what) == 'CanaryRollout "x" not found in namespace "ml"'
    no_crd = _api_exception(404, "404 page not found")
    assert "API (canaryguard.io/v1alpha1) is not installed" in _api_error(no_crd, what)
    forbidden = _api_exception(403, {"kind": "Status", "message": "user cannot get"})
    assert _api_error(forbidden, what) == f"cannot {what}: forbidden (403): user cannot get"
    assert "not authenticated (401)" in _api_error(_api_exception(401, ""), what)
    assert "answered 500: boom" in _api_error(_api_exception(500, {"message": "boom"}), what)


def test_explain_says_why_the_operator_refused_a_rollout() -> None:
    problem = (
        "spec.metrics.prometheus.address: http://10.0.0.9:8000 is not an address this "
        "operator may send requests to (allowed: http://prometheus.monitoring:9090); the "
        "operator's installer allows addresses with --allow-prometheus"
    )
    entry = HistoryEntry(
        NOW, "AddressNotAllowed", "AddressNotAllowed", f"invalid spec: {problem}", None, None
    )
    status = Status(phase="Invalid", message=f"invalid: {problem}", history=(entry,))
    text = explain(rollout("a", status), NOW)
    assert (
        "AddressNotAllowed because it names an address the operator's installer did not "
        f"allow: invalid spec: {problem}"
    ) in text
