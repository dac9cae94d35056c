"""The elector (canaryguard.runtime.leader) on virtual time, against an in-memory Lease store
with resourceVersions: who leads when, to the exact second.

A 15 s lease: the leader renews every 5 s and leads until 10 s past its last renewal's
start; candidates poll every 1.5 s. "Killed" means the elector's task is cancelled, which,
like SIGKILL, writes nothing more; "stopped" means its stop event is set (SIGTERM).
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from canaryguard.core.election import Lease, LeaseRecord
from canaryguard.core.ports import LeaseConflict
from canaryguard.runtime.leader import Election, Elector
from tests.unit.virtual_time import VirtualClock, run_virtual

NS, NAME = "canaryguard-system", "canaryguard"
T0 = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


class ApiDown(Exception):
    """The API server cannot be reached (from one candidate)."""


@dataclass
class Store:
    """One Lease as the API server keeps it: every write bumps the version."""

    clock: VirtualClock
    lease: Lease | None = None
    writes: list[tuple[float, str, str]] = field(default_factory=list)  # (time, who, holder)
    _version: int = 0

    def put(self, record: LeaseRecord, who: str) -> Lease:
        self._version += 1
        self.lease = Lease(record, str(self._version))
        self.writes.append((self.clock(), who, record.holder))
        return self.lease


@dataclass
class Leases:
    """One candidate's view of the store (the `Leases` port): it can be cut off, or hang."""

    store: Store
    who: str
    down: bool = False
    hang: bool = False

    async def _reach(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.down:
            raise ApiDown(f"{self.who}: connection refused")

    async def get(self, namespace: str, name: str) -> Lease | None:
        await self._reach()
        return self.store.lease

    async def create(self, namespace: str, name: str, record: LeaseRecord) -> Lease:
        await self._reach()
        if self.store.lease is not None:
            raise LeaseConflict("exists")
        return self.store.put(record, self.who)

    async def update(self, namespace: str, name: str, record: LeaseRecord, version: str) -> Lease:
        await self._reach()
        if self.store.lease is None or self.store.lease.version != version:
            raise LeaseConflict("changed")
        return self.store.put(record, self.who)


@dataclass
class Work:
    """The leader's work (the scheduler): records each term, as (start, end, how it ended).
    On resign it takes `finish` seconds (ticks in flight) before it returns."""

    clock: VirtualClock
    finish: float = 0.0
    terms: list[tuple[float, float | None, str]] = field(default_factory=list)

    async def __call__(self, resign: asyncio.Event) -> None:
        start = self.clock()
        try:
            await resign.wait()
            await asyncio.sleep(self.finish)
        except asyncio.CancelledError:
            self.terms.append((start, self.clock(), "cancelled"))
            raise
        self.terms.append((start, self.clock(), "resigned"))


@dataclass
class Candidate:
    elector: Elector
    work: Work
    leases: Leases
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self.stop, self.work))

    async def kill(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def shutdown(self) -> None:
        assert self.task is not None
        self.stop.set()
        await self.task


def candidate(clock: VirtualClock, store: Store, identity: str, finish: float = 0.0) -> Candidate:
    leases = Leases(store, identity)
    elector = Elector(
        leases,
        Election(NS, NAME, identity, lease_duration=15),
        clock=clock,
        wall=lambda: T0 + timedelta(seconds=clock()),
    )
    return Candidate(elector, Work(clock, finish), leases, asyncio.Event())


async def at(clock: VirtualClock, moment: float) -> None:
    """Let virtual time reach `moment`."""
    await asyncio.sleep(moment - clock())


def leader_gauge() -> float | None:
    return REGISTRY.get_sample_value("canaryguard_leader")


def test_a_lone_candidate_creates_the_lease_renews_every_5s_and_releases_it_on_stop() -> None:
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)
        a = candidate(clock, store, "a")
        a.start()
        await at(clock, 1)
        assert a.elector.leading and leader_gauge() == 1
        assert a.work.terms == []  # working: a term is recorded when it ends
        await at(clock, 16)
        await a.shutdown()
        assert not a.elector.leading and leader_gauge() == 0
        assert store.writes == [(0, "a", "a"), (5, "a", "a"), (10, "a", "a"), (15, "a", "a"),
                                (16, "a", "")]  # fmt: skip
        assert a.work.terms == [(0, 16, "resigned")]
        assert store.lease is not None
        record = store.lease.record
        assert (record.acquired, record.renewed) == (T0, T0 + timedelta(seconds=16))
        assert (record.transitions, record.duration_seconds) == (0, 1)

    run_virtual(main)


def test_the_standby_takes_over_a_killed_leader_one_duration_after_it_saw_the_last_renewal() -> (
    None
):
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)
        a, b = candidate(clock, store, "a"), candidate(clock, store, "b")
        a.start()
        await at(clock, 0.25)
        b.start()  # polls at 0.25, 1.75, ... 9.25, 10.75 (first sight of the 10 s renewal)
        await at(clock, 11)
        assert a.elector.leading and not b.elector.leading
        await a.kill()  # at 11, one second after its last renewal
        assert a.work.terms == [(0, 11, "cancelled")]
        await at(clock, 25.7)
        assert not b.elector.leading
        await at(clock, 25.75)  # 10.75 + 15
        assert b.elector.leading
        assert store.writes[-1] == (25.75, "b", "b")
        assert store.lease is not None and store.lease.record.transitions == 1
        await b.kill()

    run_virtual(main)


