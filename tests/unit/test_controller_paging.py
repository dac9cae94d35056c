"""The controller's page delivery when the routing key cannot be read: the page stays
Pending (retried at every tick) and the failure is posted as one Event, not one a tick."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from canaryguard.adapters.kube import SecretError
from canaryguard.runtime.controller import Controller
from tests.unit.scenario import BREACH, Rollout, obs, pages


class KubeWithoutSecret:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def read_secret(self, namespace: str, name: str, key: str) -> str:
        raise SecretError(f"Secret {namespace}/{name} not found")

    async def post_event(
        self, rollout: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        self.events.append((type_, reason))

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {}


def test_an_unreadable_routing_key_keeps_the_page_pending_with_one_event() -> None:
    kube = KubeWithoutSecret()
    controller = Controller(kube=kube, virtual_services=None)  # type: ignore[arg-type]
    rollout = Rollout()
    rollout.started()
    result = None
    for second in (30, 60, 90):  # a breach held for the 60 s window
        result = rollout.tick(second, obs(BREACH))
    assert result is not None and rollout.status.phase == "RolledBack"
    (page,) = pages(result.actions)
    body = {"metadata": {"namespace": "ml", "name": "scorer"}}

    status = rollout.status
    for _ in range(3):
        status = asyncio.run(controller._deliver(body, rollout.spec, status, page))

    assert status.page is not None
    assert (status.page.state, status.page.attempts) == ("Pending", 3)
    assert "Secret ml/pd not found" in (status.page.last_error or "")
    assert kube.events == [("Warning", "PageFailed")]
