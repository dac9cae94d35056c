"""Builtin SLO queries as data, so that those of many rollouts can be answered by one query.

A builtin query (request count, error rate, latency quantile) of one rollout is described by
its `Builtin`: the metric, the lookback, the selector (with `reporter="destination"`), the
version label and the two versions. Rollouts whose builtin queries have the same `shape`
(metric and its parameters, lookback, selector label *names*, version label) can share one
query: the selector values and versions become regex matchers over their union, and the sum
is grouped by every selector label and the version label, so each rollout's rows are still
its own, summed over exactly the series its own query would select. `pick` takes them out.

Same semantics as the per-rollout query (`canaryguard.core.promql`): a version that served
no error gets an explicit 0, a version with no requests is missing, 0/0 is NaN; the engine
sees the same values. Templates are never batched: their shape is the user's.

Pure: rendering text and reading answers; running the query is the runtime's job.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from canaryguard.core import promql
from canaryguard.core.ports import Sample

Metric = Literal["requests", "errors", "latency"]
# What stays fixed in every builtin query: the Istio reporter whose metrics are read.
REPORTER = ("reporter", "destination")


@dataclass(frozen=True)
class Builtin:
    """One rollout's builtin query. `selector` holds every exact matcher, sorted, reporter
    included; `versions` is (baseline, canary)."""

    metric: Metric
    lookback: float
    selector: tuple[tuple[str, str], ...]
    version_label: str
    versions: tuple[str, str]
    codes: str = ""  # errors: the response codes that count as errors (RE2)
    quantile: float = 0.0  # latency

    @classmethod
    def of(
        cls,
        metric: Metric,
        selector: Mapping[str, str],
        version_label: str,
        baseline: str,
        canary: str,
        lookback: float,
        *,
        codes: str = "",
        quantile: float = 0.0,
    ) -> Builtin:
        """The builtin query as `canaryguard.core.promql` builds it for one rollout."""
        exact = dict([REPORTER, *selector.items()])
        for name in (*exact, version_label):
            promql.label_name(name)  # what the builder refuses, refused here too
        return cls(
            metric,
            lookback,
            tuple(sorted(exact.items())),
            version_label,
            (baseline, canary),
            codes,
            quantile,
        )

    @functools.cached_property
    def shape(self) -> tuple[object, ...]:
        """What queries answered together must share (computed once per member)."""
        names = tuple(name for name, _ in self.selector)
        return (self.metric, self.lookback, self.codes, self.quantile, names, self.version_label)

    def single(self) -> str:
        """This query alone, as `canaryguard.core.promql` writes it."""
        args = (dict(self.selector), self.version_label, *self.versions, self.lookback)
        if self.metric == "requests":
            return promql.request_count(*args)
        if self.metric == "errors":
            return promql.error_rate(*args, codes=self.codes)
        return promql.latency_quantile(*args, quantile=self.quantile)


def union_size(members: Iterable[Builtin]) -> int:
    """Characters of the distinct selector values and versions of `members` (the regexes'
    length): a batch is cut before its query grows too long for a URL."""
    union = Union()
    for member in members:
        union.add(member)
    return union.size


def _values(member: Builtin) -> list[tuple[str, str]]:
    return [*member.selector, *((member.version_label, v) for v in member.versions)]


class Union:
    """The distinct selector values and versions of a growing batch and their `union_size`,
    kept as members join (each join costs its own values, not the whole batch's)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self.size = 0

    def size_with(self, member: Builtin) -> int:
        """The union's size were `member` added."""
        extra = {pair for pair in _values(member) if pair not in self._seen}
        return self.size + sum(len(promql.escape_regex(value)) + 1 for _, value in extra)

    def add(self, member: Builtin) -> None:
        self.size = self.size_with(member)
        self._seen.update(_values(member))


def render(members: Sequence[Builtin]) -> str:
    """One query answering every member (all of one shape): per selector label a regex over
    the members' values (an exact matcher where they agree), the versions likewise, grouped
    by the selector labels and the version label."""
    if not members:
        raise ValueError("nothing to render")
    first = members[0]
    if any(m.shape != first.shape for m in members):
        raise ValueError("members of different shapes cannot share a query")
    names = [name for name, _ in first.selector]
    label = promql.label_name(first.version_label)
    parts = [_matcher(name, [dict(m.selector)[name] for m in members]) for name in names]
    # The versions as a regex, as the single query has them (alongside an exact matcher
    # when the version label is also a selector label: both must hold, as there).
    parts.append(_matcher(label, [v for m in members for v in m.versions], regex=True))
    by = ", ".join(dict.fromkeys([*names, label]))
    window = promql.duration(first.lookback)
    sel = "{" + ",".join(parts) + "}"
    if first.metric == "requests":
        return f"sum by ({by}) (increase({promql.REQUESTS_TOTAL}{sel}[{window}]))"
    if first.metric == "errors":
        codes = f'response_code=~"{promql.escape_string(first.codes)}"'
        err_sel = "{" + ",".join([*parts, codes]) + "}"
        total = f"sum by ({by}) (rate({promql.REQUESTS_TOTAL}{sel}[{window}]))"
        errors = f"sum by ({by}) (rate({promql.REQUESTS_TOTAL}{err_sel}[{window}]))"
        return f"({errors} or ({total} * 0)) / {total}"
    return (
        f"histogram_quantile({first.quantile:g}, sum by ({by}, le) "
        f"(rate({promql.DURATION_BUCKET}{sel}[{window}])))"
    )


def _matcher(name: str, values: Sequence[str], regex: bool = False) -> str:
    distinct = sorted(set(values))
    if len(distinct) == 1 and not regex:
        return f'{promql.label_name(name)}="{promql.escape_string(distinct[0])}"'
    alternatives = "|".join(promql.escape_regex(v) for v in distinct)
    return f'{promql.label_name(name)}=~"{promql.escape_string(alternatives)}"'


def pick(samples: Sequence[Sample], member: Builtin) -> list[Sample]:
    """The rows of a batched answer that belong to `member`, labelled by the version label
    only (as its own query would answer): the rows whose selector labels have its values
    (a label a series lacks reads as "", as Prometheus matches it) and whose version is one
    of its two."""
    return Rows(samples, member).of(member)


class Rows:
    """A batched answer indexed once by the selector values of its shape (`like`'s), so
    that each member's rows (`of`, as `pick` gives them) are found without a scan."""

    def __init__(self, samples: Sequence[Sample], like: Builtin) -> None:
        self._names = tuple(name for name, _ in like.selector)
        self._label = like.version_label
        self._index: dict[tuple[str, ...], list[Sample]] = {}
        for sample in samples:
            labels = sample.labels
            key = tuple(labels.get(name, "") for name in self._names)
            self._index.setdefault(key, []).append(sample)

    def of(self, member: Builtin) -> list[Sample]:
        """`member`'s rows (a member of the shape the index was built for)."""
        if tuple(name for name, _ in member.selector) != self._names:
            raise ValueError("a member of another shape")
        label = member.version_label
        out = []
        for sample in self._index.get(tuple(value for _, value in member.selector), ()):
            version = sample.labels.get(label)
            if version in member.versions:
                out.append(Sample({label: version}, sample.value))
        return out
