"""Gathering observations: the queries one tick of one rollout needs, run concurrently.

This is the seam the design asks for: the engine sees `Observations` and never how they were
gathered, so builtin queries of many rollouts can later be batched into one query grouped by
service and version labels without touching the engine.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.ports import MetricsSource, MetricsUnavailable, QueryRefused, Sample
from canaryguard.core.queries import SloQueries, fold, plan, split
from canaryguard.core.sequential import Stratum
from canaryguard.core.spec import Spec


class QueryRejected(Exception):
    """Prometheus refused an SLO's query: the spec is wrong, retrying will not help."""

    def __init__(self, slo: str, query: str, message: str) -> None:
        super().__init__(f"SLO {slo}: Prometheus rejected its query: {message}")
        self.slo = slo
        self.query = query


async def observe(spec: Spec, source: MetricsSource, step_age: float | None = None) -> Observations:
    """Run every query of the rollout at once and fold the answers into Observations.

    A query that failed for lack of Prometheus (`MetricsUnavailable`) makes its SLO
    unavailable; a query that Prometheus refused raises QueryRejected (a spec problem, shown
    on the rollout); any other error is a bug and propagates, never disguised as an outage.
    Identical queries (the request count shared by SLOs of the same lookback) run once.
    With `step_age` (seconds since the current step began), SLOs with `confidence` also get
    their counts since then (`SloObservation.counts`); a failed count query makes the SLO
    unavailable like any other.
    """
    planned = plan(spec, step_age)
    texts = sorted({q for sq in planned.values() for q in _texts(sq)})
    answers = await asyncio.gather(*(source.query(t) for t in texts), return_exceptions=True)
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
    since = () if sq.since is None else (sq.since.value, sq.since.samples)
    return (sq.value, sq.samples, *since)


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
