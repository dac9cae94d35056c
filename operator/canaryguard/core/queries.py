"""The queries behind a rollout's SLOs, and how their answers split into baseline and canary.

Pure: building the text and reading an answer. Running the queries is the runtime's job
(`canaryguard.runtime.observe`), so builtin queries of many rollouts can be batched without
touching this module or the engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from canaryguard.core import promql
from canaryguard.core.batching import Builtin
from canaryguard.core.ports import Sample
from canaryguard.core.spec import ErrorRate, Latency, MetricsSpec, Query, Slo, Spec


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
    else:  # pragma: no cover - the parser admits no other kind
        raise TypeError(f"unknown SLO kind {kind!r}")
    return SloQueries(value, samples, value_key, samples_key, value_builtin, samples_builtin)


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
