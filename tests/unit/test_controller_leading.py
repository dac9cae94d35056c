"""A controller's term as leader (`lead`): it lists the rollouts afresh before its first tick,
so a replica whose watch lags behind the leader it replaces decides from the latest status.

The old leader ticks through `World.tick` (its clock moved by hand); the new leader runs
`lead` on virtual time, its scheduler ticking every rollout that is due at once.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any

import pytest

from canaryguard.runtime.controller import Controller
from canaryguard.runtime.scheduler import Scheduler, spread_offset
from tests.unit.fakes import SETTINGS, InjectedFault, World, answers_for
from tests.unit.scenario import BREACH, HEALTHY, at, obs
from tests.unit.virtual_time import VirtualClock, run_virtual


def breached_at_half(world: World) -> Controller:
    """The old leader: 50% at 60 s, breaching from 90 s (the 60 s window ends at 150 s)."""
    old = world.controller()
    for second in (0, 30, 60):
        world.tick(old, second, obs(HEALTHY))
    for second in (90, 120):
        world.tick(old, second, obs(BREACH))
    return old


def one_term(
    world: World,
    seen: list[dict[str, Any]],
    seconds: float,
    before: Callable[[Controller], None] | None = None,
) -> Controller:
    """A new controller that has seen `seen` from its watch leads for `seconds` (virtual);
    `before(controller)` runs before its term starts."""
    controller: Controller | None = None

    async def main(clock: VirtualClock) -> None:
        nonlocal controller
        controller = Controller(
            world.kube,
            world.router,
            world.metrics,
            world.pager,
            SETTINGS,
            clock=lambda: world.now,
            scheduler_factory=lambda tick, n: Scheduler(tick, n, clock=clock),
        )
        for body in seen:
            controller.seen("MODIFIED", body)
        if before is not None:
            before(controller)
        resign = asyncio.Event()
        term = asyncio.create_task(controller.lead(resign))
        await asyncio.sleep(seconds)
        resign.set()
        await term

    run_virtual(main)
    assert controller is not None
    return controller


def test_a_new_leader_whose_watch_lags_decides_from_the_fresh_list_not_its_stale_view() -> None:
    world = World()
    old = breached_at_half(world)
    stale = world.kube.get()  # what the standby's watch last delivered: breaching at 50%
    world.tick(old, 150, obs(BREACH))  # the old leader rolls back, pages, and dies
    assert world.kube.status()["phase"] == "RolledBack"
    writes, events = list(world.journal.entries), list(world.kube.events)

    world.now = at(160)
    world.metrics.answer = answers_for(world.spec, obs(BREACH))
    one_term(world, [stale], seconds=0.5)

    # Its first tick saw RolledBack: nothing is rolled back, written or paged a second time.
    assert world.journal.entries == writes
    assert world.kube.events == events
    assert len(world.pager.triggers) == 1
    assert world.kube.reasons().count(("Warning", "RolledBack")) == 1


def test_a_rollout_deleted_while_the_list_was_in_flight_is_not_brought_back() -> None:
    world = World()
    body = world.kube.get()

    def delete_while_listing(controller: Controller) -> None:
        def deleted() -> None:
            # The watch delivers the deletion before the (older) list's answer arrives.
            del world.kube.objects[("ml", "scorer")]
            controller.seen("DELETED", body)

        world.kube.while_listing = deleted

    controller = one_term(world, [body], seconds=0.5, before=delete_while_listing)
    assert ("ml", "scorer") not in controller.scheduler
    assert world.journal.entries == []  # never ticked


def test_a_failed_list_is_logged_and_the_term_ticks_from_the_watch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    world.kube.list_error = InjectedFault("503 from the API server")
    world.metrics.answer = answers_for(world.spec, obs(HEALTHY))
    with caplog.at_level(logging.WARNING):
        one_term(world, [world.kube.get()], seconds=0.5)
    assert "rollouts not listed afresh" in caplog.text
    assert world.kube.status()["phase"] == "Progressing"  # the first tick started it


def test_a_decision_an_earlier_term_left_unwritten_is_dropped_when_it_leads_again() -> None:
    world = World()
    old = breached_at_half(world)
    world.kube.fail_patches(count=1, skip=1)  # the intent is written, the rest not
    with pytest.raises(InjectedFault):
        world.tick(old, 150, obs(BREACH))  # rolled back, but the RolledBack status is not written
    assert old._ledger.pending(("ml", "scorer")) is not None

    async def term() -> None:
        resign = asyncio.Event()
        resign.set()  # only the start of a term: another replica may have led meanwhile
        await old.lead(resign)

    asyncio.run(term())
    assert old._ledger.pending(("ml", "scorer")) is None


def test_rollouts_first_seen_in_the_fresh_list_are_spread_over_their_interval() -> None:
    # At start-up the term's list usually comes before the watch's: the rollouts it brings
    # are taken as listed at start-up, each ticking at its own slot of the 30 s interval,
    # not all at once.
    world = World()
    names = ["scorer"]
    for i in range(11):
        body = copy.deepcopy(world.kube.get())
        body["metadata"].update(name=f"svc-{i}", uid=f"uid-{i}")
        world.kube.create(body)
        names.append(f"svc-{i}")
    world.metrics.answer = answers_for(world.spec, obs(HEALTHY))
    at_once = {n for n in names if spread_offset(("ml", n), 30.0) == 0.0}
    assert len(at_once) < len(names) / 2

    controller = one_term(world, [], seconds=0.5)

    assert len(controller.scheduler) == len(names)
    ticked = {n for n in names if (world.kube.status("ml", n) or {}).get("phase")}
    assert ticked <= at_once
