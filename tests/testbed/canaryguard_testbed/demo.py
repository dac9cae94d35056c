"""`make demo`: a canary of the fraud model rolled out by the real operator on a local stack,
told live in the terminal.

    python -m canaryguard_testbed.demo [--scenario error-spike] [--plain] [--keep] [--rate 90]

It starts kube-apiserver and etcd (with the CRDs and the shipped RBAC), Prometheus, a
PagerDuty receiver, a router with v1 and v2 model servers and steady load through it, and the
operator under its ServiceAccount; then applies the accelerated rollout of
`examples/fraud-model/demo/`. Once the canary has taken a step, the scenario's regression is
injected into v2. The demo exits 0 when the outcome is the expected one (Promoted for
`healthy`, otherwise RolledBack on the scenario's SLO with the page delivered), 1 when it is
not, 130 when interrupted; every process it started is stopped in all cases.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import kubernetes.client
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from canaryguard.core.durations import parse_duration
from canaryguard.core.status import parse_time
from canaryguard_testbed.bins import MissingBinaryError, find_binaries
from canaryguard_testbed.childproc import ChildProcessError, log_tail
from canaryguard_testbed.controlplane import ControlPlaneError, KubectlError
from canaryguard_testbed.demo_view import (
    LiveView,
    PlainView,
    SloView,
    Snapshot,
    TimelineEntry,
    View,
    format_elapsed,
    seconds_since,
    traffic_follows,
    weights_text,
)
from canaryguard_testbed.pagerduty_receiver import STATE_PATH
from canaryguard_testbed.project import demo_dir
from canaryguard_testbed.prometheus_server import (
    PrometheusNotInstalledError,
    PrometheusQueryError,
)
from canaryguard_testbed.scenario import load_scenario
from canaryguard_testbed.stack import LocalStack, leftover_processes

log = logging.getLogger("canaryguard_testbed.demo")

NAMESPACE = "ml"
NAME = "fraud-model"
ROUTE = "primary"
# A made-up key of the right shape; the local receiver checks the shape, not the value.
ROUTING_KEY = "DEM0R0UT1NGKEY0123456789abcdefAB"
POLL_SECONDS = 0.5
INJECT_AFTER_SECONDS = 3.0  # into the second step, so v2 is seen healthy there first
PAGE_WAIT_SECONDS = 30.0
TRAFFIC_WAIT_SECONDS = 8.0  # Prometheus' 5 s rate window, plus scrapes
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass(frozen=True)
class Story:
    """What a scenario does to v2 and which SLO must catch it (None: nothing to catch)."""

    slo: str | None
    regression: str


STORIES: dict[str, Story] = {
    "healthy": Story(None, "v2 behaves like v1: it should take every step and be promoted"),
    "error-spike": Story("error-rate", "v2 starts answering 4% of requests with HTTP 500"),
    "latency": Story("p99-latency", "v2 gets a slow tail: 5% of requests take 400 ms more"),
    "business-drop": Story(
        "conversion-rate",
        "v2 flags more transactions (threshold 0.5 -> 0.2) and fewer approved ones convert",
    ),
    "drift": Story("prediction-drift", "v2's fraud scores drift upwards (logit +1.5)"),
}


class DemoFailure(Exception):
    """The demo could not reach an outcome; the message says why."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: stop everything and exit."""


# -- what gets applied --------------------------------------------------------------------------


def service_manifests() -> list[dict[str, Any]]:
    """The VirtualService (all traffic on v1) and DestinationRule as users have them."""
    text = (demo_dir() / "virtualservice.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def pagerduty_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "pagerduty",
            "namespace": NAMESPACE,
            # Made available to the demo's rollout: the operator reads no other Secret.
            "annotations": {"canaryguard.io/allowed-rollouts": "fraud-model"},
        },
        "stringData": {"routing-key": ROUTING_KEY},
    }


