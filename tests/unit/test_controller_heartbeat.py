"""Status writes only when a reader needs them (`--status-heartbeat`): a tick that saw only
other numbers makes no API write (nor read, VirtualServices coming from the watch); the
values are written once the heartbeat is due; every decision is the same as when each tick
is written, across a restart too.

The scenario's rollout: steps 10% (hold 60 s), 50% (120 s), 100% (120 s); one SLO
`errors` (minRequests 50, window 60 s); maxMetricsOutage 90 s; paging through PagerDuty.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from canaryguard.adapters.route_cache import CachedRouter, RouteStore
from canaryguard.cli.main import build_parser
from canaryguard.cli.run import operator_settings
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.relevance import reader_view
from canaryguard.core.status import Status, format_time, status_from_dict
from canaryguard.runtime.accounting import CountedKube, CountedRouter
from canaryguard.runtime.controller import Controller
from canaryguard.runtime.status_ledger import StatusLedger, heartbeat_phase
from tests.unit.fakes import SETTINGS, World
from tests.unit.scenario import BREACH, DOWN, FEW, HEALTHY, at, obs, spec_dict

KEY = ("ml", "scorer")


def controller(world: World, heartbeat: float) -> Controller:
    """A controller on the world's fakes, writing heartbeat values every `heartbeat` s."""
    settings = replace(SETTINGS, status_heartbeat=timedelta(seconds=heartbeat))
    built = Controller(
        world.kube, world.router, world.metrics, world.pager, settings, clock=lambda: world.now
    )
    built.seen("ADDED", world.kube.get())
    return built


def healthy(i: int) -> SloObservation:
    """A healthy observation whose numbers differ with `i` (the next scrape's)."""
    return SloObservation(
        baseline=0.01 + i * 1e-4,
        canary=0.012 + i * 1e-4,
        baseline_samples=900.0 + i,
        canary_samples=100.0 + i,
    )


def long_holds() -> dict[str, Any]:
    data = spec_dict()
    data["steps"] = [{"weight": 10, "hold": "1h"}, {"weight": 100, "hold": "1h"}]
    return data


def next_beat(after: float, period: float, key: tuple[str, str] = KEY) -> float:
    """The first of `key`'s heartbeat beats after T0 + `after` s, in seconds after T0."""
    phase, base = heartbeat_phase(key, period), at(0).timestamp()
    beats = math.floor((base + after - phase) / period) + 1
    return phase + beats * period - base


def stored_slo(world: World) -> dict[str, Any]:
    slo: dict[str, Any] = world.kube.status()["slos"][0]
    return slo


def test_a_tick_that_saw_only_other_numbers_makes_no_api_write() -> None:
    world = World(spec_data=long_holds())
    ctl = controller(world, 60)
    world.tick(ctl, 0, obs(HEALTHY))  # started
    world.tick(ctl, 30, obs(healthy(1)))  # the first verdict
    patches = len(world.kube.patches)
    beat = next_beat(30, 60)

    world.tick(ctl, (30 + beat) / 2, obs(healthy(2)))
    world.tick(ctl, beat - 0.001, obs(healthy(3)))

    assert len(world.kube.patches) == patches
    assert stored_slo(world)["canary"] == healthy(1).canary
    # The operator's own metrics show what it saw, written or not.
    gauge = REGISTRY.get_sample_value(
        "canaryguard_slo_value",
        {"namespace": "ml", "rollout": "scorer", "slo": "errors", "side": "canary"},
    )
    assert gauge == pytest.approx(healthy(3).canary)


def test_the_values_are_written_once_at_each_beat_of_the_rollout_s_heartbeat() -> None:
    world = World(spec_data=long_holds())
    ctl = controller(world, 60)
    world.tick(ctl, 0, obs(HEALTHY))
    world.tick(ctl, 30, obs(healthy(1)))
    beat = next_beat(30, 60)  # 54.29 s: the rollout's beats are at 54.29 s + k minutes
    assert 30 < beat <= 90
    world.tick(ctl, beat - 0.001, obs(healthy(2)))
    patches = len(world.kube.patches)

    world.tick(ctl, beat, obs(healthy(3)))  # a beat since the last write

    assert len(world.kube.patches) == patches + 1
    assert set(world.kube.patches[-1]) <= {"slos", "conditions", "message", "valuesAt"}
    assert world.kube.status()["valuesAt"] == format_time(at(beat))
    assert stored_slo(world)["canary"] == healthy(3).canary
    world.tick(ctl, beat + 30, obs(healthy(4)))
    world.tick(ctl, beat + 59.999, obs(healthy(5)))
    assert len(world.kube.patches) == patches + 1  # the next beat is a minute later
    world.tick(ctl, beat + 60, obs(healthy(6)))
    assert len(world.kube.patches) == patches + 2
    assert stored_slo(world)["canary"] == healthy(6).canary


