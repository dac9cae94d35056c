"""End to end, dry run and closing the loop with on-call.

- A canary given 20% by hand and failing, under a dry-run rollout, is recorded as
  would-roll-back while the VirtualService is never written and PagerDuty hears nothing.
- Revision r1 fails, is rolled back and pages; revision r2 is healthy and promoted, and the
  operator resolves r1's incident at the test bed's PagerDuty receiver with the same dedup key.
- Revisions r1 and r2 are both rolled back; r3's promotion resolves both incidents.

The real operator runs under the shipped RBAC; real HTTP goes through the router to v1 and v2;
Prometheus scrapes the router and the model servers every second; ticks are 1 s."""

from tests.integration.fixtures_e2e import ROUTING_KEY, EndToEnd, error_rate_slo
from tests.integration.fixtures_operator import Rollout, condition, history, wait_for


def test_a_breaching_canary_in_a_dry_run_would_roll_back_and_nothing_is_written_or_paged(
    e2e: EndToEnd,
) -> None:
    window = 6.0
    r = e2e.rollout(
        create=False,
        dryRun=True,
        steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}],
        slos=[error_rate_slo(window=f"{window:g}s")],
    )
    r.set_weights(80, 20)  # a share given by hand before the dry run
    version = r.vs()["metadata"]["resourceVersion"]
    e2e.mesh.control("v2", {"error_rate": 0.3})
    r.apply()
    with e2e.traffic(rate=80):
        op = e2e.operator()
        status = r.wait_phase("RolledBack")
        op.wait_ticks(3)  # a finished dry run writes nothing afterwards either

    assert status["dryRun"] is True
    assert status["message"].startswith("dry run: rolled back")
    rollback = status["rollback"]
    assert (rollback["reason"], rollback["slo"]) == ("SLOBreach", "error-rate")
    assert rollback["canary"] > rollback["baseline"] + 0.02, rollback
    assert condition(status, "Progressing")["reason"] == "WouldRollBack"
    assert "page" not in status
    assert [h["message"][:8] for h in history(status, "WouldRollBack")] == ["dry run:"]
    # The VirtualService was never written: same resourceVersion, the hand-set 80/20.
    assert r.vs()["metadata"]["resourceVersion"] == version
    assert r.weights() == (80, 20)
    assert e2e.pagerduty.calls() == []
    reasons = r.event_reasons()
    assert reasons.count("WouldRollBack") == 1
    assert "RolledBack" not in reasons and "StepAdvanced" not in reasons
    assert op.metric("canaryguard_decisions_total", action="Warning", reason="WouldRollBack") == 1
    assert op.metric("canaryguard_decisions_total", action="Warning", reason="RolledBack") is None
    print(f"\ndry run: would roll back, canary {rollback['canary']} vs {rollback['baseline']}")


# The revision that follows rolled-back ones: promoted within seconds.
QUICK_STEPS = [{"weight": 50, "hold": "4s"}, {"weight": 100, "hold": "4s"}]


def revision_r1(e2e: EndToEnd) -> Rollout:
    """Revision r1 at 50% for a minute, one error-rate SLO. Its lookback is shorter than the
    window: a revision's failures leave the query before they could sustain a breach of the
    next revision."""
    return e2e.rollout(
        revision="r1",
        steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}],
        slos=[error_rate_slo(window="6s", lookback="4s")],
    )


def test_the_next_revision_promoted_resolves_the_rolled_back_revision_s_incident(
    e2e: EndToEnd,
) -> None:
    r = revision_r1(e2e)
    m = e2e.mesh
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        m.control("v2", {"error_rate": 0.3})
        r.wait_phase("RolledBack")
        page = r.wait_page("Delivered", timeout=30)["page"]
        m.reset("v2")
        assert [i["status"] for i in e2e.pagerduty.incidents()] == ["triggered"]

        r.patch_spec(
            {
                "revision": "r2",
                "steps": QUICK_STEPS,
            }
        )
        wait_for(
            "r2 promoted and r1's incident resolved",
            lambda: (r.status().get("previousIncident") or {}).get("state") == "Resolved",
            timeout=90,
        )

    status = r.status()
    assert (status["phase"], status["revision"]) == ("Promoted", "r2")
    incident = status["previousIncident"]
    assert (incident["dedupKey"], incident["revision"], incident["resolvedBy"]) == (
        page["dedupKey"],
        "r1",
        "r2",
    )
    events = e2e.pagerduty.events()
    assert [(e["event"]["event_action"], e["effect"]) for e in events] == [
        ("trigger", "opened"),
        ("resolve", "resolved"),
    ]
    resolve = events[1]["event"]
    assert (
        resolve["dedup_key"]
        == page["dedupKey"]
        == "canaryguard/" + (f"{e2e.namespace}/fraud-model/r1")
    )
    assert resolve["routing_key"] == ROUTING_KEY
    assert "payload" not in resolve
    [opened] = e2e.pagerduty.incidents()
    assert opened["status"] == "resolved"
    reasons = r.event_reasons()
    assert "ResolvingIncident" in reasons and "IncidentResolved" in reasons
    assert reasons.count("RolledBack") == 1
    # r2 started on the tick that saw it, with its metrics read: no false outage on the way.
    assert "MetricsOutage" not in reasons


def test_two_rolled_back_revisions_then_a_promoted_one_resolve_both_incidents(
    e2e: EndToEnd,
) -> None:
    """r1 and r2 both fail and are rolled back (incidents A and B); r3 is promoted and the
    operator resolves both at the PagerDuty receiver, each once with its own dedup key (before,
    only B was resolved and A stayed open for ever)."""
    r = revision_r1(e2e)
    m = e2e.mesh
    keys = []
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        m.control("v2", {"error_rate": 0.3})
        for revision in ("r1", "r2"):
            if revision != "r1":
                r.patch_spec({"revision": revision})
            wait_for(
                f"{revision} rolled back and paged",
                lambda rev=revision: (
                    (s := r.status()).get("revision") == rev
                    and s.get("phase") == "RolledBack"
                    and (s.get("page") or {}).get("state") == "Delivered"
                ),
                timeout=60,
            )
            keys.append(r.status()["page"]["dedupKey"])
        m.reset("v2")
        assert [i["status"] for i in e2e.pagerduty.incidents()] == ["triggered", "triggered"]

        r.patch_spec(
            {
                "revision": "r3",
                "steps": QUICK_STEPS,
            }
        )

        def incidents() -> list[dict[str, object]]:
            s = r.status()
            return [*(s.get("olderIncidents") or []), s.get("previousIncident") or {}]

        wait_for(
            "r3 promoted and both incidents resolved",
            lambda: [i.get("state") for i in incidents()] == ["Resolved", "Resolved"],
            timeout=90,
        )

    status = r.status()
    assert (status["phase"], status["revision"]) == ("Promoted", "r3")
    prefix = f"canaryguard/{e2e.namespace}/fraud-model/"
    assert keys == [prefix + "r1", prefix + "r2"]
    assert [(i["dedupKey"], i["revision"], i["resolvedBy"]) for i in incidents()] == [
        (keys[0], "r1", "r3"),
        (keys[1], "r2", "r3"),
    ]
    events = e2e.pagerduty.events()
    resolves = [e["event"]["dedup_key"] for e in events if e["event"]["event_action"] == "resolve"]
    assert sorted(resolves) == keys  # one resolve per key
    assert [i["status"] for i in e2e.pagerduty.incidents()] == ["resolved", "resolved"]
    assert r.event_reasons().count("ResolvingIncident") == 2
