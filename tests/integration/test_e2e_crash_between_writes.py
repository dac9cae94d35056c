"""End to end: the operator dies between a rollback's VirtualService write (100/0) and its
status write, the crash the controller's order of writes is built for, placed there
deterministically by the crash points of `canaryguard_testbed.crashpoints`.

Found by the fault campaign (`make chaos`): after such a death the restarted operator finds
the canary at 0% below the weight it decided (`LoweredOutside`) and holds; a sustained breach
still rolls the rollout back, but only while the breach can still be seen. With the canary at
0% its requests leave the SLO's lookback, the SLO turns inconclusive ("canary has 0
requests"), and a restart that comes later than that leaves the rollout Progressing at 100/0
forever: traffic is safe, but the rollback is never recorded and nobody is paged.

Both are closed: the engine records a rollback from a breach the stored status shows, and a
rollback now writes its intent (reason, values, page due) before its weights, so the
restarted operator completes it even when the breach was judged on the rollback's own tick
(`window: 0s`) and no stored verdict shows it.
"""

import json
import time
from pathlib import Path
from typing import Any

from canaryguard_testbed.crashpoints import CrashPoints
from tests.integration.fixtures_e2e import EndToEnd, error_rate_slo
from tests.integration.fixtures_operator import Operator, Rollout, slo_of, wait_for

LOOKBACK = 10.0  # error_rate_slo's
STEPS = [{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}]


def crash_after_the_rollback_weights(
    e2e: EndToEnd, tmp_path: Path, window: str = "3s"
) -> tuple[Rollout, Operator, dict[str, Any]]:
    """Run a rollout to a sustained breach with the operator armed to SIGKILL itself right
    after the rollback's weights are written; return once it died, with its crash record."""
    crashes = tmp_path / "crashes.jsonl"
    r = e2e.rollout(steps=STEPS, slos=[error_rate_slo(window=window)])
    op = e2e.operator(
        module="canaryguard_testbed.crashpoints",
        env=CrashPoints(after_rollback_weights=1.0, log_path=str(crashes)).env(),
    )
    r.wait_weights(50, 50, timeout=30)
    r.wait_healthy(timeout=40)
    e2e.mesh.control("v2", {"error_rate": 0.3})
    wait_for("the operator's crash after the rollback's weights", lambda: crashes.exists(), 40)
    wait_for("the operator process to end", lambda: op.exit_code is not None, 10)
    (crash,) = [json.loads(line) for line in crashes.read_text().splitlines()]
    assert crash["point"] == "after-rollback-weights"
    assert crash["rollout"] == f"{e2e.namespace}/{r.name}"
    # The weights are written, the status is not: the window the crash was aimed at.
    status = r.status()
    assert r.weights() == (100, 0)
    assert status["phase"] == "Progressing" and status["canaryWeight"] == 50
    assert slo_of(status, "error-rate").get("breachingSince")
    # The rollback's intent, written before the weights: what the restart completes.
    assert status["rollback"]["reason"] == "SLOBreach"
    assert status["page"]["state"] == "Pending"
    assert e2e.pagerduty.calls() == []
    return r, op, status


def restart_disarmed(op: Operator) -> None:
    op.env = {}
    op.start()


def test_a_rollback_cut_before_its_status_write_is_recorded_and_paged_after_a_quick_restart(
    e2e: EndToEnd, tmp_path: Path
) -> None:
    with e2e.traffic(rate=80):
        r, op, before = crash_after_the_rollback_weights(e2e, tmp_path)
        restart_disarmed(op)  # at once: the breach is still in the lookback
        final = r.wait_phase("RolledBack", timeout=30)
        final = r.wait_page("Delivered")
    rollback = final["rollback"]
    assert rollback["reason"] == "SLOBreach"
    assert rollback["breachingSince"] == slo_of(before, "error-rate")["breachingSince"]
    assert r.weights() == (100, 0)
    assert len(e2e.pagerduty.incidents()) == 1


def test_a_rollback_cut_before_its_status_write_is_recorded_after_a_restart_past_the_lookback(
    e2e: EndToEnd, tmp_path: Path
) -> None:
    with e2e.traffic(rate=80):
        r, op, _ = crash_after_the_rollback_weights(e2e, tmp_path)
        # Down until the canary's last requests have left the SLO's lookback (pacing).
        time.sleep(LOOKBACK + 3)
        restart_disarmed(op)
        final = r.wait_phase("RolledBack", timeout=30)
        final = r.wait_page("Delivered")
    assert final["rollback"]["reason"] == "SLOBreach"
    assert r.weights() == (100, 0)
    assert len(e2e.pagerduty.incidents()) == 1


def test_a_rollback_decided_on_its_first_breach_and_cut_is_completed_past_the_lookback(
    e2e: EndToEnd, tmp_path: Path
) -> None:
    """`window: 0s`: the breach that rolls back is judged on the rollback's own tick, so only
    the rollback's intent (written before the weights) records it. The operator comes back
    after the canary's requests have left the lookback, with nothing left to judge the canary
    on: it completes the rollback from the intent and pages once."""
    with e2e.traffic(rate=80):
        r, op, before = crash_after_the_rollback_weights(e2e, tmp_path, window="0s")
        time.sleep(LOOKBACK + 3)  # pacing: down until the canary's requests left the lookback
        restart_disarmed(op)
        final = r.wait_phase("RolledBack", timeout=30)
        final = r.wait_page("Delivered")
    assert final["rollback"] == before["rollback"]
    assert final["rollback"]["window"] == "0s"
    assert r.weights() == (100, 0)
    assert len(e2e.pagerduty.incidents()) == 1
