"""Folding Prometheus answers into observations: sides, no data, outages, rejected queries."""

import asyncio
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from canaryguard.core import promql
from canaryguard.core.ports import MetricsUnavailable, QueryRefused, Sample
from canaryguard.core.queries import plan, split
from canaryguard.core.spec import Spec, parse_spec
from canaryguard.runtime.observe import QueryRejected, observe

EXAMPLE = Path(__file__).parents[2] / "examples" / "fraud-model" / "canaryrollout.yaml"


def fraud_spec() -> Spec:
    return parse_spec(yaml.safe_load(EXAMPLE.read_text()))


class Source:
    """A metrics source answering from a function: the `MetricsSource` port in memory."""

    def __init__(self, answer: Callable[[str], list[Sample]]) -> None:
        self.answer = answer

    async def query(self, promql: str, at: datetime | None = None) -> list[Sample]:
        return self.answer(promql)


def by_version(b: float, c: float) -> list[Sample]:
    return [
        Sample({"destination_version": "v1"}, b),
        Sample({"destination_version": "v2"}, c),
    ]


def by_side(b: float, c: float) -> list[Sample]:
    return [
        Sample({promql.SIDE_LABEL: promql.BASELINE}, b),
        Sample({promql.SIDE_LABEL: promql.CANARY}, c),
    ]


def test_each_slo_reads_its_value_and_evidence_from_one_answer_per_query() -> None:
    spec = fraud_spec()
    planned = plan(spec)
    answers = {
        planned["error-rate"].value: by_version(0.01, 0.04),
        planned["error-rate"].samples: by_version(900, 100),
        planned["p99-latency"].value: by_version(80, 95),
        planned["p99-latency"].samples: by_version(1800, 200),
        planned["fraud-flag-rate"].value: by_side(0.031, 0.012),
        planned["fraud-flag-rate"].samples: by_side(9000, 1000),
        # score-drift: one answer of every bucket of both versions (its value and evidence).
        planned["score-drift"].value: [
            Sample({"version": v, "le": le}, n)
            for v, counts in (("v1", (5000, 8000, 10000)), ("v2", (2000, 5000, 10000)))
            for le, n in zip(("0.25", "0.5", "+Inf"), counts, strict=True)
        ],
    }
    asked: list[str] = []

    def query(text: str) -> list[Sample]:
        asked.append(text)
        return answers[text]

    obs = asyncio.run(observe(spec, Source(query))).slos
    assert (obs["error-rate"].baseline, obs["error-rate"].canary) == (0.01, 0.04)
    assert (obs["error-rate"].baseline_samples, obs["error-rate"].canary_samples) == (900, 100)
    assert (obs["p99-latency"].baseline, obs["p99-latency"].canary) == (80, 95)
    assert obs["fraud-flag-rate"].canary_samples == 1000
    drift = obs["score-drift"]
    # Bins 50/30/20% against 20/30/50%, 3 bins smoothed by 1e-4: the closed form.
    expected = 2 * (0.3 / 1.0003) * math.log(0.5001 / 0.2001)
    assert drift.baseline == 0.0 and drift.canary == pytest.approx(expected, rel=1e-12)
    assert (drift.baseline_samples, drift.canary_samples) == (10000, 10000)
    assert not any(o.unavailable for o in obs.values())
    assert len(asked) == len(set(asked)) == 7


def test_slos_with_the_same_lookback_share_one_request_count_query() -> None:
    spec = fraud_spec()
    planned = plan(spec)
    # error-rate uses the default 1m lookback, p99-latency 2m: different counts.
    assert planned["error-rate"].samples != planned["p99-latency"].samples
    assert "[60s]" in planned["error-rate"].samples


