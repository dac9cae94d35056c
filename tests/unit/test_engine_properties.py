"""Invariants of the engine over random specs, observation streams and clocks."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from canaryguard.core import engine
from canaryguard.core.actions import EmitEvent, Page, SetWeights
from canaryguard.core.manual import ManualRequest
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.spec import Spec
from canaryguard.core.status import Status, round_value, status_from_dict, truncate_time
from tests.unit.scenario import HEALTHY, T0, make_spec, spec_dict

SLO_NAMES = ("errors", "p99", "flags")
durations = st.sampled_from(["0s", "10s", "30s", "1m"])
numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.sampled_from([0.0, 0.01, 0.05, 1.0, 1e-300, 1e300]),
)
samples = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 10, 49, 50, 1e6])
)
observations_of_one_slo = st.one_of(
    st.builds(SloObservation, numbers, numbers, samples, samples),
    st.builds(SloObservation.failed, st.text(max_size=20)),
    st.none(),  # nothing gathered
)
# Observations a real rollout sees, so that random streams do walk to 100% and promote: both
# sides healthy, the baseline idle (canary at 100%), thin or missing canary evidence, a
# regression seen against an idle baseline.
plausible_observations = st.sampled_from(
    [
        SloObservation(0.01, 0.011, 1e6, 1e6),
        SloObservation(0.01, 0.011, 1e6, 1e6),
        SloObservation(0.02, 0.011, 60, 1e6),
        SloObservation(None, 0.011, 0, 1e6),
        SloObservation(None, 0.011, 0, 1e6),
        SloObservation(None, 0.011, 0, 10),
        SloObservation(None, None, 0, 0),
        SloObservation(None, 0.9, 0, 1e6),
        SloObservation(0.01, 0.011, 1e6, None),
    ]
)
# Mostly no request; ids repeat, so a request already handled shows up again.
requests = st.one_of(
    st.none(),
    st.none(),
    st.builds(
        ManualRequest,
        action=st.sampled_from(["promote", "abort"]),
        id=st.sampled_from(["r1", "r2", "r3"]),
    ),
    st.builds(
        ManualRequest,
        action=st.just("abort"),
        id=st.sampled_from(["r1", "r2", "r3"]),
        page=st.booleans(),
        revision=st.sampled_from([None, "scorer/v2@v2", "old"]),
    ),
)
Tick = tuple[float, bool, Observations, ManualRequest | None]


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    data: dict[str, Any] = spec_dict(
        minRequests=draw(st.sampled_from([0, 50])),
        maxMetricsOutage=draw(durations),
        onMetricsOutage=draw(st.sampled_from(["rollback", "pause"])),
    )
    weights = draw(st.lists(st.integers(1, 99), max_size=4, unique=True))
    data["steps"] = [{"weight": w, "hold": draw(durations)} for w in [*sorted(weights), 100]]
    slos = []
    for name in SLO_NAMES[: draw(st.integers(1, 3))]:
        tolerance = draw(
            st.sampled_from(
                [
                    {"margin": {"absolute": 0.01}},
                    {"margin": {"relative": 0.5}},
                    {"margin": {"absolute": 0.01, "relative": 0.2}},
                    {"limit": 0.05},
                    {"margin": {"absolute": 0}, "limit": 0.5},
                ]
            )
        )
        direction = draw(st.sampled_from(["HigherIsWorse", "LowerIsWorse"]))
        slo = {"name": name, "errorRate": {}, "direction": direction, "window": draw(durations)}
        slos.append(slo | tolerance)
    data["analysis"]["slos"] = slos
    if draw(st.booleans()):
        del data["paging"]
    return make_spec(data)


@st.composite
def ticks(draw: st.DrawFn, plausible: bool = False) -> list[Tick]:
    """(seconds since the previous tick, spec.paused, observations, request) for each tick.

    `plausible`: observations mostly as a real rollout sees them, rarely paused or requested.
    """
    result = []
    one_slo = (
        st.one_of(plausible_observations, plausible_observations, observations_of_one_slo)
        if plausible
        else observations_of_one_slo
    )
    for _ in range(draw(st.integers(1, 30))):
        gap = draw(st.sampled_from([0.0, 0.001, 10.0, 30.0, 60.0, 120.0]))
        paused = draw(st.booleans()) and draw(st.booleans())  # paused a quarter of the time
        if plausible:
            paused = paused and draw(st.booleans())
        slos = {}
        for name in SLO_NAMES:
            observation = draw(one_slo)
            if observation is not None:
                slos[name] = observation
        request = None if plausible and draw(st.integers(0, 9)) else draw(requests)
        result.append((gap, paused, Observations(slos), request))
    return result


def run(spec: Spec, stream: list[Tick]) -> None:
    """Tick through the stream, checking every invariant at every tick."""
    status = Status()
    now = T0
    for gap, paused, observations, request in stream:
        now += timedelta(seconds=gap)
        tick_spec = replace(spec, paused=paused, request=request)
        result = engine.tick(tick_spec, status, observations, now)
        check(tick_spec, status, result)
        check_evidence(tick_spec, status, observations, now, result)
        stored = json.loads(json.dumps(result.status.to_dict(), allow_nan=False))
        assert status_from_dict(stored).to_dict() == result.status.to_dict()
        status = status_from_dict(stored)


def check(spec: Spec, before: Status, result: engine.TickResult) -> None:
    after = result.status
    sets = [a for a in result.actions if isinstance(a, SetWeights)]
    pages = [a for a in result.actions if isinstance(a, Page)]
    warnings = [
        a.reason for a in result.actions if isinstance(a, EmitEvent) and a.type == "Warning"
    ]
    reasons = [a.reason for a in result.actions if isinstance(a, EmitEvent)]
    request = spec.request
    handled = before.last_request.id if before.last_request is not None else None
    new_id = request.id if request is not None and request.id != handled else None
    outcome = after.last_request.outcome if after.last_request is not None else None
    manual = new_id is not None and outcome in ("Promoted", "RolledBack")

    # A request is handled once: a known id changes nothing, a new one is always recorded.
    if request is not None and new_id is None:
        assert not {"ManualPromote", "ManualAbort", "RequestIgnored"} & set(reasons)
    if new_id is not None:
        assert after.last_request is not None and after.last_request.id == new_id
    if manual:
        # A person decided this tick: the rollout is finished, with the weights they asked for.
        assert before.phase not in ("Promoted", "RolledBack")
        promoted = after.phase == "Promoted"
        assert sets[-1] == (SetWeights(0, 100) if promoted else SetWeights(100, 0))

    # Weights always sum to 100 and stay in range.
    for action in sets:
        assert action.baseline + action.canary == 100
        assert 0 <= action.canary <= 100
    assert after.canary_weight is None or 0 <= after.canary_weight <= 100
    if sets:
        assert sets[-1].canary == after.canary_weight

    # The canary never gains traffic on a tick whose verdicts are not all healthy (the first
    # tick, which starts the schedule before any judging, is the one exception).
    judged = before.step_index is not None and before.phase not in (
        "Pending",
        "Promoted",
        "RolledBack",
    )
    if judged and not manual and any(slo.verdict != "healthy" for slo in after.slos):
        previous = before.canary_weight or 0
        assert all(action.canary <= previous for action in sets)
        assert (after.canary_weight or 0) <= previous

    # A finished rollout never moves traffic.
    if before.phase in ("Promoted", "RolledBack"):
        assert sets == []

    # A rollback comes with all traffic to the baseline, one Warning event and one page (when
    # paging is set up): every automatic rollback, manual ones only when asked. Outside a
    # rollback a page is only re-sent while still pending.
    rolled_back = after.phase == "RolledBack" and before.phase != "RolledBack"
    if rolled_back:
        assert after.rollback is not None
        assert sets == [SetWeights(100, 0)]
        if after.rollback.reason == "Manual":
            assert manual and request is not None and request.action == "abort"
            assert len(pages) == (1 if request.page and spec.paging is not None else 0)
            assert (warnings.count("ManualAbort"), warnings.count("RolledBack")) == (1, 0)
        else:
            assert len(pages) == (1 if spec.paging is not None else 0)
            assert (warnings.count("RolledBack"), warnings.count("ManualAbort")) == (1, 0)
    elif pages:
        assert before.phase == "RolledBack"
        assert before.page is not None and before.page.state == "Pending"
        assert len(pages) == 1

    # Weights never move forward during a metrics outage (unless a person promotes).
    unavailable = any(slo.verdict == "unavailable" for slo in after.slos)
    if unavailable and before.canary_weight and not manual:
        assert (after.canary_weight or 0) <= before.canary_weight

    assert len(after.history) <= 20


def canary_evidence(min_requests: int, observation: SloObservation | None) -> bool:
    """Whether the canary side of an observation is evidence on its own."""
    if observation is None or observation.unavailable:
        return False
    if observation.canary is None or not math.isfinite(observation.canary):
        return False
    if min_requests <= 0:
        return True
    count = observation.canary_samples
    return count is not None and not math.isnan(count) and count >= min_requests


def baseline_evidence(min_requests: int, observation: SloObservation | None) -> bool:
    """Whether an observation's baseline may become the SLO's reference."""
    if observation is None or observation.unavailable:
        return False
    value = observation.baseline
    if value is None or round_value(value) is None:
        return False
    if min_requests <= 0:
        return True
    count = observation.baseline_samples
    return count is not None and not math.isnan(count) and count >= min_requests


def check_evidence(
    spec: Spec,
    before: Status,
    observations: Observations,
    now: datetime,
    result: engine.TickResult,
) -> None:
    after = result.status
    manual = after.last_request is not None and after.last_request != before.last_request
    judged = before.step_index is not None and before.phase not in (
        "Pending",
        "Promoted",
        "RolledBack",
    )
    if not judged or manual or before.revision != after.revision:
        return
    # A step never advances, and a rollout never promotes, without canary evidence on every
    # SLO (whether the baseline had traffic or not).
    advanced = (after.canary_weight or 0) > (before.canary_weight or 0)
    promoted = after.phase == "Promoted" and before.phase != "Promoted"
    if advanced or promoted:
        for slo in spec.analysis.slos:
            assert canary_evidence(slo.min_requests, observations.slos.get(slo.name))
    # A reference is kept for the revision, and is only ever replaced by this tick's baseline
    # when that baseline was evidence enough.
    kept = {s.name: s for s in before.slos}
    for slo, state in zip(spec.analysis.slos, after.slos, strict=True):
        old = kept.get(slo.name)
        if old is not None and old.baseline_reference is not None:
            assert state.baseline_reference is not None
        if state.baseline_reference is None:
            continue
        unchanged = old is not None and (
            old.baseline_reference,
            old.baseline_reference_samples,
            old.baseline_reference_at,
        ) == (
            state.baseline_reference,
            state.baseline_reference_samples,
            state.baseline_reference_at,
        )
        if not unchanged:
            assert state.baseline_reference_at == truncate_time(now)
            assert baseline_evidence(slo.min_requests, observations.slos.get(slo.name))


@settings(max_examples=300, deadline=None)
@given(specs(), ticks())
def test_invariants_hold_on_every_tick(spec: Spec, stream: list[Tick]) -> None:
    run(spec, stream)


@settings(max_examples=300, deadline=None)
@given(specs(), ticks(plausible=True))
def test_invariants_hold_on_plausible_streams_that_reach_100(
    spec: Spec, stream: list[Tick]
) -> None:
    # Among them: a step never advances, nor a rollout promotes, without canary evidence;
    # references only come from a baseline with enough evidence (check_evidence).
    run(spec, stream)


@settings(max_examples=200, deadline=None)
@given(specs(), ticks(), st.data())
def test_the_engine_is_deterministic_and_never_raises(
    spec: Spec, stream: list[Tick], data: st.DataObject
) -> None:
    status = Status()
    now = T0
    for gap, _, observations, request in stream:
        now += timedelta(seconds=gap)
        tick_spec = replace(spec, request=request)
        first = engine.tick(tick_spec, status, observations, now)
        assert engine.tick(tick_spec, status, observations, now) == first
        status = first.status
        if status.page is not None and data.draw(st.booleans()):
            delivered, permanent = data.draw(st.booleans()), data.draw(st.booleans())
            status = engine.record_page_result(status, delivered, permanent, "boom", now)


@settings(max_examples=200, deadline=None)
@given(
    specs(), st.lists(st.tuples(st.sampled_from((*SLO_NAMES, "other")), observations_of_one_slo))
)
def test_arbitrary_observations_never_raise(
    spec: Spec, entries: list[tuple[str, SloObservation | None]]
) -> None:
    answered = Observations({slo.name: HEALTHY for slo in spec.analysis.slos})
    started = engine.tick(spec, Status(), answered, T0).status
    observations = Observations({name: o for name, o in entries if o is not None})
    result = engine.tick(spec, started, observations, T0 + timedelta(seconds=30))
    if started.phase == "Pending":  # paused before the first step: nothing to judge yet
        return
    assert [slo.name for slo in result.status.slos] == [slo.name for slo in spec.analysis.slos]
