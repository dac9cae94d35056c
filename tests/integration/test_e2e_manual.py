"""End to end: `canaryguard abort|promote` against the real operator (under the shipped
RBAC) while real traffic flows through the router. The CLI writes the request annotation as
the admin; the operator carries it out once, moves the VirtualService (and so the router),
records `status.lastRequest`, and pages only when asked."""

import time
from collections.abc import Callable

import pytest

from canaryguard.cli.main import main
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from tests.integration.fixtures_mesh import MeshFactory
from tests.integration.fixtures_operator import Operator, Rollout, wait_for
from tests.integration.traffic import Traffic

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


def test_abort_mid_rollout_rolls_back_at_once_without_a_page(
    namespace: str,
    mesh: MeshFactory,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
    pagerduty: PagerDutyReceiver,
    cli: Cli,
) -> None:
    m = mesh(namespace, scenario="healthy")
    # A 30 s interval: only the watch (not the schedule) can make the abort quick.
    r = rollout(steps=LONG_STEPS, analysis={"interval": "30s"})
    with Traffic(m, rate=40):
        operator()
        wait_for("step 1 weights 80/20", lambda: r.weights() == (80, 20), timeout=20)
        m.wait_route({"v1": 0.8, "v2": 0.2})
        began = time.monotonic()
        code, out, err = cli(
            "abort", "fraud-model", "-n", namespace, "--reason", "offline eval regressed",
            "--wait", "--timeout", "20s",
        )  # fmt: skip
        took = time.monotonic() - began
        assert code == 0, err
        m.wait_route({"v1": 1.0, "v2": 0.0})
    assert out.startswith(
        f"CanaryRollout {namespace}/fraud-model RolledBack: manual abort by admin: "
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
    time.sleep(2)
    assert pagerduty.events() == []
    assert manual_decisions(r) == ["ManualAbort"]


def test_abort_with_page_pages_once_as_a_manual_abort(
    namespace: str,
    mesh: MeshFactory,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
    pagerduty: PagerDutyReceiver,
    cli: Cli,
) -> None:
    m = mesh(namespace, scenario="healthy")
    r = rollout(steps=LONG_STEPS)
    with Traffic(m, rate=40):
        operator()
        wait_for("step 1 weights 80/20", lambda: r.weights() == (80, 20), timeout=20)
        code, out, err = cli(
            "abort", "fraud-model", "-n", namespace, "--page", "--reason", "customer reports"
        )
        assert code == 0, err
        assert "sends all traffic back to the baseline, pages on-call" in out
        wait_for("RolledBack", lambda: r.phase() == "RolledBack", timeout=20)
        wait_for(
            "page delivered",
            lambda: r.status().get("page", {}).get("state") == "Delivered",
            timeout=20,
        )
        time.sleep(3)  # a few more 1 s ticks: the page is never sent again
    assert r.weights() == (100, 0)
    status = r.status()
    events = pagerduty.events()
    assert len(events) == 1, events
    assert len(pagerduty.incidents()) == 1
    event = events[0]["event"]
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == status["page"]["dedupKey"]
    assert "manual abort by admin: customer reports" in event["payload"]["summary"]
    assert event["payload"]["custom_details"]["reason"] == "Manual"
    assert status["rollback"]["reason"] == "Manual"
    assert manual_decisions(r) == ["ManualAbort"]


def test_promote_skips_the_schedule_and_sends_all_traffic_to_the_canary(
    namespace: str,
    mesh: MeshFactory,
    rollout: Callable[..., Rollout],
    operator: Callable[[], Operator],
    pagerduty: PagerDutyReceiver,
    cli: Cli,
) -> None:
    m = mesh(namespace, scenario="healthy")
    r = rollout(steps=LONG_STEPS)
    with Traffic(m, rate=40):
        operator()
        wait_for("step 1 weights 80/20", lambda: r.weights() == (80, 20), timeout=20)
        code, out, err = cli(
            "promote", "fraud-model", "-n", namespace, "--reason", "validated offline", "--wait"
        )
        assert code == 0, err
        assert out.startswith(
            f"CanaryRollout {namespace}/fraud-model Promoted: manual promote by admin: "
            "validated offline"
        ), out
        m.wait_route({"v1": 0.0, "v2": 1.0})
        time.sleep(3)  # a few more 1 s ticks: the request is not carried out again
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
    assert pagerduty.events() == []
    code, _, err = cli("abort", "fraud-model", "-n", namespace)
    assert code == 1
    assert "was promoted: the canary has all the traffic" in err
