"""Leader election's rules (canaryguard.core.election), as pure functions of the Lease read,
when this candidate first saw it, and the time: acquire, renew, expire, take over, release.

Times are seconds on the candidate's own monotonic clock; `WALL` is what it writes into the
Lease, and never what it judges expiry by.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from canaryguard.core.election import (
    Claim,
    Lease,
    LeaseRecord,
    Sighting,
    Timing,
    Wait,
    campaign,
    release,
    renewal,
    sight,
)

WALL = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
TIMING = Timing.for_duration(15)
EARLIER = WALL - timedelta(minutes=5)


def held_by(holder: str, version: str = "7", duration: int = 15, transitions: int = 2) -> Lease:
    return Lease(LeaseRecord(holder, duration, EARLIER, EARLIER, transitions), version)


def test_timing_renews_every_third_and_leads_two_thirds_past_a_renewal() -> None:
    timing = Timing.for_duration(15)
    assert timing == Timing(
        lease_duration=15, renew_deadline=10.0, renew_period=5.0, retry_period=1.5
    )
    assert TIMING.leading_until(100.0) == 110.0
    assert Timing.for_duration(3) == Timing(3, 2.0, 1.0, 0.3)
    with pytest.raises(ValueError, match="at least 1s"):
        Timing.for_duration(0)


def test_no_lease_is_created_with_this_candidate_as_holder() -> None:
    decision = campaign("a", None, None, 0.0, WALL, TIMING)
    assert decision == Claim(LeaseRecord("a", 15, WALL, WALL, 0), version=None)


def test_a_lease_held_by_another_waits_its_whole_duration_from_when_it_was_first_seen() -> None:
    lease = held_by("b")
    seen = sight(None, lease, 100.0)
    assert seen == Sighting("7", 100.0)
    assert campaign("a", lease, seen, 100.0, WALL, TIMING) == Wait("b", expires=115.0)
    # Seen again unchanged: the sighting is kept, so the wait does not start over.
    seen = sight(seen, lease, 114.0)
    assert seen == Sighting("7", 100.0)
    assert campaign("a", lease, seen, 114.9, WALL, TIMING) == Wait("b", expires=115.0)


def test_an_expired_lease_is_taken_over_at_its_version_with_one_more_transition() -> None:
    lease = held_by("b", transitions=2)
    seen = sight(None, lease, 100.0)
    decision = campaign("a", lease, seen, 115.0, WALL, TIMING)
    assert decision == Claim(LeaseRecord("a", 15, WALL, WALL, 3), version="7")


def test_a_renewal_by_the_holder_starts_the_wait_again() -> None:
    seen = sight(None, held_by("b", version="7"), 100.0)
    renewed = held_by("b", version="8")
    seen = sight(seen, renewed, 110.0)
    assert seen == Sighting("8", 110.0)
    assert campaign("a", renewed, seen, 115.0, WALL, TIMING) == Wait("b", expires=125.0)


def test_expiry_follows_the_holders_duration_and_never_the_renew_time_it_wrote() -> None:
    # The holder's clock may be off: a renewTime an hour old proves nothing here.
    stale = Lease(replace(held_by("b").record, renewed=WALL - timedelta(hours=1)), "7")
    seen = sight(None, stale, 100.0)
    assert campaign("a", stale, seen, 100.0, WALL, TIMING) == Wait("b", expires=115.0)
    longer = held_by("b", duration=30)
    seen = sight(None, longer, 100.0)
    assert campaign("a", longer, seen, 120.0, WALL, TIMING) == Wait("b", expires=130.0)


def test_a_released_lease_is_taken_at_once() -> None:
    released = Lease(release(held_by("b").record, EARLIER), "9")
    assert released.record.holder == "" and released.record.duration_seconds == 1
    seen = sight(None, released, 100.0)
    decision = campaign("a", released, seen, 100.0, WALL, TIMING)
    assert decision == Claim(LeaseRecord("a", 15, WALL, WALL, 3), version="9")


def test_its_own_lease_is_taken_back_at_once_as_it_was() -> None:
    # A restart in the same pod: the Lease still names this candidate.
    mine = held_by("a", transitions=4)
    decision = campaign("a", mine, sight(None, mine, 0.0), 0.0, WALL, TIMING)
    assert decision == Claim(LeaseRecord("a", 15, EARLIER, WALL, 4), version="7")


def test_a_renewal_moves_only_the_renew_time() -> None:
    record = LeaseRecord("a", 15, EARLIER, EARLIER, 4)
    assert renewal(record, WALL, TIMING) == LeaseRecord("a", 15, EARLIER, WALL, 4)


def test_a_release_names_no_holder_and_keeps_the_count() -> None:
    record = LeaseRecord("a", 15, EARLIER, EARLIER, 4)
    assert release(record, WALL) == LeaseRecord("", 1, EARLIER, WALL, 4)


def test_a_lease_that_is_gone_forgets_the_sighting() -> None:
    assert sight(Sighting("7", 1.0), None, 2.0) is None
