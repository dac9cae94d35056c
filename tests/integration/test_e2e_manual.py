"""End to end: `canaryguard abort|promote` against the real operator (under the shipped
RBAC) while real traffic flows through the router. The CLI writes the request annotation as
the admin; the operator carries it out once, moves the VirtualService (and so the router),
records `status.lastRequest`, and pages only when asked."""

import time

import pytest

from canaryguard.cli.main import main
from canaryguard_testbed.controlplane import ControlPlane
from tests.integration.fixtures_e2e import EndToEnd
from tests.integration.fixtures_operator import Rollout, wait_for

LONG_STEPS = [
    {"weight": 20, "hold": "60s"},
    {"weight": 50, "hold": "60s"},
    {"weight": 100, "hold": "60s"},
]


class Cli:
    """Runs `canaryguard ...` in this process as the admin."""

    def __init__(self, cp: ControlPlane, capsys: pytest.CaptureFixture[str]) -> None:
        self.cp = cp
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*args, "--kubeconfig", str(self.cp.admin_kubeconfig)])
        out, err = self.capsys.readouterr()
        return code, out.strip(), err.strip()


@pytest.fixture
def cli(control_plane: ControlPlane, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(control_plane, capsys)


def manual_decisions(r: Rollout) -> list[str]:
    return [
        h["action"]
        for h in r.status().get("history", [])
        if h["action"] in ("ManualAbort", "ManualPromote", "RequestIgnored")
    ]


def test_abort_mid_rollout_rolls_back_at_once_without_a_page(e2e: EndToEnd, cli: Cli) -> None:
    # A 30 s interval: only the watch (not the schedule) can make the abort quick.
    r = e2e.rollout(steps=LONG_STEPS, analysis={"interval": "30s"})
    with e2e.traffic(rate=40):
        op = e2e.operator()
        # Listed at start-up, the rollout's first tick comes within one interval (start-up
        # ticks are spread over the interval: README, Scale), then step 1 is written.
        r.wait_weights(80, 20, timeout=30 + 20)
        e2e.mesh.wait_route({"v1": 0.8, "v2": 0.2})
        ticks_before = op.ticks()
        began = time.monotonic()
        code, out, err = cli(
            "abort", "fraud-model", "-n", r.namespace, "--reason", "offline eval regressed",
            "--wait", "--timeout", "20s",
        )  # fmt: skip
        took = time.monotonic() - began
        assert code == 0, err
        e2e.mesh.wait_route({"v1": 1.0, "v2": 0.0})
    assert out.startswith(
        f"CanaryRollout {r.namespace}/fraud-model RolledBack: manual abort by admin: "
        "offline eval regressed (request "
    ), out
    assert out.endswith("; on-call not paged (not asked)")
    assert took < 10, f"the abort took {took:.1f}s with a 30s interval"
    assert r.weights() == (100, 0)
    status = r.status()
    assert status["phase"] == "RolledBack"
    assert status["rollback"]["reason"] == "Manual"
    assert "offline eval regressed" in status["rollback"]["message"]
    assert "page" not in status
    last = status["lastRequest"]
    assert (last["action"], last["outcome"], last["by"]) == ("abort", "RolledBack", "admin")
    reasons = r.event_reasons()
    assert "ManualAbort" in reasons and "RolledBack" not in reasons
    # The tick that carried out the abort has ended (and with it any page it would send):
    # the next one is 30 s away, and nothing else ticks this operator meanwhile.
    wait_for("the abort's tick to end", lambda: op.ticks() > ticks_before, timeout=10)
    assert e2e.pagerduty.events() == []
    assert manual_decisions(r) == ["ManualAbort"]


def test_abort_with_page_pages_once_as_a_manual_abort(e2e: EndToEnd, cli: Cli) -> None:
    r = e2e.rollout(steps=LONG_STEPS)
    with e2e.traffic(rate=40):
        op = e2e.operator()
        r.wait_weights(80, 20)
        code, out, err = cli(
            "abort", "fraud-model", "-n", r.namespace, "--page", "--reason", "customer reports"
        )
        assert code == 0, err
        assert "sends all traffic back to the baseline, pages on-call" in out
        r.wait_phase("RolledBack", timeout=20)
        r.wait_page("Delivered", timeout=20)
        op.wait_ticks(3)  # a few more 1 s ticks: the page is never sent again
    assert r.weights() == (100, 0)
    status = r.status()
    events = e2e.pagerduty.events()
    assert len(events) == 1, events
    assert len(e2e.pagerduty.incidents()) == 1
    event = events[0]["event"]
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == status["page"]["dedupKey"]
    assert "manual abort by admin: customer reports" in event["payload"]["summary"]
    assert event["payload"]["custom_details"]["reason"] == "Manual"
    assert status["rollback"]["reason"] == "Manual"
    assert manual_decisions(r) == ["ManualAbort"]


def test_promote_skips_the_schedule_and_sends_all_traffic_to_the_canary(
    e2e: EndToEnd, cli: Cli
) -> None:
    r = e2e.rollout(steps=LONG_STEPS)
    namespace = r.namespace
    with e2e.traffic(rate=40):
        op = e2e.operator()
        r.wait_weights(80, 20)
        code, out, err = cli(
            "promote", "fraud-model", "-n", namespace, "--reason", "validated offline", "--wait"
        )
        assert code == 0, err
        assert out.startswith(
            f"CanaryRollout {namespace}/fraud-model Promoted: manual promote by admin: "
            "validated offline"
        ), out
        e2e.mesh.wait_route({"v1": 0.0, "v2": 1.0})
        op.wait_ticks(3)  # a few more 1 s ticks: the request is not carried out again
        code, out, _ = cli("promote", "fraud-model", "-n", namespace)
        assert (code, out) == (
            0,
            f"CanaryRollout {namespace}/fraud-model is already promoted; nothing to do",
        )
    assert r.weights() == (0, 100)
    status = r.status()
    assert (status["phase"], status["canaryWeight"], status["stepIndex"]) == ("Promoted", 100, 2)
    assert status["lastRequest"]["outcome"] == "Promoted"
    assert "ManualPromote" in r.event_reasons()
    assert manual_decisions(r) == ["ManualPromote"]
    assert e2e.pagerduty.events() == []
    code, _, err = cli("abort", "fraud-model", "-n", namespace)
    assert code == 1
    assert "was promoted: the canary has all the traffic" in err
