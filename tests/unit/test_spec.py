"""The spec parser: examples parse, defaults match the CRD, every error names its field."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryguard.core.spec import (
    ErrorRate,
    Latency,
    Margin,
    Query,
    SpecError,
    parse_spec,
)
from tests.unit.scenario import BASE_SPEC

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def rollouts_in(path: Path) -> list[dict[str, Any]]:
    return [
        doc
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CanaryRollout"
    ]


def test_there_are_examples() -> None:
    assert any(rollouts_in(path) for path in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_parses(path: Path) -> None:
    for body in rollouts_in(path):
        spec = parse_spec(body)
        assert spec.name == body["metadata"]["name"]


def test_the_fraud_model_example_reads_as_intended() -> None:
    (body,) = rollouts_in(ROOT / "examples/fraud-model/canaryrollout.yaml")
    spec = parse_spec(body)
    assert (spec.namespace, spec.name) == ("ml", "fraud-model")
    assert [s.weight for s in spec.steps] == [5, 25, 50, 100]
    kinds = {slo.name: slo.kind for slo in spec.analysis.slos}
    assert kinds["error-rate"] == ErrorRate("5..")
    assert kinds["p99-latency"] == Latency(0.99)
    assert isinstance(kinds["fraud-flag-rate"], Query)
    flags = spec.analysis.slos[2]
    assert (flags.direction, flags.min_requests, flags.margin) == (
        "LowerIsWorse",
        500,
        Margin(absolute=0.02),
    )
    assert spec.paging is not None
    assert spec.paging.pager_duty.routing_key_secret_ref.name == "pagerduty"


def test_defaults_are_the_crds() -> None:
    spec = parse_spec(BASE_SPEC)
    assert spec.metrics.version_label == "destination_version"
    assert spec.metrics.prometheus.timeout == timedelta(seconds=5)
    assert spec.analysis.on_metrics_outage == "rollback"
    assert spec.paused is False
    slo = spec.analysis.slos[0]
    assert slo.kind == ErrorRate("5..")
    assert (slo.direction, slo.lookback, slo.min_requests) == (
        "HigherIsWorse",
        timedelta(minutes=1),
        50,
    )
    assert spec.paging is not None and spec.paging.pager_duty.severity == "critical"
    assert spec.virtual_service.routes == ()


def test_whole_resource_or_spec_alone() -> None:
    body = {"metadata": {"name": "a", "namespace": "b", "generation": 7}, "spec": BASE_SPEC}
    whole = parse_spec(body)
    assert (whole.namespace, whole.name, whole.generation) == ("b", "a", 7)
    assert parse_spec(body, namespace="c").namespace == "c"
    alone = parse_spec(BASE_SPEC, namespace="b", name="a")
    assert (alone.namespace, alone.name, alone.generation) == ("b", "a", None)
    assert alone.steps == whole.steps and alone.analysis == whole.analysis


def test_revision_defaults_to_the_canary_destination_and_version() -> None:
    assert parse_spec(BASE_SPEC).effective_revision() == "scorer/v2@v2"
    assert parse_spec({**BASE_SPEC, "revision": "build-7"}).effective_revision() == "build-7"


Edit = Callable[[dict[str, Any]], None]


def slo0(**fields: Any) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        spec["analysis"]["slos"][0].update(fields)

    return edit


def set_in(path: str, value: Any) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = spec
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return edit


def drop(path: str) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = spec
        for key in parents:
            target = target[key]
        del target[last]

    return edit


def add_query_slo(template: str, samples: str | None = None) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        query = {"template": template} | ({"samplesTemplate": samples} if samples else {})
        spec["analysis"]["slos"].append({"name": "q", "query": query, "margin": {"absolute": 1}})

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (set_in("steps.1.weight", 0), "spec.steps[1].weight: must be between 1 and 100, got 0"),
        (set_in("steps.1.weight", 101), "spec.steps[1].weight: must be between 1 and 100"),
        (set_in("steps.1.weight", "50"), "spec.steps[1].weight: must be an integer, got a string"),
        (set_in("steps.1.weight", True), "spec.steps[1].weight: must be an integer, got a boolean"),
        (set_in("steps.1.weight", 10), "spec.steps[1].weight: weights must be strictly increasing"),
        (set_in("steps.2.weight", 90), "spec.steps[2].weight: the last step must be 100"),
        (set_in("steps", []), "spec.steps: must have 1 to 20 items, got 0"),
        (set_in("steps.0.hold", "1.5m"), "spec.steps[0].hold: invalid duration '1.5m'"),
        (set_in("canary.subset", "v1"), "spec.canary: must differ from spec.baseline"),
        (drop("baseline.host"), "spec.baseline.host: required"),
        (drop("virtualService"), "spec.virtualService: required"),
        (set_in("virtualService.routes", ["a", "a"]), "spec.virtualService.routes: must not"),
        (set_in("metrics.canaryVersion", "v1"), "spec.metrics.canaryVersion: must differ"),
        (set_in("metrics.selector", {}), "spec.metrics.selector: must have 1 to 16"),
        (
            set_in("metrics.selector", {"destination_version": "v1"}),
            "spec.metrics.selector.destination_version: must not match on the version label",
        ),
        (
            set_in("metrics.selector", {"bad-label": "x"}),
            "spec.metrics.selector.bad-label: not a Prometheus label name",
        ),
        (
            set_in("metrics.prometheus.address", "prometheus:9090"),
            "spec.metrics.prometheus.address: must be an http(s) URL (http://host[:port][/path])",
        ),
        (set_in("metrics.prometheus.timeout", "0s"), "spec.metrics.prometheus.timeout: must be at"),
        (set_in("metrics.versionLabel", "1x"), "spec.metrics.versionLabel: invalid value"),
        (set_in("metrics.versionLabel", "version\n"), "spec.metrics.versionLabel: invalid value"),
        (
            set_in("metrics.prometheus.address", "http://prom:9090/\nX-Injected: 1"),
            "spec.metrics.prometheus.address: the path may hold only URL path characters",
        ),
        (set_in("analysis.interval", "0s"), "spec.analysis.interval: must be at least 1s"),
        (set_in("analysis.onMetricsOutage", "panic"), "spec.analysis.onMetricsOutage: must be one"),
        (set_in("analysis.minRequests", -1), "spec.analysis.minRequests: must be >= 0, got -1"),
        (set_in("analysis.slos", []), "spec.analysis.slos: must have 1 to 20 items"),
        (slo0(name="Errors"), "spec.analysis.slos[0].name: invalid value 'Errors': a DNS label"),
        (
            slo0(latency={"quantile": 0.9}),
            "spec.analysis.slos[0]: set exactly one of errorRate, latency, query",
        ),
        (slo0(margin=None), "spec.analysis.slos[0]: set a margin, a limit or both"),
        (slo0(margin={}), "spec.analysis.slos[0].margin: set absolute, relative or both"),
        (slo0(margin={"absolute": -0.1}), "spec.analysis.slos[0].margin.absolute: must be >= 0"),
        (slo0(margin={"relative": "lots"}), "spec.analysis.slos[0].margin.relative: must be a"),
        (slo0(limit=float("nan")), "spec.analysis.slos[0].limit: must be a finite number"),
        (slo0(direction="Up"), "spec.analysis.slos[0].direction: must be one of HigherIsWorse"),
        (slo0(window="forever"), "spec.analysis.slos[0].window: invalid duration 'forever'"),
        (slo0(lookback="0s"), "spec.analysis.slos[0].lookback: must be at least 1s"),
        (
            slo0(errorRate={"codes": "5(("}),
            "spec.analysis.slos[0].errorRate.codes: invalid regular",
        ),
        (slo0(marginn={"absolute": 1}), "spec.analysis.slos[0].marginn: unknown field"),
        (
            add_query_slo('rate(x{v="{{ version }}"}[{{ foo }}])'),
            "spec.analysis.slos[2].query.template: unknown placeholder {{ foo }}",
        ),
        (
            add_query_slo("rate(x[{{ lookback }}])"),
            "spec.analysis.slos[2].query.template: missing placeholder {{ version }}",
        ),
        (
            add_query_slo('rate(x{v="{{ version }}"}[1m])', 'n{v="{{ version }"}'),
            "spec.analysis.slos[2].query.samplesTemplate: stray {{ or }}",
        ),
        (
            add_query_slo('x{v="{{ version }}"}) or vector(1) or (y'),
            "spec.analysis.slos[2].query.template: not valid PromQL: "
            "unexpected right parenthesis ')'",
        ),
        (
            add_query_slo('rate(x{v="{{ version }}"}[1m])', 'sum(n{v="{{ version }}"}'),
            "spec.analysis.slos[2].query.samplesTemplate: not valid PromQL: "
            "unclosed left parenthesis",
        ),
        (
            set_in("analysis.slos.1", {"name": "errors", "errorRate": {}, "limit": 1}),
            "spec.analysis.slos[1].name: duplicate SLO name 'errors'",
        ),
        (
            set_in("paging", {"pagerDuty": {}}),
            "spec.paging.pagerDuty.routingKeySecretRef: required",
        ),
        (
            set_in("paging.pagerDuty.routingKeySecretRef.key", "a/b"),
            "spec.paging.pagerDuty.routingKeySecretRef.key: invalid value 'a/b'",
        ),
        (set_in("paging.pagerDuty.severity", "high"), "spec.paging.pagerDuty.severity: must be"),
        (set_in("paused", "yes"), "spec.paused: must be true or false, got a string"),
        (set_in("metrics", "prometheus"), "spec.metrics: must be an object, got a string"),
        (set_in("extra", 1), "spec.extra: unknown field"),
        # Found by the bad-input corpus (tests/integration/data/bad-rollouts.yaml):
        (
            set_in("steps.0.hold", "99999999999999999999h"),
            "spec.steps[0].hold: invalid duration '99999999999999999999h': must be at most 8760h",
        ),
        (
            set_in("metrics.selector.destination_service_name", ""),
            "spec.metrics.selector.destination_service_name: must be a string of 1 to 253",
        ),
        (
            set_in("baseline.host", "fraud model"),
            "spec.baseline.host: invalid value 'fraud model': a DNS name",
        ),
        (set_in("canary.subset", "V2"), "spec.canary.subset: invalid value 'V2': a DNS label"),
        (
            slo0(errorRate={"codes": "(?<=5).."}),
            "spec.analysis.slos[0].errorRate.codes: invalid regular expression: "
            "illegal regex for (?<=5)..",
        ),
    ],
)
def test_invalid_specs_name_the_field(edit: Edit, message: str) -> None:
    spec = copy.deepcopy(BASE_SPEC)
    spec["analysis"]["slos"].append(
        {"name": "pad", "latency": {"quantile": 0.9}, "limit": 100}
    )  # so index-based edits hit a list of two
    parse_spec(spec)  # valid before the edit
    edit(spec)
    with pytest.raises(SpecError) as raised:
        parse_spec(spec)
    assert str(raised.value).startswith(message)
    assert str(raised.value).startswith(raised.value.path + ": ")


@pytest.mark.parametrize(
    ("path", "url", "message"),
    [
        (
            "metrics.prometheus.address",
            "http://user:pass@prom:9090",
            "spec.metrics.prometheus.address: must not hold credentials (user:password@host): "
            "put the Authorization header in a Secret named by headersSecretRef",
        ),
        (
            "metrics.prometheus.address",
            "http://prom:9090/?access_token=pass",
            "spec.metrics.prometheus.address: must not have a query (?...) or fragment (#...): "
            "put the Authorization header in a Secret named by headersSecretRef",
        ),
        (
            "paging.pagerDuty.url",
            "https://user:pass@events.pagerduty.com/v2/enqueue",
            "spec.paging.pagerDuty.url: must not hold credentials (user:password@host): "
            "the routing key comes from the Secret named by routingKeySecretRef",
        ),
    ],
)
def test_credentials_in_an_address_are_refused_and_never_repeated(
    path: str, url: str, message: str
) -> None:
    spec = copy.deepcopy(BASE_SPEC)
    set_in(path, url)(spec)
    with pytest.raises(SpecError) as raised:
        parse_spec(spec)
    assert str(raised.value) == message
    assert "pass" not in str(raised.value).replace("password", "")


def test_a_spec_that_is_not_an_object() -> None:
    with pytest.raises(SpecError, match=r"^spec: must be an object, got a list"):
        parse_spec({"spec": []})


# Values that reach deep into the parser: long digit runs, templates, regexes, nesting.
_TRICKY = st.sampled_from(
    [
        "99999999999999999999h",
        "9" * 31 + "s",
        "0s",
        "1h",
        "5((",
        'x{v="{{ version }}"}',
        "x{{ version }}) or (y",
        "-" * 2000 + 'x{v="{{ version }}"}',
        "(" * 1000,
        "http://a:b@c",
        "",
        "\x00",
    ]
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**18)
    | st.floats()
    | st.text(max_size=30)
    | _TRICKY,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=8,
)


def _places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _places(item, (*path, index))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_malformed_spec_is_a_spec_error_never_a_crash(data: st.DataObject) -> None:
    """A rollout whose parse raises anything else is never set Invalid: its ticks fail, and
    it breaks the route-conflict check of every rollout sharing its VirtualService."""
    spec = copy.deepcopy(BASE_SPEC)
    spec["analysis"]["slos"].append(
        {"name": "q", "query": {"template": 'x{v="{{ version }}"}'}, "limit": 1}
    )
    spec["metrics"]["prometheus"]["headersSecretRef"] = {"name": "prom", "key": "token"}
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, last = data.draw(st.sampled_from([p for p in _places(spec) if p]))
        target: Any = spec
        for step in parents:
            target = target[step]
        target[last] = data.draw(_TRICKY | _JSON)
    with contextlib.suppress(SpecError):
        parse_spec(spec)
