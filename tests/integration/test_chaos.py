"""A small fault campaign (the one `make chaos` runs, scaled down): ten rollouts, half of them
breaching, carried by the real operator under the shipped RBAC while it is SIGKILLed at a
random instant and killed at its crash points (right after a rollback's VirtualService write,
before its status write; right after a page, before its delivery is recorded), while
kube-apiserver and Prometheus are restarted and PagerDuty answers 429 with Retry-After and
500 for periods. Its own stack (the API server restart would disturb the session's).

The design's promises, counted as the full campaign counts them (see
`canaryguard_testbed.chaos`): no lost rollback, no promotion of a breaching canary, no second
incident, no rollback later than one interval after its window once the outages the
campaign caused are discounted.

A rollback cut between its VirtualService and status writes is no exception: the operator
re-derives it from the weights it finds (`test_e2e_crash_between_writes.py`), so every lost
rollback fails this test.
"""

from dataclasses import replace
from pathlib import Path

from canaryguard_testbed.chaos import Campaign, Config, dump, render

CONFIG = Config(
    rollouts=10,
    seed=11,
    spacing=2.0,
    kills=1,
    # Armed at probability 1 and capped at one: the first step's weights, the first
    # rollback's weights and the first page each get a crash right after them.
    crash_after_rollback_weights=1.0,
    max_crashes_after_rollback_weights=1,
    crash_after_page=1.0,
    max_crashes_after_page=1,
    crash_after_weights=1.0,
    max_crashes_after_weights=1,
    apiserver_restarts=1,
    prometheus_restarts=1,
    pagerduty_periods=2,
    fault_tail=10.0,
    settle=45.0,
)


def test_a_small_fault_campaign_loses_no_rollback_and_pages_once(tmp_path: Path) -> None:
    campaign = Campaign(
        replace(CONFIG, workdir=tmp_path / "chaos"),
        progress=lambda message: print(f"chaos: {message}", flush=True),
    )
    report = campaign.run()
    dump(report, tmp_path / "chaos.json")
    text = render(report)
    print(text)
    faults = report["faults"]
    # The faults the campaign is about did happen.
    assert faults.get("kill-operator") == 1, faults
    assert faults.get("crash-after-weights") == 1, faults
    assert faults.get("crash-after-rollback-weights") == 1, faults
    assert faults.get("crash-after-page") == 1, faults
    assert faults.get("restart-apiserver") == 1, faults
    assert faults.get("restart-prometheus") == 1, faults
    assert faults.get("pagerduty-429") == 1 and faults.get("pagerduty-500") == 1, faults
    assert report["breaching"] == 5 and report["healthy"] == 5
    # The promises.
    counts = report["counts"]
    assert report["goal_zero"] == {
        "lost_rollbacks": 0,
        "breaching_promoted": 0,
        "second_incidents": 0,
        "late_rollbacks": 0,
    }, text
    assert counts["false_rollbacks"] == 0, text
    assert counts["early_rollbacks"] == 0, text
    assert counts["pages_not_delivered"] == 0, text
    assert counts["weights_not_as_phase"] == 0, text
    assert report["pagerduty"]["incidents"] == 5, text
    assert report["operator_exits"] == [], text
