"""Leader election on a Lease: which of several operator replicas ticks the rollouts.

The rule, in words (the standard Kubernetes one, as client-go's `leaderelection` has it):

- A Lease names its holder, how long a claim lasts without renewal (`leaseDurationSeconds`),
  when it was acquired and last renewed, and how many times it changed hands.
- A candidate never trusts another machine's clock. A Lease someone else holds has expired
  only once this candidate has seen it unchanged (the same resourceVersion) for its whole
  duration, measured on its own monotonic clock from when it first saw that version.
- A candidate claims a Lease that does not exist, that nobody holds (it was released), that
  names the candidate itself (its own restart in the same pod), or that has expired as above.
  Every write is conditional on the resourceVersion read, so of two candidates that claim at
  once exactly one wins; the other gets a conflict.
- The holder renews every `renew_period`. It leads only until `renew_deadline` after the start
  of its last successful write, which is shorter than the lease duration: a holder that cannot
  renew stops acting before any other candidate can see its Lease expire. A renewal that meets
  a conflict means someone else wrote the Lease: the holder stops leading at once.
- A holder that stops on purpose releases the Lease (no holder), so a standby takes over at
  its next poll instead of waiting for the Lease to expire.

Everything here is pure: times are arguments (`now` from a monotonic clock, `wall` for the
timestamps written into the Lease).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class Timing:
    """How a candidate paces itself, in seconds, all derived from the lease duration."""

    lease_duration: int
    renew_deadline: float
    renew_period: float
    retry_period: float

    @classmethod
    def for_duration(cls, lease_duration: int) -> Timing:
        """Renew every third of the duration and lead for two thirds past a renewal, so one
        failed renewal is tolerated and a third of the duration is left as a margin for
        clocks that run at different rates; poll and retry every tenth."""
        if lease_duration < 1:
            raise ValueError(f"lease duration must be at least 1s, got {lease_duration}s")
        return cls(
            lease_duration=lease_duration,
            renew_deadline=lease_duration * 2 / 3,
            renew_period=lease_duration / 3,
            retry_period=lease_duration / 10,
        )

    def leading_until(self, write_started: float) -> float:
        """Until when a holder leads after a successful write that started at `write_started`.
        Any other candidate sees that write at or after its start, so it cannot expire the
        Lease before `write_started + lease_duration`."""
        return write_started + self.renew_deadline


@dataclass(frozen=True)
class LeaseRecord:
    """What a coordination.k8s.io/v1 Lease's spec holds."""

    holder: str  # "" when nobody holds it (released)
    duration_seconds: int
    acquired: datetime | None
    renewed: datetime | None
    transitions: int


@dataclass(frozen=True)
class Lease:
    """A Lease as read from (or written to) the API server, with the version writes need."""

    record: LeaseRecord
    version: str


@dataclass(frozen=True)
class Sighting:
    """When this candidate first saw the Lease at `version` (its own monotonic clock)."""

    version: str
    since: float


def sight(previous: Sighting | None, lease: Lease | None, now: float) -> Sighting | None:
    """The sighting after reading `lease` at `now`: kept while the version is the same,
    started again when it changed."""
    if lease is None:
        return None
    if previous is not None and previous.version == lease.version:
        return previous
    return Sighting(lease.version, now)


@dataclass(frozen=True)
class Claim:
    """Write `record`: create the Lease (`version` None) or update it at `version`."""

    record: LeaseRecord
    version: str | None


@dataclass(frozen=True)
class Wait:
    """Someone else holds the Lease; it expires at `expires` unless renewed before."""

    holder: str
    expires: float


def campaign(
    me: str,
    lease: Lease | None,
    sighting: Sighting | None,
    now: float,
    wall: datetime,
    timing: Timing,
) -> Claim | Wait:
    """What a candidate that does not lead does with the Lease it just read."""
    if lease is None:
        return Claim(LeaseRecord(me, timing.lease_duration, wall, wall, 0), None)
    record = lease.record
    if record.holder == me:
        # Its own claim, from before a restart in the same pod (or a renewal whose answer
        # was lost): nobody else holds it, take it back as it is.
        return Claim(renewal(record, wall, timing), lease.version)
    if record.holder:
        assert sighting is not None and sighting.version == lease.version, (sighting, lease)
        expires = sighting.since + record.duration_seconds
        if now < expires:
            return Wait(record.holder, expires)
    return Claim(
        LeaseRecord(me, timing.lease_duration, wall, wall, record.transitions + 1), lease.version
    )


def renewal(record: LeaseRecord, wall: datetime, timing: Timing) -> LeaseRecord:
    """The holder's record renewed at `wall`."""
    return replace(record, renewed=wall, duration_seconds=timing.lease_duration)


def release(record: LeaseRecord, wall: datetime) -> LeaseRecord:
    """The holder's record given up at `wall`: no holder, so the next candidate that reads it
    claims it at once (the shortest duration, for candidates that wait out expiry anyway)."""
    return replace(record, holder="", duration_seconds=1, renewed=wall)
