"""Gathering observations: the queries one tick of one rollout needs, run concurrently.

This is the seam the design asks for: the engine sees `Observations` and never how they were
gathered, so builtin queries of many rollouts can later be batched into one query grouped by
service and version labels without touching the engine.
"""

from __future__ import annotations

import asyncio

from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.ports import MetricsSource, MetricsUnavailable, QueryRefused, Sample
from canaryguard.core.queries import fold, plan
from canaryguard.core.spec import Spec


class QueryRejected(Exception):
    """Prometheus refused an SLO's query: the spec is wrong, retrying will not help."""

    def __init__(self, slo: str, query: str, message: str) -> None:
        super().__init__(f"SLO {slo}: Prometheus rejected its query: {message}")
        self.slo = slo
        self.query = query


async def observe(spec: Spec, source: MetricsSource) -> Observations:
    """Run every query of the rollout at once and fold the answers into Observations.

    A query that failed for lack of Prometheus (`MetricsUnavailable`) makes its SLO
    unavailable; a query that Prometheus refused raises QueryRejected (a spec problem, shown
    on the rollout); any other error is a bug and propagates, never disguised as an outage.
    Identical queries (the request count shared by SLOs of the same lookback) run once.
    """
    planned = plan(spec)
    texts = sorted({q for sq in planned.values() for q in (sq.value, sq.samples)})
    answers = await asyncio.gather(*(source.query(t) for t in texts), return_exceptions=True)
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
        result[name] = fold(sq, value, samples)
    return Observations(slos=result)
