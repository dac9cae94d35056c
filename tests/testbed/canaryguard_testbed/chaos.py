"""A fault campaign: many canary rollouts, half of them breaching, carried by the real
operator while it is SIGKILLed, the API server and Prometheus are restarted and PagerDuty
throttles and fails; then counted against what the design promises.

    campaign = Campaign(Config(rollouts=50, seed=1))
    report = campaign.run()          # bounded in time; stops everything it started
    print(render(report))

The stack, all on 127.0.0.1: kube-apiserver and etcd with the CRDs and the shipped RBAC, the
real Prometheus scraping every second, a PagerDuty receiver, and one synthetic mesh
(`canaryguard_testbed.synthetic`) carrying every rollout's service (`svc-0000`, ...) with
versions v1 and v2, each split by its own VirtualService. The operator runs as a child
process logged in as its ServiceAccount, with the crash points of
`canaryguard_testbed.crashpoints` armed.

Rollouts (seeded): rollout i is created `i * spacing` seconds into the campaign, with 1 s
ticks, three steps (20, 50, 100%) of random holds and a random window. A random half are
*breaching*: at a random instant before their last hold could end, their v2 starts failing
a random share of requests (so the breach starts at a random step); the other half stay
healthy. Faults (seeded, at random instants while rollouts run, carried out one at a time
from the main thread, which starts every child process):

- the operator SIGKILLed at a random instant, restarted after a random pause;
- the operator killing itself at the crash points: between a VirtualService write and the
  status write (a step's, a rollback's) and after a page was sent (each capped in number);
  restarted after a random pause;
- kube-apiserver stopped (SIGTERM or SIGKILL) and started again on the same etcd;
- Prometheus stopped and started again with its data;
- PagerDuty answering every call with 429 and Retry-After, or with 500, for a period.

What is counted (`evaluate`), from the rollouts' final status, their VirtualServices and the
receiver's records; the goal of the first four is 0:

- lost rollback: a breaching canary that did not end RolledBack;
- promotion of a breaching canary;
- second incident: more than one incident for a rollout, or any for a healthy one;
- late rollback: `rollback.at - (breachingSince + window)`, less the time within that span
  when a component was down because the campaign stopped it (the operator from its death
  to its liveness answering again, kube-apiserver from its stop until it lists CanaryRollouts
  and VirtualServices again, Prometheus from its stop to its readiness), is more than one
  interval (plus `TICK_JITTER`, 0.1 s: both times are read when a tick starts, which lags
  its due time). A rollback later than that only because of such an outage is counted
  apart, as delayed by an outage we caused, with its figures.

Lost rollbacks are broken down: the operator's crash points keep a file of the rollouts
whose weights are being or have been written and whose status is not yet, so a lost rollback
can be traced to a death of the operator between its rollback's VirtualService write and its
status write.

Also reported: healthy canaries rolled back, rollouts that did not finish, pages not
delivered, final weights that differ from the phase, the distribution of rollback delays,
and every fault with its times.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from canaryguard.core.access import SECRET_OPT_IN
from canaryguard_testbed.bins import istio_crds
from canaryguard_testbed.childproc import (
    ChildProcessError,
    python_module_args,
    spawn,
    terminate,
    wait_for_port_file,
)
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.crashpoints import (
    AFTER_PAGE,
    AFTER_ROLLBACK_WEIGHTS,
    AFTER_WEIGHTS,
    CrashPoints,
)
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from canaryguard_testbed.project import crds_dir, rbac_dir
from canaryguard_testbed.prometheus_server import PrometheusServer
from canaryguard_testbed.stack import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    OperatorProcess,
    allow_flags,
)

NAMESPACE = "chaos"
GROUP, VERSION, PLURAL = "canaryguard.io", "v1alpha1", "canaryrollouts"
ROUTING_KEY = "CHAOSR0UT1NGKEY0123456789abcdefA"  # 32 characters, like a real one
STEP_WEIGHTS = (20, 50, 100)
FINISHED = ("Promoted", "RolledBack")
# A rollback's time is read when its tick starts, which lags the tick's due time by the
# scheduler's dispatch delay (milliseconds, more under load); so does breachingSince. A
# rollback at the first tick after the window may therefore measure a few ms over one
# interval: up to this much over it is not counted late.
TICK_JITTER = 0.1
Progress = Callable[[str], None]


# -- configuration and plans ----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What a campaign does. Counts of faults are spread at random instants over the time
    rollouts are created (and `fault_tail` seconds after)."""

    rollouts: int = 50
    seed: int = 1
    spacing: float = 3.0  # seconds between two rollouts' creation
    interval: int = 1  # analysis interval, seconds
    holds: tuple[int, ...] = (4, 5, 6, 7)  # each step's hold is one of these, seconds
    windows: tuple[int, ...] = (3, 4, 5)  # each rollout's window is one of these, seconds
    error_rates: tuple[float, ...] = (0.2, 0.5)  # what a breaching v2 fails
    rps: float = 50.0  # requests/s of each service
    kills: int = 5  # SIGKILLs of the operator at random instants
    crash_after_weights: float = 0.05  # per step weight write
    crash_after_rollback_weights: float = 0.3  # per rollback weight write
    crash_after_page: float = 0.2  # per page sent
    max_crashes_after_weights: int = 2
    max_crashes_after_rollback_weights: int = 3
    max_crashes_after_page: int = 2
    apiserver_restarts: int = 3
    prometheus_restarts: int = 4
    pagerduty_periods: int = 8  # alternately 429 with Retry-After and 500
    down: tuple[float, float] = (0.3, 3.0)  # how long a stopped component stays down, s
    pagerduty_period: tuple[float, float] = (3.0, 10.0)
    fault_tail: float = 20.0
    settle: float = 90.0  # after the last fault: how long rollouts and pages may take
    workdir: Path | None = None

    def crash_points(
        self,
        log_path: Path,
        counts: Mapping[str, int],
        seed: int,
        in_flight_path: Path | None = None,
    ) -> CrashPoints:
        """The crash points for the next operator start: a point whose cap is reached is
        disarmed."""

        def armed(point: str, p: float, cap: int) -> float:
            return p if counts.get(point, 0) < cap else 0.0

        return CrashPoints(
            after_weights=armed(
                AFTER_WEIGHTS, self.crash_after_weights, self.max_crashes_after_weights
            ),
            after_rollback_weights=armed(
                AFTER_ROLLBACK_WEIGHTS,
                self.crash_after_rollback_weights,
                self.max_crashes_after_rollback_weights,
            ),
            after_page=armed(AFTER_PAGE, self.crash_after_page, self.max_crashes_after_page),
            log_path=str(log_path),
            seed=seed,
            in_flight_path=str(in_flight_path) if in_flight_path else None,
        )


