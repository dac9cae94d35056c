"""`make demo` end to end, as CI sees it: `python -m canaryguard_testbed.demo` with its output in a
pipe (not a TTY, so plain lines), the real local stack and the real operator. Each run must
end by itself with the expected outcome and leave no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from canaryguard_testbed.stack import STACK_TAG_ENV, leftover_processes

DEMO_BUDGET_SECONDS = 180  # the promise of `make demo`: done by itself in under three minutes
LINE = re.compile(r"^\[\s*\d+\.\ds\] \S")  # every line timestamped...
DETAIL = re.compile(r"^ {11}\S")  # ...except the page's fields, indented under their line


@dataclass
class DemoRun:
    code: int
    out: str
    err: str
    seconds: float
    tag: str

    def lines(self) -> list[str]:
        return self.out.splitlines()

    def index(self, pattern: str) -> int:
        """Index of the first line matching `pattern` (a regex); fails when there is none."""
        for i, line in enumerate(self.lines()):
            if re.search(pattern, line):
                return i
        raise AssertionError(f"no line matches {pattern!r} in:\n{self.out}\n{self.err}")

    def last_index(self, pattern: str) -> int:
        """Index of the last line matching `pattern`."""
        lines = self.lines()
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no line matches {pattern!r} in:\n{self.out}\n{self.err}"
        return found[-1]


def start_demo(*args: str) -> tuple[subprocess.Popen[str], str]:
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "canaryguard_testbed.demo", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, STACK_TAG_ENV: tag, "PYTHONUNBUFFERED": "1"},
    )
    return proc, tag


def run_demo(*args: str) -> DemoRun:
    began = time.monotonic()
    proc, tag = start_demo(*args)
    try:
        out, err = proc.communicate(timeout=DEMO_BUDGET_SECONDS + 30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # it stops its stack on SIGTERM
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"the demo did not finish by itself:\n{out}\n{err}") from None
    return DemoRun(proc.returncode, out, err, time.monotonic() - began, tag)


def assert_clean(run: DemoRun) -> None:
    """Plain timestamped lines only, and no process of the demo's stack left running."""
    for line in run.lines():
        assert LINE.match(line) or DETAIL.match(line), f"not a plain progress line: {line!r}"
    assert "\x1b[" not in run.out, "escape codes in non-interactive output"
    assert leftover_processes(run.tag) == [], "the demo left processes running"


def test_default_demo_rolls_back_the_error_spike_and_prints_the_page() -> None:
    run = run_demo()
    assert run.code == 0, f"exit {run.code}\n{run.out}\n{run.err}"
    assert run.seconds < DEMO_BUDGET_SECONDS, run.seconds
    assert_clean(run)
    # The story in order: a step, the regression, the sustained breach, back to v1, the page.
    stepped = run.index(r"decision StepAdvanced: step 2/3: canary 20% -> 50%")
    injected = run.index(r"demo Regression: v2 starts answering 4% of requests with HTTP 500")
    breach = run.index(r"SLO error-rate: breach \(baseline")
    rolled_back = run.index(r"decision RolledBack: SLO error-rate breached for \S+ \(window 8s\)")
    back_on_v1 = run.last_index(r"VirtualService weights v1 100% / v2 0%$")
    page = run.index(r"PagerDuty receiver got a trigger event:")
    result = run.index(r"RESULT OK: RolledBack .* error-rate canary")
    assert stepped < injected < breach < rolled_back < back_on_v1 < result
    assert rolled_back < page < result
    assert run.index(r"^ +dedup_key +canaryguard/ml/fraud-model/demo-xgb-retrain$") > page
    assert run.index(r"^ +custom_details\.slo +error-rate$") > page
    assert run.index(r"^ +summary +canaryguard rolled back ml/fraud-model .*error-rate") > page
    assert "R0UT1NGKEY" not in run.out and "DEM0R0UT1NGKEY" not in run.out
    assert re.search(r"done in \d+:\d\d$", run.lines()[-1])


def test_healthy_demo_is_promoted_without_a_page() -> None:
    run = run_demo("--scenario=healthy")
    assert run.code == 0, f"exit {run.code}\n{run.out}\n{run.err}"
    assert run.seconds < DEMO_BUDGET_SECONDS, run.seconds
    assert_clean(run)
    assert run.index(r"VirtualService weights v1 50% / v2 50%$") < run.index(
        r"VirtualService weights v1 0% / v2 100%$"
    )
    assert run.index(r"decision Promoted: promoted: canary at 100%") < run.index(
        r"RESULT OK: Promoted"
    )
    assert "Regression" not in run.out
    assert "PagerDuty receiver got" not in run.out


def test_interrupted_demo_stops_everything_it_started() -> None:
    proc, tag = start_demo("--scenario=healthy")
    assert proc.stdout is not None
    try:
        # Interrupt in the middle of the rollout, with every part of the stack running.
        deadline = time.monotonic() + 120
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if "decision Started" in line or not line:
                break
        assert any("decision Started" in line for line in seen), "".join(seen)
        assert len(leftover_processes(tag)) >= 6  # etcd, apiserver, prometheus, 3 mesh, ...
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, f"exit {proc.returncode}\n{''.join(seen)}{out}\n{err}"
    assert "interrupted" in out
    assert leftover_processes(tag) == []