def test_a_failed_query_makes_only_its_slo_unavailable() -> None:
    spec = fraud_spec()
    planned = plan(spec)

    def query(text: str) -> list[Sample]:
        if text == planned["p99-latency"].value:
            raise MetricsUnavailable("HTTP 503")
        if "fraud" in text:
            return by_side(0.03, 0.03)
        return by_version(1, 1)

    obs = asyncio.run(observe(spec, Source(query))).slos
    assert obs["p99-latency"].unavailable
    assert obs["p99-latency"].error == "HTTP 503"
    assert not obs["error-rate"].unavailable
    assert not obs["fraud-flag-rate"].unavailable


def test_a_rejected_query_names_the_slo() -> None:
    spec = fraud_spec()
    planned = plan(spec)

    def query(text: str) -> list[Sample]:
        if text == planned["fraud-flag-rate"].value:
            raise QueryRefused("HTTP 400: parse error: unexpected identifier")
        return by_version(1, 1)

    with pytest.raises(QueryRejected, match=r"SLO fraud-flag-rate: .*parse error"):
        asyncio.run(observe(spec, Source(query)))


def test_a_bug_in_a_query_is_not_an_outage() -> None:
    spec = fraud_spec()

    def query(text: str) -> list[Sample]:
        raise KeyError("metric")  # a programming error, not Prometheus being away

    with pytest.raises(KeyError):
        asyncio.run(observe(spec, Source(query)))


def test_missing_nan_and_ambiguous_answers_are_no_data() -> None:
    key = ("destination_version", "v1", "v2")
    assert split([Sample({"destination_version": "v1"}, 3.0)], key) == (3.0, None)
    assert split(by_version(math.nan, math.inf), key) == (None, None)
    two_canaries = [*by_version(1.0, 2.0), Sample({"destination_version": "v2"}, 5.0)]
    assert split(two_canaries, key) == (1.0, None)


def confident_spec() -> Spec:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["spec"]["analysis"]["slos"][0]["confidence"] = 0.99
    data["spec"]["analysis"]["slos"][2]["confidence"] = 0.99
    return parse_spec(data)


def test_confidence_slos_count_their_evidence_since_the_step_began() -> None:
    spec = confident_spec()
    planned = plan(spec, step_age=95.5)
    errors, flags = planned["error-rate"].since, planned["fraud-flag-rate"].since
    assert errors is not None and flags is not None
    assert planned["p99-latency"].since is None  # no confidence
    assert "[95500ms]" in errors.samples and "[95500ms]" in errors.value
    assert "[95500ms]" in flags.samples and "[300s]" in planned["fraud-flag-rate"].samples
    assert plan(spec)["error-rate"].since is None  # no step age: nothing to count
    assert plan(spec, step_age=0.5)["error-rate"].since is None  # under a second
    answers = {
        errors.value: by_version(0.01, 0.04),
        errors.samples: by_version(9000, 500),
        flags.value: by_side(0.03, 0.01),
        flags.samples: by_side(900, 100),
    }

    def answer(q: str) -> list[Sample]:
        return answers.get(q, by_version(1, 1) if "destination_version" in q else by_side(1, 1))

    seen = asyncio.run(observe(spec, Source(answer), step_age=95.5)).slos
    counts = seen["error-rate"].counts
    assert counts is not None
    assert (counts.baseline_requests, counts.canary_requests) == (9000, 500)
    assert (counts.baseline_events, counts.canary_events) == pytest.approx((90, 20))
    flagged = seen["fraud-flag-rate"].counts
    assert flagged is not None
    assert (flagged.baseline_events, flagged.canary_events) == pytest.approx((27, 1))
    assert seen["p99-latency"].counts is None


def test_a_version_without_counts_yet_gives_no_stratum() -> None:
    spec = confident_spec()
    errors = plan(spec, step_age=30)["error-rate"].since
    assert errors is not None

    def answer(q: str) -> list[Sample]:
        if q in (errors.value, errors.samples):
            return [Sample({"destination_version": "v1"}, 5.0)]  # no canary series yet
        return by_version(1, 1) if "destination_version" in q else by_side(1, 1)

    seen = asyncio.run(observe(spec, Source(answer), step_age=30)).slos
    assert seen["error-rate"].counts is None
