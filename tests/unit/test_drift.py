"""Drift as a distribution: the PSI of the canary's score histogram against the baseline's,
from cumulative bucket increases, with exact expected values; its query, its observation from
a Prometheus answer, its verdicts, its spec; and the engine rolling back on drift alone."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from canaryguard.core import drift
from canaryguard.core.judge import judge
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.ports import Sample
from canaryguard.core.queries import drift_observation, plan
from canaryguard.core.spec import Drift, Slo, SpecError
from tests.unit.scenario import Rollout, at, events, make_spec, spec_dict, weights

INF = math.inf


# --- the index ----------------------------------------------------------------------------


def test_identical_distributions_have_a_psi_of_zero_whatever_their_sizes() -> None:
    assert drift.psi([50, 30, 20, 0], [500, 300, 200, 0]) == 0.0


def test_psi_of_a_mirrored_distribution_is_the_closed_form() -> None:
    # Shares 0.5/0.3/0.2/0 against 0.2/0.3/0.5/0; each smoothed as (n/N + 1e-4) / (1 + 4e-4):
    # only the first and third bins differ, by 0.3 / 1.0004 each way.
    expected = 2 * (0.3 / 1.0004) * math.log(0.5001 / 0.2001)
    got = drift.psi([50, 30, 20, 0], [20, 30, 50, 0])
    assert got == pytest.approx(expected, rel=1e-12)
    assert round(expected, 6) == 0.549375


def test_an_empty_baseline_bin_is_smoothed_by_epsilon_not_infinite() -> None:
    # Baseline all in bin 0; canary 10% in bin 1, where the baseline has nothing.
    expected = (0.1 / 1.0002) * (math.log(0.1001 / 0.0001) - math.log(0.9001 / 1.0001))
    got = drift.psi([100, 0], [90, 10])
    assert got == pytest.approx(expected, rel=1e-12)
    assert round(expected, 5) == 0.70127


def test_epsilon_is_documented_and_changes_the_empty_bin_term() -> None:
    assert drift.EPSILON == 1e-4
    expected = (0.1 / 1.02) * (math.log(0.11 / 0.01) - math.log(0.91 / 1.01))
    assert drift.psi([100, 0], [90, 10], epsilon=0.01) == pytest.approx(expected, rel=1e-12)


def test_a_side_without_any_observation_or_a_single_bin_has_no_psi() -> None:
    assert drift.psi([0, 0, 0], [1, 2, 3]) is None
    assert drift.psi([1, 2, 3], [0, 0, 0]) is None
    assert drift.psi([5], [7]) is None
    with pytest.raises(ValueError, match="same bins"):
        drift.psi([1, 2], [1, 2, 3])


def test_cumulative_buckets_are_differenced_into_bins_lowest_bound_first() -> None:
    assert drift.bins({INF: 100, 0.5: 80, 0.25: 50, 1.0: 100}) == [50, 30, 20, 0]


def test_a_higher_bucket_below_a_lower_one_counts_as_an_empty_bin_not_a_negative_one() -> None:
    # increase() extrapolates each series alone: 49.5 after 50 is noise, not -0.5 scores.
    assert drift.bins({0.25: 50, 0.5: 49.5, 1.0: 100}) == [50, 0, 50]


def test_histograms_with_different_bounds_are_compared_on_the_bounds_they_share() -> None:
    baseline = {0.1: 10, 0.25: 50, 0.5: 80, INF: 100}
    canary = {0.25: 20, 0.5: 50, 0.75: 90, INF: 100}
    psi, nb, nc = drift.histogram_psi(baseline, canary)
    # Shared 0.25, 0.5, +Inf: bins 50/30/20 against 20/30/50.
    assert (nb, nc) == (100, 100)
    expected = 2 * (0.3 / 1.0003) * math.log(0.5001 / 0.2001)
    assert psi == pytest.approx(expected, rel=1e-12)


def test_le_labels_read_as_bounds() -> None:
    assert [drift.parse_le(t) for t in ("0.25", "+Inf", "1e3", "x", None, "NaN")] == [
        0.25,
        INF,
        1000.0,
        None,
        None,
        None,
    ]


# --- the query and the observation --------------------------------------------------------


def drift_spec_dict(**kind: Any) -> dict[str, Any]:
    data = spec_dict()
    data["analysis"]["slos"] = [
        {
            "name": "score-drift",
            "drift": {
                "histogram": "model_prediction_score",
                "selector": {"app": "fraud-model"},
                "versionLabel": "version",
                **kind,
            },
            "window": "60s",
            "lookback": "5m",
            "minRequests": 100,
        }
    ]
    return data


def test_one_query_answers_every_bucket_of_both_versions_and_counts_the_evidence() -> None:
    queries = plan(make_spec(drift_spec_dict()))["score-drift"]
    assert queries.value == (
        'sum by (version, le) (increase(model_prediction_score_bucket{app="fraud-model",'
        'version=~"v1|v2"}[300s]))'
    )
    assert queries.samples == queries.value  # run once: the counts come from the +Inf bucket
    assert queries.buckets is True
    assert queries.value_key == ("version", "v1", "v2")


def test_the_version_label_defaults_to_the_metrics_one_and_the_selector_to_none() -> None:
    data = drift_spec_dict()
    del data["analysis"]["slos"][0]["drift"]["versionLabel"]
    del data["analysis"]["slos"][0]["drift"]["selector"]
    queries = plan(make_spec(data))["score-drift"]
    assert queries.value == (
        "sum by (destination_version, le) (increase(model_prediction_score_bucket"
        '{destination_version=~"v1|v2"}[300s]))'
    )


def buckets(version: str, cumulative: dict[str, float]) -> list[Sample]:
    return [Sample({"version": version, "le": le}, n) for le, n in cumulative.items()]


def test_an_answer_folds_into_the_psi_as_the_canary_value_and_the_counts_as_evidence() -> None:
    answer = buckets("v1", {"0.25": 50, "0.5": 80, "1.0": 100, "+Inf": 100}) + buckets(
        "v2", {"0.25": 20, "0.5": 50, "1.0": 100, "+Inf": 100}
    )
    seen = drift_observation(answer, ("version", "v1", "v2"))
    expected = 2 * (0.3 / 1.0004) * math.log(0.5001 / 0.2001)
    assert seen.baseline == 0.0
    assert seen.canary == pytest.approx(expected, rel=1e-12)
    assert (seen.baseline_samples, seen.canary_samples) == (100, 100)


def test_a_version_missing_from_the_answer_is_no_data_with_the_other_side_counted() -> None:
    seen = drift_observation(buckets("v1", {"0.5": 40, "+Inf": 70}), ("version", "v1", "v2"))
    assert seen == SloObservation(None, None, 70, None)


# --- verdicts -----------------------------------------------------------------------------


def drift_slo(threshold: float = 0.2, min_requests: int = 100) -> Slo:
    return Slo(
        name="score-drift",
        kind=Drift("model_prediction_score", threshold=threshold),
        min_requests=min_requests,
        window=timedelta(minutes=1),
    )


@pytest.mark.parametrize(
    ("psi", "verdict", "reason"),
    [
        (
            0.35,
            "breach",
            "PSI 0.35 of the canary's score distribution against the baseline's: above the "
            "threshold 0.2",
        ),
        (
            0.2,
            "healthy",
            "PSI 0.2 of the canary's score distribution against the baseline's: within the "
            "threshold 0.2",
        ),
        (
            0.01,
            "healthy",
            "PSI 0.01 of the canary's score distribution against the baseline's: within the "
            "threshold 0.2",
        ),
    ],
)
def test_a_psi_above_the_threshold_is_a_breach(psi: float, verdict: str, reason: str) -> None:
    judgement = judge(drift_slo(), SloObservation(0.0, psi, 1000, 400))
    assert (judgement.verdict, judgement.reason) == (verdict, reason)


def test_too_few_observations_or_no_psi_is_inconclusive() -> None:
    few = judge(drift_slo(), SloObservation(0.0, 0.9, 1000, 99))
    assert (few.verdict, few.reason) == ("inconclusive", "canary has 99 observations, needs 100")
    none = judge(drift_slo(), SloObservation(0.0, None, 1000, 400))
    assert none.verdict == "inconclusive"
    assert none.reason == "no PSI: a version has no observation in the histogram's buckets"


def test_with_the_baseline_idle_a_drift_slo_is_healthy_on_the_canary_s_evidence() -> None:
    idle = judge(drift_slo(), SloObservation(0.0, 3.0, 0, 400), baseline_idle=True)
    assert idle.verdict == "healthy"
    assert idle.reason.startswith("baseline idle (no traffic at 100%)")
    assert judge(drift_slo(), SloObservation(None, None, 0, 10), baseline_idle=True).verdict == (
        "inconclusive"
    )


# --- the spec -----------------------------------------------------------------------------


def test_threshold_defaults_to_0_2_and_the_tolerance_says_psi() -> None:
    slo = make_spec(drift_spec_dict()).analysis.slos[0]
    assert slo.kind == Drift("model_prediction_score", {"app": "fraud-model"}, "version", 0.2)
    assert slo.describe_tolerance() == "PSI threshold 0.2"
    assert slo.min_requests == 100


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"drift": {"histogram": "model_prediction_score_bucket"}},
            "spec.analysis.slos[0].drift.histogram: name the histogram without its _bucket suffix",
        ),
        (
            {"drift": {"histogram": "model score"}},
            "spec.analysis.slos[0].drift.histogram: invalid value 'model score': a Prometheus "
            "metric name",
        ),
        (
            {"drift": {"histogram": "h", "threshold": 0}},
            "spec.analysis.slos[0].drift.threshold: must be greater than 0",
        ),
        (
            {"drift": {"histogram": "h"}, "margin": {"absolute": 0.1}},
            "spec.analysis.slos[0]: a drift SLO takes no margin or limit: set drift.threshold",
        ),
        (
            {"drift": {"histogram": "h"}, "limit": 0.3},
            "spec.analysis.slos[0]: a drift SLO takes no margin or limit: set drift.threshold",
        ),
        (
            {"drift": {"histogram": "h"}, "direction": "LowerIsWorse"},
            "spec.analysis.slos[0].direction: a drift SLO is HigherIsWorse (a larger PSI)",
        ),
        (
            {"drift": {"histogram": "h", "versionLabel": "v", "selector": {"v": "x"}}},
            "spec.analysis.slos[0].drift.selector.v: must not match on the version label; the "
            "query adds it for each version",
        ),
        (
            {"drift": {"histogram": "h", "selector": {"destination_version": "x"}}},
            "spec.analysis.slos[0].drift.selector.destination_version: must not match on the "
            "version label; the query adds it for each version",
        ),
        (
            {"drift": {"histogram": "h"}, "errorRate": {}},
            "spec.analysis.slos[0]: set exactly one of errorRate, latency, query, drift",
        ),
    ],
)
def test_a_bad_drift_slo_is_refused_naming_its_field(change: dict[str, Any], error: str) -> None:
    data = spec_dict()
    data["analysis"]["slos"] = [{"name": "d", "window": "60s", **change}]
    with pytest.raises(SpecError) as caught:
        make_spec(data)
    assert str(caught.value) == error


# --- the engine -----------------------------------------------------------------------------


def test_a_sustained_drift_rolls_back_naming_the_psi_and_its_threshold() -> None:
    r = Rollout(make_spec(drift_spec_dict()))
    r.started()
    shifted = SloObservation(0.0, 0.35, 2000, 400)
    same = SloObservation(0.0, 0.02, 2000, 400)
    assert r.tick(30, Observations({"score-drift": same})).actions == ()
    r.tick(60, Observations({"score-drift": shifted}))
    assert r.status.slos[0].breaching_since == at(60)
    assert r.tick(90, Observations({"score-drift": shifted})).actions == ()
    result = r.tick(120, Observations({"score-drift": shifted}))
    assert weights(result.actions) == [(100, 0)]
    assert events(result.actions) == [("Warning", "RolledBack")]
    rollback = r.status.rollback
    assert rollback is not None
    assert (rollback.slo, rollback.baseline, rollback.canary, rollback.margin) == (
        "score-drift",
        0.0,
        0.35,
        "PSI threshold 0.2",
    )
    assert rollback.message == (
        "SLO score-drift breached for 1m (window 1m) since 2024-06-01T12:01:00Z: PSI 0.35 of "
        "the canary's score distribution against the baseline's: above the threshold 0.2"
    )
