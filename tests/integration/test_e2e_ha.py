"""End to end, high availability: two operator processes under the shipped RBAC (the
ClusterRole, and the Role for the Lease) elect a leader on the Lease
`canaryguard-system/canaryguard`, as the shipped Deployment's two replicas do, with 3 s leases
and 1 s ticks. Each gets POD_NAME and POD_NAMESPACE as the downward API would give them.

Only the leader ticks. SIGKILLed mid-breach, the leader writes nothing more; the standby takes
over once it has seen the Lease unrenewed for its whole duration, rolls back when the window
ends, and pages once. Stopped with SIGTERM, the leader finishes its ticks and releases the
Lease, and the standby takes over at its next poll, well before the Lease could expire.

Takeover times are measured from the signal to the standby's `acquireTime` in the Lease (both
clocks are this machine's) and printed as figures.
"""

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.stack import allow_flags
from tests.integration.fixtures_e2e import INTERVAL, EndToEnd, error_rate_slo
from tests.integration.fixtures_operator import Operator, Rollout, ts, wait_for

LEASE = 3  # seconds: the replicas renew every 1 s, poll every 0.3 s, stop leading after 2 s
LEASE_NAME = "canaryguard"
OPERATOR_NAMESPACE = "canaryguard-system"
ARGS = ("--leader-elect", f"--lease-duration={LEASE}s")
LEADER = "canaryguard_leader"
WINDOW = 12.0
# Two ticks plus scheduling and API latency on a loaded 2-core machine.
LATE = 2 * INTERVAL + 0.5


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Lease:
    cp: ControlPlane

    def read(self) -> dict[str, Any] | None:
        """The Lease's spec, or None when there is none."""
        out = self.cp.kubectl(
            "get", "lease", LEASE_NAME, "-n", OPERATOR_NAMESPACE, "-o=json", check=False
        )
        if out.returncode != 0:
            assert "NotFound" in out.stderr, out.stderr
            return None
        spec: dict[str, Any] = json.loads(out.stdout)["spec"]
        return spec

    def wait_holder(self, holder: str, timeout: float) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            spec = self.read()
            return spec if spec and spec.get("holderIdentity") == holder else None

        return wait_for(f"{holder} to hold the Lease", probe, timeout=timeout, interval=0.05)


@pytest.fixture
def lease(control_plane: ControlPlane) -> Iterator[Lease]:
    """The shipped Lease, absent before and after the test (tests share the API server)."""

    def delete() -> None:
        control_plane.kubectl(
            "delete", "lease", LEASE_NAME, "-n", OPERATOR_NAMESPACE, "--ignore-not-found"
        )

    delete()
    yield Lease(control_plane)
    delete()


def replica(e2e: EndToEnd, name: str) -> Operator:
    """An operator process as one replica of the Deployment would run it."""
    return e2e.operator(
        args=[*allow_flags(e2e.prometheus.url, e2e.pagerduty.url), *ARGS],
        env={"POD_NAME": name, "POD_NAMESPACE": OPERATOR_NAMESPACE},
    )


def logged(op: Operator, start: str) -> list[dict[str, Any]]:
    return [line for line in op.log_lines() if str(line.get("message", "")).startswith(start)]


def start_pair(e2e: EndToEnd, lease: Lease) -> tuple[Operator, Operator]:
    """Replica a, which creates the Lease and leads, then replica b, which stands by."""
    a = replica(e2e, "canaryguard-a")
    created = lease.wait_holder("canaryguard-a", timeout=15)
    assert created["leaseTransitions"] == 0
    assert created["leaseDurationSeconds"] == LEASE
    wait_for("a's leader metric", lambda: a.metric(LEADER) == 1, timeout=5)
    b = replica(e2e, "canaryguard-b")
    wait_for("b standing by", lambda: logged(b, "standing by"), timeout=15)
    assert b.metric(LEADER) == 0
    return a, b


@dataclass
class Handover:
    signalled: datetime
    takeover: float  # seconds from the signal to the standby's acquireTime
    first_tick: float  # seconds from the signal to the standby's first tick, done
    final: dict[str, Any]
    breaching: str


