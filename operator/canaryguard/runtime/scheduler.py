"""A scheduler of analysis ticks: one loop for every rollout, each at its own interval.

kopf timers take their interval at decoration time and daemons put a finalizer on every
resource (so deleting one hangs while the operator is down). This scheduler needs neither:
the watch feeds it rollouts, and it calls `tick(key)` for each at the rollout's own interval,
never twice at once for one rollout, with a bound on ticks in flight so that a slow
Prometheus for one rollout never delays the others beyond that bound.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)

TickFn = Callable[[Hashable], Awaitable[None]]


@dataclass
class _Entry:
    interval: float
    due: float
    running: bool = False
    rerun: bool = False


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
    ) -> None:
        self._tick = tick
        self._clock = clock
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

    def upsert(self, key: Hashable, interval: float, now: bool = False) -> None:
        """Track `key` at `interval`; `now` asks for a tick as soon as possible (spec change)."""
        interval = max(interval, 0.05)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(interval, self._clock())
            self._push(key, entry.due)
        else:
            entry.interval = interval
            if now:
                if entry.running:
                    entry.rerun = True
                else:
                    entry.due = self._clock()
                    self._push(key, entry.due)
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

    def _push(self, key: Hashable, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), key))

    def _dispatch_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            # Stale heap items (removed keys, superseded due times) are dropped here.
            if entry is None or entry.due != due or entry.running:
                continue
            entry.running = True
            task = asyncio.create_task(self._run_one(key, entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_one(self, key: Hashable, entry: _Entry) -> None:
        try:
            async with self._slots:
                await self._tick(key)
        except Exception:
            log.exception("tick failed rollout=%s", key)
        finally:
            entry.running = False
            if self._entries.get(key) is entry:
                now = self._clock()
                if entry.rerun:
                    entry.rerun = False
                    entry.due = now
                else:
                    # Fixed cadence: the next due time after now on the original grid.
                    missed = max(0, int((now - entry.due) // entry.interval))
                    entry.due += (missed + 1) * entry.interval
                self._push(key, entry.due)
                self._wake.set()