def rollout_manifest(prometheus_url: str, pagerduty_url: str) -> dict[str, Any]:
    """The demo rollout with the addresses of this run's Prometheus and PagerDuty receiver."""
    body: dict[str, Any] = yaml.safe_load((demo_dir() / "canaryrollout.yaml").read_text())
    spec = body["spec"]
    spec["metrics"]["prometheus"]["address"] = prometheus_url
    spec["paging"]["pagerDuty"]["url"] = pagerduty_url
    return body


def regression(scenario: str) -> dict[str, Any]:
    """v2's changes in the scenario file, merged in order: injected at once, not on a timer."""
    changes: dict[str, Any] = {}
    for phase in load_scenario(scenario).plan("v2").phases:
        for key, value in phase.changes.items():
            if isinstance(value, Mapping):
                changes[key] = {**changes.get(key, {}), **value}
            else:
                changes[key] = value
    return changes


def describe_changes(changes: Mapping[str, Any], prefix: str = "") -> str:
    parts = []
    for key, value in changes.items():
        if isinstance(value, Mapping):
            parts.append(describe_changes(value, f"{prefix}{key}."))
        else:
            shown = f"{value:g}" if isinstance(value, int | float) else str(value)
            parts.append(f"{prefix}{key}={shown}")
    return ", ".join(parts)


# -- reading the rollout ----------------------------------------------------------------------


def tolerance(slo: Mapping[str, Any]) -> str:
    """When the SLO breaches, in its unit: `+1 pt & +50%, or > 5%` (v2 worse than v1 by
    both margins, or beyond the limit)."""
    kind = slo_kind(slo)
    lower = slo.get("direction") == "LowerIsWorse"
    sign = "-" if lower else "+"
    margin = slo.get("margin") or {}
    parts = []
    if "absolute" in margin:
        parts.append(sign + _amount(kind, float(margin["absolute"]), points=True))
    if "relative" in margin:
        parts.append(f"{sign}{float(margin['relative']) * 100:g}%")
    text = " & ".join(parts)
    if slo.get("limit") is not None:
        limit = f"{'<' if lower else '>'} {_amount(kind, float(slo['limit']))}"
        text = f"{text}, or {limit}" if text else limit
    return text


def _amount(kind: str, value: float, points: bool = False) -> str:
    if kind == "errorRate":
        return f"{value * 100:g} pt" if points else f"{value * 100:g}%"
    if kind == "latency":
        return f"{value:g} ms"
    return f"{value:g}"


def slo_kind(slo: Mapping[str, Any]) -> str:
    return next((k for k in ("errorRate", "latency", "query") if k in slo), "query")


def vs_weights(vs: Mapping[str, Any], route: str = ROUTE) -> tuple[int, int] | None:
    """(v1, v2) weights of the driven route, in Istio's semantics."""
    for http in vs.get("spec", {}).get("http", []):
        if http.get("name") == route:
            dests = http.get("route", [])
            found = {
                d["destination"].get("subset"): int(d.get("weight", 100 if len(dests) == 1 else 0))
                for d in dests
            }
            return found.get("v1", 0), found.get("v2", 0)
    return None