@dataclass(frozen=True)
class RolloutPlan:
    """One rollout of the campaign, as drawn from the seed."""

    index: int
    name: str
    breaching: bool
    holds: tuple[int, ...]
    window: int
    create_at: float  # seconds into the campaign
    inject_after: float | None  # seconds after creation that v2 starts failing
    error_rate: float | None
    planned_step: int | None  # the step the failure starts in, if the schedule holds

    @property
    def revision(self) -> str:
        return f"chaos-{self.index:04d}"

    @property
    def dedup_key(self) -> str:
        return f"canaryguard/{NAMESPACE}/{self.name}/{self.revision}"


@dataclass(frozen=True)
class FaultPlan:
    at: float  # seconds into the campaign
    kind: str  # kill-operator | restart-apiserver | restart-prometheus | pagerduty
    down: float = 0.0
    kill: bool = False  # restart-apiserver: SIGKILL rather than SIGTERM
    status: int = 0  # pagerduty: 429 or 500
    retry_after: float | None = None


def plan_rollouts(config: Config, rng: random.Random) -> list[RolloutPlan]:
    """The rollouts: a random half breaching (failing from a random instant before their
    last hold could end, so never after a promotion), the rest healthy."""
    n = config.rollouts
    breaching = [True] * (n // 2) + [False] * (n - n // 2)
    rng.shuffle(breaching)
    plans = []
    for i in range(n):
        holds = tuple(rng.choice(config.holds) for _ in STEP_WEIGHTS)
        window = rng.choice(config.windows)
        inject_after = error_rate = step = None
        if breaching[i]:
            # At least 6 s before the earliest promotion: the breach shows in Prometheus
            # within about 2 s, and then no tick is all-healthy any more.
            inject_after = round(rng.uniform(1.0, sum(holds) - 6.0), 2)
            error_rate = rng.choice(config.error_rates)
            ends = [sum(holds[: k + 1]) for k in range(len(holds))]
            step = next(k for k, end in enumerate(ends) if inject_after < end)
        plans.append(
            RolloutPlan(
                index=i,
                name=f"svc-{i:04d}",
                breaching=breaching[i],
                holds=holds,
                window=window,
                create_at=round(i * config.spacing, 2),
                inject_after=inject_after,
                error_rate=error_rate,
                planned_step=step,
            )
        )
    return plans


def plan_faults(config: Config, rng: random.Random) -> list[FaultPlan]:
    """The faults, at random instants from 2 s after the first rollout to `fault_tail` s
    after the last one is created, in time order."""
    start = 2.0
    end = max(start + 1.0, (config.rollouts - 1) * config.spacing + config.fault_tail)

    def at() -> float:
        return round(rng.uniform(start, end), 2)

    def down() -> float:
        return round(rng.uniform(*config.down), 2)

    faults = [FaultPlan(at(), "kill-operator", down()) for _ in range(config.kills)]
    faults += [
        FaultPlan(at(), "restart-apiserver", down(), kill=rng.random() < 0.5)
        for _ in range(config.apiserver_restarts)
    ]
    faults += [
        FaultPlan(at(), "restart-prometheus", down()) for _ in range(config.prometheus_restarts)
    ]
    for k in range(config.pagerduty_periods):
        throttle = k % 2 == 0
        faults.append(
            FaultPlan(
                at(),
                "pagerduty",
                round(rng.uniform(*config.pagerduty_period), 2),
                status=429 if throttle else 500,
                retry_after=rng.choice((1.0, 2.0)) if throttle else None,
            )
        )
    return sorted(faults, key=lambda f: f.at)


# -- the objects ------------------------------------------------------------------------------


def virtual_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "hosts": [name],
            "http": [
                {"name": "primary", "route": [{"destination": {"host": name, "subset": "v1"}}]}
            ],
        },
    }


