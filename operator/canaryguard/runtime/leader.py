"""Leader election: of several replicas, only the one that holds the Lease ticks rollouts.

kopf's peering pauses only kopf's own handlers, and the analysis ticks come from the
controller's scheduler, so the replicas elect a leader on a coordination.k8s.io/v1 Lease
instead (the rules are in `canaryguard.core.election`; this module carries them out). Every
replica keeps its watch running, so a standby's view of the rollouts is warm and it ticks each
of them as soon as it takes over.

While it leads, the elector runs `lead(resign)` (the controller's scheduler). Stopped (SIGTERM),
it sets `resign`, lets the ticks in flight finish and releases the Lease, so a standby takes
over at its next poll. When it can no longer be sure it leads (no renewal for the renew
deadline, or someone else wrote the Lease) it cancels `lead` at once, ticks in flight
included, and campaigns again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from canaryguard.core.election import (
    Lease,
    Sighting,
    Timing,
    Wait,
    campaign,
    release,
    renewal,
    sight,
)
from canaryguard.core.ports import LeaseConflict, Leases
from canaryguard.runtime import metrics

log = logging.getLogger(__name__)

Lead = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Election:
    """Which Lease to campaign for, as whom (the `canaryguard run` flags)."""

    namespace: str
    name: str
    identity: str
    lease_duration: int = 15


class Elector:
    """Campaigns for one Lease and runs the leader's work while it holds it."""

    def __init__(
        self,
        leases: Leases,
        election: Election,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`clock` must be the event loop's clock (monotonic): the elector sleeps on it."""
        self.election = election
        self.timing = Timing.for_duration(election.lease_duration)
        self._leases = leases
        self._clock = clock
        self._wall = wall
        self._lease: Lease | None = None  # as this replica last wrote it, while it leads
        self._sighting: Sighting | None = None
        self._until = 0.0  # leads until then, unless renewed
        self._next = 0.0  # next renewal (or campaign round)
        self._holder: str | None = None  # the other holder last logged
        self._last_error: str | None = None
        self.leading = False

    @property
    def lease_ref(self) -> str:
        return f"{self.election.namespace}/{self.election.name}"

    async def run(self, stop: asyncio.Event, lead: Lead) -> None:
        """Campaign until `stop` is set, running `lead(resign)` while this replica leads.

        `lead` should return once `resign` is set. If it ends while this replica still
        leads, that is a bug: the Lease is released and the error raised."""
        stopper = asyncio.create_task(stop.wait())
        try:
            while await self._campaign(stopper):
                resign = asyncio.Event()
                work = asyncio.create_task(lead(resign), name="canaryguard-lead")
                try:
                    lost = await self._hold(stopper, work)
                except BaseException:
                    work.cancel()
                    raise
                if lost is None:
                    # Stopped (or `lead` ended): finish the ticks in flight, then hand over.
                    resign.set()
                    try:
                        await work
                    finally:
                        self._stop_leading("stopping", graceful=True)
                        await self._release()
                    if not stop.is_set():
                        raise RuntimeError("the leader's work ended while it still led")
                    return
                self._stop_leading(lost)
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        finally:
            stopper.cancel()
            self._stop_leading("the elector ended")

    # --- not leading: campaign ---------------------------------------------------------------

    async def _campaign(self, stopper: asyncio.Task[bool]) -> bool:
        """Read and claim the Lease until this replica leads (True) or is stopped (False)."""
        while not stopper.done():
            next_round = await self._round()
            if self.leading:
                return True
            await self._sleep_until(next_round, stopper)
        return False

    async def _round(self) -> float:
        """One read of the Lease and, when it can be claimed, one claim. Returns when the
        next round is due."""
        election, timing = self.election, self.timing
        try:
            lease = await self._leases.get(election.namespace, election.name)
            now = self._clock()
            self._sighting = sight(self._sighting, lease, now)
            decision = campaign(election.identity, lease, self._sighting, now, self._wall(), timing)
            if isinstance(decision, Wait):
                self._standing_by(decision.holder)
                return min(now + timing.retry_period, decision.expires)
            started = self._clock()
            if decision.version is None:
                written = await self._leases.create(
                    election.namespace, election.name, decision.record
                )
            else:
                written = await self._leases.update(
                    election.namespace, election.name, decision.record, decision.version
                )
        except LeaseConflict:
            # Another candidate wrote first; the next read says who.
            return self._clock() + timing.retry_period
        except Exception as exc:  # the API server may be away: keep trying
            self._error("could not read or claim the Lease", exc)
            return self._clock() + timing.retry_period
        self._last_error = None
        self._start_leading(written, started)
        return self._next

    # --- leading: renew ------------------------------------------------------------------------

    async def _hold(self, stopper: asyncio.Task[bool], work: asyncio.Task[None]) -> str | None:
        """Renew the Lease while leading. Returns None when stopped (or when `work` ended),
        else why leadership was lost."""
        timing = self.timing
        while True:
            await self._sleep_until(min(self._next, self._until), stopper, work)
            if stopper.done() or work.done():
                return None
            now = self._clock()
            if now >= self._until:
                return f"the Lease was not renewed for {timing.renew_deadline:g}s"
            if now < self._next:
                continue
            assert self._lease is not None
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the call completes.
                async with asyncio.timeout(self._until - now):
                    written = await self._leases.update(
                        self.election.namespace,
                        self.election.name,
                        renewal(self._lease.record, self._wall(), timing),
                        self._lease.version,
                    )
            except LeaseConflict:
                return "the Lease was written by someone else"
            except Exception as exc:  # retried until the renew deadline
                self._error("could not renew the Lease", exc)
                self._next = self._clock() + timing.retry_period
                continue
            self._last_error = None
            self._lease = written
            self._until = timing.leading_until(now)
            self._next = now + timing.renew_period

    async def _release(self) -> None:
        """Give the Lease up (no holder), if it is still as this replica wrote it."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            async with asyncio.timeout(self.timing.renew_deadline):
                await self._leases.update(
                    self.election.namespace,
                    self.election.name,
                    release(lease.record, self._wall()),
                    lease.version,
                )
        except LeaseConflict:
            log.info("lease not released: someone else wrote it lease=%s", self.lease_ref)
        except Exception as exc:
            log.warning(
                "lease not released; a standby takes over when it expires lease=%s error=%s",
                self.lease_ref,
                exc,
            )
        else:
            log.info("lease released lease=%s identity=%s", self.lease_ref, self.election.identity)

    # --- state, logs and the metric ----------------------------------------------------------

    def _start_leading(self, lease: Lease, write_started: float) -> None:
        self._lease = lease
        self._until = self.timing.leading_until(write_started)
        self._next = write_started + self.timing.renew_period
        self._holder = None
        self.leading = True
        metrics.LEADER.set(1)
        log.info(
            "leading lease=%s identity=%s transitions=%d",
            self.lease_ref,
            self.election.identity,
            lease.record.transitions,
        )

    def _stop_leading(self, reason: str, graceful: bool = False) -> None:
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        log.log(
            logging.INFO if graceful else logging.WARNING,
            "stopped leading lease=%s identity=%s reason=%s",
            self.lease_ref,
            self.election.identity,
            reason,
        )

    def _standing_by(self, holder: str) -> None:
        metrics.LEADER.set(0)
        if holder != self._holder:
            self._holder = holder
            log.info(
                "standing by lease=%s identity=%s holder=%s",
                self.lease_ref,
                self.election.identity,
                holder,
            )

    def _error(self, what: str, exc: Exception) -> None:
        """Log a failed call once per distinct error, not once per retry."""
        text = f"{type(exc).__name__}: {str(exc)[:200]}"
        if text != self._last_error:
            self._last_error = text
            log.warning("%s lease=%s error=%s", what, self.lease_ref, text)

    async def _sleep_until(self, when: float, *tasks: asyncio.Future[Any]) -> None:
        """Sleep until `when` on the monotonic clock, or until one of `tasks` is done."""
        delay = when - self._clock()
        if delay > 0 and not any(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
