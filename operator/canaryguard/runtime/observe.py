"""Gathering observations: the queries one tick of one rollout needs, run concurrently.

This is the seam the design asks for: the engine sees `Observations` and never how they were
gathered. A source that is also a `BuiltinSource` (`canaryguard.runtime.batcher`) answers
the builtin queries of many rollouts together, one query grouped by service and version
labels; templates always run per rollout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from canaryguard.core.batching import Builtin
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.ports import MetricsSource, MetricsUnavailable, QueryRefused, Sample
from canaryguard.core.queries import plan, split
from canaryguard.core.spec import Spec
from canaryguard.runtime import metrics


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

    async def query_builtin(self, builtin: Builtin) -> list[Sample]:
        """The rows of this query alone (labelled by the version label), or
        `MetricsUnavailable` / `QueryRefused` as `MetricsSource.query` raises them."""
        ...


async def observe(spec: Spec, source: MetricsSource) -> Observations:
    """Run every query of the rollout at once and fold the answers into Observations.

    A query that failed for lack of Prometheus (`MetricsUnavailable`) makes its SLO
    unavailable; a query that Prometheus refused raises QueryRejected (a spec problem, shown
    on the rollout); any other error is a bug and propagates, never disguised as an outage.
    Identical queries (the request count shared by SLOs of the same lookback) run once.
    A `BuiltinSource` answers the builtin queries; templates are sent as text either way.
    """
    batch = source if isinstance(source, BuiltinSource) else None
    planned = plan(spec)
    jobs: dict[str, Builtin | str] = {}  # by the query's text
    for sq in planned.values():
        for text, builtin in ((sq.value, sq.value_builtin), (sq.samples, sq.samples_builtin)):
            jobs[text] = builtin if batch is not None and builtin is not None else text
    texts = sorted(jobs)

    def run(job: Builtin | str) -> Awaitable[list[Sample]]:
        if isinstance(job, Builtin):
            assert batch is not None
            return batch.query_builtin(job)
        metrics.PROMETHEUS_QUERIES.labels(batched="false").inc()
        return source.query(job)

    answers = await asyncio.gather(*(run(jobs[t]) for t in texts), return_exceptions=True)
    by_text: dict[str, list[Sample] | BaseException] = dict(zip(texts, answers, strict=True))
    result: dict[str, SloObservation] = {}
    for name, sq in planned.items():
        value, samples = by_text[sq.value], by_text[sq.samples]
        for text, answer in ((sq.value, value), (sq.samples, samples)):
            if isinstance(answer, QueryRefused):
                raise QueryRejected(name, text, str(answer))
        failure = next(
            (a for a in (value, samples) if isinstance(a, BaseException)),
            None,
        )
        if failure is not None:
            if not isinstance(failure, MetricsUnavailable):
                raise failure  # a bug, or cancellation: not an observation
            result[name] = SloObservation.failed(str(failure) or type(failure).__name__)
            continue
        assert not isinstance(value, BaseException) and not isinstance(samples, BaseException)
        b, c = split(value, sq.value_key)
        nb, nc = split(samples, sq.samples_key)
        result[name] = SloObservation(baseline=b, canary=c, baseline_samples=nb, canary_samples=nc)
    return Observations(slos=result)
