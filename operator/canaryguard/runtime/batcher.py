"""Builtin SLO queries of many rollouts answered by one Prometheus query per slot and shape.

Ticks that run close together (each within `window` seconds of the batch's previous member,
and within WAIT_WINDOWS windows of its first) and send the same shape of builtin query
(`canaryguard.core.batching`: metric, lookback, selector label names, version label) to the
same Prometheus with the same credentials, to be evaluated at the same time (the ticks' time
on their grids: slotted ticks of one slot share it), share one query; each gets back exactly
the rows its own query would have answered. A batch is sent when its window is over, at once
when no tick that may still join it is on its way (so a lone tick waits for nobody), or when
its regexes would grow past MAX_UNION_CHARS.

A tick waiting for its batch does not count against the scheduler's bound on ticks in
flight (`scheduler.slot_released`), and the scheduler announces a tick when it dispatches
it: rollouts of one slot share one query per group even when they outnumber that bound.

Credentials are part of what must be shared: a rollout never receives rows fetched with
another's Authorization header. A batch that Prometheus refuses (4xx) is asked again one
query per rollout, so a refusal is each rollout's own, never its neighbours'. An outage
(network, 5xx, timeout) is every member's, as it would be for each alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from canaryguard.core.batching import Builtin, Rows, Union, render
from canaryguard.core.ports import MetricsConnector, MetricsSource, QueryRefused, Sample
from canaryguard.runtime import metrics
from canaryguard.runtime.scheduler import slot_released

log = logging.getLogger(__name__)

# Characters of distinct selector values and versions in one batch (about 1,600 rollouts
# named like `svc-0001`). A long query goes to Prometheus as a POST body, not in the URL
# (`adapters.prometheus`), so this bounds what one query asks of Prometheus and how many
# rollouts share one answer (and its outage), not a URL's length.
MAX_UNION_CHARS = 16384
# A batch whose members keep coming, each within the window of the one before, is sent at
# the latest this many windows after its first member: at 5,000 rollouts a slot's 167 ticks
# took longer than one window to reach the batcher and split every group in two in some
# slots (3.43 queries per slot against 3 groups).
WAIT_WINDOWS = 10


@dataclass(frozen=True)
class Target:
    """Where a batch goes: one Prometheus, with one set of headers (never shown)."""

    address: str
    timeout: float
    headers: tuple[tuple[str, str], ...] = field(repr=False)


@dataclass
class _Batch:
    target: Target
    shape: tuple[object, ...]
    at: datetime | None
    members: list[tuple[Builtin, asyncio.Future[list[Sample]]]] = field(default_factory=list)
    distinct: dict[Builtin, None] = field(default_factory=dict)
    budget: float = float("inf")
    timer: asyncio.TimerHandle | None = None
    deadline: float = float("inf")  # loop time by which it is sent, however many come
    union: Union = field(default_factory=Union)

    def fits(self, member: Builtin, limit: int) -> bool:
        return member in self.distinct or self.union.size_with(member) <= limit

    def join(self, member: Builtin, future: asyncio.Future[list[Sample]]) -> None:
        self.members.append((member, future))
        if member not in self.distinct:
            self.distinct[member] = None
            self.union.add(member)


class QueryBatcher:
    """A `MetricsConnector` whose sources also answer builtin queries in batches (the
    `observe.BuiltinSource` they offer); queries of other kinds go to `connector` as they
    come.

    `expect()` is called by every tick when it starts, and the `arrived` it returns when the
    tick ends: in between, the tick counts as on its way until its first builtin query joins
    a batch. While no tick is on its way, open batches are sent without waiting out their
    window.
    """

    def __init__(
        self,
        connector: MetricsConnector,
        window: float = 0.1,
        max_union_chars: int = MAX_UNION_CHARS,
    ) -> None:
        self._connector = connector
        self._window = window
        self._limit = max_union_chars
        self._open: dict[_Key, _Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._coming = 0

    def connect(
        self, address: str, timeout: float, headers: Mapping[str, str], retry_budget: float
    ) -> BatchedSource:
        """The source of one rollout's Prometheus settings."""
        target = Target(address, timeout, tuple(sorted(headers.items())))
        plain = self._connector.connect(address, timeout, headers, retry_budget)
        return BatchedSource(self, plain, target, retry_budget)

    def expect(self) -> Callable[[], None]:
        """A tick started: it may send builtin queries. Returns `arrived`, to call when the
        tick ends (idempotent; its first builtin query marks it arrived already). A tick
        already expected in this context (by the scheduler, at dispatch) is not counted
        twice: its own `arrived` is returned."""
        current = _ARRIVED.get()
        if isinstance(current, _Arrival) and current.batcher is self and not current.done:
            return current
        self._coming += 1
        arrival = _Arrival(self)
        _ARRIVED.set(arrival)
        return arrival

    def _arrived(self, poke: bool) -> None:
        self._coming -= 1
        if poke:
            self._soon()

    async def query(
        self, target: Target, budget: float, member: Builtin, at: datetime | None = None
    ) -> list[Sample]:
        """The rows of `member`'s query evaluated at `at`, answered in a batch."""
        _ARRIVED.get()(False)  # this tick's queries are here: nobody waits for it any more
        key = (target, member.shape, at)
        batch = self._open.get(key)
        if batch is not None and not batch.fits(member, self._limit):
            self._send(key, batch)
            batch = None
        loop = asyncio.get_running_loop()
        if batch is None:
            batch = self._open[key] = _Batch(target, member.shape, at)
            batch.deadline = loop.time() + self._window * WAIT_WINDOWS
        if batch.timer is not None:
            batch.timer.cancel()
        wait = min(self._window, batch.deadline - loop.time())
        batch.timer = loop.call_later(max(wait, 0.0), self._send, key, batch)
        future: asyncio.Future[list[Sample]] = loop.create_future()
        batch.join(member, future)
        batch.budget = min(batch.budget, budget)
        self._soon()
        async with slot_released():  # waiting for others: lend the tick's place to them
            return await future

    def _soon(self) -> None:
        """Send every open batch at the next turn of the loop if no tick is on its way (the
        turn lets queries started together by one tick join first)."""
        if self._open:
            asyncio.get_running_loop().call_soon(self._send_if_idle)

    def _send_if_idle(self) -> None:
        if self._coming <= 0:
            for key, batch in list(self._open.items()):
                self._send(key, batch)

    def _send(self, key: _Key, batch: _Batch) -> None:
        if self._open.get(key) is not batch:
            return  # already sent
        del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        try:
            await self._answer(batch)
        except BaseException as exc:  # a bug, or shutdown: no member may wait forever
            failure = exc if isinstance(exc, Exception) else RuntimeError("batch cancelled")
            _resolve(batch, lambda member: failure)
            raise

    async def _answer(self, batch: _Batch) -> None:
        distinct = list(batch.distinct)
        target = batch.target
        source = self._connector.connect(
            target.address, target.timeout, dict(target.headers), batch.budget
        )
        metrics.PROMETHEUS_QUERIES.labels(batched="true").inc()
        metrics.QUERY_BATCH_MEMBERS.observe(len(distinct))
        if len(distinct) == 1:  # alone: its own query, answered as it would be unbatched
            answers = await _answers(source.query, distinct[0].single(), batch.at)
            _resolve(batch, lambda member: answers)
            return
        found = await _answers(source.query, render(distinct), batch.at)
        if isinstance(found, QueryRefused):
            # Each member's own query: a refusal is that rollout's, not the batch's.
            log.warning(
                "batched query refused, asking each rollout's own members=%d error=%s",
                len(distinct),
                found,
            )
            metrics.PROMETHEUS_QUERIES.labels(batched="false").inc(len(distinct))
            alone = await asyncio.gather(
                *(_answers(source.query, m.single(), batch.at) for m in distinct)
            )
            by_member = dict(zip(distinct, alone, strict=True))
            _resolve(batch, lambda member: by_member[member])
            return
        if isinstance(found, BaseException):
            _resolve(batch, lambda member: found)
            return
        rows = Rows(found, distinct[0])
        _resolve(batch, rows.of)


