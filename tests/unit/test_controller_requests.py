"""The controller with a manual request: it ticks at once when one arrives, and a request
due is decided without waiting on Prometheus."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from canaryguard.core.manual import REQUEST_ANNOTATION
from canaryguard.core.spec import Spec, parse_spec
from canaryguard.runtime.controller import Controller
from tests.unit.scenario import Rollout, at, spec_dict, weights


class RecordingScheduler:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, float, bool]] = []

    def upsert(self, key: Any, interval: float, now: bool = False) -> None:
        self.calls.append((key, interval, now))


def body(version: int, generation: int = 1, request: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "scorer",
        "namespace": "ml",
        "generation": generation,
        "resourceVersion": str(version),
    }
    if request is not None:
        metadata["annotations"] = {REQUEST_ANNOTATION: request}
    return {"metadata": metadata, "spec": spec_dict()}


def test_a_new_request_or_spec_ticks_at_once_a_status_write_does_not() -> None:
    controller = Controller(kube=None, virtual_services=None)  # type: ignore[arg-type]
    scheduler = RecordingScheduler()
    controller.scheduler = scheduler  # type: ignore[assignment]
    abort = json.dumps({"action": "abort", "id": "a1"})

    controller.seen("ADDED", body(1))
    status_written = copy.deepcopy(body(2))
    status_written["status"] = {"phase": "Progressing"}
    controller.seen("MODIFIED", status_written)
    controller.seen("MODIFIED", body(3, request=abort))
    controller.seen("MODIFIED", body(4, request=abort))  # e.g. the next status write
    controller.seen("MODIFIED", body(5, generation=2, request=abort))
    controller.seen("MODIFIED", body(6, generation=2))  # the annotation removed

    assert [now for _, _, now in scheduler.calls] == [True, False, True, False, True, True]
    assert {interval for _, interval, _ in scheduler.calls} == {30.0}


class FakeVirtualServices:
    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        dests = [{"destination": {"host": "scorer", "subset": s}} for s in ("v1", "v2")]
        return {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"http": [{"route": dests}]},
        }


def test_a_due_request_is_decided_without_querying_prometheus() -> None:
    controller = Controller(kube=None, virtual_services=FakeVirtualServices())  # type: ignore[arg-type]

    async def no_prometheus(spec: Spec) -> Any:
        raise AssertionError("Prometheus was queried")

    controller._prometheus = no_prometheus  # type: ignore[method-assign]
    running = Rollout()
    running.started()
    running.tick(30)
    data = body(1, request=json.dumps({"action": "abort", "id": "a1"}))
    spec = parse_spec(data)

    result = asyncio.run(controller._decide(spec, running.status, at(45)))

    assert result.status.phase == "RolledBack"
    assert weights(result.actions) == [(100, 0)]
