"""The controller tick by tick through its public API (`seen`, `tick`), on in-memory fakes
of its ports and a clock moved by hand: the order of its writes, and what a crash between
two of them leaves for the next tick (or the next operator) to do.

The scenario's rollout: steps 10% (hold 60 s), 50% (120 s), 100% (120 s); one SLO
`errors` with a 60 s window; maxMetricsOutage 90 s; paging through PagerDuty.
"""

from __future__ import annotations

import asyncio

import pytest
import urllib3.exceptions
from prometheus_client import REGISTRY

from canaryguard.core.observations import SloObservation
from canaryguard.core.paging import DEFAULT_EVENTS_URL
from canaryguard.core.ports import Sample
from canaryguard.runtime.controller import Controller, failure_reason
from tests.unit.fakes import FakePager, InjectedFault, World, refused
from tests.unit.scenario import BREACH, DOWN, FEW, HEALTHY, at, obs


def at_half(world: World) -> Controller:
    """A rollout started at 0 s and healthy until it moved to 50% at 60 s."""
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 30, obs(HEALTHY))
    world.tick(controller, 60, obs(HEALTHY))
    assert world.router.weights() == [(50, 50)]
    return controller


def breached(world: World) -> Controller:
    """At 50%, then breaching from 90 s: the window of 60 s ends at 150 s."""
    controller = at_half(world)
    world.tick(controller, 90, obs(BREACH))
    world.tick(controller, 120, obs(BREACH))
    return controller


def dedup_key(world: World) -> str:
    return f"canaryguard/ml/scorer/{world.spec.effective_revision()}"


def test_a_healthy_rollout_writes_each_step_s_weights_before_its_status() -> None:
    world = World()
    controller = world.controller()
    for second in range(0, 301, 30):
        world.tick(controller, second, obs(HEALTHY))

    status = world.kube.status()
    assert (status["phase"], status["canaryWeight"]) == ("Promoted", 100)
    assert world.router.writes == [(90, 10), (50, 50), (0, 100)]
    assert world.router.weights() == [(0, 100)]
    writes = world.journal.of("weights", "status")
    for i, entry in enumerate(writes):
        if entry[0] == "weights":  # each step's weights, then at once the status saying so
            assert writes[i + 1][:2] == ("status", "Progressing")
    assert writes[-1] == ("status", "Promoted", "None")
    recorded = [p["canaryWeight"] for p in world.kube.patches if "canaryWeight" in p]
    assert recorded == [10, 50, 100]
    assert [r for _, r in world.kube.reasons()] == [
        "Started",
        "StepAdvanced",
        "StepAdvanced",
        "Promoted",
    ]
    assert world.pager.triggers == []


def test_every_query_of_a_tick_is_evaluated_at_the_tick_s_time() -> None:
    world = World()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 30, obs(HEALTHY))
    assert len(world.metrics.times) == 4  # two queries a tick
    assert world.metrics.times == [at(0), at(0), at(30), at(30)]


def test_a_sustained_breach_rolls_back_intent_then_weights_then_status_then_the_page() -> None:
    world = World()
    controller = breached(world)
    before = len(world.journal.of("weights", "status", "page"))

    world.tick(controller, 150, obs(BREACH))

    key = dedup_key(world)
    assert world.journal.of("weights", "status", "page")[before:] == [
        ("status", "Progressing", "Pending"),  # the intent: rollback and page due, 50% still
        ("weights", "100/0"),
        ("status", "RolledBack", "Pending"),
        ("page", key),
        ("status", "RolledBack", "Delivered"),
    ]
    (trigger,) = world.pager.triggers
    assert (trigger.url, trigger.routing_key) == (DEFAULT_EVENTS_URL, "routing-key-0123")
    assert trigger.event.custom_details["slo"] == "errors"
    status = world.kube.status()
    assert status["rollback"]["reason"] == "SLOBreach"
    assert (status["page"]["state"], status["page"]["dedupKey"]) == ("Delivered", key)
    assert world.kube.reasons()[-2:] == [("Warning", "RolledBack"), ("Normal", "PageDelivered")]

    world.tick(controller, 180, obs(BREACH))  # finished: nothing more is sent or written
    assert len(world.pager.triggers) == 1
    assert world.router.weights() == [(100, 0)]