def test_a_restarted_operator_counts_the_heartbeat_from_the_stored_values_at() -> None:
    """A restart (or a new leader) does not rewrite every rollout's values at once: the
    period runs from the stored `valuesAt`, the last write of whichever operator wrote."""
    world = World(spec_data=long_holds())
    ctl = controller(world, 60)
    world.tick(ctl, 0, obs(HEALTHY))
    world.tick(ctl, 30, obs(healthy(1)))  # the first verdict: written
    assert world.kube.status()["valuesAt"] == "2024-06-01T12:00:30Z"
    patches = len(world.kube.patches)
    beat = next_beat(30, 60)

    restarted = controller(world, 60)
    world.tick(restarted, (30 + beat) / 2, obs(healthy(2)))
    world.tick(restarted, beat - 0.001, obs(healthy(3)))
    assert len(world.kube.patches) == patches
    world.tick(restarted, beat, obs(healthy(4)))  # the first beat after the stored valuesAt
    assert len(world.kube.patches) == patches + 1
    assert stored_slo(world)["canary"] == healthy(4).canary
    assert world.kube.status()["valuesAt"] == format_time(at(beat))


def test_a_change_a_reader_needs_is_written_at_once() -> None:
    world = World(spec_data=long_holds())
    ctl = controller(world, 3600)
    world.tick(ctl, 0, obs(HEALTHY))
    world.tick(ctl, 30, obs(healthy(1)))
    patches = len(world.kube.patches)

    world.tick(ctl, 60, obs(FEW))  # healthy -> inconclusive
    assert len(world.kube.patches) == patches + 1
    assert stored_slo(world)["verdict"] == "inconclusive"

    world.tick(ctl, 90, obs(BREACH))  # the breach starts
    assert len(world.kube.patches) == patches + 2
    assert stored_slo(world)["breachingSince"] == "2024-06-01T12:01:30Z"

    world.tick(ctl, 120, obs(replace(BREACH, canary=0.06)))  # still breaching: values only
    assert len(world.kube.patches) == patches + 2

    world.tick(ctl, 150, obs(BREACH))  # the window is over: rolled back, all of it written
    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    assert stored_slo(world)["canary"] == BREACH.canary


def test_an_outage_start_is_written_at_once() -> None:
    world = World(spec_data=long_holds())
    ctl = controller(world, 3600)
    world.tick(ctl, 0, obs(HEALTHY))
    world.tick(ctl, 30, obs(healthy(1)))
    world.tick(ctl, 60, obs(DOWN))
    assert world.kube.status()["metricsOutageSince"] == "2024-06-01T12:01:00Z"


# A rollout through every kind of tick: values only, inconclusive, an outage and its end,
# steps, a breach that clears, a breach that lasts its window, the rollback and its page.
STORY: list[tuple[float, Observations]] = [
    (0, obs(HEALTHY)),
    (30, obs(healthy(1))),
    (60, obs(healthy(2))),  # step 2 (50%)
    (90, obs(healthy(3))),
    (120, obs(FEW)),
    (150, obs(healthy(4))),
    (180, obs(DOWN)),
    (210, obs(healthy(5))),  # step 3 (100%): from now on the baseline reference counts
    (240, obs(healthy(6))),
    (270, obs(replace(healthy(7), baseline=0.02, baseline_samples=400.0))),
    (300, obs(replace(healthy(8), baseline_samples=10.0))),  # the baseline drained
    # Healthy against the reference taken at 270 s (0.02), a breach against any earlier one.
    (315, obs(replace(healthy(8), canary=0.025, baseline_samples=0.0))),
    (330, obs(replace(BREACH, baseline_samples=0.0))),  # against the reference 0.02
    (360, obs(replace(healthy(9), baseline_samples=0.0))),
    (390, obs(replace(BREACH, baseline_samples=0.0))),
    (420, obs(replace(BREACH, canary=0.07, baseline_samples=0.0))),
    (450, obs(replace(BREACH, baseline_samples=0.0))),  # window over: rolled back
    (480, obs(BREACH)),
]
FULL_TRAFFIC_AT = 210


