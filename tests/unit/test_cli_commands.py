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
from canaryguard.core.status import (
    HistoryEntry,
    IncidentStatus,
    PageStatus,
    Rollback,
    ShadowStatus,
    SloStatus,
    Status,
)

NOW = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
COMMANDS = ("run", "status", "explain", "pause", "resume", "backtest")


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


def test_detail_shows_a_dry_run_and_the_incident_it_will_resolve() -> None:
    status = Status(
        phase="Promoted",
        revision="r2",
        dry_run=True,
        previous_incident=IncidentStatus(
            "canaryguard/ml/a/r1",
            "r1",
            state="Resolved",
            resolved_at=datetime(2024, 6, 1, 12, 20, tzinfo=UTC),
            resolved_by="r2",
        ),
    )
    text = render_detail(rollout("a", status), NOW)
    assert "Dry run:    decisions recorded only: no weight is set, no one is paged" in text
    assert "  state Resolved, revision r1, dedup key canaryguard/ml/a/r1" in text
    assert "  resolved at 2024-06-01T12:20:00Z by revision r2" in text
    assert "Dry run:" not in render_detail(rollout("a", Status()), NOW)


def test_detail_lists_every_incident_it_will_resolve_oldest_first() -> None:
    status = Status(
        phase="Progressing",
        revision="r3",
        older_incidents=(IncidentStatus("canaryguard/ml/a/r1", "r1"),),
        previous_incident=IncidentStatus("canaryguard/ml/a/r2", "r2"),
    )
    lines = render_detail(rollout("a", status), NOW).splitlines()
    start = lines.index("Previous incidents (resolved when this revision is promoted):")
    assert lines[start + 1 : start + 3] == [
        "  state Open, revision r1, dedup key canaryguard/ml/a/r1",
        "  state Open, revision r2, dedup key canaryguard/ml/a/r2",
    ]


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


SHADOW_SPEC = {"percent": 25, "hold": "10m", "skipSlos": ["ctr"], "onBreach": "event"}


def test_status_and_explain_show_a_running_shadow() -> None:
    started = NOW - timedelta(minutes=3)
    status = Status(
        phase="Progressing",
        canary_weight=0,
        message="shadow, 25% mirrored to the canary: holding until 2024-06-01T12:37:00Z",
        shadow=ShadowStatus(started, 25),
        slos=(
            SloStatus("errors", "healthy", "within margin"),
            SloStatus("ctr", "skipped", "skipped in the shadow phase"),
        ),
    )
    obj = rollout("a", status, shadow=SHADOW_SPEC)
    table = render_table([obj], with_namespace=False).splitlines()
    assert table[1].split()[:4] == ["a", "Progressing", "shadow", "0%"]
    detail = render_detail(obj, NOW)
    assert (
        "Shadow:     running: 25% mirrored from 2024-06-01T12:27:00Z, held 3m of its 10m hold; "
        "the canary serves no user; a sustained breach rolls back and only posts an Event; "
        "not judged in shadow: ctr"
    ) in detail.splitlines()
    text = explain(obj, NOW)
    lines = text.splitlines()
    assert lines[0] == (
        "ml/a is Progressing in its shadow phase: a/v2 gets 25% of the requests mirrored and "
        "serves no user."
    )
    assert lines[1] == "It drives the VirtualService a."
    assert lines[2].startswith("Shadow phase: running: 25% mirrored from")
    assert any(line.startswith("SLO ctr is not judged in the shadow phase") for line in lines)


def test_status_shows_a_failed_and_a_passed_shadow() -> None:
    started = NOW - timedelta(minutes=3)
    failed = Status(
        phase="RolledBack",
        canary_weight=0,
        shadow=ShadowStatus(started, 25, "Failed", NOW - timedelta(minutes=1)),
    )
    detail = render_detail(rollout("a", failed, shadow=SHADOW_SPEC), NOW)
    assert (
        "Shadow:     failed at 2024-06-01T12:29:00Z (25% mirrored from 2024-06-01T12:27:00Z): "
        "rolled back, mirror removed; no user was served"
    ) in detail.splitlines()
    passed = replace(failed, phase="Progressing", step_index=0, canary_weight=10)
    passed = replace(passed, shadow=replace(failed.shadow, state="Passed"))  # type: ignore[type-var]
    detail = render_detail(rollout("a", passed, shadow=SHADOW_SPEC), NOW)
    assert any(
        line.startswith("Shadow:     passed at 2024-06-01T12:29:00Z")
        for line in detail.splitlines()
    )
    not_started = render_detail(rollout("a", None, shadow=SHADOW_SPEC), NOW)
    assert (
        "Shadow:     25% of requests mirrored to the canary for 10m before step 1 (not started); "
        "not judged in shadow: ctr"
    ) in not_started.splitlines()
    assert "Shadow:" not in render_detail(rollout("a", None), NOW)


def test_explain_shows_the_evidence_and_the_confidence_bounds() -> None:
    from canaryguard.core import sequential
    from canaryguard.core.sequential import Stratum
    from canaryguard.core.status import StratumRecord

    records = (
        StratumRecord(NOW - timedelta(minutes=8), 10, 9500, 48, 500, 8),
        StratumRecord(NOW - timedelta(minutes=6), 100, 7500, 37, 2500, 38),
    )
    status = Status(
        phase="Progressing",
        step_index=1,
        canary_weight=100,
        step_started_at=NOW - timedelta(minutes=6),
        slos=(SloStatus("errors", "breach", "shown worse", evidence=records),),
    )
    body = rollout(
        "a",
        status,
        analysis={"slos": [{"name": "errors", "confidence": 0.99, "margin": {"relative": 0}}]},
    )
    text = explain(body, NOW)
    strata = [Stratum(9500, 48, 500, 8), Stratum(7500, 37, 2500, 38)]
    low = sequential.bound(strata, "above", 0.99)
    high = sequential.bound(strata, "below", 0.99)
    assert 1 < low < high
    assert (
        "SLO errors evidence since the analysis began (events/requests per step) at 10% from "
        "2024-06-01T12:22:00Z: canary 8/500, baseline 48/9500; at 100% from "
        "2024-06-01T12:24:00Z: canary 38/2500, baseline 37/7500." in text
    )
    assert (
        f"at 99% confidence, valid at every tick, it is above {low:.3g}x and below {high:.3g}x"
        in text
    )