def test_crash_after_the_rollback_weights_a_continued_breach_rolls_back_again() -> None:
    """(a) The rollback's weights are written, its status write fails: the stored status
    still says Progressing at 50%. While the breach goes on, the next tick rolls back again
    from it, and the canary never gets traffic back."""
    world = World()
    controller = breached(world)
    world.kube.fail_patches(2)  # the rollback's intent, then its status
    with pytest.raises(InjectedFault):
        world.tick(controller, 150, obs(BREACH))
    assert world.router.weights() == [(100, 0)]
    assert (world.kube.status()["phase"], world.kube.status()["canaryWeight"]) == (
        "Progressing",
        50,
    )
    weights_before = list(world.router.writes)

    world.tick(controller, 180, obs(BREACH))

    assert world.router.writes == weights_before  # already 100/0: nothing to write
    assert world.router.weights() == [(100, 0)]
    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    assert world.pager.dedup_keys == [dedup_key(world)]


def test_a_crash_after_the_rollback_weights_then_a_healthy_tick_holds_at_zero() -> None:
    """(a) As above, but the operator dies before the status is written, and the next
    tick (a new operator) sees the canary healthy (its errors stopped with its traffic),
    which clears the breach. The stored status still says 50%, yet the canary's share is
    not advanced though the hold is over: DESIGN.md 8, a failed write after a rollback never
    sends traffic back to the canary. The rollout holds, saying why."""
    world = World()
    controller = breached(world)
    world.kube.fail_patches(2)  # the rollback's intent, then its status
    with pytest.raises(InjectedFault):
        world.tick(controller, 150, obs(BREACH))

    restarted = world.controller()
    world.tick(restarted, 180, obs(HEALTHY))
    world.tick(restarted, 210, obs(HEALTHY))

    assert world.router.weights() == [(100, 0)]
    stored = world.kube.status()
    assert stored["phase"] == "Progressing"
    progressing = {c["type"]: c for c in stored["conditions"]}["Progressing"]
    assert progressing["reason"] == "WeightsLowered"
    assert [r for r in world.kube.reasons() if r[1] == "WeightsLowered"] == [
        ("Warning", "WeightsLowered")
    ]


def test_a_crash_after_the_rollback_weights_then_no_evidence_records_the_rollback() -> None:
    """(a) The new operator finds the canary at 0% with no evidence left (inconclusive):
    the breach never cleared and had run its window, so the rollback is recorded and paged
    once, and the weights stay 100/0."""
    world = World()
    controller = breached(world)
    world.kube.fail_patches(2)  # the rollback's intent, then its status
    with pytest.raises(InjectedFault):
        world.tick(controller, 150, obs(BREACH))

    restarted = world.controller()
    world.tick(restarted, 180, obs(FEW))
    world.tick(restarted, 210, obs(FEW))

    assert world.router.weights() == [(100, 0)]
    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    assert world.pager.dedup_keys == [dedup_key(world)]


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-landed"])
@pytest.mark.parametrize(
    "after", [pytest.param(FEW, id="inconclusive"), pytest.param(HEALTHY, id="healthy")]
)
def test_a_rollback_weight_write_that_failed_is_recorded_at_the_next_tick(
    after: SloObservation, landed: bool
) -> None:
    """The rollback's weight write fails with its outcome unknown: it landed and the answer
    was lost (the API server died after committing it), or it did not land. Either way the
    operator decides the next tick from the rollback it could not confirm, so it is recorded
    and paged once even when the breach is no longer seen (the canary's traffic is gone), and
    the weights end 100/0 (set back down if the write had not landed)."""
    world = World()
    controller = breached(world)
    if landed:
        world.router.lose_answers(1)
    else:
        world.router.fail_writes(1)
    with pytest.raises(InjectedFault):
        world.tick(controller, 150, obs(BREACH))
    assert world.router.weights() == [(100, 0) if landed else (50, 50)]
    assert world.kube.status()["phase"] == "Progressing"

    world.tick(controller, 180, obs(after))

    assert world.router.weights() == [(100, 0)]
    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    assert status["rollback"]["reason"] == "SLOBreach"
    assert world.pager.dedup_keys == [dedup_key(world)]


def test_a_step_weight_write_that_failed_is_not_taken_as_done() -> None:
    """A failed write that would raise the canary's share is not decided from: if it landed,
    the next tick finds more canary traffic than the status says and sets it back down, then
    advances again when the step is judged (DESIGN.md 8: only a judged step raises it)."""
    world = World()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    assert world.router.weights() == [(90, 10)]
    world.router.lose_answers(1)
    with pytest.raises(InjectedFault):
        world.tick(controller, 120, obs(HEALTHY))  # hold over: 50/50 written, answer lost
    assert world.router.weights() == [(50, 50)]
    assert world.kube.status()["canaryWeight"] == 10

    world.tick(controller, 150, obs(FEW))  # nothing judged healthy: no advance

    assert world.router.weights() == [(90, 10)]
    assert ("Warning", "WeightsReasserted") in world.kube.reasons()


