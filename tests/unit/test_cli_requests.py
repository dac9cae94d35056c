"""`promote` and `abort` without a cluster: what they write, when they write nothing, how
they report, and how status and explain show requests."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from canaryguard.cli import requests as cli_requests
from canaryguard.cli.cluster import Cluster, Conflict
from canaryguard.cli.errors import CliError
from canaryguard.cli.explain import explain
from canaryguard.cli.main import build_parser, main
from canaryguard.cli.status import render_detail
from canaryguard.core.manual import REQUEST_ANNOTATION, ManualRequest, parse_request
from canaryguard.core.status import LastRequest, Rollback, Status
from tests.unit.scenario import spec_dict

NOW = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)


def rollout(status: Status | None = None, request: ManualRequest | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "scorer",
        "namespace": "ml",
        "uid": "uid-1",
        "resourceVersion": "100",
    }
    if request is not None:
        metadata["annotations"] = request.annotations()
    body: dict[str, Any] = {"metadata": metadata, "spec": spec_dict()}
    if status is not None:
        body["status"] = json.loads(json.dumps(status.to_dict()))
    return body


RUNNING = Status(phase="Progressing", revision="scorer/v2@v2", step_index=0, canary_weight=10)


class FakeCluster(Cluster):
    """Serves one rollout; records annotation writes; can answer 409 a few times."""

    def __init__(self, obj: dict[str, Any], conflicts: int = 0) -> None:
        super().__init__(api=None, server="https://test", namespace="ml", user="kube-admin")
        self.obj = obj
        self.conflicts = conflicts
        self.writes: list[tuple[dict[str, str], str]] = []
        self.after_write: Status | None = None  # the status the operator then writes

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        assert (namespace, name) == ("ml", "scorer")
        return copy.deepcopy(self.obj)

    def annotate(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            self.obj["metadata"]["resourceVersion"] = str(int(resource_version) + 1)
            raise Conflict("the object has been modified")
        assert resource_version == self.obj["metadata"]["resourceVersion"]
        self.writes.append((dict(annotations), resource_version))
        self.obj["metadata"].setdefault("annotations", {}).update(annotations)
        if self.after_write is not None:
            request = self.written()
            status = self.after_write
            last = status.last_request
            assert last is not None
            status = Status(last_request=LastRequest(request.id, NOW, last.outcome, message="m"))
            self.obj["status"] = json.loads(json.dumps(status.to_dict()))
        return self.obj

    def whoami(self) -> str:
        return "alice"

    def written(self) -> ManualRequest:
        (annotations, _), *_ = self.writes[-1:]
        request = parse_request(annotations)
        assert isinstance(request, ManualRequest)
        return request


def run(cluster: FakeCluster, *argv: str) -> str:
    args = build_parser().parse_args([*argv, "scorer", "-n", "ml"])
    result: str = args.handler(args, cluster)
    return result


@pytest.mark.parametrize("command", ["promote", "abort"])
def test_help_says_what_it_does_and_how(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"usage: canaryguard {command}")
    assert REQUEST_ANNOTATION in out and "status.lastRequest" in out
    for flag in ("--reason", "--wait", "--timeout", "--kubeconfig", "--namespace"):
        assert flag in out
    assert ("--page" in out) == (command == "abort")


def test_abort_writes_a_fresh_request_for_this_object_and_revision() -> None:
    cluster = FakeCluster(rollout(RUNNING))
    out = run(cluster, "abort", "--reason", "bad  offline eval")
    request = cluster.written()
    assert request.action == "abort"
    assert (request.page, request.reason, request.by) == (False, "bad offline eval", "alice")
    assert (request.revision, request.uid) == ("scorer/v2@v2", "uid-1")
    assert cluster.writes[0][1] == "100"  # conditional on what was read
    assert out == (
        f"CanaryRollout ml/scorer: abort requested (request {request.id}); the operator sends "
        "all traffic back to the baseline (no page) as soon as it sees it; `status scorer` "
        "shows the outcome"
    )

    run(cluster, "abort", "--page")
    again = cluster.written()
    assert again.page and again.id != request.id


def test_promote_never_pages_and_uses_the_spec_revision_before_the_first_tick() -> None:
    cluster = FakeCluster(rollout(None))
    out = run(cluster, "promote")
    assert "; the operator gives the canary 100% of the traffic as soon as it sees it;" in out
    request = cluster.written()
    assert (request.action, request.page, request.revision) == ("promote", False, "scorer/v2@v2")


@pytest.mark.parametrize(
    ("phase", "command", "answer"),
    [
        ("Promoted", "promote", "is already promoted; nothing to do"),
        ("RolledBack", "abort", "is already rolled back; nothing to do"),
    ],
)
def test_a_rollout_already_there_writes_nothing(phase: str, command: str, answer: str) -> None:
    cluster = FakeCluster(rollout(Status(phase=phase, revision="scorer/v2@v2")))  # type: ignore[arg-type]
    assert run(cluster, command) == f"CanaryRollout ml/scorer {answer}"
    assert cluster.writes == []


@pytest.mark.parametrize(
    ("phase", "command", "error"),
    [
        ("Promoted", "abort", "was promoted: the canary has all the traffic"),
        ("RolledBack", "promote", "was rolled back and stays finished"),
    ],
)
def test_a_finished_rollout_cannot_be_turned_around(phase: str, command: str, error: str) -> None:
    cluster = FakeCluster(rollout(Status(phase=phase, revision="scorer/v2@v2")))  # type: ignore[arg-type]
    with pytest.raises(CliError, match=error):
        run(cluster, command)
    assert cluster.writes == []


def test_a_finished_rollout_about_to_start_a_new_revision_takes_the_request() -> None:
    obj = rollout(Status(phase="RolledBack", revision="build-1"))
    cluster = FakeCluster(obj)
    run(cluster, "promote")
    assert cluster.written().revision == "scorer/v2@v2"


def test_a_pending_abort_is_not_overridden_by_a_promote_but_replaces_a_promote() -> None:
    waiting_abort = ManualRequest("abort", "a1", by="bob")
    cluster = FakeCluster(rollout(RUNNING, waiting_abort))
    with pytest.raises(CliError, match=r"has an abort by bob \(request a1\) not carried out yet"):
        run(cluster, "promote")
    assert cluster.writes == []

    waiting_promote = ManualRequest("promote", "p1", by="bob")
    cluster = FakeCluster(rollout(RUNNING, waiting_promote))
    out = run(cluster, "abort", "--page")
    assert "(request " in out and "; it replaces the promote by bob)" in out
    assert "back to the baseline, pages on-call as soon" in out
    assert cluster.written().action == "abort"

    # A request the operator has handled is not pending.
    handled = Status(
        phase="Progressing",
        revision="scorer/v2@v2",
        last_request=LastRequest("a1", NOW, "NoEffect", "abort"),
    )
    cluster = FakeCluster(rollout(handled, waiting_abort))
    run(cluster, "promote")
    assert cluster.written().action == "promote"


def test_a_conflict_is_retried_with_a_fresh_read_and_gives_up_in_the_end() -> None:
    cluster = FakeCluster(rollout(RUNNING), conflicts=2)
    run(cluster, "abort")
    assert cluster.writes[0][1] == "102"
    stubborn = FakeCluster(rollout(RUNNING), conflicts=100)
    with pytest.raises(CliError, match="kept changing while the request was written"):
        run(stubborn, "abort")


def test_wait_reports_what_the_operator_did(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_requests, "WAIT_POLL_SECONDS", 0.0)
    cluster = FakeCluster(rollout(RUNNING))
    cluster.after_write = Status(last_request=LastRequest("x", NOW, "RolledBack"))
    assert run(cluster, "abort", "--wait") == "CanaryRollout ml/scorer RolledBack: m"

    cluster = FakeCluster(rollout(RUNNING))
    cluster.after_write = Status(last_request=LastRequest("x", NOW, "NoEffect"))
    with pytest.raises(CliError, match="the request was not carried out: m"):
        run(cluster, "promote", "--wait")

    cluster = FakeCluster(rollout(RUNNING))
    with pytest.raises(CliError, match=r"has not handled request .* within 0s; is it running"):
        run(cluster, "abort", "--wait", "--timeout", "0s")
    with pytest.raises(CliError, match="--timeout: "):
        run(cluster, "abort", "--wait", "--timeout", "soon")


def test_a_reason_too_long_for_the_operator_is_refused_before_writing() -> None:
    cluster = FakeCluster(rollout(RUNNING))
    with pytest.raises(CliError, match="reason: must be at most 512 characters"):
        run(cluster, "abort", "--reason", "x" * 600)
    assert cluster.writes == []


def test_status_and_explain_show_a_pending_request_and_the_last_one() -> None:
    pending = rollout(RUNNING, ManualRequest("abort", "a1", by="bob"))
    assert "Request:    abort by bob (request a1): not carried out yet" in render_detail(
        pending, NOW
    )
    assert "A manual abort by bob (request a1) is waiting for the operator" in explain(pending, NOW)

    message = "manual abort by bob: no reason given (request a1); on-call not paged (not asked)"
    aborted = Status(
        phase="RolledBack",
        revision="scorer/v2@v2",
        canary_weight=0,
        rollback=Rollback(NOW, "Manual", message),
        last_request=LastRequest("a1", NOW, "RolledBack", "abort", "bob", message),
    )
    body = rollout(aborted, ManualRequest("abort", "a1", by="bob"))
    detail = render_detail(body, NOW)
    assert f"Request:    RolledBack at 2024-06-01T12:30:00Z (request a1): {message}" in detail
    text = explain(body, NOW)
    assert "because someone asked for it" in text
    assert "No page was sent: a manual abort pages only when asked (abort --page)." in text
    assert "is waiting for the operator" not in text

    promoted = Status(
        phase="Promoted",
        canary_weight=100,
        last_request=LastRequest("p1", NOW, "Promoted", "promote", "bob", "manual promote ..."),
    )
    assert "It was promoted by hand: manual promote ...." in explain(rollout(promoted), NOW)
