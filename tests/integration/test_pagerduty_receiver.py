"""The local PagerDuty receiver honours the Events API v2 enqueue contract: it validates
events as documented, deduplicates into incidents by dedup_key, follows the
acknowledge/resolve lifecycle and injects the faults the operator must survive."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver

KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "fedcba9876543210fedcba9876543210"


def post(url: str, body: object, *, raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
    """POST JSON (or raw bytes) and return status, decoded answer and headers."""
    data = raw if raw is not None else json.dumps(body).encode()
    # Only loopback http:// URLs of the receiver reach here.
    request = urllib.request.Request(  # noqa: S310
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error), dict(error.headers)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return json.load(response)


def trigger(dedup_key: str | None = "rollout/ns/demo/3", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": KEY,
        "event_action": "trigger",
        "payload": {
            "summary": "canary v2 of ns/demo rolled back: error rate 4.1% vs 0.3%",
            "source": "canaryguard/ns/demo",
            "severity": "critical",
        },
    }
    if dedup_key is not None:
        event["dedup_key"] = dedup_key
    event.update(extra)
    return event


def follow_up(action: str, dedup_key: str = "rollout/ns/demo/3", key: str = KEY) -> dict[str, Any]:
    return {"routing_key": key, "event_action": action, "dedup_key": dedup_key}


# --------------------------------------------------------------------------- accepting


def test_a_valid_trigger_is_accepted_with_its_dedup_key(pagerduty: PagerDutyReceiver) -> None:
    status, answer, _ = post(pagerduty.url, trigger())

    assert status == 202
    assert answer == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": "rollout/ns/demo/3",
    }
    [event] = pagerduty.events()
    assert event["effect"] == "opened"
    assert event["event"]["payload"]["severity"] == "critical"
    [call] = pagerduty.calls()
    assert call["status"] == 202
    assert json.loads(call["body"]) == trigger()


def test_every_documented_optional_field_is_accepted(pagerduty: PagerDutyReceiver) -> None:
    event = trigger(
        links=[{"href": "http://prometheus:9090/graph?g0.expr=x", "text": "failing query"}],
        images=[
            {"src": "https://example.com/graph.png", "href": "https://example.com", "alt": "g"}
        ],
        client="canaryguard",
        client_url="http://prometheus:9090",
    )
    event["payload"].update(
        timestamp="2015-07-17T08:42:58.315+0000",
        component="fraud-model",
        group="ns",
        **{"class": "canary rollback"},
        custom_details={"slo": "error-rate", "baseline": 0.003, "canary": 0.041},
    )
    assert post(pagerduty.url, event)[0] == 202
    [incident] = pagerduty.incidents()
    assert incident["custom_details"]["canary"] == 0.041
    assert incident["links"][0]["text"] == "failing query"


def test_limits_are_inclusive(pagerduty: PagerDutyReceiver) -> None:
    event = trigger("k" * 255)
    event["payload"]["summary"] = "s" * 1024
    assert post(pagerduty.url, event)[0] == 202


def test_a_trigger_without_dedup_key_gets_a_fresh_one_each_time(
    pagerduty: PagerDutyReceiver,
) -> None:
    first = post(pagerduty.url, trigger(None))[1]["dedup_key"]
    second = post(pagerduty.url, trigger(None))[1]["dedup_key"]

    assert first and second and first != second
    assert [i["dedup_key"] for i in pagerduty.incidents()] == [first, second]


# ---------------------------------------------------------------------------- rejecting


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = event
        for name in parents:
            target = target[name]
        target[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = event
        for name in parents:
            target = target[name]
        del target[last]

    return mutate


INVALID = {
    "routing_key missing": (_drop("routing_key"), "routing_key"),
    "routing_key too short": (_set("routing_key", KEY[:31]), "routing_key"),
    "routing_key too long": (_set("routing_key", KEY + "0"), "routing_key"),
    "routing_key not a string": (_set("routing_key", 12345), "routing_key"),
    "event_action missing": (_drop("event_action"), "event_action"),
    "event_action unknown": (_set("event_action", "escalate"), "event_action"),
    "dedup_key too long": (_set("dedup_key", "k" * 256), "dedup_key"),
    "dedup_key not a string": (_set("dedup_key", 7), "dedup_key"),
    "payload missing": (_drop("payload"), "payload"),
    "payload not an object": (_set("payload", "boom"), "payload"),
    "summary missing": (_drop("payload.summary"), "payload.summary"),
    "summary empty": (_set("payload.summary", ""), "payload.summary"),
    "summary too long": (_set("payload.summary", "s" * 1025), "payload.summary"),
    "source missing": (_drop("payload.source"), "payload.source"),
    "severity missing": (_drop("payload.severity"), "payload.severity"),
    "severity unknown": (_set("payload.severity", "fatal"), "payload.severity"),
    "timestamp not ISO 8601": (_set("payload.timestamp", "yesterday"), "payload.timestamp"),
    "timestamp without time": (_set("payload.timestamp", "2015-07-17"), "payload.timestamp"),
    "component not a string": (_set("payload.component", 1), "payload.component"),
    "group not a string": (_set("payload.group", []), "payload.group"),
    "class not a string": (_set("payload.class", {}), "payload.class"),
    "custom_details not an object": (
        _set("payload.custom_details", ["x"]),
        "payload.custom_details",
    ),
    "links not an array": (_set("links", {"href": "x"}), "links"),
    "link without href": (_set("links", [{"text": "t"}]), "links[0].href"),
    "link text not a string": (_set("links", [{"href": "h", "text": 3}]), "links[0].text"),
    "image without src": (_set("images", [{"alt": "a"}]), "images[0].src"),
    "image not over https": (_set("images", [{"src": "http://x/y.png"}]), "images[0].src"),
    "client not a string": (_set("client", 3), "client"),
    "client_url not a string": (_set("client_url", 3), "client_url"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_event_is_rejected_naming_the_field(
    pagerduty: PagerDutyReceiver, case: str
) -> None:
    mutate, field = INVALID[case]
    event = copy.deepcopy(trigger())
    mutate(event)

    status, answer, _ = post(pagerduty.url, event)

    assert status == 400
    assert answer["status"] == "invalid event"
    assert answer["message"] == "Event object is invalid"
    assert any(f"'{field}'" in error for error in answer["errors"]), answer["errors"]
    assert pagerduty.events() == []
    assert pagerduty.incidents() == []
    assert [c["status"] for c in pagerduty.calls()] == [400]


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_follow_ups_need_a_dedup_key(pagerduty: PagerDutyReceiver, action: str) -> None:
    status, answer, _ = post(pagerduty.url, {"routing_key": KEY, "event_action": action})

    assert status == 400
    assert any("'dedup_key'" in e and action in e for e in answer["errors"])


def test_every_problem_is_reported_at_once(pagerduty: PagerDutyReceiver) -> None:
    event = {"routing_key": "short", "event_action": "trigger", "payload": {"severity": "x"}}
    errors = post(pagerduty.url, event)[1]["errors"]

    for field in ("routing_key", "payload.summary", "payload.source", "payload.severity"):
        assert any(f"'{field}'" in e for e in errors), (field, errors)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [(b'{"routing_key": ', "JSON"), (b"\xff\xfe", "JSON"), (b"[1, 2]", "object")],
)
def test_a_body_that_is_not_an_event_object_is_rejected(
    pagerduty: PagerDutyReceiver, raw: bytes, needle: str
) -> None:
    status, answer, _ = post(pagerduty.url, None, raw=raw)

    assert status == 400
    assert answer["status"] == "invalid event"
    assert needle in answer["errors"][0]
    assert pagerduty.events() == []


# ------------------------------------------------------------------- dedup and lifecycle


def test_the_same_dedup_key_is_deduplicated_into_one_incident(
    pagerduty: PagerDutyReceiver,
) -> None:
    assert post(pagerduty.url, trigger())[0] == 202
    assert post(pagerduty.url, trigger())[0] == 202

    [incident] = pagerduty.incidents()
    assert incident["trigger_count"] == 2
    assert [e["effect"] for e in pagerduty.events()] == ["opened", "deduplicated"]


def test_dedup_is_per_routing_key(pagerduty: PagerDutyReceiver) -> None:
    post(pagerduty.url, trigger())
    post(pagerduty.url, trigger(routing_key=OTHER_KEY))
    # A resolve through another integration does not touch this incident.
    post(pagerduty.url, follow_up("resolve", key=OTHER_KEY))

    assert [i["status"] for i in pagerduty.incidents()] == ["triggered", "resolved"]


def test_acknowledge_and_resolve_drive_the_incident_and_a_new_trigger_reopens(
    pagerduty: PagerDutyReceiver,
) -> None:
    post(pagerduty.url, trigger())
    assert post(pagerduty.url, follow_up("acknowledge"))[0] == 202
    assert [i["status"] for i in pagerduty.incidents()] == ["acknowledged"]

    post(pagerduty.url, trigger())  # still the same, acknowledged incident
    [incident] = pagerduty.incidents()
    assert (incident["status"], incident["trigger_count"]) == ("acknowledged", 2)

    assert post(pagerduty.url, follow_up("resolve"))[0] == 202
    assert [i["status"] for i in pagerduty.incidents()] == ["resolved"]

    post(pagerduty.url, trigger())
    first, second = pagerduty.incidents()
    assert (first["status"], second["status"]) == ("resolved", "triggered")
    assert first["dedup_key"] == second["dedup_key"] and first["id"] != second["id"]
    assert [entry["action"] for entry in first["log"]] == [
        "trigger",
        "acknowledge",
        "trigger",
        "resolve",
    ]


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_a_follow_up_without_an_open_incident_is_accepted_and_dropped(
    pagerduty: PagerDutyReceiver, action: str
) -> None:
    status, answer, _ = post(pagerduty.url, follow_up(action, "never-triggered"))

    assert status == 202
    assert answer["dedup_key"] == "never-triggered"
    assert pagerduty.incidents() == []
    [event] = pagerduty.events()
    assert (event["effect"], event["incident_id"]) == ("dropped", None)


# ------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("status", [500, 503, 429])
def test_fail_next_answers_the_next_n_calls_then_recovers(
    pagerduty: PagerDutyReceiver, status: int
) -> None:
    pagerduty.fail_next(2, status=status)

    answers = [post(pagerduty.url, trigger())[0] for _ in range(3)]

    assert answers == [status, status, 202]
    assert [c["injected"] for c in pagerduty.calls()] == [True, True, False]
    assert len(pagerduty.events()) == 1
    assert len(pagerduty.incidents()) == 1


def test_a_429_can_carry_retry_after(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(1, status=429, retry_after=3)

    status, answer, headers = post(pagerduty.url, trigger())

    assert (status, headers["Retry-After"]) == (429, "3")
    assert answer["message"] == "Request Limit Exceeded"


def test_faults_queue_in_order(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(1, status=500)
    pagerduty.fail_next(1, status=429)

    assert [post(pagerduty.url, trigger())[0] for _ in range(3)] == [500, 429, 202]


def test_fail_for_answers_every_call_of_a_period_then_recovers(
    pagerduty: PagerDutyReceiver,
) -> None:
    pagerduty.fail_for(0.6, status=429, retry_after=1)

    during = [post(pagerduty.url, trigger()) for _ in range(3)]
    time.sleep(0.7)
    after = post(pagerduty.url, trigger())[0]

    assert [(status, headers.get("Retry-After")) for status, _, headers in during] == [
        (429, "1")
    ] * 3
    assert after == 202
    assert [c["injected"] for c in pagerduty.calls()] == [True, True, True, False]
    assert len(pagerduty.incidents()) == 1


def test_counted_faults_come_before_a_period_and_clear_faults_ends_both(
    pagerduty: PagerDutyReceiver,
) -> None:
    pagerduty.fail_for(30, status=500)
    pagerduty.fail_next(1, status=429)

    assert [post(pagerduty.url, trigger())[0] for _ in range(2)] == [429, 500]
    assert [f["status"] for f in pagerduty.state()["pending_faults"]] == [500]
    pagerduty.clear_faults()
    assert post(pagerduty.url, trigger())[0] == 202
    assert len(pagerduty.calls()) == 3


def test_faults_and_delays_over_the_control_endpoint(pagerduty: PagerDutyReceiver) -> None:
    assert post(pagerduty.base_url + "/_receiver/fail", {"count": 1, "status": 502})[0] == 200
    assert post(pagerduty.base_url + "/_receiver/delay", {"count": 1, "seconds": 0.3})[0] == 200
    assert post(pagerduty.base_url + "/_receiver/fail", {"count": "x"})[0] == 400

    started = time.monotonic()
    assert post(pagerduty.url, trigger())[0] == 502
    assert time.monotonic() - started >= 0.3
    assert post(pagerduty.url, trigger())[0] == 202


def test_the_state_endpoint_shows_everything_and_reset_clears_it(
    pagerduty: PagerDutyReceiver,
) -> None:
    post(pagerduty.url, trigger())
    pagerduty.fail_next(5, status=500)

    state = get(pagerduty.base_url + "/_receiver/state")
    assert state["incidents"] == pagerduty.incidents()
    assert state["pending_faults"] == [{"remaining": 5, "status": 500, "retry_after": None}]

    post(pagerduty.base_url + "/_receiver/reset", {})
    assert (pagerduty.events(), pagerduty.calls(), pagerduty.incidents()) == ([], [], [])
    assert post(pagerduty.url, trigger())[0] == 202


def test_the_rate_limit_per_routing_key_answers_429() -> None:
    with PagerDutyReceiver(rate_limit_per_minute=2) as receiver:
        answers = [post(receiver.url, trigger())[0] for _ in range(3)]
        other = post(receiver.url, trigger(routing_key=OTHER_KEY))[0]

    assert answers == [202, 202, 429]
    assert other == 202


def test_runs_as_a_process_for_the_demo() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "canaryguard_testbed.pagerduty_receiver", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v2/enqueue")
        assert post(url, trigger())[0] == 202
        state = get(url.removesuffix("/v2/enqueue") + "/_receiver/state")
        assert len(state["incidents"]) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
