"""A small, fast Prometheus text-format writer for the mesh's metrics.

prometheus_client would do, but its histograms write `le="1.0"` and `le="3.6e+06"` where
Envoy writes `le="1"` and `le="3600000"`, and the synthetic mode renders tens of thousands of
series a second, so label text is built once per series and values are plain numbers.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def format_number(value: float) -> str:
    """A float in Prometheus text format without exponent notation for integral values."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e18:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """`a="x",b="y"` (no braces)."""
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))


@dataclass
class CounterSeries:
    labels: str
    value: float = 0.0


@dataclass
class HistogramSeries:
    labels: str
    buckets: list[float]  # per-bucket (not cumulative) counts, last one is +Inf
    sum: float = 0.0
    count: float = 0.0


@dataclass
class CounterFamily:
    """A counter with fixed label names; series are created on first use."""

    name: str
    help: str
    labelnames: tuple[str, ...]
    series: dict[tuple[str, ...], CounterSeries] = field(default_factory=dict)

    def child(self, labelvalues: tuple[str, ...]) -> CounterSeries:
        found = self.series.get(labelvalues)
        if found is None:
            found = CounterSeries(label_text(self.labelnames, labelvalues))
            self.series[labelvalues] = found
        return found

    def inc(self, labelvalues: tuple[str, ...], amount: float = 1.0) -> None:
        self.child(labelvalues).value += amount

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} counter\n")
        for s in self.series.values():
            out.append(f"{self.name}{{{s.labels}}} {format_number(s.value)}\n")


@dataclass
class HistogramFamily:
    """A histogram with fixed label names and bucket bounds (+Inf added)."""

    name: str
    help: str
    labelnames: tuple[str, ...]
    bounds: tuple[float, ...]
    series: dict[tuple[str, ...], HistogramSeries] = field(default_factory=dict)
    _le: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(self.bounds) or any(math.isinf(b) for b in self.bounds):
            raise ValueError("bounds must be finite and increasing (+Inf is implied)")
        self._le = (*(format_number(b) for b in self.bounds), "+Inf")

    def child(self, labelvalues: tuple[str, ...]) -> HistogramSeries:
        found = self.series.get(labelvalues)
        if found is None:
            found = HistogramSeries(
                label_text(self.labelnames, labelvalues), [0.0] * (len(self.bounds) + 1)
            )
            self.series[labelvalues] = found
        return found

    def observe(self, labelvalues: tuple[str, ...], value: float) -> None:
        s = self.child(labelvalues)
        # An observation equal to a bound belongs to that bucket (le = less or equal).
        s.buckets[bisect.bisect_left(self.bounds, value)] += 1
        s.sum += value
        s.count += 1

    def add_counts(
        self, labelvalues: tuple[str, ...], bucket_counts: Iterable[float], total_sum: float
    ) -> None:
        """Add many observations at once: per-bucket counts (+Inf last) and their sum."""
        s = self.child(labelvalues)
        added = 0.0
        for i, n in enumerate(bucket_counts):
            s.buckets[i] += n
            added += n
        s.count += added
        s.sum += total_sum

    def render(self, out: list[str]) -> None:
        name = self.name
        out.append(f"# HELP {name} {self.help}\n# TYPE {name} histogram\n")
        le = self._le
        for s in self.series.values():
            sep = "," if s.labels else ""
            cumulative = 0.0
            for bound, n in zip(le, s.buckets, strict=True):
                cumulative += n
                out.append(
                    f'{name}_bucket{{{s.labels}{sep}le="{bound}"}} {format_number(cumulative)}\n'
                )
            out.append(f"{name}_sum{{{s.labels}}} {format_number(s.sum)}\n")
            out.append(f"{name}_count{{{s.labels}}} {format_number(s.count)}\n")


def render(families: Iterable[CounterFamily | HistogramFamily]) -> bytes:
    """The text exposition (format 0.0.4) of `families`."""
    out: list[str] = []
    for family in families:
        family.render(out)
    return "".join(out).encode()


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