Answer = list[Sample] | BaseException
_Key = tuple[Target, tuple[object, ...], datetime | None]


async def _answers(
    query: Callable[[str, datetime | None], Awaitable[list[Sample]]],
    text: str,
    at: datetime | None,
) -> Answer:
    """The answer to `text` evaluated at `at`, or what it raised (cancellation aside)."""
    try:
        return await query(text, at)
    except Exception as exc:
        return exc


def _resolve(batch: _Batch, answer: Callable[[Builtin], Answer]) -> None:
    for member, future in batch.members:
        if future.done():  # its tick was cancelled
            continue
        result = answer(member)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(list(result))


class _Arrival:
    """The `arrived` of one expected tick: counts it arrived once, however often called."""

    def __init__(self, batcher: QueryBatcher) -> None:
        self.batcher = batcher
        self.done = False

    def __call__(self, poke: bool = True) -> None:
        if not self.done:
            self.done = True
            self.batcher._arrived(poke)


def _nobody(poke: bool = True) -> None:
    """The arrival of a query made outside a tick the batcher expected."""


# The `arrived` of the tick running in this context (set by `expect`).
_ARRIVED: ContextVar[Callable[[bool], None]] = ContextVar("canaryguard_arrived", default=_nobody)


class BatchedSource:
    """One rollout's source: its own queries as they come, builtin ones in batches."""

    def __init__(
        self, batcher: QueryBatcher, plain: MetricsSource, target: Target, retry_budget: float
    ) -> None:
        self._batcher = batcher
        self._plain = plain
        self._target = target
        self._budget = retry_budget

    async def query(self, promql: str, at: datetime | None = None) -> list[Sample]:
        return await self._plain.query(promql, at)

    async def query_builtin(self, builtin: Builtin, at: datetime | None = None) -> list[Sample]:
        return await self._batcher.query(self._target, self._budget, builtin, at)
