"""Invariants of the engine over random specs, observation streams and clocks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from canaryguard import engine
from canaryguard.actions import EmitEvent, Page, SetWeights
from canaryguard.manual import ManualRequest
from canaryguard.observations import Observations, SloObservation
from canaryguard.spec import Spec
from canaryguard.status import Status, status_from_dict
from tests.unit.scenario import T0, make_spec, spec_dict

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
def ticks(draw: st.DrawFn) -> list[Tick]:
    """(seconds since the previous tick, spec.paused, observations, request) for each tick."""
    result = []
    for _ in range(draw(st.integers(1, 30))):
        gap = draw(st.sampled_from([0.0, 0.001, 10.0, 30.0, 60.0, 120.0]))
        paused = draw(st.booleans()) and draw(st.booleans())  # paused a quarter of the time
        slos = {}
        for name in SLO_NAMES:
            observation = draw(observations_of_one_slo)
            if observation is not None:
                slos[name] = observation
        result.append((gap, paused, Observations(slos), draw(requests)))
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


@settings(max_examples=300, deadline=None)
@given(specs(), ticks())
def test_invariants_hold_on_every_tick(spec: Spec, stream: list[Tick]) -> None:
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
    started = engine.tick(spec, Status(), Observations(), T0).status
    observations = Observations({name: o for name, o in entries if o is not None})
    result = engine.tick(spec, started, observations, T0 + timedelta(seconds=30))
    assert [slo.name for slo in result.status.slos] == [slo.name for slo in spec.analysis.slos]