@pytest.mark.parametrize("after", [pytest.param(FEW, id="inconclusive"), HEALTHY])
def test_a_failed_rollback_status_write_is_written_at_the_next_tick(after: SloObservation) -> None:
    """The rollback's status write fails but the operator lives: it decides the next tick
    from the rollback it could not write, so the rollback is recorded and paged once even
    when the breach is no longer seen, and the weights stay 100/0."""
    world = World()
    controller = breached(world)
    world.kube.fail_patches(2)  # the rollback's intent, then its status
    with pytest.raises(InjectedFault):
        world.tick(controller, 150, obs(BREACH))
    assert world.kube.status()["phase"] == "Progressing"

    world.tick(controller, 180, obs(after))

    assert world.router.weights() == [(100, 0)]
    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    assert status["rollback"]["reason"] == "SLOBreach"
    assert world.pager.dedup_keys == [dedup_key(world)]


def test_crash_before_the_page_is_sent_a_restarted_operator_sends_it_once() -> None:
    """(b) The status RolledBack with the page Pending is written, then the operator dies
    in the middle of the send. A fresh controller on the same cluster sends the page at its
    first tick, once, with the same dedup key."""
    world = World()
    world.pager = FakePager(InjectedFault("operator killed mid-send"), journal=world.journal)
    controller = breached(world)
    with pytest.raises(InjectedFault):
        world.tick(controller, 150, obs(BREACH))
    stored = world.kube.status()
    assert (stored["phase"], stored["page"]["state"]) == ("RolledBack", "Pending")
    assert world.router.weights() == [(100, 0)]

    world.pager = FakePager(journal=world.journal)
    queries = len(world.metrics.queries)
    restarted = world.controller()
    world.tick(restarted, 180, obs(BREACH))
    world.tick(restarted, 210, obs(BREACH))

    assert world.pager.dedup_keys == [stored["page"]["dedupKey"]] == [dedup_key(world)]
    status = world.kube.status()
    assert (status["phase"], status["page"]["state"]) == ("RolledBack", "Delivered")
    assert world.router.weights() == [(100, 0)]
    assert len(world.metrics.queries) == queries  # a finished rollout is not judged


def test_crash_after_the_page_is_sent_it_is_sent_again_with_the_same_dedup_key() -> None:
    """Delivery is at least once: the page is sent, the operator dies before the Delivered
    status write, so the next operator sends it again; the same dedup key makes it one
    incident."""
    world = World()
    controller = breached(world)
    world.kube.fail_patches(1, skip=2)  # intent, RolledBack/Pending written, Delivered is not
    with pytest.raises(InjectedFault):
        world.tick(controller, 150, obs(BREACH))
    assert world.kube.status()["page"]["state"] == "Pending"

    world.tick(world.controller(), 180, obs(BREACH))

    assert world.pager.dedup_keys == [dedup_key(world)] * 2
    assert world.kube.status()["page"]["state"] == "Delivered"


def test_a_failed_delivered_write_is_written_next_tick_without_sending_again() -> None:
    world = World()
    controller = breached(world)
    world.kube.fail_patches(1, skip=2)
    with pytest.raises(InjectedFault):
        world.tick(controller, 150, obs(BREACH))

    world.tick(controller, 180, obs(BREACH))

    assert world.pager.dedup_keys == [dedup_key(world)]
    assert world.kube.status()["page"]["state"] == "Delivered"


def test_a_prometheus_outage_never_advances_the_weights() -> None:
    world = World()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 30, obs(HEALTHY))
    for second in (60, 90, 120):  # the 60 s hold is over, but no tick can judge
        world.tick(controller, second, obs(DOWN))
        assert world.router.weights() == [(90, 10)]

    status = world.kube.status()
    assert status["phase"] == "Progressing"
    assert status["metricsOutageSince"] == "2024-06-01T12:01:00Z"
    assert ("Warning", "MetricsOutage") in world.kube.reasons()
    assert world.router.writes == [(90, 10)]

    world.tick(controller, 150, obs(DOWN))  # maxMetricsOutage 90 s
    assert world.router.writes == [(90, 10), (100, 0)]
    assert world.kube.status()["rollback"]["reason"] == "MetricsOutage"


def test_a_refused_query_makes_the_rollout_invalid_without_touching_the_weights() -> None:
    world = World()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.metrics.answer = refused("400 bad_data: parse error at char 7")

    world.tick(controller, 30)
    world.tick(controller, 60)  # the hold is over: still nothing moves

    status = world.kube.status()
    assert status["phase"] == "Invalid"
    assert "Prometheus rejected its query" in status["message"]
    (spec_valid,) = [c for c in status["conditions"] if c["type"] == "SpecValid"]
    assert (spec_valid["status"], spec_valid["reason"]) == ("False", "InvalidSpec")
    assert world.router.writes == [(90, 10)]
    assert world.router.weights() == [(90, 10)]
    assert world.kube.reasons().count(("Warning", "InvalidSpec")) == 1


