"""The Lease bodies the adapter writes and reads: MicroTime as the API server has it, and
writes made conditional on the version read."""

from __future__ import annotations

from datetime import UTC, datetime

from canaryguard.adapters.leases import body_for, lease_from_body, micro_time
from canaryguard.core.election import LeaseRecord


def test_lease_times_are_written_as_microtime_and_read_back() -> None:
    when = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert micro_time(when) == "2024-06-01T12:00:00.000000Z"
    record = LeaseRecord("a", 15, when, when.replace(microsecond=250), 3)
    body = body_for("canaryguard-system", "canaryguard", record, "42")
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2024-06-01T12:00:00.000000Z",
        "renewTime": "2024-06-01T12:00:00.000250Z",
        "leaseTransitions": 3,
    }
    lease = lease_from_body(body)
    assert (lease.record, lease.version) == (record, "42")
    assert "resourceVersion" not in body_for("ns", "n", record, None)["metadata"]


def test_a_lease_without_a_holder_reads_as_released() -> None:
    lease = lease_from_body({"metadata": {"resourceVersion": "7"}, "spec": {}})
    assert lease.record == LeaseRecord("", 0, None, None, 0)
