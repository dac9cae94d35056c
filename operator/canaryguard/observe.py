"""Gathering observations: the queries one tick of one rollout needs, run concurrently.

This is the seam the design asks for: the engine sees `Observations` and never how they were
gathered, so builtin queries of many rollouts can later be batched into one query grouped by
service and version labels without touching the engine.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from canaryguard import promql
from canaryguard.observations import Observations, SloObservation
from canaryguard.prometheus import PrometheusQueryError, Sample
from canaryguard.spec import ErrorRate, Latency, MetricsSpec, Query, Slo, Spec

QueryFn = Callable[[str], Awaitable[list[Sample]]]


class QueryRejected(Exception):
    """Prometheus refused an SLO's query: the spec is wrong, retrying will not help."""

    def __init__(self, slo: str, query: str, message: str) -> None:
        super().__init__(f"SLO {slo}: Prometheus rejected its query: {message}")
        self.slo = slo
        self.query = query


@dataclass(frozen=True)
class SloQueries:
    """The two queries behind one SLO: its value and its evidence (request/sample counts)."""

    value: str
    samples: str
    # Which label tells the versions apart in the answers, and the values it takes.
    value_key: tuple[str, str, str]
    samples_key: tuple[str, str, str]


def plan(spec: Spec) -> dict[str, SloQueries]:
    """The queries for every SLO of a rollout, by SLO name."""
    return {slo.name: slo_queries(spec.metrics, slo) for slo in spec.analysis.slos}


def slo_queries(metrics: MetricsSpec, slo: Slo) -> SloQueries:
    """Build the value and samples queries of one SLO (pure)."""
    m = metrics
    lookback = slo.lookback.total_seconds()
    by_version = (m.version_label, m.baseline_version, m.canary_version)
    by_side = (promql.SIDE_LABEL, promql.BASELINE, promql.CANARY)
    args = (m.selector, m.version_label, m.baseline_version, m.canary_version, lookback)
    samples = promql.request_count(*args)
    samples_key = by_version
    kind = slo.kind
    if isinstance(kind, ErrorRate):
        value, value_key = promql.error_rate(*args, codes=kind.codes), by_version
    elif isinstance(kind, Latency):
        value, value_key = promql.latency_quantile(*args, quantile=kind.quantile), by_version
    elif isinstance(kind, Query):
        value = promql.template_pair(kind.template, m.baseline_version, m.canary_version, lookback)
        value_key = by_side
        if kind.samples_template:
            samples = promql.template_pair(
                kind.samples_template, m.baseline_version, m.canary_version, lookback
            )
            samples_key = by_side
    else:  # pragma: no cover - the parser admits no other kind
        raise TypeError(f"unknown SLO kind {kind!r}")
    return SloQueries(value, samples, value_key, samples_key)


def split(
    samples: Sequence[Sample], key: tuple[str, str, str]
) -> tuple[float | None, float | None]:
    """The baseline and canary values out of one answer; None where a side has no single,
    finite value (missing, several series, NaN or Inf all count as no data)."""
    label, baseline, canary = key
    found: dict[str, list[float]] = {baseline: [], canary: []}
    for sample in samples:
        side = sample.labels.get(label)
        if side in found:
            found[side].append(sample.value)

    def one(values: list[float]) -> float | None:
        return values[0] if len(values) == 1 and math.isfinite(values[0]) else None

    return one(found[baseline]), one(found[canary])


async def observe(spec: Spec, query: QueryFn) -> Observations:
    """Run every query of the rollout at once and fold the answers into Observations.

    A query that failed for lack of Prometheus (or any other error short of cancellation)
    makes its SLO unavailable; a query that Prometheus refused raises QueryRejected (a spec
    problem, shown on the rollout). Identical queries (the request count shared by SLOs of
    the same lookback) run once.
    """
    planned = plan(spec)
    texts = sorted({q for sq in planned.values() for q in (sq.value, sq.samples)})
    answers = await asyncio.gather(*(query(t) for t in texts), return_exceptions=True)
    by_text: dict[str, list[Sample] | BaseException] = dict(zip(texts, answers, strict=True))
    result: dict[str, SloObservation] = {}
    for name, sq in planned.items():
        value, samples = by_text[sq.value], by_text[sq.samples]
        for text, answer in ((sq.value, value), (sq.samples, samples)):
            if isinstance(answer, PrometheusQueryError):
                raise QueryRejected(name, text, str(answer))
        failure = next(
            (a for a in (value, samples) if isinstance(a, BaseException)),
            None,
        )
        if failure is not None:
            if not isinstance(failure, Exception):
                raise failure  # cancellation and the like are not observations
            result[name] = SloObservation.failed(str(failure) or type(failure).__name__)
            continue
        assert not isinstance(value, BaseException) and not isinstance(samples, BaseException)
        b, c = split(value, sq.value_key)
        nb, nc = split(samples, sq.samples_key)
        result[name] = SloObservation(baseline=b, canary=c, baseline_samples=nb, canary_samples=nc)
    return Observations(slos=result)
