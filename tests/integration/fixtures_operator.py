"""Fixtures that run the real operator: as a separate process, logged in as the
ServiceAccount that `manifests/rbac/` ship, so a missing or excess permission shows.

Each test gets its own operator watching only the test's namespace, so a test can kill
(SIGKILL) and restart it without touching any other test. The operator's /metrics make its
ticks observable: `Operator.wait_ticks(n)` returns once it has run `n` more ticks, which is
what a test waits for before asserting that something did *not* happen. It may send
requests to the session's Prometheus and PagerDuty receiver only (`--allow-prometheus`,
`--allow-pagerduty`), and the Secrets the rollouts name are made available to them by
annotation, as an installer and a Secret's owner would do. A status that changed only in SLO
values is written every `TEST_HEARTBEAT` (`--status-heartbeat`), not at every tick.
"""

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from canaryguard_testbed.childproc import ChildProcessError
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from canaryguard_testbed.prometheus_server import PrometheusServer
from canaryguard_testbed.stack import OperatorProcess, allow_flags

__all__ = ["Operator", "Rollout", "operator", "operator_kubeconfig", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]
RBAC_DIR = ROOT / "manifests" / "rbac"
OPERATOR_NAMESPACE = "canaryguard-system"
TICKS = "canaryguard_tick_duration_seconds_count"  # one sample per tick, at its end
# Ticks are 1 s apart in tests: SLO values alone are written every 3 s (decisions at once).
TEST_HEARTBEAT = "3s"
T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def ts(text: str) -> datetime:
    """A time as the status writes it (RFC 3339, `Z`)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def condition(
    status: dict[str, Any], type_: str, default: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The status condition of that type; `default` when there is none, and without a
    default that fails the test."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    if default is not None:
        return default
    raise AssertionError(f"no condition {type_} in {status.get('conditions')}")


def slo_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    """The status of the SLO `name` ({} before its first verdict)."""
    return next((s for s in status.get("slos") or [] if s.get("name") == name), {})


def history(status: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The status history entries of that action, oldest first."""
    return [h for h in status.get("history") or [] if h["action"] == action]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        return resp.status, resp.read().decode()


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane) -> Path:
    """A kubeconfig of the operator's ServiceAccount, bound to the shipped ClusterRole."""
    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    control_plane.kubectl("apply", "-f", str(RBAC_DIR))
    # Manual requests are checked by the shipped admission policy, as on a cluster.
    control_plane.kubectl(
        "apply",
        "--server-side",
        "--field-manager=canaryguard-tests",
        "--force-conflicts",
        "-f",
        str(ROOT / "manifests" / "admission"),
    )
    return control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE, "canaryguard")