def breach_and_hand_over(
    e2e: EndToEnd, lease: Lease, stop_leader: Callable[[Operator], None]
) -> Handover:
    """A canary at 50% starts failing; 2 s into its 12 s window the leader is stopped by
    `stop_leader`; the standby must finish the job."""
    r = e2e.rollout(
        steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}],
        slos=[error_rate_slo(window=f"{WINDOW:g}s")],
    )
    with e2e.traffic(rate=80):
        a, b = start_pair(e2e, lease)
        r.wait_weights(50, 50, timeout=30)
        r.wait_healthy(timeout=40)

        # Only the leader ticks: three more of a's ticks, and none of b's meanwhile.
        def standby_idle() -> None:
            assert (b.ticks(), b.metric(LEADER)) == (0, 0)

        a.wait_ticks(3, check=standby_idle)
        assert a.metric(LEADER) == 1
        assert b.metric("canaryguard_rollouts", phase="Progressing") == 1  # b's watch is warm

        e2e.mesh.control("v2", {"error_rate": 0.3})
        breaching = wait_for(
            "breachingSince in status",
            lambda: r.status().get("slos", [{}])[0].get("breachingSince"),
            timeout=30,
        )
        since = ts(breaching)
        wait_for("2 s into the breach", lambda: now() >= since + timedelta(seconds=2), 30)
        signalled = now()
        stop_leader(a)
        assert r.phase() == "Progressing"
        # b's /metrics first (cheap, polled often), then the Lease (a kubectl call).
        wait_for("b's first tick", lambda: b.ticks() > 0, timeout=LEASE + 10, interval=0.05)
        first_tick = (now() - signalled).total_seconds()
        taken = lease.wait_holder("canaryguard-b", timeout=5)
        takeover = (ts(taken["acquireTime"]) - signalled).total_seconds()
        assert b.metric(LEADER) == 1
        assert taken["leaseTransitions"] == 1
        final = wait_rolled_back(r, breaching)
        final = r.wait_page("Delivered")
    check_one_rollback(e2e, r, final, breaching, signalled)
    return Handover(signalled, takeover, first_tick, final, breaching)


def wait_rolled_back(r: Rollout, breaching: str) -> dict[str, Any]:
    seen_since: set[str | None] = set()

    def rolled_back() -> dict[str, Any] | None:
        status = r.status()
        if status.get("phase") == "RolledBack":
            return status
        seen_since.add(status["slos"][0].get("breachingSince"))
        return None

    final = wait_for("RolledBack", rolled_back, timeout=40)
    assert seen_since == {breaching}, seen_since  # the handover did not reset the window
    return final


def check_one_rollback(
    e2e: EndToEnd, r: Rollout, final: dict[str, Any], breaching: str, signalled: datetime
) -> None:
    """On time, by the new leader, and once: one Event, one incident, one delivered page."""
    rollback = final["rollback"]
    assert rollback["reason"] == "SLOBreach" and rollback["slo"] == "error-rate"
    assert rollback["breachingSince"] == breaching
    held = (ts(rollback["at"]) - ts(breaching)).total_seconds()
    print(f"figure: breachingSince to rollback {held:.3f} s (window {WINDOW:g} s, handover inside)")
    assert WINDOW <= held <= WINDOW + LATE, held
    assert ts(rollback["at"]) > signalled  # the new leader rolled back
    assert r.weights() == (100, 0)
    reasons = r.event_reasons()
    assert reasons.count("RolledBack") == 1, reasons
    assert reasons.count("PageDelivered") == 1, reasons
    assert reasons.count("Started") == 1, reasons
    assert len(e2e.pagerduty.incidents()) == 1
    assert len(e2e.pagerduty.events()) == 1
    assert [c["status"] for c in e2e.pagerduty.calls()] == [202]


def test_the_standby_takes_over_a_sigkilled_leader_mid_breach_and_rolls_back_once(
    e2e: EndToEnd, lease: Lease
) -> None:
    handover = breach_and_hand_over(e2e, lease, lambda leader: leader.kill())
    print(
        f"figure: SIGKILL to takeover {handover.takeover:.3f} s, to the standby's first tick "
        f"done {handover.first_tick:.3f} s (lease {LEASE} s, interval {INTERVAL:g} s)"
    )
    # Not before the Lease could have expired: the last renewal was at most 1 s before the
    # kill, and the standby waits the whole 3 s from when it saw it.
    assert handover.takeover >= LEASE * 2 / 3 - 0.05, handover.takeover
    assert handover.takeover <= LEASE + INTERVAL, handover.takeover
    assert handover.first_tick <= handover.takeover + INTERVAL, handover


def test_a_leader_stopped_with_sigterm_releases_the_lease_and_the_standby_takes_over_at_once(
    e2e: EndToEnd, lease: Lease
) -> None:
    stopped: list[Operator] = []

    def terminate(leader: Operator) -> None:
        stopped.append(leader)
        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGTERM)  # as the kubelet does; it exits in its time

    handover = breach_and_hand_over(e2e, lease, terminate)
    (a,) = stopped
    assert a.proc is not None
    assert a.proc.wait(10) == 0
    (released,) = logged(a, "lease released")
    release = (ts(released["time"]) - handover.signalled).total_seconds()
    print(
        f"figure: SIGTERM to release {release:.3f} s, to takeover {handover.takeover:.3f} s, "
        f"to the standby's first tick done {handover.first_tick:.3f} s (lease {LEASE} s)"
    )
    # Faster than any takeover by expiry can be (at least two thirds of the lease).
    assert handover.takeover < LEASE * 2 / 3, handover.takeover
    assert release <= handover.takeover + 0.01
    assert logged(a, "stopped leading")[0]["level"] == "info"  # a handover, not a loss
