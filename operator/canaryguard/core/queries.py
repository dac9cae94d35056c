"""The queries behind a rollout's SLOs, and how their answers split into baseline and canary.

Pure: building the text and reading an answer. Running the queries is the runtime's job
(`canaryguard.runtime.observe`), so builtin queries of many rollouts can be batched without
touching this module or the engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from canaryguard.core import promql
from canaryguard.core.batching import Builtin
from canaryguard.core.drift import histogram_psi, parse_le
from canaryguard.core.observations import SloObservation
from canaryguard.core.ports import Sample
from canaryguard.core.spec import Drift, ErrorRate, Latency, MetricsSpec, Query, Slo, Spec


@dataclass(frozen=True)
class SloQueries:
    """The two queries behind one SLO: its value and its evidence (request/sample counts)."""

    value: str
    samples: str
    # Which label tells the versions apart in the answers, and the values it takes.
    value_key: tuple[str, str, str]
    samples_key: tuple[str, str, str]
    # The same queries as data where they are builtins, so the runtime may answer them in a
    # batch with other rollouts' (`canaryguard.core.batching`); None for templates.
    value_builtin: Builtin | None = None
    samples_builtin: Builtin | None = None
    # For an SLO with `confidence`: the same two queries over the time since the current
    # step began; the events are value x samples (errors = error share x requests).
    since: SloQueries | None = None
    # The value answer is a histogram's bucket increases, folded by `drift_observation`
    # (which also counts the evidence: `samples` is then the same query).
    buckets: bool = False


def plan(spec: Spec, step_age: float | None = None) -> dict[str, SloQueries]:
    """The queries for every SLO of a rollout, by SLO name. With `step_age` (seconds since
    the current step began, at least 1 s), SLOs with `confidence` also count their evidence
    over that time."""
    return {slo.name: slo_queries(spec.metrics, slo, step_age) for slo in spec.analysis.slos}


def slo_queries(metrics: MetricsSpec, slo: Slo, step_age: float | None = None) -> SloQueries:
    """Build the value and samples queries of one SLO (pure)."""
    queries = _slo_queries(metrics, slo, slo.lookback.total_seconds())
    if slo.confidence is not None and step_age is not None and step_age >= 1:
        # Whole milliseconds: the range Prometheus is asked for is the one meant.
        queries = replace(
            queries, since=_slo_queries(metrics, slo, math.floor(step_age * 1000) / 1000)
        )
    return queries


def _slo_queries(metrics: MetricsSpec, slo: Slo, lookback: float) -> SloQueries:
    m = metrics
    by_version = (m.version_label, m.baseline_version, m.canary_version)
    by_side = (promql.SIDE_LABEL, promql.BASELINE, promql.CANARY)
    args = (m.selector, m.version_label, m.baseline_version, m.canary_version, lookback)
    samples = promql.request_count(*args)
    samples_key = by_version
    samples_builtin: Builtin | None = Builtin.of("requests", *args)
    value_builtin: Builtin | None = None
    kind = slo.kind
    if isinstance(kind, ErrorRate):
        value, value_key = promql.error_rate(*args, codes=kind.codes), by_version
        value_builtin = Builtin.of("errors", *args, codes=kind.codes)
    elif isinstance(kind, Latency):
        value, value_key = promql.latency_quantile(*args, quantile=kind.quantile), by_version
        value_builtin = Builtin.of("latency", *args, quantile=kind.quantile)
    elif isinstance(kind, Query):
        value = promql.template_pair(kind.template, m.baseline_version, m.canary_version, lookback)
        value_key = by_side
        if kind.samples_template:
            samples = promql.template_pair(
                kind.samples_template, m.baseline_version, m.canary_version, lookback
            )
            samples_key = by_side
            samples_builtin = None
    elif isinstance(kind, Drift):
        label = kind.version_label or m.version_label
        value = promql.bucket_increase(
            kind.histogram,
            kind.selector or {},
            label,
            m.baseline_version,
            m.canary_version,
            lookback,
        )
        key = (label, m.baseline_version, m.canary_version)
        return SloQueries(value, value, key, key, buckets=True)
    else:  # pragma: no cover - the parser admits no other kind
        raise TypeError(f"unknown SLO kind {kind!r}")
    return SloQueries(value, samples, value_key, samples_key, value_builtin, samples_builtin)


def fold(sq: SloQueries, value: Sequence[Sample], samples: Sequence[Sample]) -> SloObservation:
    """One SLO's observation from the answers to its two queries."""
    if sq.buckets:
        return drift_observation(value, sq.value_key)
    b, c = split(value, sq.value_key)
    nb, nc = split(samples, sq.samples_key)
    return SloObservation(baseline=b, canary=c, baseline_samples=nb, canary_samples=nc)


def drift_observation(samples: Sequence[Sample], key: tuple[str, str, str]) -> SloObservation:
    """A drift SLO's observation from its bucket answer: the canary's value is the PSI of its
    distribution against the baseline's (`drift.histogram_psi`), the baseline's is 0 (its
    distance from itself), and the evidence is each version's count of observations. A side
    without any bucket is no data (None); a series whose `le` is not a number is ignored."""
    label, baseline, canary = key
    found: dict[str, dict[float, float]] = {baseline: {}, canary: {}}
    for sample in samples:
        side = found.get(sample.labels.get(label, ""))
        bound = parse_le(sample.labels.get("le"))
        if side is not None and bound is not None:
            side[bound] = side.get(bound, 0.0) + sample.value
    if not found[baseline] or not found[canary]:

        def count(cumulative: dict[float, float]) -> float | None:
            return max(cumulative.values()) if cumulative else None

        return SloObservation(None, None, count(found[baseline]), count(found[canary]))
    psi, nb, nc = histogram_psi(found[baseline], found[canary])
    return SloObservation(0.0, psi, nb, nc)


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