def rollout_body(
    plan: RolloutPlan, config: Config, prometheus_url: str, pagerduty_url: str
) -> dict[str, Any]:
    """The CanaryRollout of `plan`: 1 s ticks, three steps, one error-rate SLO."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CanaryRollout",
        "metadata": {"name": plan.name, "namespace": NAMESPACE},
        "spec": {
            "virtualService": {"name": plan.name, "routes": ["primary"]},
            "baseline": {"host": plan.name, "subset": "v1"},
            "canary": {"host": plan.name, "subset": "v2"},
            "revision": plan.revision,
            "metrics": {
                "prometheus": {"address": prometheus_url, "timeout": "2s"},
                "selector": {
                    "destination_service_name": plan.name,
                    "destination_service_namespace": NAMESPACE,
                },
                "baselineVersion": "v1",
                "canaryVersion": "v2",
            },
            "steps": [
                {"weight": w, "hold": f"{h}s"}
                for w, h in zip(STEP_WEIGHTS, plan.holds, strict=True)
            ],
            "analysis": {
                "interval": f"{config.interval}s",
                "minRequests": 20,
                # Longer than any Prometheus restart here: an outage we cause must not decide.
                "maxMetricsOutage": "60s",
                "onMetricsOutage": "rollback",
                "slos": [
                    {
                        "name": "error-rate",
                        "errorRate": {},
                        "margin": {"absolute": 0.02},
                        "window": f"{plan.window}s",
                        "lookback": "10s",
                    }
                ],
            },
            "paging": {
                "pagerDuty": {
                    "routingKeySecretRef": {"name": "pagerduty", "key": "routing-key"},
                    "severity": "critical",
                    "url": pagerduty_url,
                }
            },
        },
    }


def pagerduty_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "pagerduty",
            "namespace": NAMESPACE,
            "annotations": {SECRET_OPT_IN: "*"},
        },
        "stringData": {"routing-key": ROUTING_KEY},
    }


# -- records ----------------------------------------------------------------------------------


@dataclass
class Outage:
    """A component down because the campaign stopped it (or made it crash): from `start`
    until it served again (`end`), UNIX seconds."""

    component: str  # operator | apiserver | prometheus
    cause: str
    start: float
    end: float
    # The operator only: when every rollout it tracks had finished a tick after the restart
    # (its liveness answers before its watch has listed them and ticked each once).
    ticked: float | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def until_ticked(self) -> Outage:
        """This outage, counted until the operator had ticked every rollout again."""
        return replace(self, end=max(self.end, self.ticked or self.end))


@dataclass
class Timeline:
    """What the workload thread did, when (UNIX seconds)."""

    created: dict[str, float] = field(default_factory=dict)
    injected: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def covered(outages: Sequence[Outage], start: float, end: float) -> float:
    """Seconds of [start, end] during which at least one outage was in progress."""
    spans = sorted((max(o.start, start), min(o.end, end)) for o in outages)
    total, reach = 0.0, start
    for a, b in spans:
        a = max(a, reach)
        if b <= a:  # outside the span, or already counted
            continue
        total += b - a
        reach = b
    return total


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- the campaign -----------------------------------------------------------------------------


class CampaignError(RuntimeError):
    """The campaign could not be carried out (not a finding about the operator)."""


class Campaign:
    """One campaign: `run()` starts the stack, runs the rollouts and the faults, waits for
    the outcome (bounded), stops everything and returns the report (a JSON-able dict)."""

    def __init__(self, config: Config, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda _message: None)
        rng = random.Random(config.seed)
        self.rollouts = plan_rollouts(config, rng)
        self.faults = plan_faults(config, rng)
        self._rng = random.Random(config.seed * 7919 + 1)  # restart pauses, crash seeds
        self._own_workdir = config.workdir is None
        self.workdir = config.workdir or Path(tempfile.mkdtemp(prefix="canaryguard-chaos-"))
        self.cp = ControlPlane(self.workdir / "kube")
        self.prometheus = PrometheusServer(self.workdir / "prometheus", scrape_interval="1s")
        self.pagerduty = PagerDutyReceiver(port=0)
        self.operator: OperatorProcess | None = None
        self.synthetic: subprocess.Popen[bytes] | None = None
        self.synthetic_url = ""
        self.crash_log = self.workdir / "crashes.jsonl"
        self.in_flight = self.workdir / "in-flight.json"
        # Rollouts whose weights were written and status not, when the operator died.
        self.cut_writes: list[dict[str, Any]] = []
        self.outages: list[Outage] = []
        self.fault_log: list[dict[str, Any]] = []
        self.operator_exits: list[dict[str, Any]] = []
        self.timeline = Timeline()
        self._crashes_seen = 0
        self._crash_counts: dict[str, int] = {}
        self._apiserver_up = True
        # The operator's tick-duration histogram, last scraped, per process (metrics port).
        self.tick_stats: dict[int, tuple[float, float]] = {}
        self.load: list[float] = []
        self._last_sample = 0.0
        self._stop = threading.Event()
        self._t0 = 0.0

    # -- life cycle ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        began = time.time()
        workload: threading.Thread | None = None
        try:
            self._setup()
            self._t0 = time.time()
            self.progress(
                f"campaign: {len(self.rollouts)} rollouts over "
                f"{self.rollouts[-1].create_at:.0f}s, {len(self.faults)} planned faults"
            )
            workload = threading.Thread(target=self._workload, name="chaos-workload", daemon=True)
            workload.start()
            self._drive()
            self._settle()
            self._stop.set()
            workload.join(30)
            final = self._collect()
        finally:
            self._stop.set()
            self._teardown()
        report = evaluate(self, final)
        report["wall_seconds"] = round(time.time() - began, 1)
        report["active_seconds"] = round(final["collected_at"] - self._t0, 1)
        return report

    def _setup(self) -> None:
        began = time.monotonic()
        cp = self.cp
        cp.start()
        cp.install_crds(istio_crds(), *sorted(crds_dir().glob("*.yaml")))
        cp.kubectl("create", "namespace", OPERATOR_NAMESPACE)
        cp.kubectl("apply", "-f", str(rbac_dir()))
        kubeconfig = cp.service_account_kubeconfig(
            OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, expiration_seconds=4 * 3600
        )
        cp.kubectl("create", "namespace", NAMESPACE)
        objects = [virtual_service(p.name) for p in self.rollouts] + [pagerduty_secret()]
        cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
            timeout=300,
        )
        self.prometheus.start()
        self.pagerduty.start()
        port_file = self.workdir / "synthetic.port"
        bound = self.rollouts[-1].create_at + self.config.fault_tail + self.config.settle + 600
        self.synthetic = spawn(
            python_module_args(
                "canaryguard_testbed.synthetic",
                f"--services={len(self.rollouts)}",
                f"--namespace={NAMESPACE}",
                f"--kubeconfig={cp.admin_kubeconfig}",
                f"--rps={self.config.rps:g}",
                f"--seed={self.config.seed}",
                "--resync=30",
                "--port=0",
                f"--port-file={port_file}",
                f"--max-duration={bound:.0f}",
            ),
            self.workdir / "synthetic.log",
        )
        port = wait_for_port_file(port_file, self.synthetic, self.workdir / "synthetic.log")
        self.synthetic_url = f"http://127.0.0.1:{port}"
        self.prometheus.add_target("synthetic", f"127.0.0.1:{port}")
        self.prometheus.wait_for_targets([f"127.0.0.1:{port}"], timeout=30)
        self.operator = OperatorProcess(
            kubeconfig,
            [NAMESPACE],
            self.workdir / "operator.log",
            allow_flags(self.prometheus.url, self.pagerduty.url),
            module="canaryguard_testbed.crashpoints",
        )
        self._start_operator()
        # Clients for the workload thread and for this one (made while the API server runs).
        self._api = kubernetes.client.CustomObjectsApi(cp.api_client())
        self._workload_api = kubernetes.client.CustomObjectsApi(cp.api_client())
        self.progress(f"stack ready in {time.monotonic() - began:.1f}s (work dir {self.workdir})")

    def _teardown(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        if self.synthetic is not None:
            terminate(self.synthetic)
        self.pagerduty.stop()
        self.prometheus.stop()
        self.cp.stop()

    def cleanup(self) -> None:
        """Remove the work directory if the campaign made it (after reading the logs)."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the operator -------------------------------------------------------------------------

    def _start_operator(self) -> float:
        """Start the operator with the crash points still under their caps; return when its
        liveness endpoint answered (UNIX seconds)."""
        assert self.operator is not None
        points = self.config.crash_points(
            self.crash_log, self._crash_counts, self._rng.randrange(1 << 30), self.in_flight
        )
        self.operator.env = points.env()
        for attempt in range(3):
            try:
                self.operator.start(timeout=60)
                return time.time()
            except ChildProcessError as exc:
                crashes = self._new_crashes()
                if crashes:  # a crash point fired on a tick before liveness answered
                    self._count_crashes(crashes, during_start=True)
                else:
                    self.operator_exits.append(
                        {"at": time.time(), "start_failed": str(exc)[-2000:]}
                    )
                if attempt == 2:
                    raise CampaignError(f"the operator did not start three times: {exc}") from exc
                time.sleep(1)
        raise AssertionError("unreachable")

    def _ticked(self, timeout: float = 20.0) -> float | None:
        """Wait until the just started operator has finished as many ticks as there are
        rollouts (each is due at once when its watch lists it); when (UNIX seconds)."""
        op = self.operator
        assert op is not None
        deadline = time.time() + timeout
        tracked = len(self.timeline.created)
        while time.time() < deadline and op.proc is not None and op.exit_code is None:
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(op.metrics_url, timeout=1) as resp:  # noqa: S310
                    text = resp.read().decode()
                ticks = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("canaryguard_tick_duration_seconds_count")
                )
                if ticks >= tracked:
                    return time.time()
            time.sleep(0.1)
        return None

    def _cut(self, died: float, cause: str) -> list[dict[str, Any]]:
        """What the operator's death cut between a weight write and a status write (read
        from the file the crash points keep), for the record; the file starts afresh."""
        if not self.in_flight.exists():
            return []
        with contextlib.suppress(ValueError):
            in_flight = json.loads(self.in_flight.read_text())
            self.in_flight.unlink()
            cut = [
                {"rollout": r, "written": w, "at": died, "cause": cause}
                for r, w in sorted(in_flight.items())
            ]
            self.cut_writes.extend(cut)
            return cut
        return []

    def _count_crashes(
        self, crashes: list[dict[str, Any]], *, during_start: bool, counted: bool = False
    ) -> None:
        """Record crashes that struck while the operator was starting again (a crash point
        on one of its first ticks, before liveness answered): part of the outage already
        running."""
        for c in crashes:
            if not counted:
                self._crash_counts[c["point"]] = self._crash_counts.get(c["point"], 0) + 1
            self._cut(c["at"], c["point"])
            self.fault_log.append(
                {
                    "at": round(c["at"] - self._t0, 2),
                    "kind": "crash-point",
                    "detail": c,
                    "during_start": during_start,
                }
            )
            self.progress(f"{c['at'] - self._t0:6.1f}s operator died ({c['point']}) while starting")

    def _new_crashes(self) -> list[dict[str, Any]]:
        if not self.crash_log.exists():
            return []
        lines = [json.loads(line) for line in self.crash_log.read_text().splitlines() if line]
        new = lines[self._crashes_seen :]
        self._crashes_seen = len(lines)
        return new

    def _tend(self) -> None:
        """Restart the operator if it died by itself (a crash point): after a random pause,
        once the API server is up."""
        op = self.operator
        if op is None or op.proc is None or op.exit_code is None or not self._apiserver_up:
            return
        noticed = time.time()
        code = op.exit_code
        op.proc = None
        crashes = self._new_crashes()
        for c in crashes:
            self._crash_counts[c["point"]] = self._crash_counts.get(c["point"], 0) + 1
        for c in crashes[:-1]:  # more than one: killed again while starting
            self._count_crashes([c], during_start=True, counted=True)
        died = crashes[-1]["at"] if crashes else noticed
        cause = crashes[-1]["point"] if crashes else f"exited with code {code}"
        if not crashes:
            self.operator_exits.append({"at": noticed, "code": code})
        cut = self._cut(died, cause)
        time.sleep(self._rng.uniform(*self.config.down))
        live = self._start_operator()
        for c in cut:
            c["live_after_s"] = round(live - died, 2)
        self.outages.append(Outage("operator", cause, died, live, self._ticked()))
        self.fault_log.append(
            {
                "at": round(died - self._t0, 2),
                "kind": "crash-point" if crashes else "operator-exit",
                "detail": crashes[-1] if crashes else {"code": code},
                "down_s": round(live - died, 2),
            }
        )
        self.progress(
            f"{died - self._t0:6.1f}s operator died ({cause}); live again after {live - died:.1f}s"
        )

    def _pause_until(self, deadline: float) -> None:
        while time.time() < deadline:
            self._tend()
            if time.time() - self._last_sample > 2.0:
                self._sample()
            time.sleep(0.05)

    def _sample(self) -> None:
        """Keep the operator's tick count and the count of ticks that took no longer than
        one interval, and the machine's load average."""
        self._last_sample = time.time()
        self.load.append(os.getloadavg()[0])
        op = self.operator
        if op is None or op.proc is None or op.exit_code is not None:
            return
        try:
            with urllib.request.urlopen(op.metrics_url, timeout=2) as resp:  # noqa: S310
                text = resp.read().decode()
        except OSError:
            return
        total = within = 0.0
        bound = f'le="{float(self.config.interval)}"'
        for line in text.splitlines():
            if line.startswith("canaryguard_tick_duration_seconds_count"):
                total = float(line.rsplit(" ", 1)[1])
            elif line.startswith("canaryguard_tick_duration_seconds_bucket") and bound in line:
                within = float(line.rsplit(" ", 1)[1])
        self.tick_stats[op.metrics_port] = (total, within)

    def _pause(self, seconds: float) -> None:
        self._pause_until(time.time() + seconds)

    # -- faults -------------------------------------------------------------------------------

    def _drive(self) -> None:
        for fault in self.faults:
            self._pause_until(self._t0 + fault.at)
            self._carry_out(fault)

    def _carry_out(self, fault: FaultPlan) -> None:
        began = time.time()
        record: dict[str, Any] = {"at": round(began - self._t0, 2), "kind": fault.kind}
        if fault.kind == "kill-operator":
            assert self.operator is not None
            self._tend()  # a crash just before: restart first, then kill
            self._sample()
            self.operator.kill()
            cut = self._cut(began, "SIGKILL")
            self._pause(fault.down)
            live = self._start_operator()
            for c in cut:
                c["live_after_s"] = round(live - began, 2)
            if cut:
                record["cut"] = [f"{c['rollout']} {c['written']}" for c in cut]
            self.outages.append(Outage("operator", "SIGKILL", began, live, self._ticked()))
            record["down_s"] = round(live - began, 2)
        elif fault.kind == "restart-apiserver":
            self._apiserver_up = False
            self.cp.stop_apiserver(kill=fault.kill)
            self._pause(fault.down)
            self.cp.start_apiserver()
            ready = self._serving_again()
            self._apiserver_up = True
            self.outages.append(
                Outage("apiserver", "SIGKILL" if fault.kill else "SIGTERM", began, ready)
            )
            record.update(down_s=round(ready - began, 2), signal="KILL" if fault.kill else "TERM")
        elif fault.kind == "restart-prometheus":
            self.prometheus.stop()
            self._pause(fault.down)
            self.prometheus.start()
            ready = time.time()
            self.outages.append(Outage("prometheus", "stopped", began, ready))
            record["down_s"] = round(ready - began, 2)
        elif fault.kind == "pagerduty":
            self.pagerduty.fail_for(fault.down, fault.status, retry_after=fault.retry_after)
            record.update(seconds=fault.down, status=fault.status, retry_after=fault.retry_after)
        else:
            raise CampaignError(f"unknown fault {fault.kind}")
        self.fault_log.append(record)
        detail = ", ".join(f"{k}={v}" for k, v in record.items() if k not in ("at", "kind"))
        self.progress(f"{record['at']:6.1f}s {fault.kind} ({detail})")

    def _serving_again(self, timeout: float = 60.0) -> float:
        """After kube-apiserver's /readyz: wait until it serves the resources the operator
        uses (a list of CanaryRollouts and of VirtualServices; a custom resource's storage
        may still answer 429 "storage is (re)initializing" after /readyz); when."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                self._api.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, limit=1, _request_timeout=5
                )
                self._api.list_namespaced_custom_object(
                    "networking.istio.io",
                    "v1",
                    NAMESPACE,
                    "virtualservices",
                    limit=1,
                    _request_timeout=5,
                )
                return time.time()
            except Exception:  # any failure: not serving yet
                time.sleep(0.1)
        raise CampaignError(
            f"kube-apiserver did not serve the rollouts {timeout:.0f}s after /readyz"
        )

    def _settle(self) -> None:
        """After the last fault: keep the operator alive until every rollout is finished and
        every rollback's page is delivered (or failed), at most `settle` seconds."""
        deadline = time.time() + self.config.settle
        last_report = 0.0
        while time.time() < deadline:
            self._pause(1.0)
            if len(self.timeline.created) < len(self.rollouts):
                deadline = max(deadline, time.time() + 5)
                continue
            items = self._list_rollouts()
            if items is None:
                continue
            unfinished = [
                i["metadata"]["name"]
                for i in items
                if (i.get("status") or {}).get("phase") not in FINISHED
                or (
                    (i.get("status") or {}).get("phase") == "RolledBack"
                    and ((i.get("status") or {}).get("page") or {}).get("state") == "Pending"
                )
            ]
            if not unfinished:
                return
            if time.time() - last_report > 15:
                last_report = time.time()
                self.progress(f"waiting for {len(unfinished)} rollout(s): {unfinished[:6]}")
        self.progress("settle time is over; counting what is there")

    # -- the workload (its own thread: starts no process) -------------------------------------

    def _workload(self) -> None:
        events: list[tuple[float, int, str, RolloutPlan]] = []
        for plan in self.rollouts:
            heapq.heappush(events, (self._t0 + plan.create_at, plan.index, "create", plan))
        while events and not self._stop.is_set():
            at, _, action, plan = events[0]
            if time.time() < at:
                self._stop.wait(min(0.1, at - time.time()))
                continue
            heapq.heappop(events)
            try:
                if action == "create":
                    self._create(plan)
                    self.timeline.created[plan.name] = time.time()
                    if plan.inject_after is not None:
                        inject = time.time() + plan.inject_after
                        heapq.heappush(events, (inject, plan.index, "inject", plan))
                else:
                    self._inject(plan)
                    self.timeline.injected[plan.name] = time.time()
            except Exception as exc:  # retried: the API server may be down for a moment
                self.timeline.errors.append(f"{action} {plan.name}: {exc}"[:300])
                heapq.heappush(events, (time.time() + 0.3, plan.index, action, plan))

    def _create(self, plan: RolloutPlan) -> None:
        body = rollout_body(plan, self.config, self.prometheus.url, self.pagerduty.url)
        try:
            self._workload_api.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, body, _request_timeout=5
            )
        except ApiException as exc:
            if exc.status != 409:  # 409: an earlier attempt got through
                raise

    def _inject(self, plan: RolloutPlan) -> None:
        body = {
            "services": [f"{NAMESPACE}/{plan.name}"],
            "version": "v2",
            "set": {"error_rate": plan.error_rate},
        }
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.synthetic_url + "/control",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
            resp.read()

    # -- the outcome --------------------------------------------------------------------------

    def _list_rollouts(self) -> list[dict[str, Any]] | None:
        if not self._apiserver_up:
            return None
        try:
            listed = self._api.list_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, _request_timeout=10
            )
        except Exception:
            return None
        assert isinstance(listed, dict)
        items: list[dict[str, Any]] = listed["items"]
        return items

    def _collect(self) -> dict[str, Any]:
        for _ in range(20):
            items = self._list_rollouts()
            if items is not None:
                break
            time.sleep(0.5)
        else:
            raise CampaignError("could not list the rollouts at the end")
        collected_at = time.time()
        out = self.cp.kubectl("get", "virtualservices", "-n", NAMESPACE, "-o", "json", timeout=60)
        vss = {v["metadata"]["name"]: v for v in json.loads(out.stdout)["items"]}
        self._new_crashes_counted()
        return {
            "collected_at": collected_at,
            "rollouts": {i["metadata"]["name"]: i for i in items},
            "virtual_services": vss,
            "incidents": self.pagerduty.incidents(),
            "events": self.pagerduty.events(),
            "calls": self.pagerduty.calls(),
        }

    def _new_crashes_counted(self) -> None:
        for c in self._new_crashes():
            self._crash_counts[c["point"]] = self._crash_counts.get(c["point"], 0) + 1