def test_a_refused_query_before_the_first_step_moves_no_traffic_at_all() -> None:
    world = World()
    world.metrics.answer = refused()
    controller = world.controller()

    world.tick(controller, 0)

    assert world.kube.status()["phase"] == "Invalid"
    assert world.router.writes == []
    assert world.router.weights() == [(100, 0)]


def test_a_bug_in_the_metrics_source_is_raised_not_reported_as_an_outage() -> None:
    world = World()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 30, obs(HEALTHY))
    stored, patches = world.kube.get(), len(world.kube.patches)

    def buggy(promql: str) -> list[Sample]:
        raise KeyError("value")

    world.metrics.answer = buggy
    with pytest.raises(KeyError):
        world.tick(controller, 60)

    assert len(world.kube.patches) == patches  # nothing recorded: no outage, no decision
    assert world.kube.get() == stored
    assert "metricsOutageSince" not in world.kube.status()
    assert ("Warning", "MetricsOutage") not in world.kube.reasons()
    assert world.router.writes == [(90, 10)]


class Forbidden(Exception):
    """What the Kubernetes client raises for a 403, as far as the controller can tell."""

    status = 403
    reason = "Forbidden"


def test_a_failed_tick_is_recorded_on_the_rollout_and_counted_not_blamed_on_prometheus() -> None:
    """The VirtualService write is refused (403) while moving to 50%: the tick ends without
    a decision, the rollout says why (condition and one Warning, however many ticks fail),
    canaryguard_tick_errors_total counts it, and no outage starts."""
    world = World()
    controller = world.controller()
    key = ("ml", "scorer")
    world.tick(controller, 0, obs(HEALTHY))
    world.tick(controller, 30, obs(HEALTHY))
    before = tick_errors("api_403")
    world.router.fail_writes(2, Forbidden("forbidden"))
    for second in (60, 90):
        world.now = at(second)
        controller.seen("MODIFIED", world.kube.get())
        asyncio.run(controller.tick_key(key))

    status = world.kube.status()
    failed = {c["type"]: c for c in status["conditions"]}["TickSucceeded"]
    assert (failed["status"], failed["reason"]) == ("False", "api_403")
    assert "HTTP 403 Forbidden" in failed["message"]
    assert [r for r in world.kube.reasons() if r[1] == "TickFailed"] == [("Warning", "TickFailed")]
    assert tick_errors("api_403") - before == 2
    assert status.get("metricsOutageSince") is None
    assert world.router.weights() == [(90, 10)]

    world.tick(controller, 120, obs(HEALTHY))  # the write goes through: step 2, recovered
    assert world.router.weights() == [(50, 50)]
    recovered = {c["type"]: c for c in world.kube.status()["conditions"]}["TickSucceeded"]
    assert (recovered["status"], recovered["reason"]) == ("True", "Recovered")
    assert ("Normal", "TickRecovered") in world.kube.reasons()


def test_a_bug_in_a_tick_is_labelled_bug() -> None:
    world = World()
    controller = world.controller()
    world.tick(controller, 0, obs(HEALTHY))
    world.metrics.answer = lambda text: {}["missing"]  # a KeyError inside the tick
    before = tick_errors("bug")
    world.now = at(30)
    asyncio.run(controller.tick_key(("ml", "scorer")))
    assert tick_errors("bug") - before == 1
    failed = {c["type"]: c for c in world.kube.status()["conditions"]}["TickSucceeded"]
    assert failed["reason"] == "bug"
    assert "KeyError" in failed["message"]
    assert world.kube.status().get("metricsOutageSince") is None


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        # What the Kubernetes client raises when the API server is down or restarting.
        (urllib3.exceptions.MaxRetryError(None, "/apis/x", "connection refused"), "network"),
        (urllib3.exceptions.ProtocolError("Connection aborted."), "network"),
        (urllib3.exceptions.ReadTimeoutError(None, "/apis/x", "read timed out"), "timeout"),
        (ConnectionRefusedError(111, "refused"), "network"),
        (TimeoutError(), "timeout"),
        (KeyError("missing"), "bug"),
    ],
)
def test_an_unreachable_api_server_is_a_network_failure_not_a_bug(
    exc: BaseException, reason: str
) -> None:
    assert failure_reason(exc) == reason


def tick_errors(reason: str) -> float:
    value = REGISTRY.get_sample_value("canaryguard_tick_errors_total", {"reason": reason})
    return value or 0.0
