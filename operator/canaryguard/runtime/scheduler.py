"""A scheduler of analysis ticks: one loop for every rollout, each at its own interval.

kopf timers take their interval at decoration time and daemons put a finalizer on every
resource (so deleting one hangs while the operator is down). This scheduler needs neither:
the watch feeds it rollouts, and it calls `tick(key)` for each at the rollout's own interval,
never twice at once for one rollout, with a bound on ticks in flight so that a slow
Prometheus for one rollout never delays the others beyond that bound.

Rollouts of long intervals (`SLOTTED_FROM` and up) tick in slots: their ticks start on the
next whole `SLOT` of the wall clock, so that many rollouts tick together and their builtin
queries are answered by one batched query (`canaryguard.runtime.batcher`), and those listed
at start-up (`spread`) are spread over their interval instead of all ticking at once. A tick
is at most one slot later than its cadence says, and the cadence itself never drifts.

Every tick has a time on its rollout's grid (`canaryguard.core.cadence`): its slot when
slotted, else its due time to the millisecond; the first tick of a cadence (a new rollout, a
spec change) takes the moment it is due. A tick that starts within one slot of that time
takes it as its `now` (`scheduled_time()`), and its queries are evaluated at it: ticks of a
rollout are then exactly whole intervals apart, so a sustained window that is a multiple of
the interval ends exactly on a tick, whatever the few milliseconds each tick waited for its
turn, and the backtest, which evaluates the same grid, sees what the live ticks saw. A
slotted tick that starts later than that (behind a backlog) takes the whole second it starts
in, so the late ticks of one second still share their batched queries.

The bound on ticks in flight counts ticks at work, not ticks waiting for others: a tick
waiting inside `slot_released()` (for a batched query) lends its place to a tick still
waiting for one, and takes a place again before it goes on. So all the rollouts of one slot
reach the batcher together however many they are, and share one query per group. A tick is
announced (`expect`, the batcher's) from when it is dispatched, not from when it gets its
place, so a batch waits (within its window) for the ticks queued behind the bound too.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from canaryguard.core.cadence import SLOT, SLOT_MS, SLOTTED_FROM, grid_ms, slot_after, slotted
from canaryguard.runtime import metrics

log = logging.getLogger(__name__)

TickFn = Callable[[Hashable], Awaitable[None]]


@dataclass
class _Entry:
    interval: float
    due: float  # when the cadence says the next tick is due
    start: float = 0.0  # when it is dispatched: `due`, or the slot after it
    at: float = 0.0  # its time on the grid, in wall-clock seconds (whole milliseconds)
    anchor_ms: int = 0  # the wall-clock time of the tick the cadence is anchored at
    k: int = 0  # how many intervals after the anchor the queued tick is
    running: bool = False
    rerun: bool = False


def spread_offset(key: Hashable, interval: float) -> float:
    """Where in its interval a rollout listed at start-up first ticks: a slot fixed by its
    key (the same after every restart), so thousands listed at once tick spread out."""
    if interval < SLOTTED_FROM:
        return 0.0
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest) / 2**64
    return math.floor(fraction * interval / SLOT) * SLOT


# The grid time of the tick running in this context, in wall-clock seconds (set by the
# scheduler).
_SCHEDULED: ContextVar[float | None] = ContextVar("canaryguard_scheduled", default=None)


@dataclass
class _Place:
    """One tick's place among the ticks in flight, lent while it waits for others."""

    slots: asyncio.Semaphore
    held: bool = False
    waiting: int = 0  # its coroutines inside `slot_released()`
    regain: asyncio.Lock = field(default_factory=asyncio.Lock)


# The place of the tick running in this context (set by the scheduler).
_PLACE: ContextVar[_Place | None] = ContextVar("canaryguard_place", default=None)


@asynccontextmanager
async def slot_released() -> AsyncIterator[None]:
    """Within this, the running tick does not count against the bound on ticks in flight
    (it waits for other ticks, e.g. in a batch); on leaving, it waits for a place again.
    Nests and overlaps (several queries of one tick waiting at once); outside a scheduled
    tick it does nothing."""
    place = _PLACE.get()
    if place is None:
        yield
        return
    place.waiting += 1
    if place.held:
        place.held = False
        place.slots.release()
    try:
        yield
    finally:
        place.waiting -= 1
        if place.waiting == 0:
            async with place.regain:  # one acquire at a time for the tick
                if not place.held and place.waiting == 0:
                    await place.slots.acquire()
                    place.held = True


def scheduled_time() -> float | None:
    """The running tick's time on its grid (UNIX seconds, whole milliseconds) if it started
    within one slot of it, else None (the tick's time is then the clock's)."""
    return _SCHEDULED.get()


