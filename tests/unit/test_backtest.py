"""The backtest, tick by tick: the engine replayed on range answers, with exact tick times.

Base rollout (tests/unit/scenario.py): interval 30s; steps 10% for 60s, 50% for 120s, 100%;
one SLO `errors` (error rate, absolute margin 0.01, window 60s, minRequests 50).
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from canaryguard.cli.backtest import backtest_text, outcome, render
from canaryguard.cli.errors import CliError
from canaryguard.core.backtest import observations_at, replay, runs, samples_at, tick_times
from canaryguard.core.ports import Series
from canaryguard.core.queries import plan
from tests.unit.scenario import T0, at, make_spec, spec_dict

SPEC = make_spec()
QUERIES = plan(SPEC)["errors"]


def series(values: dict[str, list[float | None]]) -> list[Series]:
    """One series per version with a point every 30 s from T0 (None: no point there)."""
    return [
        Series(
            {"destination_version": version},
            tuple(
                (at(30 * k).timestamp(), value)
                for k, value in enumerate(points)
                if value is not None
            ),
        )
        for version, points in values.items()
    ]


def answers(canary_rate: list[float | None], canary_count: float = 100) -> dict[str, list[Series]]:
    n = len(canary_rate)
    return {
        QUERIES.value: series({"v1": [0.01] * n, "v2": canary_rate}),
        QUERIES.samples: series({"v1": [900.0] * n, "v2": [canary_count] * n}),
    }


def test_tick_times_follow_the_interval_and_are_bounded() -> None:
    assert tick_times(at(0), at(90), timedelta(seconds=30)) == [at(0), at(30), at(60), at(90)]
    assert tick_times(at(0), at(89), timedelta(seconds=30)) == [at(0), at(30), at(60)]
    with pytest.raises(ValueError, match="at most 100000"):
        tick_times(at(0), at(10**6), timedelta(seconds=1))
    with pytest.raises(ValueError, match="before the start"):
        tick_times(at(1), at(0), timedelta(seconds=1))


def test_tick_times_are_the_operator_s_grid_slotted_after_the_first_from_10s() -> None:
    start = at(0) + timedelta(milliseconds=250)  # a first tick off the whole second
    slotted = tick_times(start, at(95), timedelta(seconds=30))
    assert slotted == [start, at(31), at(61), at(91)]
    assert runs(slotted, timedelta(seconds=30)) == [(start, start), (at(31), at(91))]
    short = tick_times(start, at(3), timedelta(seconds=1))
    assert short == [start, at(1.25), at(2.25)]
    assert runs(short, timedelta(seconds=1)) == [(start, at(2.25))]
    on_slot = tick_times(at(0), at(60), timedelta(seconds=30))
    assert runs(on_slot, timedelta(seconds=30)) == [(at(0), at(60))]


def test_a_tick_reads_each_series_point_at_its_time_and_a_missing_point_is_no_data() -> None:
    data = answers([0.012, None, 0.05])
    assert [s.value for s in samples_at(data[QUERIES.value], at(60))] == [0.01, 0.05]
    seen = observations_at(SPEC, data, at(30)).slos["errors"]
    assert (seen.baseline, seen.canary, seen.baseline_samples, seen.canary_samples) == (
        0.01,
        None,
        900,
        100,
    )
    # A query without an answer is unavailable (no entry), as a failed query in the operator.
    assert observations_at(SPEC, {}, at(30)).slos == {}


def test_the_replay_reaches_the_rollback_at_the_tick_its_window_ends() -> None:
    # Healthy to 60 s (the step to 50% at 60 s), breaching from 90 s: window 60 s -> 150 s.
    result = replay(SPEC, answers([0.012, 0.012, 0.012, 0.05, 0.05, 0.05, 0.05]), at(0), at(180))

    assert [t.index for t in result.ticks] == [0, 1, 2, 3, 4, 5]  # stops when decided
    assert [(t.phase, t.canary_weight) for t in result.ticks] == [
        ("Progressing", 10),
        ("Progressing", 10),
        ("Progressing", 50),
        ("Progressing", 50),
        ("Progressing", 50),
        ("RolledBack", 0),
    ]
    assert [[e.reason for e in t.decisions] for t in result.ticks] == [
        ["Started"],
        [],
        ["StepAdvanced"],
        [],
        [],
        ["RolledBack"],
    ]
    assert [t.slos[0].verdict if t.slos else None for t in result.ticks] == [
        None,
        "healthy",
        "healthy",
        "breach",
        "breach",
        "breach",
    ]
    decided = result.decided
    assert decided is not None and (decided.index, decided.at) == (5, at(150))
    rollback = result.status.rollback
    assert rollback is not None
    assert (rollback.slo, rollback.breaching_since, rollback.canary) == ("errors", at(90), 0.05)
    assert result.status.page is not None and result.status.page.state == "Delivered"
    assert outcome(result) == (
        "outcome: RolledBack at 2024-06-01T12:02:30Z (tick 5): " + rollback.message
    )


def test_no_data_never_decides_and_the_outcome_says_where_the_rollout_was() -> None:
    result = replay(SPEC, answers([0.012] * 7, canary_count=12), at(0), at(180))
    assert len(result.ticks) == 7
    assert result.decided is None
    assert {t.slos[0].verdict for t in result.ticks[1:]} == {"inconclusive"}
    assert outcome(result).startswith("outcome: not decided by the end of the period: Progressing")


def test_the_timeline_folds_ticks_that_changed_nothing() -> None:
    result = replay(SPEC, answers([0.012, 0.012, 0.012, 0.05, 0.05, 0.05, 0.05]), at(0), at(180))
    text = render(SPEC, result, at(0), at(180))
    lines = text.splitlines()
    assert lines[0] == (
        "backtest of ml/scorer revision scorer/v2@v2: 2024-06-01T12:00:00Z to "
        "2024-06-01T12:03:00Z, a tick every 30s (6 ticks replayed)"
    )
    ticks = [line.split()[0] for line in lines if line.startswith("#")]
    assert ticks == ["#0", "#1", "#2", "#3", "#5"]  # #4 saw what #3 saw and decided nothing
    assert "#3    2024-06-01T12:01:30Z Progressing  50%  errors breach (canary 0.05 vs " in text
    assert lines[-1].startswith("outcome: RolledBack at 2024-06-01T12:02:30Z (tick 5)")


def test_a_spec_that_does_not_parse_is_one_error_naming_the_field(tmp_path: Path) -> None:
    data = spec_dict()
    data["steps"][0]["weight"] = 0
    path = tmp_path / "r.yaml"
    body = {"kind": "CanaryRollout", "metadata": {"name": "scorer"}, "spec": data}
    path.write_text(yaml.safe_dump(body))
    args = argparse.Namespace(
        file=path, prometheus="http://127.0.0.1:9", start=T0, end=at(60), timeout=1.0
    )
    with pytest.raises(CliError, match=r"spec.steps\[0\].weight: must be between 1 and 100"):
        backtest_text(args)
