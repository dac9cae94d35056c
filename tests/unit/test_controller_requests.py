"""The controller with a manual request: it ticks at once when one arrives, and a request
due is decided without waiting on Prometheus."""

from __future__ import annotations

import copy
import json
from collections.abc import Hashable
from typing import Any

from canaryguard.core.manual import REQUEST_ANNOTATION
from canaryguard.runtime.controller import Controller
from canaryguard.runtime.scheduler import Scheduler
from tests.unit.fakes import FakeRouter, World, rollout_body, virtual_service
from tests.unit.scenario import Rollout


class RecordingScheduler(Scheduler):
    """The real scheduler, recording what the controller asks of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Hashable, float, bool]] = []

    def upsert(
        self, key: Hashable, interval: float, now: bool = False, spread: bool = False
    ) -> None:
        self.calls.append((key, interval, now))
        super().upsert(key, interval, now, spread)


def body(version: int, generation: int = 1, request: str | None = None) -> dict[str, Any]:
    data = rollout_body(
        annotations=None if request is None else {REQUEST_ANNOTATION: request},
        generation=generation,
    )
    data["metadata"]["resourceVersion"] = str(version)
    return data


def test_a_new_request_or_spec_ticks_at_once_a_status_write_does_not() -> None:
    world = World()
    controller = Controller(
        world.kube, world.router, world.metrics, world.pager, scheduler_factory=RecordingScheduler
    )
    abort = json.dumps({"action": "abort", "id": "a1"})

    controller.seen("ADDED", body(1))
    status_written = copy.deepcopy(body(2))
    status_written["status"] = {"phase": "Progressing"}
    controller.seen("MODIFIED", status_written)
    controller.seen("MODIFIED", body(3, request=abort))
    controller.seen("MODIFIED", body(4, request=abort))  # e.g. the next status write
    controller.seen("MODIFIED", body(5, generation=2, request=abort))
    controller.seen("MODIFIED", body(6, generation=2))  # the annotation removed

    scheduler = controller.scheduler
    assert isinstance(scheduler, RecordingScheduler)
    assert [now for _, _, now in scheduler.calls] == [True, False, True, False, True, True]
    assert {interval for _, interval, _ in scheduler.calls} == {30.0}
    assert len(scheduler) == 1


def test_a_due_request_is_decided_without_querying_prometheus() -> None:
    running = Rollout()
    running.started()
    running.tick(30)
    world = World()
    world.router = FakeRouter(virtual_service(90, 10), journal=world.journal)
    stored = json.loads(json.dumps(running.status.to_dict()))
    abort = json.dumps({"action": "abort", "id": "a1"})
    world.kube.create(rollout_body(status=stored, annotations={REQUEST_ANNOTATION: abort}))
    controller = world.controller()

    world.tick(controller, 45)

    assert world.metrics.connections == [] and world.metrics.queries == []
    assert world.kube.status()["phase"] == "RolledBack"
    assert world.router.writes == [(100, 0)]
    assert world.router.weights() == [(100, 0)]
