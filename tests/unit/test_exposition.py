"""The text exposition the mesh writes: numbers without exponents, escaped labels, cumulative
buckets, and the full or minimal Istio label sets."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from canaryguard_testbed.exposition import (
    CounterFamily,
    HistogramFamily,
    format_number,
    render,
)
from canaryguard_testbed.istio_telemetry import (
    LABEL_NAMES,
    MINIMAL_LABEL_NAMES,
    IstioTelemetry,
    Source,
    Workload,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.5, "0.5"), (1.0, "1"), (3600000.0, "3600000"), (float("inf"), "+Inf"), (2.25, "2.25")],
)
def test_numbers_are_written_as_envoy_writes_them(value: float, text: str) -> None:
    assert format_number(value) == text


def test_label_values_are_escaped() -> None:
    counter = CounterFamily("c_total", "help", ("a",))
    counter.inc(('say "hi"\\\n',))
    (family,) = text_string_to_metric_families(render([counter]).decode())
    assert family.samples[0].labels["a"] == 'say "hi"\\\n'


def test_histogram_buckets_are_cumulative_and_le_is_inclusive() -> None:
    histogram = HistogramFamily("h", "help", ("x",), (1.0, 5.0))
    for value in (0.2, 1.0, 3.0, 9.0):
        histogram.observe(("a",), value)
    (family,) = text_string_to_metric_families(render([histogram]).decode())
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "h_bucket"}
    assert buckets == {"1": 2, "5": 3, "+Inf": 4}
    assert {s.name: s.value for s in family.samples if "le" not in s.labels} == {
        "h_sum": 13.2,
        "h_count": 4,
    }


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        HistogramFamily("h", "help", (), (5.0, 1.0))


@pytest.mark.parametrize("names", [LABEL_NAMES, MINIMAL_LABEL_NAMES])
def test_istio_telemetry_writes_the_chosen_label_set(names: tuple[str, ...]) -> None:
    telemetry = IstioTelemetry(names)
    workload = Workload("fraud-model", "shop", "v2")
    telemetry.record(Source(namespace="shop"), workload, 503, 12.0, "UF")
    families = {f.name: f for f in text_string_to_metric_families(telemetry.render().decode())}
    labels = families["istio_requests"].samples[0].labels
    assert set(labels) == set(names)
    assert labels["response_code"] == "503"
    assert labels["response_flags"] == "UF"
    assert labels["destination_canonical_revision"] == "v2"


def test_istio_telemetry_rejects_unknown_labels() -> None:
    with pytest.raises(ValueError, match="not Istio labels"):
        IstioTelemetry(("reporter", "pod"))
