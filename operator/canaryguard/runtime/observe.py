"""Gathering observations: the queries one tick of one rollout needs, run concurrently.

This is the seam the design asks for: the engine sees `Observations` and never how they were
gathered. A source that is also a `BuiltinSource` (`canaryguard.runtime.batcher`) answers
the builtin queries of many rollouts together, one query grouped by service and version
labels; templates always run per rollout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime
from typing import Protocol, runtime_checkable

from canaryguard.core.batching import Builtin
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.ports import MetricsSource, MetricsUnavailable, QueryRefused, Sample
from canaryguard.core.queries import SloQueries, fold, plan, split
from canaryguard.core.sequential import Stratum
from canaryguard.core.spec import Spec
from canaryguard.runtime import metrics

# The plans of specs seen lately, by identity: the controller hands out the same `Spec` while
# a rollout's spec is unchanged (`runtime.specs`), so its queries are built once, not per
# tick. Bounded; the oldest plan goes first.
_PLANS: dict[int, tuple[Spec, dict[str, SloQueries]]] = {}
PLANS_KEPT = 20_000


def _plan(spec: Spec, step_age: float | None) -> dict[str, SloQueries]:
    """`plan(spec, step_age)`, built once per spec where it does not depend on the step's
    age (no SLO with `confidence`)."""
    if step_age is not None and any(slo.confidence is not None for slo in spec.analysis.slos):
        return plan(spec, step_age)
    hit = _PLANS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    planned = plan(spec)
    while len(_PLANS) >= PLANS_KEPT:
        del _PLANS[next(iter(_PLANS))]
    _PLANS[id(spec)] = (spec, planned)
    return planned


class QueryRejected(Exception):
    """Prometheus refused an SLO's query: the spec is wrong, retrying will not help."""

    def __init__(self, slo: str, query: str, message: str) -> None:
        super().__init__(f"SLO {slo}: Prometheus rejected its query: {message}")
        self.slo = slo
        self.query = query


@runtime_checkable
class BuiltinSource(Protocol):
    """A source that answers a builtin query as data, possibly in one query with other
    rollouts'."""

    async def query_builtin(self, builtin: Builtin, at: datetime | None = None) -> list[Sample]:
        """The rows of this query alone (labelled by the version label), or
        `MetricsUnavailable` / `QueryRefused` as `MetricsSource.query` raises them."""
        ...


async def observe(
    spec: Spec, source: MetricsSource, step_age: float | None = None, at: datetime | None = None
) -> Observations:
    """Run every query of the rollout at once, each evaluated at `at` (the tick's time; None:
    when Prometheus receives it), and fold the answers into Observations.

    A query that failed for lack of Prometheus (`MetricsUnavailable`) makes its SLO
    unavailable; a query that Prometheus refused raises QueryRejected (a spec problem, shown
    on the rollout); any other error is a bug and propagates, never disguised as an outage.
    Identical queries (the request count shared by SLOs of the same lookback) run once.
    With `step_age` (seconds since the current step began), SLOs with `confidence` also get
    their counts since then (`SloObservation.counts`); a failed count query makes the SLO
    unavailable like any other.
    A `BuiltinSource` answers the builtin queries; templates are sent as text either way.
    """
    batch = source if isinstance(source, BuiltinSource) else None
    planned = _plan(spec, step_age)
    jobs: dict[str, Builtin | str] = {}  # by the query's text
    for sq in planned.values():
        for text, builtin in _jobs(sq):
            jobs[text] = builtin if batch is not None and builtin is not None else text
    texts = sorted(jobs)

    def run(job: Builtin | str) -> Awaitable[list[Sample]]:
        if isinstance(job, Builtin):
            assert batch is not None
            return batch.query_builtin(job, at)
        metrics.PROMETHEUS_QUERIES.labels(batched="false").inc()
        return source.query(job, at)

    answers = await asyncio.gather(*(run(jobs[t]) for t in texts), return_exceptions=True)
    by_text: dict[str, list[Sample] | BaseException] = dict(zip(texts, answers, strict=True))
    result: dict[str, SloObservation] = {}
    for name, sq in planned.items():
        for text in _texts(sq):
            if isinstance(answer := by_text[text], QueryRefused):
                raise QueryRejected(name, text, str(answer))
        failure = next(
            (a for t in _texts(sq) if isinstance(a := by_text[t], BaseException)),
            None,
        )
        if failure is not None:
            if not isinstance(failure, MetricsUnavailable):
                raise failure  # a bug, or cancellation: not an observation
            result[name] = SloObservation.failed(str(failure) or type(failure).__name__)
            continue
        observation = fold(sq, _answer(by_text, sq.value), _answer(by_text, sq.samples))
        if sq.since is not None:
            observation = replace(observation, counts=_counts(by_text, sq.since))
        result[name] = observation
    return Observations(slos=result)


def _texts(sq: SloQueries) -> tuple[str, ...]:
    return tuple(text for text, _ in _jobs(sq))


def _jobs(sq: SloQueries) -> tuple[tuple[str, Builtin | None], ...]:
    """Every query of one SLO, as text and as a builtin where it is one."""
    own = ((sq.value, sq.value_builtin), (sq.samples, sq.samples_builtin))
    if sq.since is None:
        return own
    return (
        *own,
        (sq.since.value, sq.since.value_builtin),
        (sq.since.samples, sq.since.samples_builtin),
    )


def _answer(by_text: dict[str, list[Sample] | BaseException], text: str) -> list[Sample]:
    answer = by_text[text]
    assert not isinstance(answer, BaseException)
    return answer


def _counts(by_text: dict[str, list[Sample] | BaseException], sq: SloQueries) -> Stratum | None:
    """Requests and events of each version since the step began, or None without a finite
    value on both sides (a version that served nothing yet has no series)."""
    b, c = split(_answer(by_text, sq.value), sq.value_key)
    nb, nc = split(_answer(by_text, sq.samples), sq.samples_key)
    if b is None or c is None or nb is None or nc is None:
        return None
    return Stratum(nb, b * nb, nc, c * nc)
