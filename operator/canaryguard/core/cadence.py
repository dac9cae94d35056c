"""The tick grid: the instants a rollout's ticks are evaluated at, live and in a backtest.

A rollout's cadence is anchored at one tick (its first, or one run out of cadence: a spec
change, a manual request), and its k-th tick after that anchor is due k intervals later.
Intervals shorter than `SLOTTED_FROM` tick on that grid to the millisecond; longer ones tick
in the whole `SLOT` that follows it (the slot whose batched queries they share), never
earlier. Times are integer milliseconds (what the status stores), so the scheduler and the
backtest compute the very same instants, with no floating-point rounding of their own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SLOT_MS = 1000
SLOT = SLOT_MS / 1000  # seconds
SLOTTED_FROM = 10.0  # intervals at least this long (seconds) tick in slots

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def slotted(interval_ms: int) -> bool:
    """Whether ticks of this interval fall in whole slots."""
    return interval_ms >= SLOTTED_FROM * 1000


def slot_after(at_ms: int) -> int:
    """The first whole slot at or after `at_ms`."""
    return -(-at_ms // SLOT_MS) * SLOT_MS


def grid_ms(anchor_ms: int, interval_ms: int, k: int) -> int:
    """The time of the k-th tick after the anchor (k = 0: the anchor itself, never moved)."""
    at = anchor_ms + k * interval_ms
    return slot_after(at) if k and slotted(interval_ms) else at


def to_ms(moment: datetime) -> int:
    """`moment` in whole milliseconds since the epoch (cut, as the status cuts it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_ms(at_ms: int) -> datetime:
    """The UTC time of `at_ms` milliseconds since the epoch, exactly."""
    return _EPOCH + timedelta(milliseconds=at_ms)