class Watcher:
    """Reads the rollout, its VirtualService and the live traffic, and keeps the timeline."""

    def __init__(self, stack: LocalStack, rollout: Mapping[str, Any], wall_start: float) -> None:
        self.stack = stack
        self.wall_start = wall_start
        self.began = time.monotonic()
        api = stack.control_plane.api_client()
        self.custom = kubernetes.client.CustomObjectsApi(api)
        spec = rollout["spec"]
        self.steps = tuple(
            (int(s["weight"]), parse_duration(s["hold"]).total_seconds()) for s in spec["steps"]
        )
        self.slo_specs = list(spec["analysis"]["slos"])
        self.timeline: dict[tuple[float, str, str], TimelineEntry] = {}
        self.traffic: dict[str, float] = {}
        self._traffic_read = 0.0

    def demo_event(self, action: str, message: str, at: float | None = None) -> None:
        """A step of the demo itself in the timeline; `at` is a time.time() value."""
        when = (time.time() if at is None else at) - self.wall_start
        entry = TimelineEntry(when, action, message, source="demo")
        self.timeline[(entry.at, entry.action, entry.message)] = entry

    def _get(self, group: str, version: str, plural: str) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(
            group, version, NAMESPACE, plural, NAME, _request_timeout=5
        )
        return body if isinstance(body, dict) else {}

    def rollout(self) -> dict[str, Any]:
        return self._get("canaryguard.io", "v1alpha1", "canaryrollouts")

    def weights(self) -> tuple[int, int] | None:
        return vs_weights(self._get("networking.istio.io", "v1", "virtualservices"))

    def read_traffic(self) -> dict[str, float]:
        """Requests per second each version served over the last 5 s (once a second)."""
        if time.monotonic() - self._traffic_read >= 1.0:
            self._traffic_read = time.monotonic()
            query = (
                "sum by (destination_version) (rate(istio_requests_total{"
                f'reporter="destination",destination_service_name="{NAME}",'
                f'destination_service_namespace="{NAMESPACE}"}}[5s]))'
            )
            try:
                self.traffic = self.stack.prometheus.query_by(query, "destination_version")
            except PrometheusQueryError as exc:
                log.warning("traffic query failed: %s", exc)
        return self.traffic

    def snapshot(self, body: Mapping[str, Any], weights: tuple[int, int] | None) -> Snapshot:
        status = body.get("status") or {}
        now = datetime.now(UTC)
        for item in status.get("history") or []:
            at = parse_time(item.get("at"))
            when = (at.timestamp() if at else time.time()) - self.wall_start
            entry = TimelineEntry(round(when, 3), item.get("action", ""), item.get("message", ""))
            self.timeline.setdefault((entry.at, entry.action, entry.message), entry)
        observed = {s.get("name"): s for s in status.get("slos") or []}
        # A finished rollout ticks no more: its breach lasted until the rollback.
        rolled_back = parse_time((status.get("rollback") or {}).get("at"))
        breach_end = rolled_back or now
        slos = []
        for spec in self.slo_specs:
            seen = observed.get(spec["name"], {})
            slos.append(
                SloView(
                    name=spec["name"],
                    kind=slo_kind(spec),
                    tolerance=tolerance(spec),
                    window_s=parse_duration(spec.get("window", "1m")).total_seconds(),
                    verdict=seen.get("verdict"),
                    reason=seen.get("reason", ""),
                    baseline=seen.get("baseline"),
                    canary=seen.get("canary"),
                    baseline_samples=seen.get("baselineSamples"),
                    canary_samples=seen.get("canarySamples"),
                    breaching_s=seconds_since(parse_time(seen.get("breachingSince")), breach_end),
                )
            )
        finished = status.get("phase") in ("Promoted", "RolledBack")
        return Snapshot(
            elapsed=time.monotonic() - self.began,
            rollout=f"{NAMESPACE}/{NAME}",
            phase=status.get("phase"),
            message=status.get("message", ""),
            step_index=status.get("stepIndex"),
            steps=self.steps,
            step_elapsed=None
            if finished
            else seconds_since(parse_time(status.get("stepStartedAt")), now),
            weights=weights,
            traffic=dict(self.read_traffic()),
            slos=tuple(slos),
            timeline=tuple(sorted(self.timeline.values(), key=lambda e: e.at)),
        )


# -- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    page: Mapping[str, Any] | None = None


