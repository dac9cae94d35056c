"""Builtin queries as data (`canaryguard.core.batching`): the single query is exactly the one
`promql` builds, a batch groups by every selector label and the version label over the union
of the members' values, and `pick` hands each member its own rows."""

from __future__ import annotations

import pytest

from canaryguard.core import promql
from canaryguard.core.batching import Builtin, Rows, Union, pick, render, union_size
from canaryguard.core.ports import Sample
from canaryguard.core.queries import plan
from tests.unit.scenario import make_spec, spec_dict


def member(service: str, namespace: str = "ml", metric: str = "requests") -> Builtin:
    selector = {"destination_service_name": service, "destination_service_namespace": namespace}
    if metric == "errors":
        return Builtin.of("errors", selector, "version", "v1", "v2", 60.0, codes="5..")
    if metric == "latency":
        return Builtin.of("latency", selector, "version", "v1", "v2", 60.0, quantile=0.99)
    return Builtin.of("requests", selector, "version", "v1", "v2", 60.0)


def test_the_single_query_is_the_one_promql_builds_for_each_builtin_slo() -> None:
    data = spec_dict(
        slos=[
            {"name": "errors", "errorRate": {"codes": "5..|429"}, "margin": {"absolute": 0.01}},
            {"name": "p99", "latency": {"quantile": 0.99}, "margin": {"relative": 0.2}},
            {
                "name": "conversion",
                "query": {"template": 'sum(rate(conv{version="{{ version }}"}[{{ lookback }}]))'},
                "margin": {"absolute": 0.01},
                "direction": "LowerIsWorse",
            },
        ]
    )
    queries = plan(make_spec(data))
    for name in ("errors", "p99"):
        q = queries[name]
        assert q.value_builtin is not None and q.samples_builtin is not None
        assert q.value_builtin.single() == q.value
        assert q.samples_builtin.single() == q.samples
    assert queries["conversion"].value_builtin is None  # templates are never batched
    assert queries["conversion"].samples_builtin is not None  # the request count is builtin


def test_a_batch_matches_the_union_and_groups_by_every_selector_label_and_the_version() -> None:
    text = render([member("a"), member("b"), member("c.d")])
    assert text == (
        "sum by (destination_service_name, destination_service_namespace, reporter, version) "
        '(increase(istio_requests_total{destination_service_name=~"a|b|c\\\\.d",'
        'destination_service_namespace="ml",reporter="destination",version=~"v1|v2"}[60s]))'
    )


def test_error_rate_and_latency_batches_keep_the_single_query_s_semantics() -> None:
    errors = render([member("a", metric="errors"), member("b", metric="errors")])
    assert errors.count('response_code=~"5.."') == 1
    assert " or (" in errors and ") * 0)) / sum by (" in errors  # no errors is 0, not missing
    latency = render([member("a", metric="latency"), member("b", metric="latency")])
    assert latency.startswith("histogram_quantile(0.99, sum by (destination_service_name, ")
    assert ", version, le) (rate(istio_request_duration_milliseconds_bucket{" in latency


def test_only_queries_of_one_shape_share() -> None:
    assert member("a").shape == member("b", namespace="other").shape
    assert member("a").shape != member("a", metric="errors").shape
    longer = Builtin.of("requests", {"destination_service_name": "a"}, "version", "v1", "v2", 90)
    assert longer.shape != member("a").shape  # lookback and label names differ
    with pytest.raises(ValueError, match="different shapes"):
        render([member("a"), member("a", metric="errors")])


def test_pick_hands_each_member_its_own_rows_labelled_by_version_only() -> None:
    rows = [
        Sample({**dict(m.selector), "version": v}, value)
        for m, base in ((member("a"), 100.0), (member("b"), 200.0))
        for v, value in (("v1", base), ("v2", base / 10))
    ]
    rows.append(Sample({**dict(member("a", namespace="other").selector), "version": "v1"}, 7.0))
    rows.append(Sample({**dict(member("a").selector), "version": "v3"}, 9.0))
    assert pick(rows, member("a")) == [
        Sample({"version": "v1"}, 100.0),
        Sample({"version": "v2"}, 10.0),
    ]
    assert pick(rows, member("b"))[0] == Sample({"version": "v1"}, 200.0)
    assert pick(rows, member("a", namespace="other")) == [Sample({"version": "v1"}, 7.0)]
    assert pick(rows, member("z")) == []


def test_a_selector_value_that_is_empty_matches_series_without_the_label() -> None:
    selector = {"destination_service_name": "a", "x": ""}
    empty = Builtin.of("requests", selector, "version", "v1", "v2", 60)
    labels = {"destination_service_name": "a", "reporter": "destination", "version": "v1"}
    rows = [Sample(labels, 1.0)]
    assert pick(rows, empty) == [Sample({"version": "v1"}, 1.0)]


def test_values_are_escaped_so_a_label_value_cannot_change_the_query() -> None:
    hostile = 'a"} or vector(1) #'
    text = render([member(hostile), member("b")])
    # Escaped for RE2, then for the double-quoted string: still one matcher's value.
    assert f'=~"{promql.escape_string(promql.escape_regex(hostile) + "|b")}"' in text


def test_union_size_counts_distinct_values_once() -> None:
    assert union_size([member("a")]) == union_size([member("a"), member("a")])
    assert union_size([member("a"), member("bb")]) == union_size([member("a")]) + 3


def test_the_index_of_a_batched_answer_hands_each_member_what_a_scan_would() -> None:
    members = [member(s, namespace=n) for s in ("a", "b", "c") for n in ("ml", "other")]
    rows = [
        Sample(
            {
                "destination_service_name": s,
                "destination_service_namespace": n,
                "reporter": "destination",
                "version": v,
            },
            float(i),
        )
        for i, (s, n, v) in enumerate(
            (s, n, v) for s in ("a", "b", "z") for n in ("ml", "other") for v in ("v1", "v2", "v3")
        )
    ]
    rows.append(Sample({"destination_service_name": "a", "version": "v1"}, 99.0))  # no ns
    index = Rows(rows, members[0])
    for m in members:
        expected = [
            Sample({"version": r.labels["version"]}, r.value)
            for r in rows
            if r.labels.get("destination_service_name")
            == dict(m.selector)["destination_service_name"]
            and r.labels.get("destination_service_namespace")
            == dict(m.selector)["destination_service_namespace"]
            and r.labels.get("reporter") == "destination"
            and r.labels["version"] in ("v1", "v2")
        ]
        assert index.of(m) == pick(rows, m) == expected
    assert len(index.of(member("a"))) == 2 and index.of(member("c")) == []
    with pytest.raises(ValueError, match="another shape"):
        index.of(Builtin.of("requests", {"app": "a"}, "version", "v1", "v2", 60.0))


def test_a_growing_union_counts_what_union_size_counts_at_every_step() -> None:
    union = Union()
    joined: list[Builtin] = []
    for m in (member("a"), member("bb"), member("a"), member("c.d", namespace="x")):
        assert union.size_with(m) == union_size([*joined, m])
        union.add(m)
        joined.append(m)
        assert union.size == union_size(joined)