class Scheduler:
    """Calls `tick(key)` every `interval` seconds per key, from when the key was added.

    Ticks keep to a fixed cadence (due times advance by the interval, skipping ticks that
    were missed while one ran long), so a window that ends between two ticks is acted on
    at the next one, at most one interval late.
    """

    def __init__(
        self,
        tick: TickFn,
        concurrency: int = 32,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        expect: Callable[[], Callable[[], None]] | None = None,
    ) -> None:
        """`clock` runs the schedule; `wall` places the slots on whole wall-clock seconds;
        `expect` is called when a tick is dispatched, and what it returns when the tick ends
        (`QueryBatcher.expect`; settable later as the attribute `expect`)."""
        self.expect = expect
        self._tick = tick
        self._clock = clock
        self._wall = wall
        self._slots = asyncio.Semaphore(concurrency)
        self._entries: dict[Hashable, _Entry] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def upsert(
        self, key: Hashable, interval: float, now: bool = False, spread: bool = False
    ) -> None:
        """Track `key` at `interval`; `now` asks for a tick as soon as possible (spec change).
        A new key ticks at once, or with `spread` (listed at start-up) at its
        `spread_offset`."""
        interval = max(interval, 0.05)
        entry = self._entries.get(key)
        if entry is None:
            offset = spread_offset(key, interval) if spread else 0.0
            entry = self._entries[key] = _Entry(interval, self._clock() + offset)
            self._push(key, entry, exact=not spread, anchor=True)
        else:
            if interval != entry.interval:
                # The grid goes on from the tick already queued, at the new interval.
                entry.anchor_ms += entry.k * _ms(entry.interval)
                entry.k = 0
            entry.interval = interval
            if now:
                if entry.running:
                    entry.rerun = True
                else:
                    entry.due = self._clock()
                    self._push(key, entry, exact=True, anchor=True)
        self._wake.set()

    def remove(self, key: Hashable) -> None:
        """Stop ticking `key` (a tick in flight finishes)."""
        self._entries.pop(key, None)

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch due ticks until `stop` is set, then wait for ticks in flight.

        Cancelled instead (a leader that lost its Lease), it cancels the ticks in flight too:
        each stops at the await it is in, as if the process had died there, which the
        controller's write order makes safe. Tracked keys and due times stay, so a later
        `run` (leading again) ticks every rollout that is due at once.
        """
        stopper = asyncio.create_task(stop.wait())
        waker: asyncio.Task[bool] | None = None
        try:
            while not stop.is_set():
                self._dispatch_due()
                delay = self._heap[0][0] - self._clock() if self._heap else 3600.0
                self._wake.clear()
                waker = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {stopper, waker}, timeout=max(delay, 0.0), return_when="FIRST_COMPLETED"
                )
                waker.cancel()
        except asyncio.CancelledError:
            for task in self._tasks:
                task.cancel()
            raise
        finally:
            stopper.cancel()
            if waker is not None:
                waker.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _push(
        self, key: Hashable, entry: _Entry, exact: bool = False, anchor: bool = False
    ) -> None:
        """Queue the entry's next tick: at its due time when `exact` or of a short interval,
        else in the slot that follows it. With `anchor`, the grid starts again at this tick
        (its due time on the wall clock, or its slot unless `exact`); so it does when the
        wall clock moved against the schedule's by more than a slot (a clock step)."""
        offset = self._wall() - self._clock()
        interval_ms = _ms(entry.interval)
        due_ms = math.floor((entry.due + offset) * 1000)
        at_ms = grid_ms(entry.anchor_ms, interval_ms, entry.k)
        if anchor or not -SLOT_MS < at_ms - due_ms < 2 * SLOT_MS:
            at_ms = due_ms if exact or not slotted(interval_ms) else slot_after(due_ms)
            entry.anchor_ms, entry.k = at_ms, 0
        entry.at = at_ms / 1000
        entry.start = entry.due
        if slotted(interval_ms):  # in its slot, never more than a slot after its cadence
            entry.start += min(max(entry.at - offset - entry.due, 0.0), SLOT)
        heapq.heappush(self._heap, (entry.start, next(self._seq), key))

    def _dispatch_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            start, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            # Stale heap items (removed keys, superseded due times) are dropped here.
            if entry is None or entry.start != start or entry.running:
                continue
            entry.running = True
            task = asyncio.create_task(self._run_one(key, entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _late_time(self, entry: _Entry) -> float | None:
        """The time of a tick that starts a slot late or more (behind a backlog): for a
        slotted interval, the whole second it starts in, so late ticks that start in one
        second still share their batched queries (a batch is evaluated at one time); else
        None (the clock's time)."""
        if not slotted(_ms(entry.interval)):
            return None
        return float(math.floor(self._wall()))

    async def _run_one(self, key: Hashable, entry: _Entry) -> None:
        start, at = entry.start, entry.at
        arrived = self.expect() if self.expect is not None else None
        place = _Place(self._slots)
        _PLACE.set(place)
        try:
            await self._slots.acquire()
            place.held = True
            late = max(0.0, self._clock() - start)
            metrics.TICK_LAG.observe(late)
            _SCHEDULED.set(at if late < SLOT else self._late_time(entry))
            await self._tick(key)
        except Exception:
            log.exception("tick failed rollout=%s", key)
        finally:
            if place.held:
                place.held = False
                self._slots.release()
            if arrived is not None:
                arrived()
            entry.running = False
            if self._entries.get(key) is entry:
                now = self._clock()
                if entry.rerun:
                    entry.rerun = False
                    entry.due = now
                    self._push(key, entry, exact=True, anchor=True)
                else:
                    # Fixed cadence: the next due time after now on the original grid.
                    missed = max(0, int((now - entry.due) // entry.interval))
                    entry.due += (missed + 1) * entry.interval
                    entry.k += missed + 1
                    self._push(key, entry)
                self._wake.set()


def _ms(interval: float) -> int:
    return round(interval * 1000)