def test_two_candidates_starting_together_elect_exactly_one() -> None:
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)
        a, b = candidate(clock, store, "a"), candidate(clock, store, "b")
        a.start()
        b.start()
        both: list[float] = []
        for _ in range(240):  # a minute, every quarter second
            await asyncio.sleep(0.25)
            if a.elector.leading and b.elector.leading:
                both.append(clock())
        assert both == []
        assert [a.elector.leading, b.elector.leading].count(True) == 1
        assert {holder for _, _, holder in store.writes} == {"a"}  # a's task started first
        await a.kill()
        await b.kill()

    run_virtual(main)


def test_a_stopped_leader_finishes_its_ticks_then_releases_and_the_standby_takes_over_at_its_next_poll() -> (  # noqa: E501
    None
):
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)
        a = candidate(clock, store, "a", finish=0.5)  # a tick in flight takes 0.5 s to end
        b = candidate(clock, store, "b")
        a.start()
        await at(clock, 0.25)
        b.start()
        await at(clock, 11)
        await a.shutdown()
        assert a.work.terms == [(0, 11.5, "resigned")]
        assert store.writes[-1] == (11.5, "a", "")
        await at(clock, 12.25)  # b's next poll after the release
        assert b.elector.leading
        assert store.writes[-1] == (12.25, "b", "b")
        assert store.lease is not None and store.lease.record.transitions == 1
        await b.kill()

    run_virtual(main)


def test_a_leader_whose_renewal_meets_a_conflict_stops_at_once_and_stands_by() -> None:
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)
        a = candidate(clock, store, "a")
        a.start()
        await at(clock, 7)
        assert store.lease is not None
        store.put(LeaseRecord("intruder", 15, T0, T0, 1), "intruder")
        await at(clock, 9.9)
        assert a.elector.leading  # it cannot know before it writes
        await at(clock, 10.1)
        assert not a.elector.leading
        assert a.work.terms == [(0, 10, "cancelled")]
        # It stands by; the intruder never renews, so a sees its Lease expire 15 s after
        # first seeing it (at 10, when the conflict sent it back to campaigning).
        await at(clock, 24.9)
        assert not a.elector.leading
        await at(clock, 25.1)
        assert a.elector.leading
        assert store.writes[-1] == (25, "a", "a")
        assert store.lease is not None and store.lease.record.transitions == 2
        await a.kill()

    run_virtual(main)


@pytest.mark.parametrize("failure", ["down", "hang"])
def test_a_leader_that_cannot_renew_stops_at_the_deadline_before_the_standby_takes_over(
    failure: str,
) -> None:
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)
        a, b = candidate(clock, store, "a"), candidate(clock, store, "b")
        a.start()
        await at(clock, 0.25)
        b.start()  # polls at 0.25, ... 4.75, 6.25 (first sight of the 5 s renewal)
        await at(clock, 6)
        setattr(a.leases, failure, True)  # a is cut off after renewing at 5
        await at(clock, 14.9)
        assert a.elector.leading
        await at(clock, 15.01)
        assert not a.elector.leading
        assert a.work.terms == [(0, 15, "cancelled")]  # 5 + the 10 s renew deadline
        await at(clock, 21.2)
        assert not b.elector.leading
        await at(clock, 21.25)  # 6.25 + 15: six seconds after a stopped
        assert b.elector.leading
        await a.kill()
        await b.kill()

    run_virtual(main)


def test_a_restarted_candidate_takes_back_the_lease_that_names_it_at_once() -> None:
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)
        store.put(LeaseRecord("a", 15, T0, T0, 4), "a")  # before its restart
        a = candidate(clock, store, "a")
        a.start()
        await at(clock, 0.5)
        assert a.elector.leading
        assert store.writes[-1] == (0, "a", "a")
        assert store.lease is not None and store.lease.record.transitions == 4
        await a.kill()

    run_virtual(main)


def test_a_candidate_that_cannot_reach_the_api_keeps_trying_and_leads_once_it_can() -> None:
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)
        a = candidate(clock, store, "a")
        a.leases.down = True
        a.start()
        await at(clock, 4)
        assert not a.elector.leading
        a.leases.down = False
        await at(clock, 4.5)  # the poll after 4 (0, 1.5, 3, 4.5)
        assert a.elector.leading
        await a.kill()

    run_virtual(main)


def test_a_leaders_work_that_ends_by_itself_releases_the_lease_and_raises() -> None:
    async def main(clock: VirtualClock) -> None:
        store = Store(clock)

        async def broken(resign: asyncio.Event) -> None:
            await asyncio.sleep(2)
            raise RuntimeError("scheduler bug")

        elector = Elector(
            Leases(store, "a"),
            Election(NS, NAME, "a", lease_duration=15),
            clock=clock,
            wall=lambda: T0 + timedelta(seconds=clock()),
        )
        with pytest.raises(RuntimeError, match="scheduler bug"):
            await elector.run(asyncio.Event(), broken)
        assert not elector.leading
        assert store.writes == [(0, "a", "a"), (2, "a", "")]

    run_virtual(main)
