"""The request annotation: parsing, what a malformed one becomes, the request's record in
status (round trip and CRD schema)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from canaryguard.cli.requests import new_request_id
from canaryguard.core.manual import (
    REQUEST_ANNOTATION,
    REQUESTED_BY_ANNOTATION,
    InvalidRequest,
    ManualRequest,
    RequestAction,
    parse_request,
)
from canaryguard.core.spec import parse_spec
from canaryguard.core.status import LastRequest, Status, status_from_dict
from tests.unit.scenario import Rollout, at, spec_dict
from tests.unit.test_crd import STATUS_SCHEMA, problems, pruned


def annotated(value: Any) -> dict[str, Any]:
    return {REQUEST_ANNOTATION: value if isinstance(value, str) else json.dumps(value)}


def test_a_full_request_parses() -> None:
    request = parse_request(
        annotated(
            {
                "action": "abort",
                "id": "20240601T120000Z-3fa9c1",
                "page": True,
                "reason": "bad  offline\neval",
                "by": "alice@example.com",
                "revision": "build-7",
                "uid": "6f1c-11",
            }
        )
    )
    assert request == ManualRequest(
        action="abort",
        id="20240601T120000Z-3fa9c1",
        page=True,
        reason="bad offline eval",  # one line, for events and logs
        by="alice@example.com",
        revision="build-7",
        uid="6f1c-11",
    )


def test_the_minimal_request_and_no_request() -> None:
    assert parse_request(annotated({"action": "promote", "id": "p1"})) == ManualRequest(
        "promote", "p1"
    )
    assert parse_request(None) is None
    assert parse_request({}) is None
    assert parse_request({"other": "x"}) is None


def test_the_annotations_written_read_back_the_same() -> None:
    request = ManualRequest("abort", "a1", page=True, reason="why", by="bob", revision="r")
    annotations = request.annotations()
    assert json.loads(annotations[REQUEST_ANNOTATION]) == {
        "action": "abort",
        "id": "a1",
        "page": True,
        "reason": "why",
        "revision": "r",
    }
    assert annotations[REQUESTED_BY_ANNOTATION] == "bob"
    assert parse_request(annotations) == request


def test_the_requester_is_the_checked_annotation_not_what_the_json_says() -> None:
    """requested-by is what the API server checked (manifests/admission); a `by` in the
    JSON is only an older client's note, used when requested-by is absent."""
    claimed = json.dumps({"action": "abort", "id": "a1", "by": "admin"})
    checked = {REQUEST_ANNOTATION: claimed, REQUESTED_BY_ANNOTATION: "system:serviceaccount:t:x"}
    parsed = parse_request(checked)
    assert isinstance(parsed, ManualRequest)
    assert parsed.by == "system:serviceaccount:t:x"
    legacy = parse_request({REQUEST_ANNOTATION: claimed})
    assert isinstance(legacy, ManualRequest) and legacy.by == "admin"


def test_new_ids_are_fresh_and_valid() -> None:
    now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    ids = {new_request_id(now) for _ in range(50)}
    assert len(ids) == 50
    for request_id in ids:
        assert request_id.startswith("20240601T120000Z-")
        assert isinstance(
            parse_request(annotated({"action": "abort", "id": request_id})), ManualRequest
        )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("abort", "not JSON"),
        (["abort"], "must be a JSON object"),
        ({"id": "x"}, "action: must be promote or abort, got None"),
        ({"action": "rollback", "id": "x"}, "action: must be promote or abort, got 'rollback'"),
        ({"action": "abort"}, "id: required"),
        ({"action": "abort", "id": 7}, "id: must be a string, got int"),
        ({"action": "abort", "id": "a b"}, "id: letters, digits and -._: only"),
        ({"action": "abort", "id": "x" * 129}, "id: must be at most 128 characters"),
        ({"action": "abort", "id": "x", "page": "yes"}, "page: must be true or false"),
        ({"action": "promote", "id": "x", "page": True}, "page: only an abort can page"),
        ({"action": "abort", "id": "x", "reason": "r" * 513}, "reason: must be at most 512"),
        ({"action": "abort", "id": "x", "pgae": True}, "unknown field 'pgae'"),
        ("x" * 5000, "must be at most 4096 characters"),
    ],
)
def test_a_malformed_request_says_what_is_wrong(value: Any, problem: str) -> None:
    request = parse_request(annotated(value))
    assert isinstance(request, InvalidRequest)
    assert request.problem.startswith(f"{REQUEST_ANNOTATION}: ")
    assert problem in request.problem
    assert request.id.startswith("invalid-")