def story_spec() -> dict[str, Any]:
    data = spec_dict()
    data["steps"][-1]["hold"] = "10m"
    return data


def run_story(heartbeat: float, restart_at: float | None = None) -> tuple[World, list[Any]]:
    """The story with writes every `heartbeat` s (0: every change written), optionally
    with a fresh controller (an operator restart) from `restart_at`; returns the world and
    what a reader could see after each tick."""
    world = World(spec_data=story_spec())
    ctl = controller(world, heartbeat)
    seen: list[Any] = []
    for second, observations in STORY:
        if second == restart_at:
            ctl = controller(world, heartbeat)
        world.tick(ctl, second, observations)
        stored = status_from_dict(world.kube.status())
        seen.append(reader_view(stored, with_reference=True))
    return world, seen


@pytest.mark.parametrize("restart_at", [None, 90, 240, 300, 315, 420])
def test_decisions_are_the_same_as_when_every_tick_is_written(restart_at: float | None) -> None:
    written, _ = run_story(0)
    held, _ = run_story(3600, restart_at)

    assert held.router.writes == written.router.writes == [(90, 10), (50, 50), (0, 100), (100, 0)]
    assert held.kube.reasons() == written.kube.reasons()
    assert held.pager.dedup_keys == written.pager.dedup_keys
    assert [t.event.custom_details for t in held.pager.triggers] == [
        t.event.custom_details for t in written.pager.triggers
    ]
    # The rollback wrote everything: the stored statuses are the same to the last value.
    assert held.kube.status() == written.kube.status()
    assert len(held.kube.patches) < len(written.kube.patches)


def test_a_reader_sees_every_change_it_needs_at_the_tick_it_happens() -> None:
    """Tick by tick, the stored status without the values of the last tick is the same
    whether or not the values are held back, baseline references included once the canary
    has all the traffic."""
    _, written = run_story(0)
    _, held = run_story(3600)
    for (second, _), every, deferred in zip(STORY, written, held, strict=True):
        if second < FULL_TRAFFIC_AT:  # before 100%, references are heartbeat values
            for view in (every, deferred):
                for slo in view["slos"]:
                    for field in ("baselineReference", "baselineReferenceSamples"):
                        slo.pop(field, None)
                    slo.pop("baselineReferenceAt", None)
        assert deferred == every, f"at {second}s"


# --- the ledger and the flag ----------------------------------------------------------------


def test_the_decided_status_is_used_only_over_the_stored_status_it_was_decided_on() -> None:
    ledger = StatusLedger(timedelta(seconds=60))
    stored_raw = {"phase": "Progressing", "stepIndex": 0, "canaryWeight": 10}
    stored = status_from_dict(stored_raw)
    decided = replace(stored, message="decided")
    ledger.held(KEY, stored_raw, decided)

    assert ledger.base(KEY, dict(stored_raw), stored) is decided
    edited = {**stored_raw, "stepIndex": 1}  # someone else wrote the status
    assert ledger.base(KEY, edited, status_from_dict(edited)).step_index == 1
    ledger.forget(KEY)
    assert ledger.base(KEY, stored_raw, stored) is stored


def test_the_heartbeat_is_due_when_never_written_or_at_the_first_beat_since() -> None:
    ledger = StatusLedger(timedelta(seconds=60))
    a = Status(phase="Progressing", canary_weight=10)
    assert ledger.must_write(KEY, a, a, at(0))  # never written, nothing stored says when
    beat = next_beat(0, 60)
    ledger.wrote(KEY, {}, a, at(0))
    assert not ledger.must_write(KEY, a, a, at(beat - 0.001))
    assert ledger.must_write(KEY, a, a, at(beat))
    assert ledger.must_write(KEY, a, a, at(60))  # a whole period always holds a beat
    assert ledger.must_write(KEY, a, replace(a, canary_weight=50), at(1))  # news: at once
    assert StatusLedger(timedelta(0)).must_write(KEY, a, a, at(0.001))  # 0: every tick