def watch(
    stack: LocalStack,
    watcher: Watcher,
    view: View,
    scenario: str,
    timeout: float,
) -> Outcome:
    """Follow the rollout to its end, injecting the scenario's regression on the way."""
    story = STORIES[scenario]
    changes = regression(scenario)
    injected_at: float | None = None
    finished_at: float | None = None
    outcome: Outcome | None = None
    settled_at = 0.0
    last_seen = "the rollout was not read yet"
    deadline = time.monotonic() + timeout
    while True:
        _check_children(stack)
        if time.monotonic() > deadline and outcome is None:
            raise DemoFailure(f"no outcome after {timeout:g}s: {last_seen}")
        try:
            body = watcher.rollout()
            weights = watcher.weights()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            # A slow API server on a busy machine: try again at the next poll.
            last_seen = f"reading the rollout failed: {exc}"
            log.warning("%s", last_seen)
            time.sleep(POLL_SECONDS)
            continue
        status = body.get("status") or {}
        last_seen = f"phase {status.get('phase')}, {status.get('message', '')}"
        phase = status.get("phase")
        step_started = parse_time(status.get("stepStartedAt"))
        in_step = seconds_since(step_started, datetime.now(UTC)) or 0.0
        if (
            changes
            and injected_at is None
            and phase == "Progressing"
            and (status.get("stepIndex") or 0) >= 1
            and in_step >= INJECT_AFTER_SECONDS
        ):
            assert stack.mesh is not None
            stack.mesh.control("v2", changes)
            injected_at = time.monotonic()
            watcher.demo_event("Regression", f"{story.regression} ({describe_changes(changes)})")
        snapshot = watcher.snapshot(body, weights)
        view.update(snapshot)
        if phase in ("Promoted", "RolledBack"):
            finished_at = finished_at or time.monotonic()
            page_state = (status.get("page") or {}).get("state")
            settled = phase == "Promoted" or page_state in ("Delivered", "Failed")
            if outcome is None and (settled or time.monotonic() - finished_at > PAGE_WAIT_SECONDS):
                outcome = judge_outcome(stack, scenario, body, weights, snapshot, injected_at)
                settled_at = time.monotonic()
            # Show the real traffic following the final weights before finishing.
            if outcome is not None and (
                weights is None
                or traffic_follows(snapshot.traffic, weights)
                or time.monotonic() - settled_at > TRAFFIC_WAIT_SECONDS
            ):
                return outcome
        time.sleep(POLL_SECONDS)


def _check_children(stack: LocalStack) -> None:
    if stack.operator is not None and stack.operator.exit_code is not None:
        raise DemoFailure(
            f"the operator exited with code {stack.operator.exit_code}; last lines of "
            f"{stack.operator.log_path}:\n{log_tail(stack.operator.log_path, 20)}"
        )
    if stack.load_exit_code() is not None:
        raise DemoFailure(f"the load generator stopped; see {stack.workdir / 'load.log'}")


