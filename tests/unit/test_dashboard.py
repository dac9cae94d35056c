"""Every metric the Grafana dashboard and the PrometheusRule query is one that something we
ship exports: the operator (canaryguard.runtime.metrics and prometheus_client's process collector),
the local stack's router (Istio's metrics) or its model servers, or Prometheus itself (`up`).

A dashboard that queries a renamed metric shows empty panels without any error; this catches
it. PromQL syntax itself is checked by promtool in tests/integration/test_alert_rules.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import canaryguard.runtime.metrics  # noqa: F401 - registers the operator's metrics in REGISTRY
from canaryguard_testbed.istio_telemetry import IstioTelemetry
from canaryguard_testbed.modelserver import ModelMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests/grafana/canaryguard-dashboard.json"
RULES = ROOT / "manifests/components/prometheusrule/prometheusrule.yaml"

# Series Prometheus writes for every scrape target, whatever the target exports.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}

# --- a PromQL reader, just enough to find metric names -------------------------------------

_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
        "group_right", "offset", "bool", "inf", "nan", "start", "end",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
# Grafana's variables: time ranges become a duration, the rest sit inside label values.
_RANGE_VARS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{__\w+\}")
_VARS = re.compile(r"\$\{?\w+\}?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or labels)."""
    expr = _RANGE_VARS.sub("1m", expr)
    expr = _VARS.sub("x", expr)
    names = set(_NAME_MATCHER.findall(expr))
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)  # ranges and subqueries
    expr = _GROUPING.sub(" ", expr)
    for match in _IDENT.finditer(expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def grafana_query_names(query: str) -> set[str]:
    """Metric names in a template variable's query (`label_values(SERIES, label)`, ...)."""
    call = re.fullmatch(r"\s*(\w+)\((.*)\)\s*", query, re.DOTALL)
    if call is None:
        return metric_names(query)
    function, args = call.groups()
    if function == "label_values":
        series = args.rsplit(",", 1)[0] if "," in args else args
        return metric_names(series)
    if function in ("query_result", "metrics"):
        return metric_names(args)
    return set()


def test_the_reader_finds_names_and_only_names() -> None:
    expr = (
        'sum by (le, kind) (rate(foo_bucket{job=~"$job", a="rate(x)"}[$__rate_interval])) '
        "/ on (kind) group_left bar:recorded offset 5m > bool 1e3 and "
        'absent(up{job="j"} == 1) unless {__name__="baz_total"}'
    )
    assert metric_names(expr) == {"foo_bucket", "bar:recorded", "up", "baz_total"}
    assert grafana_query_names('label_values(qux{namespace="$namespace"}, rollout)') == {"qux"}


# --- what is exported -----------------------------------------------------------------------


def _sample_names(exposition: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Exported sample names, by who exports them."""
    from prometheus_client import generate_latest

    return {
        "operator": _sample_names(generate_latest(REGISTRY).decode()),
        "router": _sample_names(IstioTelemetry().render().decode()),
        "model server": _sample_names(ModelMetrics("v1", "healthy").render().decode()),
        "prometheus": set(PROMETHEUS_OWN),
    }


def test_the_operator_exports_the_series_the_dashboard_is_built_on(
    exported: dict[str, set[str]],
) -> None:
    wanted = {
        "canaryguard_canary_weight",
        "canaryguard_slo_value",
        "canaryguard_decisions_total",
        "canaryguard_pages_total",
        "canaryguard_prometheus_query_errors_total",
    }
    assert wanted <= exported["operator"]
    assert {"istio_requests_total", "istio_request_duration_milliseconds_bucket"} <= exported[
        "router"
    ]


# --- what is queried ------------------------------------------------------------------------


def _dashboard_queries(node: Any, where: str = "dashboard") -> Iterator[tuple[str, str, bool]]:
    """(where, query, is_template_query) for every query anywhere in the dashboard JSON."""
    if isinstance(node, dict):
        title = node.get("title") or node.get("name") or ""
        here = f"{where} > {title}" if title else where
        if isinstance(node.get("expr"), str):
            yield here, node["expr"], False
        if node.get("type") == "query" and "query" in node:
            query = node["query"]
            text = query.get("query") if isinstance(query, dict) else query
            if isinstance(text, str):
                yield here, text, True
        for key, value in node.items():
            if key != "query":
                yield from _dashboard_queries(value, here)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_queries(item, where)


def _rule_exprs() -> Iterator[tuple[str, str]]:
    rule = yaml.safe_load(RULES.read_text())
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            yield f"{group['name']} > {r.get('alert') or r.get('record')}", str(r["expr"])


def _check(where: str, names: set[str], exported: dict[str, set[str]]) -> list[str]:
    known = set().union(*exported.values())
    return [f"{where}: {name} is exported by nothing we ship" for name in sorted(names - known)]


def test_every_metric_the_dashboard_queries_is_exported(exported: dict[str, set[str]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = list(_dashboard_queries(dashboard))
    assert len(queries) >= 15, "the dashboard lost its queries"
    problems: list[str] = []
    for where, query, templated in queries:
        names = grafana_query_names(query) if templated else metric_names(query)
        assert names, f"{where}: no metric found in {query!r}"
        problems += _check(where, names, exported)
    assert not problems, "\n".join(problems)


def test_every_metric_the_alerts_query_is_exported(exported: dict[str, set[str]]) -> None:
    rules = list(_rule_exprs())
    assert len(rules) >= 4
    problems: list[str] = []
    for where, expr in rules:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        problems += _check(where, names, exported)
    assert not problems, "\n".join(problems)


def test_the_alerts_cover_the_operators_health() -> None:
    exprs = " ".join(expr for _, expr in _rule_exprs())
    for needed in (
        "up{",  # operator down
        "canaryguard_prometheus_query_errors_total",
        'canaryguard_pages_total{result!="delivered"}',
        "canaryguard_decisions_total",
    ):
        assert needed in exprs


def test_the_dashboard_is_per_rollout_and_draws_what_it_promises() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "rollout", "slo"} <= variables.keys()
    exprs = [q for _, q, templated in _dashboard_queries(dashboard) if not templated]
    per_rollout = [e for e in exprs if 'rollout="$rollout"' in e]
    assert any("canaryguard_canary_weight" in e for e in per_rollout)
    assert any("canaryguard_slo_value" in e for e in per_rollout)
    annotations = [a for a in dashboard["annotations"]["list"] if "expr" in a]
    assert any("canaryguard_decisions_total" in a["expr"] for a in annotations)
    # Every panel and annotation reads the chosen Prometheus, not a hard-coded uid.
    for where, node in _datasources(dashboard):
        assert node in (
            {"type": "prometheus", "uid": "${datasource}"},
            {"type": "grafana", "uid": "-- Grafana --"},
        ), where
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def _datasources(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and not isinstance(value, str):
                yield where, value
            else:
                yield from _datasources(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _datasources(item, f"{where}[{i}]")