def test_the_heartbeats_of_rollouts_written_together_are_spread_over_the_period() -> None:
    """2,000 rollouts whose status was written in the same 30 s (an operator's start) write
    their values once each in every 5-minute period, about as many in each 30 s of it: not
    2,000 in one interval every five minutes."""
    ledger = StatusLedger(timedelta(minutes=5))
    a = Status(phase="Progressing", canary_weight=10)
    keys = [("ml", f"svc-{i:04d}") for i in range(2000)]
    for i, key in enumerate(keys):
        ledger.wrote(key, {}, a, at(i % 30))
    writes_per_interval = []
    for start in range(30, 630, 30):  # every rollout ticks once in each 30 s
        due = [
            key for i, key in enumerate(keys) if ledger.must_write(key, a, a, at(start + i % 30))
        ]
        for i, key in enumerate(keys):
            if key in due:
                ledger.wrote(key, {}, a, at(start + i % 30))
        writes_per_interval.append(len(due))
    assert sum(writes_per_interval[9:19]) == 2000  # once each in the period [300, 600)
    assert max(writes_per_interval) <= 2000 * 30 / 300 * 1.5, writes_per_interval


def test_before_its_first_write_the_heartbeat_counts_from_the_stored_values_at() -> None:
    ledger = StatusLedger(timedelta(seconds=60))
    a = Status(phase="Progressing", canary_weight=10)
    beat = next_beat(0, 60)
    assert not ledger.must_write(KEY, a, a, at(beat - 0.001), stored_at=at(0))
    assert ledger.must_write(KEY, a, a, at(beat), stored_at=at(0))
    ledger.held(KEY, {}, a)  # held back: still counted from the stored status' write
    assert not ledger.must_write(KEY, a, a, at(beat - 0.001), stored_at=at(0))
    later = next_beat(beat, 60)
    ledger.wrote(KEY, {}, a, at(beat))  # this operator's own write counts from then on
    assert not ledger.must_write(KEY, a, a, at(later - 0.001), stored_at=at(0))
    assert ledger.must_write(KEY, a, a, at(later), stored_at=at(0))


def run_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *flags])


def test_the_heartbeat_flag_takes_a_duration() -> None:
    assert operator_settings(run_args()).status_heartbeat == timedelta(seconds=60)
    settings = operator_settings(run_args("--status-heartbeat=5m"))
    assert settings.status_heartbeat == timedelta(minutes=5)


def test_a_heartbeat_that_is_not_a_duration_stops_the_operator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        run_args("--status-heartbeat=soon")
    assert "invalid duration 'soon'" in capsys.readouterr().err


class Refused(Exception):
    """A 422 from the API server (an admission policy refusing the write)."""

    status = 422
    reason = "Unprocessable Entity"


def breaching_for_a_minute(world: World) -> Controller:
    """A controller whose rollout was healthy for a minute, then breached at 90 s and 120 s:
    its next tick ends the window and rolls back."""
    ctl = controller(world, 3600)
    for second in (0, 30, 60):
        world.tick(ctl, second, obs(HEALTHY))
    world.tick(ctl, 90, obs(BREACH))
    world.tick(ctl, 120, obs(BREACH))
    return ctl


def test_a_refused_rollback_write_is_shown_as_a_failed_tick_and_the_rollback_stands() -> None:
    """The rollback's weights are written, its status write is refused: the failure is
    recorded on the stored status (which the API server accepts), and the next tick decides
    from the rollback: it is written, paged once, and the tick says it recovered."""
    world = World()
    ctl = breaching_for_a_minute(world)
    world.kube.fail_patches(1, skip=1, error=Refused("refused"))  # intent written
    world.now = at(150)
    ctl.seen("MODIFIED", world.kube.get())
    asyncio.run(ctl.tick_key(KEY))  # the window is over: rolled back, status write refused

    assert world.router.weights() == [(100, 0)]
    stored = world.kube.status()
    assert stored["phase"] == "Progressing"
    failed = {c["type"]: c for c in stored["conditions"]}["TickSucceeded"]
    assert (failed["status"], failed["reason"]) == ("False", "api_422")

    world.now = at(180)
    asyncio.run(ctl.tick_key(KEY))  # the breach is no longer seen; the rollback stands

    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    recovered = {c["type"]: c for c in status["conditions"]}["TickSucceeded"]
    assert recovered["status"] == "True"
    assert ("Normal", "TickRecovered") in world.kube.reasons()
    assert len(world.pager.triggers) == 1
    assert world.router.weights() == [(100, 0)]


