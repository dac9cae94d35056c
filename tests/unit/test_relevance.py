"""Which status changes a reader needs at once (`canaryguard.core.relevance`): the values of
the last tick and the words that restate them wait for a heartbeat; everything the engine
resumes from, every verdict and every decision does not."""

from __future__ import annotations

from dataclasses import replace

from canaryguard.core.relevance import reader_relevant
from canaryguard.core.status import SloStatus, Status
from tests.unit.scenario import FEW, HEALTHY, Rollout, at, obs

SLO = SloStatus(
    name="errors",
    verdict="healthy",
    reason="canary 0.012 vs baseline 0.01: worse by 0.002 (+20%), within tolerance",
    baseline=0.01,
    canary=0.012,
    baseline_samples=900.0,
    canary_samples=100.0,
    baseline_reference=0.01,
    baseline_reference_samples=900.0,
    baseline_reference_at=at(0),
)
RUNNING = Status(phase="Progressing", step_index=0, canary_weight=10, slos=(SLO,))


def with_slo(status: Status, **changes: object) -> Status:
    return replace(status, slos=(replace(status.slos[0], **changes),))


def test_values_of_the_last_tick_alone_are_not_news() -> None:
    later = with_slo(
        RUNNING,
        baseline=0.011,
        canary=0.013,
        baseline_samples=950.0,
        canary_samples=104.0,
        reason="canary 0.013 vs baseline 0.011: worse by 0.002 (+18%), within tolerance",
        baseline_reference=0.011,
        baseline_reference_samples=950.0,
        baseline_reference_at=at(30),
    )
    assert not reader_relevant(RUNNING, later)
    assert not reader_relevant(RUNNING, RUNNING)


def test_messages_that_restate_values_are_not_news_but_a_condition_s_reason_is() -> None:
    before = RUNNING.with_condition("Healthy", "Unknown", "Inconclusive", "errors: 12 req", at(0))
    assert not reader_relevant(
        before,
        replace(before, message="waiting").with_condition(
            "Healthy", "Unknown", "Inconclusive", "errors: 14 req", at(30)
        ),
    )
    assert reader_relevant(
        before, before.with_condition("Healthy", "True", "AllHealthy", "all healthy", at(30))
    )


def test_verdicts_breach_and_outage_starts_and_steps_are_news() -> None:
    assert reader_relevant(RUNNING, with_slo(RUNNING, verdict="inconclusive"))
    assert reader_relevant(RUNNING, with_slo(RUNNING, verdict="breach", breaching_since=at(30)))
    assert reader_relevant(RUNNING, replace(RUNNING, metrics_outage_since=at(30)))
    assert reader_relevant(RUNNING, replace(RUNNING, step_index=1, canary_weight=50))
    assert reader_relevant(RUNNING, replace(RUNNING, step_started_at=at(30)))
    assert reader_relevant(RUNNING, replace(RUNNING, observed_generation=2))


def test_the_baseline_reference_is_news_once_the_canary_has_all_the_traffic() -> None:
    """At 100% the canary is judged against the reference, which can no longer be re-read
    from Prometheus: a restarted operator needs the latest one."""
    idle = replace(RUNNING, step_index=2, canary_weight=100)
    moved = with_slo(idle, baseline_reference=0.011, baseline_reference_at=at(30))
    assert reader_relevant(idle, moved)
    assert not reader_relevant(RUNNING, with_slo(RUNNING, baseline_reference=0.011))


def test_engine_decisions_are_news_and_steady_ticks_are_not() -> None:
    """Driven through the engine: ticks that only see other numbers change nothing a reader
    needs; the first verdict, a step and a change of verdict do."""
    rollout = Rollout()
    rollout.started()
    first = rollout.status
    rollout.tick(30, obs(HEALTHY))
    assert reader_relevant(first, rollout.status)  # the first verdicts
    steady = rollout.status
    rollout.tick(45, obs(replace(HEALTHY, baseline=0.0105, baseline_samples=910)))
    assert not reader_relevant(steady, rollout.status)
    rollout.tick(50, obs(FEW))
    assert reader_relevant(steady, rollout.status)  # healthy -> inconclusive
    rollout.tick(60, obs(HEALTHY))
    stepped = rollout.status
    assert stepped.canary_weight == 50
    assert reader_relevant(steady, stepped)


def test_a_confidence_slo_s_running_counts_wait_but_a_new_stratum_is_news() -> None:
    from canaryguard.core.status import StratumRecord

    first = StratumRecord(at(0), 10, 2700, 13, 300, 2)
    before = with_slo(RUNNING, evidence=(first,))
    grown = with_slo(RUNNING, evidence=(StratumRecord(at(0), 10, 5400, 27, 600, 3),))
    assert not reader_relevant(before, grown)
    stepped = with_slo(
        RUNNING, evidence=(replace(first, canary_events=3), StratumRecord(at(60), 50, 1, 0, 1, 0))
    )
    assert reader_relevant(before, stepped)
    # A finished stratum's counts are news, should they ever change.
    two = with_slo(RUNNING, evidence=(first, StratumRecord(at(60), 50, 1, 0, 1, 0)))
    assert reader_relevant(
        two, with_slo(two, evidence=(replace(first, canary_events=4), two.slos[0].evidence[1]))
    )