def test_a_malformed_request_is_identified_by_its_text() -> None:
    first = parse_request(annotated({"action": "promte", "id": "x"}))
    same = parse_request(annotated({"action": "promte", "id": "x"}))
    other = parse_request(annotated({"action": "promtoe", "id": "x"}))
    assert isinstance(first, InvalidRequest) and isinstance(other, InvalidRequest)
    assert first == same
    assert first.id != other.id
    # Corrected with the same id inside: a valid request whose id was never handled.
    fixed = parse_request(annotated({"action": "promote", "id": "x"}))
    assert isinstance(fixed, ManualRequest) and fixed.id != first.id


def resource(annotations: dict[str, str] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "scorer", "namespace": "ml", "uid": "u-1"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec_dict()}


def test_the_spec_carries_the_request_and_a_malformed_one_never_makes_it_invalid() -> None:
    good = parse_spec(resource(annotated({"action": "abort", "id": "a1"})))
    assert good.request == ManualRequest("abort", "a1")
    assert (good.invalid_request, good.uid) == (None, "u-1")

    bad = parse_spec(resource(annotated("{not json")))
    assert bad.request is None
    assert bad.invalid_request is not None and "not JSON" in bad.invalid_request.problem

    plain = parse_spec(resource(None))
    assert (plain.request, plain.invalid_request) == (None, None)
    assert parse_spec(spec_dict()).request is None  # the spec alone has no metadata


def test_last_request_round_trips_and_reads_tolerantly() -> None:
    status = Status(
        last_request=LastRequest("a1", at(30), "RolledBack", "abort", "bob", "manual abort")
    )
    stored = json.loads(json.dumps(status.to_dict()))
    assert stored["lastRequest"] == {
        "id": "a1",
        "action": "abort",
        "by": "bob",
        "at": "2024-06-01T12:00:30Z",
        "outcome": "RolledBack",
        "message": "manual abort",
    }
    assert status_from_dict(stored) == status
    rejected = Status(last_request=LastRequest("invalid-1", at(1), "Rejected"))
    assert status_from_dict(json.loads(json.dumps(rejected.to_dict()))) == rejected
    assert Status().to_dict()["lastRequest"] is None  # a merge patch can clear it
    broken = {"lastRequest": {"id": "a1", "at": "yesterday", "outcome": "RolledBack"}}
    assert status_from_dict(broken).last_request is None


def test_engine_statuses_with_a_request_validate_against_the_status_schema() -> None:
    outcomes = set()
    cases: list[tuple[RequestAction, bool]] = [
        ("promote", False),
        ("abort", False),
        ("abort", True),
    ]
    for action, page in cases:
        r = Rollout()
        r.started()
        r.spec = replace(r.spec, request=ManualRequest(action, "r1", page=page, by="bob"))
        r.tick(30)
        r.spec = replace(r.spec, request=ManualRequest("abort", "r2"))
        for status in (r.status, r.tick(60).status):
            assert status.last_request is not None
            outcomes.add(status.last_request.outcome)
            stored = pruned(json.loads(json.dumps(status.to_dict())))
            assert problems(STATUS_SCHEMA, stored, ".status") == []
    r = Rollout()
    r.spec = replace(r.spec, invalid_request=InvalidRequest("invalid-1", "bad"))
    status = r.started().status
    assert status.last_request is not None
    outcomes.add(status.last_request.outcome)
    assert (
        problems(STATUS_SCHEMA, pruned(json.loads(json.dumps(status.to_dict()))), ".status") == []
    )
    assert outcomes == {"Promoted", "RolledBack", "NoEffect", "Rejected"}
