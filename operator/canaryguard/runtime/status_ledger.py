"""What the controller decided for each rollout, what it last wrote, and when.

A tick whose status changed only in heartbeat values (`canaryguard.core.relevance`) is
written only when one of the rollout's heartbeat beats has passed since its status was last
written (by this operator, or as the stored `status.valuesAt` says, so a restart or a new
leader does not rewrite every rollout's values at once). A rollout's beats are `heartbeat`
apart at a phase fixed by a hash of its key (`heartbeat_phase`): thousands of rollouts
started together, whose first writes all fell in one interval, still write their values
spread evenly over the period, never bunched where they started. So values-only writes come
at most once per period, and the stored values are never more than a period (and a tick)
old. Anything else a tick changes is written at once.
Either way the next tick decides from the status this one decided, written or not, so
holding values back never changes a decision.
The same holds when a write fails after its weights were applied (a rollback whose status
patch the API server refused): the decision stands and is written at the next tick.

The decided status is used only while the stored status is still the one it was decided on
top of (compared with the stored status as this operator last saw it). When someone else
changed the stored status, or after a restart, the tick decides from the stored status.
A crash therefore loses only heartbeat values (and a decision whose write had failed, whose
weights then hold the rollout safely: DESIGN.md, traffic is fail-safe).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from canaryguard.core.relevance import reader_relevant
from canaryguard.core.status import Status


@dataclass
class _Entry:
    decided: Status
    # The stored status (as served) that `decided` was decided on top of.
    stored: Mapping[str, Any] | None
    written_at: datetime | None = None
    # Whether `decided` differs from the stored status (held back, or its write failed).
    pending: bool = False


class StatusLedger:
    """Per rollout: the status decided last and when a status was last written."""

    def __init__(self, heartbeat: timedelta) -> None:
        self.heartbeat = heartbeat
        self._entries: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def base(self, key: Hashable, stored_raw: Mapping[str, Any] | None, stored: Status) -> Status:
        """The status a tick decides from: the one decided last, unless the stored status
        (`stored_raw` as served, `stored` parsed) is no longer the one it was decided on."""
        entry = self._entries.get(key)
        if entry is None or not _same(entry.stored, stored_raw):
            return stored
        return entry.decided

    def must_write(
        self,
        key: Hashable,
        stored: Status,
        decided: Status,
        now: datetime,
        stored_at: datetime | None = None,
    ) -> bool:
        """Whether to write `decided` over `stored` now: a reader needs the change, or a beat
        of the rollout's heartbeat has passed since this operator last wrote its status or,
        before it has, since `stored_at` (when the stored status was written: `valuesAt`),
        or neither is known."""
        if reader_relevant(stored, decided):
            return True
        entry = self._entries.get(key)
        written_at = (entry.written_at if entry is not None else None) or stored_at
        period = self.heartbeat.total_seconds()
        if written_at is None or period <= 0:
            return True
        phase = heartbeat_phase(key, period)
        return _beat(now, phase, period) > _beat(written_at, phase, period)

    def held(
        self,
        key: Hashable,
        stored_raw: Mapping[str, Any] | None,
        decided: Status,
        pending: bool = True,
    ) -> None:
        """`decided` was not written (held back, or its write failed; `pending=False`: it is
        what is stored already): the next tick decides from it as long as the stored status
        is still `stored_raw`."""
        entry = self._entries.get(key)
        written_at = entry.written_at if entry is not None else None
        self._entries[key] = _Entry(decided, stored_raw, written_at, pending)

    def pending(self, key: Hashable) -> Status | None:
        """The status decided for `key` and not written yet, if any."""
        entry = self._entries.get(key)
        return entry.decided if entry is not None and entry.pending else None

    def wrote(
        self, key: Hashable, stored_raw: Mapping[str, Any] | None, decided: Status, now: datetime
    ) -> None:
        """`decided` was written at `now`; the API server now stores `stored_raw`."""
        self._entries[key] = _Entry(decided, stored_raw, now)

    def keep(self, key: Hashable, decided: Status) -> None:
        """The next tick decides from `decided`, over whatever stored status was last seen
        (a tick failure recorded on the stored status leaves an unwritten decision standing)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.decided = decided

    def forget(self, key: Hashable) -> None:
        """The rollout is gone."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every rollout's decision (a new leader's term: another replica may have
        moved the rollouts on meanwhile; heartbeats are then due a period after the stored
        status' `valuesAt`)."""
        self._entries.clear()


def heartbeat_phase(key: Hashable, period: float) -> float:
    """Where in each heartbeat period (seconds after a multiple of it, in UNIX time) the
    rollout `key`'s beat falls: fixed by its key, the same in every process and restart."""
    digest = hashlib.blake2b(repr(("heartbeat", key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64 * period


def _beat(moment: datetime, phase: float, period: float) -> int:
    """How many of a rollout's beats have passed by `moment`."""
    return math.floor((moment.timestamp() - phase) / period)


def _same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    return a is b or (a or {}) == (b or {})
