"""Query builders: exact queries for the builtins, and escaping that keeps the query's shape."""

import re

import pytest

from canaryguard.core import promql

SEL = {"destination_service_name": "fraud-model", "destination_service_namespace": "ml"}


def test_request_count_groups_by_version_label() -> None:
    q = promql.request_count(SEL, "destination_version", "v1", "v2", 60)
    assert q == (
        "sum by (destination_version) (increase(istio_requests_total{"
        'destination_service_name="fraud-model",destination_service_namespace="ml",'
        'reporter="destination",destination_version=~"v1|v2"}[60s]))'
    )


def test_error_rate_gives_zero_not_nothing_when_a_version_has_no_errors() -> None:
    q = promql.error_rate(SEL, "destination_version", "v1", "v2", 30)
    total = (
        "sum by (destination_version) (rate(istio_requests_total{"
        'destination_service_name="fraud-model",destination_service_namespace="ml",'
        'reporter="destination",destination_version=~"v1|v2"}[30s]))'
    )
    errors = total.replace('~"v1|v2"}', '~"v1|v2",response_code=~"5.."}')
    assert q == f"({errors} or ({total} * 0)) / {total}"


def test_latency_quantile_reads_the_bucket_histogram() -> None:
    q = promql.latency_quantile({"app": "x"}, "version", "a", "b", 90, 0.99)
    assert q == (
        "histogram_quantile(0.99, sum by (version, le) (rate("
        'istio_request_duration_milliseconds_bucket{app="x",reporter="destination",'
        'version=~"a|b"}[90s])))'
    )


@pytest.mark.parametrize(
    "hostile",
    ['v2"} or vector(1) or {x="', "v2\\", "a|b", "v.*", "line\nbreak"],
)
def test_hostile_label_values_stay_inside_their_string(hostile: str) -> None:
    q = promql.request_count({"destination_service_name": hostile}, "version", hostile, "v1", 60)
    # Remove every well-formed string literal: what is left must be the query's fixed shape.
    shape = re.sub(r'"(?:[^"\\]|\\.)*"', '""', q)
    assert shape == (
        'sum by (version) (increase(istio_requests_total{destination_service_name="",'
        'reporter="",version=~""}[60s]))'
    )


def test_version_values_match_literally_in_the_regex_matcher() -> None:
    m = promql.versions_matcher("version", "v1.0", "v2+rc")
    assert m == 'version=~"v1\\\\.0|v2\\\\+rc"'
    # Unescape the PromQL string level, then the regex matches exactly the two values.
    regex = m.split("=~", 1)[1][1:-1].replace("\\\\", "\\")
    assert re.fullmatch(regex, "v1.0") and re.fullmatch(regex, "v2+rc")
    assert not re.fullmatch(regex, "v1x0")


@pytest.mark.parametrize("bad", ["1abc", "a-b", "", "a b", 'x"'])
def test_invalid_label_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid Prometheus label name"):
        promql.matchers({bad: "v"})


@pytest.mark.parametrize(("seconds", "text"), [(60, "60s"), (0.5, "500ms"), (90.25, "90250ms")])
def test_durations(seconds: float, text: str) -> None:
    assert promql.duration(seconds) == text


def test_template_is_rendered_per_version_and_tagged_by_side() -> None:
    t = 'sum(rate(model_flagged_total{version="{{ version }}"}[{{lookback}}]))'
    q = promql.template_pair(t, "v1", 'v2"evil', 120)
    assert q == (
        'label_replace((sum(rate(model_flagged_total{version="v1"}[120s]))), '
        '"canaryguard_side", "baseline", "", "") or '
        'label_replace((sum(rate(model_flagged_total{version="v2\\"evil"}[120s]))), '
        '"canaryguard_side", "canary", "", "")'
    )


def test_unknown_placeholder_is_an_error() -> None:
    assert promql.template_placeholders("{{ version }} {{foo}}") == ["version", "foo"]
    with pytest.raises(ValueError, match=r"unknown placeholder \{\{ foo \}\}"):
        promql.render_template("x{{ foo }}", "v1", 60)