def api_calls(*verbs: str) -> float:
    """Every call counted in canaryguard_api_requests_total with one of `verbs`."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "canaryguard_api_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("verb") in verbs
    )


def test_a_tick_that_changed_nothing_a_reader_needs_costs_the_api_server_nothing() -> None:
    # As the operator is built (calls counted, VirtualServices from a synced watch cache):
    # such a tick neither writes (status, Event, weights) nor reads.
    world = World(spec_data=long_holds())
    store = RouteStore()
    store.replace_scope("ml", [world.router.services[KEY]])
    settings = replace(SETTINGS, status_heartbeat=timedelta(seconds=60))
    ctl = Controller(
        CountedKube(world.kube),
        CachedRouter(CountedRouter(world.router), store),
        world.metrics,
        world.pager,
        settings,
        clock=lambda: world.now,
    )
    ctl.seen("ADDED", world.kube.get())
    writes, reads = ("patch", "create", "update"), ("get", "list")
    world.tick(ctl, 0, obs(HEALTHY))  # started: weights, status and an Event written
    assert api_calls(*writes) > 0
    world.tick(ctl, 30, obs(healthy(1)))  # the first verdict: written
    before = (api_calls(*writes), api_calls(*reads), len(world.kube.events))

    beat = next_beat(30, 60)
    for second, i in (((30 + beat) / 2, 2), (beat - 0.001, 3)):
        world.tick(ctl, second, obs(healthy(i)))

    assert (api_calls(*writes), api_calls(*reads), len(world.kube.events)) == before
    assert world.router.writes == [(90, 10)]
    world.tick(ctl, beat, obs(healthy(4)))  # the heartbeat is due: one status patch
    assert api_calls(*writes) == before[0] + 1


def test_the_watch_echo_of_a_status_write_is_taken_once() -> None:
    # The patch's answer is taken at the write; the watch then brings the same object again,
    # which is not worked on a second time (at thousands of rollouts, one echo per write).
    world = World(spec_data=long_holds())
    ctl = controller(world, heartbeat=60)
    world.tick(ctl, 0, obs(HEALTHY))
    specs = ctl._specs
    stored = world.kube.get()
    parsed = specs.parsed
    upserts: list[Any] = []
    real = ctl.scheduler.upsert
    ctl.scheduler.upsert = lambda *a, **k: upserts.append(a)  # type: ignore[method-assign]
    try:
        ctl.seen("MODIFIED", stored)  # the echo: the version the write answered with
        assert upserts == [] and specs.parsed == parsed
        newer = world.kube.annotate("example.com/note", "x")  # someone else's change
        ctl.seen("MODIFIED", newer)
        assert len(upserts) == 1
    finally:
        ctl.scheduler.upsert = real  # type: ignore[method-assign]


def test_a_rollback_refused_tick_after_tick_is_decided_once_and_written_when_allowed() -> None:
    """The API server keeps refusing the status RolledBack (an admission policy) while it
    takes the intent and the failure conditions: the ticks that follow decide from the
    rollback already decided (the rollout as the failed tick left it, intent written), so
    the rollback is announced once, paged once, and written once the refusals stop."""
    world = World()
    ctl = breaching_for_a_minute(world)
    refusing = True
    patch_status = world.kube.patch_status

    async def admission(namespace: str, name: str, patch: Any) -> dict[str, Any]:
        if refusing and patch.get("phase") == "RolledBack":
            raise Refused("denied by policy")
        return await patch_status(namespace, name, patch)

    world.kube.patch_status = admission  # type: ignore[method-assign]
    ctl.seen("MODIFIED", world.kube.get())
    for second in (150, 180, 210):
        world.now = at(second)
        asyncio.run(ctl.tick_key(KEY))
        assert world.kube.status()["phase"] == "Progressing"
        assert world.router.weights() == [(100, 0)]
    refusing = False
    world.now = at(240)
    asyncio.run(ctl.tick_key(KEY))

    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    assert world.kube.reasons().count(("Warning", "RolledBack")) == 1
    assert len(world.pager.triggers) == 1