# -- counting ---------------------------------------------------------------------------------


def route_weights(vs: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(v1, v2) weights of the route `primary`."""
    if vs is None:
        return None
    for http in vs["spec"]["http"]:
        if http.get("name") == "primary":
            dests = http["route"]
            found = {
                d["destination"].get("subset"): d.get("weight", 100 if len(dests) == 1 else 0)
                for d in dests
            }
            return found.get("v1", 0), found.get("v2", 0)
    return None


def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    return {
        "n": len(ordered),
        "min": round(ordered[0], 3),
        "p50": round(q(0.5), 3),
        "p90": round(q(0.9), 3),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def evaluate(campaign: Campaign, final: Mapping[str, Any]) -> dict[str, Any]:
    """Count what the design promises against what happened (see the module docstring)."""
    config = campaign.config
    interval = float(config.interval)
    incidents_by_key: dict[str, list[dict[str, Any]]] = {}
    for incident in final["incidents"]:
        incidents_by_key.setdefault(incident["dedup_key"], []).append(incident)
    triggers_by_key: dict[str, int] = {}
    for event in final["events"]:
        if event["event"].get("event_action") == "trigger":
            triggers_by_key[event["dedup_key"]] = triggers_by_key.get(event["dedup_key"], 0) + 1
    rows: list[dict[str, Any]] = []
    counts = dict.fromkeys(
        (
            "lost_rollbacks",
            "breaching_promoted",
            "second_incidents",
            "late_rollbacks",
            "delayed_by_our_outage",
            "early_rollbacks",
            "false_rollbacks",
            "healthy_not_promoted",
            "metrics_outage_rollbacks",
            "pages_not_delivered",
            "weights_not_as_phase",
            "duplicate_triggers_merged",
            "lost_after_cut_rollback",
            "cut_between_writes",
            "late_until_ticked",
        ),
        0,
    )
    until_ticked = [o.until_ticked() for o in campaign.outages]
    delays: list[float] = []
    net_delays: list[float] = []
    outage_delays: list[float] = []
    detection: list[float] = []
    for plan in campaign.rollouts:
        obj = final["rollouts"].get(plan.name) or {}
        status = obj.get("status") or {}
        phase = status.get("phase")
        weights = route_weights(final["virtual_services"].get(plan.name))
        rollback = status.get("rollback") or {}
        page = status.get("page") or {}
        mine = {
            k: v
            for k, v in incidents_by_key.items()
            if k.startswith(f"canaryguard/{NAMESPACE}/{plan.name}/")
        }
        n_incidents = sum(len(v) for v in mine.values())
        triggers = sum(n for k, n in triggers_by_key.items() if k in mine)
        row: dict[str, Any] = {
            "name": plan.name,
            "breaching": plan.breaching,
            "error_rate": plan.error_rate,
            "planned_step": plan.planned_step,
            "holds": list(plan.holds),
            "window": plan.window,
            "created": campaign.timeline.created.get(plan.name),
            "injected": campaign.timeline.injected.get(plan.name),
            "phase": phase,
            "message": status.get("message"),
            "weights": list(weights) if weights else None,
            "rollback": rollback or None,
            "page": page.get("state"),
            "page_attempts": page.get("attempts"),
            "incidents": n_incidents,
            "triggers": triggers,
            "findings": [],
            # What the status says at the end, for whoever investigates a finding.
            "step": status.get("stepIndex"),
            "canary_weight": status.get("canaryWeight"),
            "slos": [
                {k: s.get(k) for k in ("verdict", "breachingSince", "reason") if s.get(k)}
                for s in status.get("slos") or []
            ],
            "conditions": {
                c["type"]: f"{c.get('status')}/{c.get('reason')}"
                for c in status.get("conditions") or []
            },
            "history": [
                f"{h.get('at')} {h.get('action')} {h.get('reason') or ''}".strip()
                for h in status.get("history") or []
            ],
        }
        findings: list[str] = row["findings"]
        cuts = [c for c in campaign.cut_writes if c["rollout"] == f"{NAMESPACE}/{plan.name}"]
        row["cut_between_writes"] = cuts
        counts["cut_between_writes"] += len(cuts)
        cut_rollback = [c for c in cuts if "RolledBack" in c["written"]]
        if plan.breaching and phase != "RolledBack":
            counts["lost_rollbacks"] += 1
            if cut_rollback:
                counts["lost_after_cut_rollback"] += 1
                c = cut_rollback[-1]
                back = (
                    f"was live again {c['live_after_s']}s later"
                    if c.get("live_after_s") is not None
                    else "died while starting again"
                )
                findings.append(
                    f"lost rollback: the operator died ({c['cause']}) between the rollback's "
                    f"VirtualService write ({c['written']}) and its status write, and {back}"
                )
            else:
                findings.append("lost rollback")
        if plan.breaching and phase == "Promoted":
            counts["breaching_promoted"] += 1
            findings.append("breaching canary promoted")
        extra = n_incidents if not plan.breaching else max(0, n_incidents - 1)
        if len(mine) > 1:
            extra = max(extra, len(mine) - 1)
        if extra:
            counts["second_incidents"] += extra
            findings.append(f"{extra} second incident(s)")
        if triggers > 1:
            counts["duplicate_triggers_merged"] += triggers - 1
        if not plan.breaching and phase == "RolledBack":
            counts["false_rollbacks"] += 1
            findings.append("healthy canary rolled back")
        if not plan.breaching and phase != "Promoted":
            counts["healthy_not_promoted"] += 1
            findings.append(f"healthy canary ended {phase}")
        if phase == "RolledBack" and rollback.get("reason") == "MetricsOutage":
            counts["metrics_outage_rollbacks"] += 1
            findings.append("rolled back for a metrics outage")
        if phase == "RolledBack" and page.get("state") != "Delivered":
            counts["pages_not_delivered"] += 1
            findings.append(f"page {page.get('state')}")
        expected = {"RolledBack": (100, 0), "Promoted": (0, 100)}.get(str(phase))
        if expected is not None and weights != expected:
            counts["weights_not_as_phase"] += 1
            findings.append(f"weights {weights} while {phase}")
        at = parse_time(rollback.get("at"))
        since = parse_time(rollback.get("breachingSince"))
        if plan.breaching and phase == "RolledBack" and rollback.get("reason") == "SLOBreach":
            assert at is not None and since is not None
            due = since + plan.window
            delay = at - due
            lost_to_outages = covered(campaign.outages, due, at) if at > due else 0.0
            net = delay - lost_to_outages
            # The same, with the operator counted down until it had ticked every rollout
            # again after each restart.
            net_ticked = delay - (covered(until_ticked, due, at) if at > due else 0.0)
            restarts = sum(
                1 for o in campaign.outages if o.component == "operator" and due < o.end < at
            )
            row.update(
                due=due,
                delay_s=round(delay, 3),
                outage_in_delay_s=round(lost_to_outages, 3),
                net_delay_s=round(net, 3),
                net_delay_until_ticked_s=round(net_ticked, 3),
                operator_restarts_in_delay=restarts,
            )
            if net_ticked > interval + TICK_JITTER:
                counts["late_until_ticked"] += 1
            delays.append(delay)
            net_delays.append(net)
            if delay < 0:
                counts["early_rollbacks"] += 1
                findings.append(f"rolled back {-delay:.3f}s before the window ended")
            elif net > interval + TICK_JITTER:
                counts["late_rollbacks"] += 1
                findings.append(
                    f"rolled back {delay:.3f}s after the window ({net:.3f}s net; "
                    f"{net_ticked:.3f}s net of the operator's restarts until it ticked; "
                    f"{restarts} operator restart(s) in between)"
                )
            elif delay > interval + TICK_JITTER:
                counts["delayed_by_our_outage"] += 1
                outage_delays.append(delay)
            injected = campaign.timeline.injected.get(plan.name)
            if injected is not None:
                detection.append(since - injected)
        rows.append(row)
    restart_to_ticked = [
        o.ticked - o.end for o in campaign.outages if o.component == "operator" and o.ticked
    ]
    by_component: dict[str, dict[str, Any]] = {}
    for o in campaign.outages:
        c = by_component.setdefault(o.component, {"count": 0, "seconds": 0.0, "longest_s": 0.0})
        c["count"] += 1
        c["seconds"] = round(c["seconds"] + o.seconds, 2)
        c["longest_s"] = round(max(c["longest_s"], o.seconds), 2)
    fault_counts: dict[str, int] = {}
    for f in campaign.fault_log:
        key = f["kind"]
        if key == "crash-point":
            key = f"crash-{f['detail']['point']}"
        if key == "pagerduty":
            key = f"pagerduty-{f['status']}"
        fault_counts[key] = fault_counts.get(key, 0) + 1
    breaching = [r for r in rows if r["breaching"]]
    return {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "rollouts": len(rows),
        "breaching": len(breaching),
        "healthy": len(rows) - len(breaching),
        "outcomes": {
            "breaching_rolled_back": sum(1 for r in breaching if r["phase"] == "RolledBack"),
            "healthy_promoted": sum(
                1 for r in rows if not r["breaching"] and r["phase"] == "Promoted"
            ),
            "breach_started_at_step": {
                str(k): sum(1 for r in breaching if r["planned_step"] == k)
                for k in range(len(STEP_WEIGHTS))
            },
            "rolled_back_at_step": {
                str(k): sum(
                    1
                    for r in breaching
                    if r["rollback"] and _rollback_step(final["rollouts"].get(r["name"])) == k
                )
                for k in range(len(STEP_WEIGHTS))
            },
        },
        "counts": counts,
        "goal_zero": {
            k: counts[k]
            for k in ("lost_rollbacks", "breaching_promoted", "second_incidents", "late_rollbacks")
        },
        "faults": fault_counts,
        "outages": by_component,
        "pagerduty": {
            "calls": len(final["calls"]),
            "answered": _status_counts(final["calls"]),
            "incidents": len(final["incidents"]),
            "triggers_accepted": sum(triggers_by_key.values()),
        },
        "rollback_delay_s": _quantiles(delays),
        "rollback_net_delay_s": _quantiles(net_delays),
        "delayed_by_our_outage_s": _quantiles(outage_delays),
        "injection_to_breaching_since_s": _quantiles(detection),
        "operator_ticks": {
            "ticks": int(sum(t for t, _ in campaign.tick_stats.values())),
            "longer_than_interval": int(sum(t - w for t, w in campaign.tick_stats.values())),
            "note": "of the operator processes sampled (every 2 s and before each SIGKILL); "
            "a tick includes its page delivery, retries on 429/5xx included",
        },
        "load_average_1m": _quantiles(campaign.load),
        "operator_live_to_every_rollout_ticked_s": _quantiles(restart_to_ticked),
        "operator_exits": campaign.operator_exits,
        "cut_writes": [{**c, "at": round(c["at"] - campaign._t0, 2)} for c in campaign.cut_writes],
        "workload_retries": len(campaign.timeline.errors),
        "fault_log": campaign.fault_log,
        "outage_log": [
            {
                "component": o.component,
                "cause": o.cause,
                "start": round(o.start - campaign._t0, 2),
                "seconds": round(o.seconds, 2),
                "ticked_after_s": round(o.ticked - o.end, 2) if o.ticked else None,
            }
            for o in campaign.outages
        ],
        "rows": rows,
        "workdir": str(campaign.workdir),
    }


def _rollback_step(obj: Mapping[str, Any] | None) -> int | None:
    status = (obj or {}).get("status") or {}
    for entry in reversed(status.get("history") or []):
        if entry.get("action") == "RolledBack":
            step = entry.get("stepIndex")
            return int(step) if isinstance(step, int) else None
    return None


def _status_counts(calls: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in calls:
        out[str(c["status"])] = out.get(str(c["status"]), 0) + 1
    return dict(sorted(out.items()))


# -- the report -------------------------------------------------------------------------------

_GOALS = (
    ("lost_rollbacks", "lost rollbacks (a breaching canary not RolledBack)", "0"),
    (
        "lost_after_cut_rollback",
        "... of which the operator died between the rollback's VirtualService and status writes",
        "-",
    ),
    ("breaching_promoted", "promotions of a breaching canary", "0"),
    ("second_incidents", "second incidents (or any page for a healthy canary)", "0"),
    ("late_rollbacks", "rollbacks > 1 interval after the window, our outages discounted", "0"),
    ("delayed_by_our_outage", "rollbacks > 1 interval late only because of our outages", "-"),
    (
        "late_until_ticked",
        "late, with the operator down until it ticked every rollout after a restart",
        "-",
    ),
    ("early_rollbacks", "rollbacks before the window ended", "0"),
    ("false_rollbacks", "healthy canaries rolled back", "0"),
    ("healthy_not_promoted", "healthy canaries not Promoted at the end", "0"),
    ("metrics_outage_rollbacks", "rollbacks for a metrics outage", "0"),
    ("pages_not_delivered", "rollbacks whose page was not delivered", "0"),
    ("weights_not_as_phase", "final weights not those of the phase", "0"),
    ("duplicate_triggers_merged", "triggers resent and merged by the dedup key", "-"),
    ("cut_between_writes", "ticks cut between a weight write and the status write", "-"),
)


def table(report: Mapping[str, Any]) -> list[str]:
    """The counts as a Markdown table."""
    lines = ["| count | goal | found |", "| --- | --- | --- |"]
    for key, text, goal in _GOALS:
        lines.append(f"| {text} | {goal} | {report['counts'][key]} |")
    return lines


def _fmt(q: Mapping[str, Any] | None) -> str:
    if not q:
        return "none"
    return (
        f"min {q['min']:.2f}, median {q['p50']:.2f}, p90 {q['p90']:.2f}, "
        f"max {q['max']:.2f} (n={q['n']})"
    )


def render(report: Mapping[str, Any]) -> str:
    """The report as text: what ran, the counts, the figures."""
    c = report["config"]
    faults = report["faults"]
    outages = report["outages"]

    def down(component: str) -> str:
        o = outages.get(component)
        return f"{o['count']} times, {o['seconds']:.1f}s in all" if o else "never"

    pd = report["pagerduty"]
    lines = [
        f"canaryguard fault campaign: {report['rollouts']} rollouts "
        f"({report['breaching']} breaching, {report['healthy']} healthy), seed {c['seed']}, "
        f"{c['interval']}s interval; wall time {report['wall_seconds']:.0f}s "
        f"({report['active_seconds']:.0f}s of rollouts and faults)",
        "faults: "
        + ", ".join(f"{k} x{v}" for k, v in sorted(faults.items()))
        + f"; operator down {down('operator')}, API server {down('apiserver')}, "
        f"Prometheus {down('prometheus')}",
        f"PagerDuty: {pd['calls']} calls answered {pd['answered']}, "
        f"{pd['triggers_accepted']} triggers accepted, {pd['incidents']} incidents",
        f"outcomes: {report['outcomes']['breaching_rolled_back']}/{report['breaching']} "
        f"breaching rolled back, {report['outcomes']['healthy_promoted']}/{report['healthy']} "
        f"healthy promoted; breach started at step "
        f"{report['outcomes']['breach_started_at_step']}, rolled back at step "
        f"{report['outcomes']['rolled_back_at_step']}",
        "",
        *table(report),
        "",
        f"rollback delay after the window (s): {_fmt(report['rollback_delay_s'])}",
        f"  less our outages in that span (s): {_fmt(report['rollback_net_delay_s'])}",
        f"  of those delayed by our outage (s): {_fmt(report['delayed_by_our_outage_s'])}",
        f"injection to breachingSince (s): {_fmt(report['injection_to_breaching_since_s'])}",
        "operator restarts, from liveness to every rollout ticked again (s): "
        f"{_fmt(report['operator_live_to_every_rollout_ticked_s'])}",
        f"operator ticks sampled: {report['operator_ticks']['ticks']}, of which "
        f"{report['operator_ticks']['longer_than_interval']} took longer than the interval; "
        f"machine load average (1 min): {_fmt(report['load_average_1m'])}",
    ]
    findings = [r for r in report["rows"] if r["findings"]]
    if findings:
        lines.append("")
        lines.append("findings:")
        for r in findings:
            lines.append(
                f"  {r['name']} ({'breaching' if r['breaching'] else 'healthy'}): "
                f"{'; '.join(r['findings'])} [phase {r['phase']}, weights {r['weights']}, "
                f"message {r['message']!r}]"
            )
    if report["operator_exits"]:
        lines.append(f"operator exits not caused by the campaign: {report['operator_exits']}")
    return "\n".join(lines)


def dump(report: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")


@contextlib.contextmanager
def campaign_report(config: Config, progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """Run a campaign and yield its report; its work directory is removed afterwards."""
    campaign = Campaign(config, progress)
    try:
        yield campaign.run()
    finally:
        campaign.cleanup()


__all__ = [
    "Campaign",
    "CampaignError",
    "Config",
    "FaultPlan",
    "Outage",
    "RolloutPlan",
    "campaign_report",
    "covered",
    "dump",
    "evaluate",
    "plan_faults",
    "plan_rollouts",
    "render",
    "table",
]
