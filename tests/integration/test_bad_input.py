"""Bad input: a corpus of malformed CanaryRollouts (data/bad-rollouts.yaml, and huge objects
made here), each applied with the real kubectl to the real API server while the real operator
serves a healthy rollout with real traffic in the same namespace.

Each one is either refused by the API server (schema, CEL, or strict field validation) with
the field named, or taken and then set Invalid by the operator with the field named in the
status message and the SpecValid condition. Meanwhile the operator never crashes, never
logs a failed tick, and the healthy rollout keeps being judged and moved along its steps.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.integration.fixtures_e2e import EndToEnd, fraud_virtual_service, rollout_body
from tests.integration.fixtures_operator import Rollout, condition, wait_for
from tests.integration.traffic import Traffic

CORPUS = Path(__file__).parent / "data" / "bad-rollouts.yaml"
REFUSED = ("schema", "cel", "unknown-field")
TARGET = "bad-target"  # the VirtualService the bad rollouts name (it exists)
# The healthy rollout moves 10 points every few seconds while the corpus is applied, then
# holds at 100% (still judged at every tick) until the end of the test.
HEALTHY_STEPS = [{"weight": w, "hold": "4s"} for w in range(10, 100, 10)] + [
    {"weight": 100, "hold": "600s"}
]
# On a loaded 2-core machine; the healthy rollout's status is written at nearly every tick
# (its SLO values and request counts move with the traffic), and at each step.
MAX_SILENCE = 10.0


@dataclass(frozen=True)
class Case:
    """One malformed rollout: edits of the base, and where it must be stopped."""

    name: str
    expect: str  # schema | cel | unknown-field | invalid
    field: str
    message: str
    set: dict[str, Any] = field(default_factory=dict)
    unset: tuple[str, ...] = ()

    @property
    def rollout(self) -> str:
        return f"bad-{self.name}"[:63]


def huge_cases() -> list[Case]:
    """Objects far beyond the schema's bounds, still under the API server's 3 MiB limit."""
    mib = 1 << 20
    version = '{version="{{ version }}"}'
    return [
        Case(
            "huge-revision",
            "schema",
            "spec.revision",
            "Too long: may not be more than 128",
            set={"spec.revision": "r" * mib},
        ),
        Case(
            "huge-template",
            "schema",
            "spec.analysis.slos[0].query.template",
            "Too long: may not be more than 2048",
            set={
                "spec.analysis.slos[0]": {
                    "name": "q",
                    "query": {"template": f"x{version}" + " or x" * (mib // 5)},
                    "limit": 1,
                }
            },
        ),
        Case(
            "huge-selector",
            "schema",
            "spec.metrics.selector",
            "Too many: 10000: must have at most 16 items",
            set={"spec.metrics.selector": {f"label_{i}": "x" * 20 for i in range(10_000)}},
        ),
        Case(
            "huge-schedule",
            "schema",
            "spec.steps",
            "must have at most 20 items",
            set={"spec.steps": [{"weight": 1 + i // 11} for i in range(1_000)] + [{"weight": 100}]},
        ),
        Case(
            "huge-slo-list",
            "schema",
            "spec.analysis.slos",
            "must have at most 20 items",
            set={
                "spec.analysis.slos": [
                    {"name": f"slo-{i}", "errorRate": {}, "limit": 0.05} for i in range(500)
                ]
            },
        ),
        Case(
            "huge-weight",
            "schema",
            "spec.steps[0].weight",
            "must be of type integer",
            set={"spec.steps[0].weight": 1e300},
        ),
        Case(
            "template-nested-too-deep",
            "invalid",
            "spec.analysis.slos[0].query.template",
            "too complex: 1001 operators and brackets, at most 200",
            set={
                "spec.analysis.slos[0]": {
                    "name": "q",
                    "query": {"template": "-" * 1000 + f"x{version}"},
                    "limit": 1,
                }
            },
        ),
    ]


def corpus() -> list[Case]:
    cases = [
        Case(**{**c, "unset": tuple(c.get("unset", ()))})
        for c in yaml.safe_load(CORPUS.read_text())
    ]
    return cases + huge_cases()


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _steps(path: str) -> list[str | int]:
    return [key if key else int(index) for key, index in _STEP.findall(path)]


def set_path(obj: Any, path: str, value: Any) -> None:
    *parents, last = _steps(path)
    for step in parents:
        obj = obj[step]
    if isinstance(last, int) and last == len(obj):
        obj.append(copy.deepcopy(value))
    else:
        obj[last] = copy.deepcopy(value)


def unset_path(obj: Any, path: str) -> None:
    *parents, last = _steps(path)
    for step in parents:
        obj = obj[step]
    del obj[last]


def bad_body(base: dict[str, Any], case: Case) -> dict[str, Any]:
    body = copy.deepcopy(base)
    body["metadata"]["name"] = case.rollout
    for path, value in case.set.items():
        set_path(body, path, value)
    for path in case.unset:
        unset_path(body, path)
    return body


@dataclass
class Outcome:
    case: Case
    refused: str | None = None  # kubectl's stderr when the API server refused it
    status: dict[str, Any] = field(default_factory=dict)

    def problem(self) -> str | None:
        """What is wrong with how this case was stopped, or None."""
        case = self.case
        if case.expect in REFUSED:
            if self.refused is None:
                return f"accepted (phase {self.status.get('phase')}): {self.status.get('message')}"
            if case.field not in self.refused or case.message not in self.refused:
                return f"refused, but not naming {case.field!r} with {case.message!r}"
            return None
        if self.refused is not None:
            return "refused by the API server; the operator was to set it Invalid"
        message = str(self.status.get("message", ""))
        if self.status.get("phase") != "Invalid":
            return f"phase {self.status.get('phase')}: {message}"
        spec_valid = condition(self.status, "SpecValid")
        wanted = f"{case.field}: "
        if not message.startswith(f"invalid: {wanted}") or case.message not in message:
            return f"Invalid, but not naming {case.field!r} with {case.message!r}"
        if spec_valid["status"] != "False" or not spec_valid["message"].startswith(wanted):
            return f"SpecValid condition {spec_valid}"
        return None

    def said(self) -> str:
        text = self.refused if self.refused is not None else str(self.status.get("message"))
        return " ".join(text.split())[:300]


class Watch:
    """Samples the healthy rollout every 0.25 s in a thread: when its status changed, and
    which step it was at."""

    def __init__(self, rollout: Rollout) -> None:
        self.rollout = rollout
        self.changes: list[tuple[float, int | None]] = []  # (monotonic time, step index)
        self._last: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-healthy", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            body = self.rollout.get()
            version = body["metadata"]["resourceVersion"]
            if version != self._last:
                self._last = version
                self.changes.append((time.monotonic(), (body.get("status") or {}).get("stepIndex")))
            self._stop.wait(0.25)

    def longest_silence(self, since: float, until: float) -> float:
        """The longest time between two status changes in [since, until]."""
        times = [since, *(t for t, _ in self.changes if since < t < until), until]
        return max(b - a for a, b in itertools.pairwise(times))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_the_corpus_has_what_the_issue_lists() -> None:
    cases = corpus()
    assert len(cases) >= 40
    assert len({c.name for c in cases}) == len(cases)
    names = " ".join(c.name for c in cases)
    for topic in (
        "as-string",
        "steps-decreasing",
        "last-step-not-100",
        "in-words",
        "negative",
        "slo-kind-unknown",
        "inline",
        "route-of-a-running-rollout",
        "huge",
    ):
        assert topic in names, topic


def test_every_malformed_rollout_is_refused_or_invalid_naming_the_field(e2e: EndToEnd) -> None:
    control_plane, namespace = e2e.cp, e2e.namespace
    healthy = e2e.rollout(steps=HEALTHY_STEPS)
    target = fraud_virtual_service(namespace, TARGET)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(target))
    base = rollout_body(
        namespace,
        e2e.prometheus.url,
        e2e.pagerduty.url,
        virtualService={"name": TARGET, "routes": ["primary"]},
    )
    cases = corpus()
    outcomes = {c.name: Outcome(c) for c in cases}
    with Traffic(e2e.mesh, rate=60, max_seconds=400):
        op = e2e.operator()
        wait_for(
            "the healthy rollout at 90/10",
            lambda: healthy.phase() == "Progressing" and healthy.weights() == (90, 10),
            timeout=20,
        )
        with Watch(healthy) as watch:
            started = time.monotonic()
            for case in cases:
                result = control_plane.kubectl(
                    "apply", "-f", "-", input=json.dumps(bad_body(base, case)), check=False
                )
                if result.returncode != 0:
                    outcomes[case.name].refused = result.stderr
            applied = time.monotonic()
            accepted = [o for o in outcomes.values() if o.refused is None]

            def all_judged() -> bool:
                items = json.loads(
                    control_plane.kubectl(
                        "get", "canaryrollouts", "-n", namespace, "-o=json"
                    ).stdout
                )["items"]
                by_name = {i["metadata"]["name"]: i.get("status") or {} for i in items}
                for outcome in accepted:
                    outcome.status = by_name.get(outcome.case.rollout, {})
                return all(o.status.get("phase") for o in accepted)

            # Each is ticked as soon as the watch brings it; what has no phase by then is
            # reported below with the rest.
            deadline = time.monotonic() + 30
            while not all_judged() and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(3)  # long enough for a rollout set Invalid by mistake to move on
            all_judged()
            # The healthy rollout goes on: judged, moved along, written at every step.
            wait_for(
                "the healthy rollout at 100%",
                lambda: healthy.weights() == (0, 100),
                timeout=60,
            )
            finished = time.monotonic()
            time.sleep(MAX_SILENCE)
            ended = time.monotonic()

    table = "\n".join(
        f"  {o.case.expect:13} {'refused' if o.refused else o.status.get('phase', '?'):8} "
        f"{o.case.name}: {o.said()}"
        for o in outcomes.values()
    )
    counts = {k: sum(o.case.expect == k for o in outcomes.values()) for k in (*REFUSED, "invalid")}
    print(f"\n{len(cases)} malformed rollouts {counts}, applied in {applied - started:.1f}s:")
    print(table)
    failures = [f"{name}: {p}" for name, o in outcomes.items() if (p := o.problem()) is not None]
    assert failures == [], "\n".join(failures)

    status = healthy.status()
    assert status["phase"] == "Progressing" and status["stepIndex"] == len(HEALTHY_STEPS) - 1
    steps_seen = {step for _, step in watch.changes if step is not None}
    assert steps_seen == set(range(len(HEALTHY_STEPS))), steps_seen
    silence = watch.longest_silence(started, ended)
    print(
        f"healthy rollout: longest time without a status write {silence:.1f}s "
        f"(corpus applied and judged in {finished - started:.1f}s)"
    )
    assert silence <= MAX_SILENCE, silence
    assert op.proc is not None and op.proc.poll() is None
    log = op.log_path.read_text(errors="replace")
    assert "tick failed" not in log and "Traceback" not in log, op.log_tail(80)
    # Nothing was ever written to the VirtualService the bad rollouts name.
    vs = json.loads(
        control_plane.kubectl("get", "virtualservice", TARGET, "-n", namespace, "-o=json").stdout
    )
    assert vs["spec"] == target["spec"]
    assert e2e.pagerduty.events() == []