def judge_outcome(
    stack: LocalStack,
    scenario: str,
    body: Mapping[str, Any],
    weights: tuple[int, int] | None,
    snapshot: Snapshot,
    injected_at: float | None,
) -> Outcome:
    """Whether the rollout ended as the scenario expects, and the page if one came."""
    expected = STORIES[scenario].slo
    status = body.get("status") or {}
    phase = status.get("phase")
    took = f"{snapshot.elapsed:.0f}s after it was applied"
    events = stack.pagerduty.events()
    page = events[-1] if events else None
    if expected is None:
        if phase != "Promoted":
            return Outcome(False, f"expected Promoted, got {phase}: {status.get('message')}", page)
        if weights != (0, 100):
            return Outcome(False, f"Promoted, but the weights are {weights_text(weights)}", page)
        if events:
            return Outcome(False, "Promoted, but PagerDuty was paged", page)
        return Outcome(
            True,
            f"Promoted {took}: v2 took every step to 100% of traffic with all "
            f"{len(snapshot.slos)} SLOs healthy, and nobody was paged",
        )
    rollback = status.get("rollback") or {}
    if phase != "RolledBack":
        return Outcome(False, f"expected RolledBack on {expected}, got {phase}", page)
    if injected_at is None:
        return Outcome(False, f"rolled back before the regression: {rollback.get('message')}")
    if rollback.get("slo") != expected:
        return Outcome(
            False, f"rolled back on {rollback.get('slo')}, expected {expected}: "
            f"{rollback.get('message')}", page,
        )  # fmt: skip
    if weights != (100, 0):
        return Outcome(False, f"RolledBack, but the weights are {weights_text(weights)}", page)
    page_status = status.get("page") or {}
    if page_status.get("state") != "Delivered":
        return Outcome(
            False, f"the page was not delivered: {page_status.get('lastError') or page_status}"
        )
    triggers = [e for e in events if e.get("event", {}).get("event_action") == "trigger"]
    if len(triggers) != 1:
        return Outcome(False, f"expected one trigger at PagerDuty, got {len(triggers)}", page)
    details = triggers[0]["event"].get("payload", {}).get("custom_details", {})
    if details.get("slo") != expected or triggers[0].get("dedup_key") != page_status.get(
        "dedupKey"
    ):
        return Outcome(False, "the page does not name the breached SLO or its dedup key", page)
    after = time.monotonic() - injected_at
    return Outcome(
        True,
        f"RolledBack {took}, {after:.0f}s after the regression: {expected} canary "
        f"{rollback.get('canary')} vs baseline {rollback.get('baseline')} for "
        f"{rollback.get('window')}; all traffic back on v1; PagerDuty paged once "
        f"(dedup key {page_status.get('dedupKey')})",
        triggers[0],
    )


def run(stack: LocalStack, view: View, scenario: str, timeout: float, wall_start: float) -> Outcome:
    """Start the stack, apply the demo rollout and follow it to its outcome."""
    stack.start()
    rollout = rollout_manifest(stack.prometheus.url, stack.pagerduty.url)
    watcher = Watcher(stack, rollout, wall_start)
    applied_at = time.time()
    stack.control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(rollout))
    steps = ", ".join(f"{w}% {h:g}s" for w, h in watcher.steps)
    slos = ", ".join(s["name"] for s in watcher.slo_specs)
    watcher.demo_event(
        "Applied", f"CanaryRollout {NAMESPACE}/{NAME}: steps {steps}; SLOs {slos}", at=applied_at
    )
    if isinstance(view, LiveView):  # shown until the operator's first status arrives
        view.stage(f"applied CanaryRollout {NAMESPACE}/{NAME} from {demo_dir()}")
    return watch(stack, watcher, view, scenario, timeout)


