"""The controller's page delivery when the routing key cannot be read: the page stays
Pending (retried at every tick) and the failure is posted as one Event, not one a tick."""

from __future__ import annotations

from tests.unit.fakes import World
from tests.unit.scenario import BREACH, obs


def test_an_unreadable_routing_key_keeps_the_page_pending_with_one_event() -> None:
    world = World()
    world.kube.secrets.clear()  # the Secret named by spec.paging is not there
    controller = world.controller()
    world.tick(controller, 0)
    for second in (30, 60, 90):  # a breach held for the 60 s window: rolled back at 90
        world.tick(controller, second, obs(BREACH))
    assert world.kube.status()["phase"] == "RolledBack"

    for second in (120, 150):  # two more ticks: three deliveries in all
        world.tick(controller, second, obs(BREACH))

    page = world.kube.status()["page"]
    assert (page["state"], page["attempts"]) == ("Pending", 3)
    assert "Secret ml/pd not found" in page["lastError"]
    assert world.pager.triggers == []
    paging_events = [(t, r) for t, r in world.kube.reasons() if r.startswith("Page")]
    assert paging_events == [("Warning", "PageFailed")]
