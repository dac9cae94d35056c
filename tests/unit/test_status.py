"""The status's wire form: round trips, rounding, timestamps, merge-patch nulls, tolerance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from canaryguard.core.status import (
    Condition,
    HistoryEntry,
    PageStatus,
    Rollback,
    SloStatus,
    Status,
    format_time,
    parse_time,
    round_value,
    status_from_dict,
)

T = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

FULL = Status(
    phase="RolledBack",
    message="rolled back",
    revision="r1",
    observed_generation=3,
    step_index=1,
    canary_weight=0,
    step_started_at=T,
    metrics_outage_since=T + timedelta(milliseconds=250),
    paused_reason=None,
    slos=(
        SloStatus("errors", "breach", "worse", None, 0.05, 0.0, 100.0, T, 0.01, 900.0, T),
        SloStatus("p99", "inconclusive", "few"),
    ),
    rollback=Rollback(T, "SLOBreach", "why", "errors", 0.01, 0.05, "absolute 0.01", "1m", T, T),
    page=PageStatus("canaryguard/ml/x/r1", "Pending", 2, None, "HTTP 503"),
    conditions=(Condition("Healthy", "False", "Breach", "errors", T, 3),),
    history=(HistoryEntry(T, "RolledBack", "SLOBreach", "why", 1, 0),),
)


def test_round_trip_through_json_is_exact() -> None:
    stored = json.loads(json.dumps(FULL.to_dict()))
    assert status_from_dict(stored) == FULL


def test_unset_object_fields_are_null_so_a_merge_patch_clears_them() -> None:
    data = Status().to_dict()
    assert data["rollback"] is None
    assert data["page"] is None
    assert data["stepStartedAt"] is None
    assert FULL.to_dict()["page"]["deliveredAt"] is None


def test_baseline_references_are_kept_on_the_wire() -> None:
    errors = FULL.to_dict()["slos"][0]
    assert (errors["baselineReference"], errors["baselineReferenceAt"]) == (
        0.01,
        "2024-06-01T12:00:00Z",
    )
    assert FULL.to_dict()["rollback"]["baselineReferenceAt"] == "2024-06-01T12:00:00Z"


def test_list_items_leave_unset_fields_out() -> None:
    item = FULL.to_dict()["slos"][1]
    assert item == {"name": "p99", "verdict": "inconclusive", "reason": "few"}


def test_values_keep_four_significant_digits_and_counts_read_as_integers() -> None:
    assert round_value(0.0123456) == 0.01235
    assert round_value(123456.7) == 123500.0
    assert round_value(float("nan")) is None
    assert round_value(float("inf")) is None
    assert round_value(1.7976931348623157e308) is None  # rounds up beyond the largest float
    assert FULL.to_dict()["slos"][0]["baselineReferenceSamples"] == 900
    assert isinstance(FULL.to_dict()["slos"][0]["baselineReferenceSamples"], int)


def test_timestamps_are_utc_rfc3339_with_milliseconds_only_when_present() -> None:
    assert format_time(T) == "2024-06-01T12:00:00Z"
    assert format_time(T + timedelta(microseconds=250_999)) == "2024-06-01T12:00:00.250Z"
    two_hours_east = timezone(timedelta(hours=2))
    assert format_time(datetime(2024, 6, 1, 14, 0, tzinfo=two_hours_east)) == (
        "2024-06-01T12:00:00Z"
    )
    assert format_time(datetime(2024, 6, 1, 12, 0)) == "2024-06-01T12:00:00Z"  # naive is UTC
    assert parse_time("2024-06-01T12:00:00.250Z") == T + timedelta(milliseconds=250)
    assert parse_time("yesterday") is None


def test_empty_or_missing_status_is_a_rollout_never_ticked() -> None:
    assert status_from_dict(None) == Status()
    assert status_from_dict({}) == Status()
    assert Status().phase == "Pending"


def test_reading_is_tolerant_of_hand_edits() -> None:
    garbage = {
        "phase": "Exploded",
        "stepIndex": "two",
        "canaryWeight": True,
        "stepStartedAt": 12,
        "slos": [{"name": "x", "verdict": "meh"}, "nonsense", {"name": "y", "verdict": "healthy"}],
        "rollback": {"reason": "SLOBreach"},
        "page": [],
        "conditions": [{"type": "Healthy"}],
        "history": None,
    }
    status = status_from_dict(garbage)
    assert status.phase == "Pending"
    assert (status.step_index, status.canary_weight, status.step_started_at) == (None, None, None)
    assert [s.name for s in status.slos] == ["y"]
    assert (status.rollback, status.page, status.conditions, status.history) == (None, None, (), ())


def test_condition_transition_time_moves_only_on_a_status_flip() -> None:
    s = Status().with_condition("Healthy", "True", "AllHealthy", "ok", T)
    later = T + timedelta(minutes=1)
    s = s.with_condition("Healthy", "True", "AllHealthy", "still ok", later)
    assert s.conditions[0].last_transition_time == T
    assert s.conditions[0].message == "still ok"
    s = s.with_condition("Healthy", "False", "Breach", "bad", later)
    assert s.conditions[0].last_transition_time == later


def test_conditions_are_kept_in_a_fixed_order() -> None:
    s = Status()
    for type_ in ("Paged", "SpecValid", "Progressing", "Healthy"):
        s = s.with_condition(type_, "True", "R", "m", T)
    assert [c.type for c in s.conditions] == ["Progressing", "Healthy", "SpecValid", "Paged"]


def test_history_is_bounded_to_the_latest_twenty() -> None:
    entries = [HistoryEntry(T + timedelta(seconds=i), "A", "R", str(i)) for i in range(25)]
    s = Status().with_history(entries)
    assert len(s.history) == 20
    assert s.history[0].message == "5"
    assert s.history[-1].message == "24"