def keep_running(stack: LocalStack, view: View) -> None:
    """--keep: print how to reach the stack, then wait for Ctrl-C."""
    kubectl = find_binaries().kubectl
    script = Path(sys.executable).parent / "canaryguard"
    cli = str(script) if script.exists() else f"{sys.executable} -m canaryguard"
    assert stack.mesh is not None
    lines = [
        "the stack stays up until Ctrl-C (load keeps flowing, the operator keeps running):",
        f"  export KUBECONFIG={stack.control_plane.admin_kubeconfig}",
        f"  {kubectl} get cro,vs -n {NAMESPACE}",
        f"  {cli} status -n {NAMESPACE} {NAME}",
        f"  {cli} explain -n {NAMESPACE} {NAME}",
        f"  Prometheus {stack.prometheus.url}   router {stack.mesh.predict_url}",
        f"  PagerDuty receiver {stack.pagerduty.base_url}{STATE_PATH}",
        f"  logs {stack.workdir}",
    ]
    for line in lines:
        view.note(line)
    while True:
        time.sleep(1)
        _check_children(stack)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m canaryguard_testbed.demo",
        description=(
            "Roll out a canary of the fraud model with the real operator on a local stack "
            "(kube-apiserver, Prometheus, router, model servers, load, PagerDuty receiver) "
            "and show what it decides."
        ),
    )
    parser.add_argument(
        "--scenario",
        choices=sorted(STORIES),
        default="error-spike",
        help="what happens to v2 once it has taken a step (default: error-spike)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain timestamped lines instead of the live view (default when not a TTY)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the stack up after the outcome and print how to reach it; Ctrl-C stops it",
    )
    parser.add_argument(
        "--rate", type=float, default=90.0, help="requests per second through the router"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=150.0,
        help="seconds the rollout may take once applied before the demo gives up",
    )
    return parser


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _hold_signals() -> None:
    """While stopping: a second Ctrl-C must not cut the clean-up short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; the exit code says whether the outcome was the expected one."""
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or args.timeout <= 0:
        print("error: --rate and --timeout must be positive", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    wall_start = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="canaryguard-demo-"))
    logging.basicConfig(
        filename=workdir / "demo.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    story = STORIES[args.scenario]
    title = "canaryguard demo"
    subtitle = f"scenario {args.scenario}"
    view: View = (
        PlainView()
        if args.plain or not sys.stdout.isatty()
        else LiveView(title, subtitle, f"{args.scenario}: {story.regression}", wall_start)
    )
    stack = LocalStack(
        namespace=NAMESPACE,
        resources=[*service_manifests(), pagerduty_secret()],
        rate=args.rate,
        workdir=workdir,
        progress=view.stage,
    )
    outcome: Outcome | None = None
    code = EXIT_FAILED
    show_operator_log = False
    try:
        with view:
            if isinstance(view, PlainView):
                view.note(f"{title}, {subtitle}: {story.regression}")
            outcome = run(stack, view, args.scenario, args.timeout, wall_start)
        if outcome.page is not None:
            view.page(outcome.page)
        view.result(outcome.ok, outcome.message)
        code = EXIT_OK if outcome.ok else EXIT_FAILED
        show_operator_log = not outcome.ok
        if args.keep:
            keep_running(stack, view)
    except Interrupted as exc:
        code = EXIT_INTERRUPTED if outcome is None or not outcome.ok else code
        _finish_view(view, f"interrupted ({exc})")
    except (
        DemoFailure,
        ChildProcessError,
        ControlPlaneError,
        KubectlError,
        MissingBinaryError,
        PrometheusNotInstalledError,
        TimeoutError,
        ApiException,
    ) as exc:
        code = EXIT_FAILED
        _finish_view(view, None)
        view.result(False, str(exc))
        show_operator_log = isinstance(exc, DemoFailure) and "last lines" not in str(exc)
    except Exception as exc:  # anything else still ends with the stack stopped
        log.exception("demo failed")
        code = EXIT_FAILED
        _say(view, f"unexpected error: {exc!r} (traceback in {workdir / 'demo.log'})")
    finally:
        _hold_signals()
        failed = code != EXIT_OK and code != EXIT_INTERRUPTED
        _say(view, "stopping the local stack" + (f"; logs kept in {workdir}" if failed else ""))
        if show_operator_log and stack.operator is not None:
            tail = log_tail(stack.operator.log_path, 15).splitlines()
            _say(view, "operator log, last lines:" + "".join(f"\n    {line}" for line in tail))
        stack.stop(keep_workdir=failed)
        for pid in leftover_processes(stack.tag):
            _say(view, f"process {pid} outlived the stack; killing it")
            os.kill(pid, signal.SIGKILL)
        _say(view, f"done in {format_elapsed(time.time() - wall_start)}")
    return code


def _say(view: View, message: str) -> None:
    """A note that cannot stop the clean-up: a closed terminal or pipe only loses the text."""
    try:
        if isinstance(view, LiveView):
            view.stop()
        view.note(message)
    except OSError:
        log.info("output lost: %s", message)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _finish_view(view: View, message: str | None) -> None:
    if isinstance(view, LiveView):
        view.stop()
    if message:
        view.note(message)


if __name__ == "__main__":
    sys.exit(main())