class Operator(OperatorProcess):
    """The operator process of one test's namespace (the demo's launcher), with what tests
    need on top: SIGKILL, a failing start that fails the test, its log, and readers of its
    /metrics and liveness endpoints."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log_path: Path,
        args: Sequence[str],
        *,
        module: str = "canaryguard",
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(kubeconfig, [namespace], log_path, args, module=module, env=env)
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start (again) and wait until the liveness endpoint answers."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
        try:
            super().start(timeout)
        except ChildProcessError as exc:
            pytest.fail(str(exc), pytrace=False)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self) -> list[dict[str, Any]]:
        """The operator's JSON log lines."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    # --- what it exposes ------------------------------------------------------------------

    def metrics(self) -> Samples:
        """Its /metrics as {(sample name, labels): value}."""
        status, text = fetch(self.metrics_url)
        assert status == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of its /metrics; None when the series does not exist."""
        return self.metrics().get((name, frozenset(labels.items())))

    def ticks(self) -> int:
        """How many ticks (of any rollout) it has finished since it started: the count of
        its tick-duration histogram, observed when a tick's writes and page are done."""
        return int(self.metric(TICKS) or 0)

    def tracked(self) -> int:
        """How many rollouts its scheduler tracks (its liveness probe). kopf keeps a probe's
        answer for 10 s, so this may be up to 10 s old: wait for a value, never assert one
        read once."""
        _, body = fetch(self.liveness_url)
        count: int = json.loads(body)["rollouts"]
        return count

    def wait_ticks(
        self,
        n: int,
        *,
        rollouts: int = 1,
        check: Callable[[], object] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Wait until it has run `n` whole ticks of each of its `rollouts` rollouts that all
        began after this call: a tick of each may be in flight now, so that is
        `rollouts * (n + 1)` more ticks. `check`, if given, runs at every poll and once
        after the last tick (to assert that something holds all along)."""
        target = self.ticks() + rollouts * (n + 1)
        seconds = timeout if timeout is not None else 15.0 + 2.0 * (n + 1)

        def done() -> bool:
            if check is not None:
                check()
            return self.ticks() >= target

        wait_for(f"{n} more tick(s) of {rollouts} rollout(s)", done, timeout=seconds)
        if check is not None:
            check()


@pytest.fixture
def operator(
    operator_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    prometheus: PrometheusServer,
    pagerduty_receiver_session: PagerDutyReceiver,
) -> Iterator[Callable[..., Operator]]:
    """`operator()` starts the operator for this test's namespace, allowed to send requests to
    the session's Prometheus and PagerDuty receiver; stopped after the test, and its log is
    printed when the test fails. `operator(kubeconfig=..., args=[...], env={...})` logs in as
    someone else, replaces the allow flags (give them again, with `allow_flags`, to keep
    them next to other flags such as `--leader-elect`) or adds to the environment;
    `module=` runs another entry point (the crash points of
    `canaryguard_testbed.crashpoints`). The test heartbeat is added unless `args` set one."""
    started: list[Operator] = []

    def start(
        kubeconfig: Path | None = None,
        args: Sequence[str] | None = None,
        module: str = "canaryguard",
        env: Mapping[str, str] | None = None,
    ) -> Operator:
        flags = list(
            allow_flags(prometheus.url, pagerduty_receiver_session.url) if args is None else args
        )
        if not any(flag.startswith("--status-heartbeat") for flag in flags):
            flags.append(f"--status-heartbeat={TEST_HEARTBEAT}")
        op = Operator(
            kubeconfig or operator_kubeconfig,
            namespace,
            tmp_path / f"operator-{len(started)}.log",
            flags,
            module=module,
            env=env,
        )
        started.append(op)
        op.start()
        return op

    yield start
    for op in started:
        op.stop()
        sys.stderr.write(f"\n--- operator log ({op.log_path}) ---\n{op.log_tail(80)}\n")


class Kubectl(Protocol):
    """What runs kubectl against a cluster: the local control plane, or a kind cluster."""

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


@dataclass
class Rollout:
    """A CanaryRollout under test and the VirtualService it was created with, with readers
    and waits for what the tests assert on."""

    cp: Kubectl
    namespace: str
    name: str
    body: dict[str, Any] = field(default_factory=dict)
    virtual_service: str = "fraud-model"

    def apply(self) -> None:
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(self.body))

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.cp.kubectl(
            "patch",
            "canaryrollout",
            self.name,
            "-n",
            self.namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": spec}),
        )

    def get(self) -> dict[str, Any]:
        out = self.cp.kubectl("get", "canaryrollout", self.name, "-n", self.namespace, "-o=json")
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def status(self) -> dict[str, Any]:
        return self.get().get("status") or {}

    def phase(self) -> str | None:
        return self.status().get("phase")

    def slo(self, name: str) -> dict[str, Any]:
        return slo_of(self.status(), name)

    def vs(self) -> dict[str, Any]:
        """The VirtualService as the API server has it."""
        out = self.cp.kubectl(
            "get", "virtualservice", self.virtual_service, "-n", self.namespace, "-o=json"
        )
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def weights(self, route: str = "primary") -> tuple[int, int]:
        """(baseline, canary) weights of the driven route, in Istio's semantics."""
        vs = self.vs()
        for http in vs["spec"]["http"]:
            if http.get("name") == route:
                dests = http["route"]
                found = {
                    d["destination"].get("subset"): d.get("weight", 100 if len(dests) == 1 else 0)
                    for d in dests
                }
                return found.get("v1", 0), found.get("v2", 0)
        raise AssertionError(f"no route {route} in {vs}")

    def set_weights(self, baseline: int, canary: int, route: str = "primary") -> None:
        """Edit the VirtualService by hand, as a person with kubectl would."""
        vs = self.vs()
        host = vs["spec"]["hosts"][0]
        for http in vs["spec"]["http"]:
            if http.get("name") == route:
                http["route"] = [
                    {"destination": {"host": host, "subset": "v1"}, "weight": baseline},
                    {"destination": {"host": host, "subset": "v2"}, "weight": canary},
                ]
        self.cp.kubectl("replace", "-f", "-", input=json.dumps(vs))

    def events(self) -> list[dict[str, Any]]:
        out = self.cp.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            f"--field-selector=involvedObject.name={self.name}",
            "-o=json",
        )
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return sorted(items, key=lambda e: e.get("metadata", {}).get("creationTimestamp", ""))

    def event_reasons(self) -> list[str]:
        return [e["reason"] for e in self.events()]

    def events_with(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["reason"] == reason]

    # --- waits ------------------------------------------------------------------------------

    def wait_weights(self, baseline: int, canary: int, timeout: float = 20) -> None:
        wait_for(
            f"weights {baseline}/{canary}",
            lambda: self.weights() == (baseline, canary),
            timeout=timeout,
        )

    def wait_phase(self, phase: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for the phase; return the status that has it."""

        def probe() -> dict[str, Any] | None:
            status = self.status()
            return status if status.get("phase") == phase else None

        return wait_for(f"phase {phase}", probe, timeout=timeout)

    def wait_healthy(self, *names: str, timeout: float = 30) -> dict[str, Any]:
        """Wait for a healthy verdict on the SLOs `names` (on every SLO when none is named);
        return the status that has them."""

        def probe() -> dict[str, Any] | None:
            status = self.status()
            slos = [slo_of(status, n) for n in names] if names else status.get("slos") or []
            return status if slos and all(s.get("verdict") == "healthy" for s in slos) else None

        return wait_for(f"healthy verdicts on {', '.join(names) or 'every SLO'}", probe, timeout)

    def wait_page(self, state: str, timeout: float = 40) -> dict[str, Any]:
        """Wait for the page's state (Pending, Delivered, Failed); return the status."""

        def probe() -> dict[str, Any] | None:
            status = self.status()
            return status if (status.get("page") or {}).get("state") == state else None

        return wait_for(f"page {state}", probe, timeout=timeout)
