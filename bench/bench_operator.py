"""The real operator carrying many rollouts: CPU, memory, tick lag, Prometheus queries and
API calls per tick, batching on and off side by side, and the reaction to a sustained breach.

For each size (`--rollouts 1000 5000`) it starts the local stack (kube-apiserver + etcd,
Prometheus, the synthetic mesh whose services follow their VirtualServices), creates N
VirtualServices and N CanaryRollouts (two builtin SLOs each, long holds so they stay
Progressing), then runs `canaryguard run` under the shipped RBAC once per configuration:

- `main`: the operator as it was before status writes were made reader-driven and queries
  batched (the tree of `--baseline-ref`, default the merge base with main), if given;
- `off`: this operator with `--no-batch-queries`;
- `nocache`: this operator with `--no-cache-routes` (a GET per tick, as before);
- `on`: this operator as shipped (batched queries, VirtualServices from a watch,
  `--status-heartbeat` 60 s).

Each is measured over `--window` seconds once every rollout has ticked: the operator's CPU
(cores) and RSS, its ticks, tick lag p50/p99 (from its histogram), Prometheus queries per
tick (counted by Prometheus itself), Kubernetes API reads and writes per tick (counted by
the API server: the operator is its only client then). Then, with `on`, the first
`--rollbacks` services' canaries start failing; a watch on the VirtualServices times each
rollback's weight write against the end of its sustained window (breachingSince + window),
as a ratio to one interval.

    .venv/bin/python bench/bench_operator.py --rollouts 1000 [5000] --interval 30 \\
        --window 120 --rollbacks 60 [--configs main,off,on] [--json out.json]

Figures, not assertions: everything runs on 127.0.0.1 and stops by itself. Other load on
the machine shows in the lag; the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from prometheus_client.parser import text_string_to_metric_families

from canaryguard_testbed.bins import istio_crds
from canaryguard_testbed.childproc import free_port, python_module_args, spawn, terminate
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.prometheus_server import PrometheusServer

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
WINDOW = 60  # the sustained window of the error-rate SLO, s
CONFIG_FLAGS: dict[str, list[str]] = {
    "main": [],
    "off": ["--no-batch-queries"],
    "nocache": ["--no-cache-routes"],
    "on": [],
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- reading figures -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident set now (VmRSS) or at its peak since it started (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fetch(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
        return str(resp.read().decode())


def total(samples: Samples, name: str, **match: str) -> float:
    """The sum of the samples of `name` whose labels include `match`."""
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name and all((k, v) in labels for k, v in match.items())
    )


def quantile(before: Samples, after: Samples, name: str, q: float) -> float | None:
    """`histogram_quantile(q, ...)` of a histogram's increase between two scrapes."""
    buckets: dict[float, float] = {}
    for (sample, labels), value in after.items():
        if sample == f"{name}_bucket":
            le = float(dict(labels)["le"])
            buckets[le] = value - before.get((sample, labels), 0.0)
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank, lower, below = q * count, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, buckets[bound]
    return lower


# --- what is created -------------------------------------------------------------------------


def objects(count: int, prometheus_url: str, interval: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        name = f"svc-{i:04d}"
        yield {
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
        yield {
            "apiVersion": "canaryguard.io/v1alpha1",
            "kind": "CanaryRollout",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "virtualService": {"name": name},
                "baseline": {"host": name, "subset": "v1"},
                "canary": {"host": name, "subset": "v2"},
                "metrics": {
                    "prometheus": {"address": prometheus_url},
                    "selector": {
                        "destination_service_name": name,
                        "destination_service_namespace": NAMESPACE,
                    },
                    "baselineVersion": "v1",
                    "canaryVersion": "v2",
                },
                "steps": [{"weight": 10, "hold": "2h"}, {"weight": 100, "hold": "2h"}],
                "analysis": {
                    "interval": f"{interval}s",
                    "minRequests": 50,
                    "slos": [
                        {
                            "name": "error-rate",
                            "errorRate": {},
                            "margin": {"absolute": 0.02},
                            "lookback": "1m",
                            "window": f"{WINDOW}s",
                        },
                        {
                            "name": "p99-latency",
                            "latency": {"quantile": 0.99},
                            "margin": {"relative": 0.5, "absolute": 25},
                            "lookback": "1m",
                            "window": f"{WINDOW}s",
                        },
                    ],
                },
            },
        }


def apply_all(cp: ControlPlane, docs: Sequence[dict[str, Any]], chunk: int = 500) -> None:
    for start in range(0, len(docs), chunk):
        text = yaml.safe_dump_all(docs[start : start + chunk])
        cp.kubectl("apply", "--server-side", "-f", "-", input=text, timeout=900)


def baseline_tree(ref: str, work: Path) -> Path:
    """The operator's source at git `ref`, extracted under `work` (for the `main` run)."""
    target = work / "baseline"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "operator"],
        check=True,
        capture_output=True,
    ).stdout
    target.mkdir()
    archive_path = work / "baseline.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    return target / "operator"


# --- one run of the operator -------------------------------------------------------------------


@dataclass
class Stack:
    cp: ControlPlane
    prom: PrometheusServer
    mesh_url: str
    operator_kubeconfig: Path
    work: Path
    rollouts: int
    interval: int
    baseline: Path | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    extra_flags: list[str] = field(default_factory=list)
    settle: float = 5.0  # seconds between every rollout's first tick and the window

    def neighbours(self) -> dict[str, int]:
        """The other processes on the machine's cores during a run, by name: their CPU is
        printed next to the operator's (they share the same cores)."""
        found = dict(zip(("etcd", "kube-apiserver"), self.cp.pids(), strict=False))
        if self.prom.pid is not None:
            found["prometheus"] = self.prom.pid
        for child in self.children:
            if child.poll() is None:
                found["synthetic mesh"] = child.pid
        return found

    def start_operator(self, config: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if config == "main":
            assert self.baseline is not None
            env["PYTHONPATH"] = str(self.baseline)
        proc = spawn(
            [
                sys.executable,
                "-m",
                "canaryguard",
                "run",
                f"--kubeconfig={self.operator_kubeconfig}",
                f"--namespace={NAMESPACE}",
                "--liveness=off",
                f"--metrics=127.0.0.1:{port}",
                "--log-format=json",
                f"--allow-prometheus={self.prom.url}",
                *CONFIG_FLAGS[config],
                *self.extra_flags,
            ],
            self.work / f"operator-{config}.log",
            env=env,
        )
        return proc, f"http://127.0.0.1:{port}/metrics"

    def api_counts(self) -> Samples:
        return parse(self.cp.kubectl("get", "--raw", "/metrics", timeout=60).stdout)

    def prometheus_counts(self) -> Samples:
        return parse(fetch(self.prom.url + "/metrics"))

    def wait_ticked(self, url: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
        """Wait until every rollout has started (none Pending or Invalid) and ticked once
        since the operator started."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"the operator exited ({proc.returncode}); see its log")
            try:
                now = parse(fetch(url))
            except OSError:
                time.sleep(1)
                continue
            tracked = total(now, "canaryguard_rollouts")
            waiting = total(now, "canaryguard_rollouts", phase="Pending") + total(
                now, "canaryguard_rollouts", phase="Invalid"
            )
            ticks = total(now, "canaryguard_tick_duration_seconds_count")
            if tracked == self.rollouts and waiting == 0 and ticks >= self.rollouts:
                return time.monotonic() - began
            time.sleep(2)
        raise SystemExit(f"not every rollout ticked within {timeout:.0f}s")

    def measure(self, config: str, window: float) -> dict[str, Any]:
        proc, url = self.start_operator(config)
        try:
            ready = self.wait_ticked(url, proc, timeout=self.interval * 4 + 600)
            # Past the start-up: every rollout's first tick writes its status (Pending to
            # Progressing), a burst the API server takes over the first interval or two.
            time.sleep(self.settle)
            op0, api0, prom0 = parse(fetch(url)), self.api_counts(), self.prometheus_counts()
            others = self.neighbours()
            others0 = {name: cpu_seconds(pid) for name, pid in others.items()}
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(window)
            op1, api1, prom1 = parse(fetch(url)), self.api_counts(), self.prometheus_counts()
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            others1 = {name: cpu_seconds(pid) for name, pid in others.items()}
            rss, rss_peak = rss_mib(proc.pid), rss_mib(proc.pid, "VmHWM")
            load = os.getloadavg()
        finally:
            terminate(proc)
        elapsed = t1 - t0

        def delta(a: Samples, b: Samples, name: str, **match: str) -> float:
            return total(b, name, **match) - total(a, name, **match)

        ticks = delta(op0, op1, "canaryguard_tick_duration_seconds_count")
        queries = delta(prom0, prom1, "prometheus_http_requests_total", handler="/api/v1/query")
        resources = ("canaryrollouts", "virtualservices", "events", "secrets")
        reads = sum(
            delta(api0, api1, "apiserver_request_total", resource=r, verb=v)
            for r in resources
            for v in ("GET", "LIST")
        )
        writes = sum(
            delta(api0, api1, "apiserver_request_total", resource=r, verb=v)
            for r in resources
            for v in ("PATCH", "PUT", "POST", "DELETE")
        )
        status_patches = delta(
            api0,
            api1,
            "apiserver_request_total",
            resource="canaryrollouts",
            subresource="status",
            verb="PATCH",
        )
        members = delta(op0, op1, "canaryguard_query_batch_members_sum")
        batches = delta(op0, op1, "canaryguard_query_batch_members_count")
        per_tick = max(ticks, 1.0)
        groups = 2 * 2  # (address, kind, lookback): error rate, p99 and their request count
        return {
            "config": config,
            "flags": [*CONFIG_FLAGS[config], *self.extra_flags],
            "ready_after_s": round(ready, 1),
            "settle_s": self.settle,
            "window_s": round(elapsed, 1),
            "ticks": int(ticks),
            "expected_ticks": round(self.rollouts * elapsed / self.interval),
            "cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
            "cpu_ms_per_tick": round(1000 * (cpu1 - cpu0) / per_tick, 2),
            # What every tick on time costs, from the CPU per tick actually run (the same
            # as cpu_cores when no tick was missed; more telling on a busy machine).
            "cpu_cores_at_full_rate": round(
                (cpu1 - cpu0) / per_tick * self.rollouts / self.interval, 3
            ),
            "rss_mib": round(rss),
            "rss_peak_mib": round(rss_peak),  # since the operator started, start-up included
            "tick_lag_p50_s": _round(quantile(op0, op1, "canaryguard_tick_lag_seconds", 0.5)),
            "tick_lag_p99_s": _round(quantile(op0, op1, "canaryguard_tick_lag_seconds", 0.99)),
            # A tick's own time, from its start to its end (queries, writes, waits included).
            "tick_duration_p50_s": _round(
                quantile(op0, op1, "canaryguard_tick_duration_seconds", 0.5)
            ),
            "tick_duration_p99_s": _round(
                quantile(op0, op1, "canaryguard_tick_duration_seconds", 0.99)
            ),
            "neighbour_cpu_cores": {
                name: round((others1[name] - others0[name]) / elapsed, 3) for name in others
            },
            "prometheus_queries": int(queries),
            "prometheus_queries_per_tick": round(queries / per_tick, 3),
            "prometheus_queries_per_slot_second": round(queries / elapsed, 2),
            "query_shapes": groups - 1,  # the request count is one shape for both SLOs
            "batch_members_mean": round(members / batches, 1) if batches else None,
            "api_reads_per_tick": round(reads / per_tick, 3),
            "api_writes_per_tick": round(writes / per_tick, 3),
            "status_patches_per_s": round(status_patches / elapsed, 2),
            "status_deferred_per_tick": round(
                delta(op0, op1, "canaryguard_status_writes_total", result="deferred") / per_tick,
                3,
            ),
            "load_average": [round(x, 1) for x in load],
            # Rolled back by the noise of a healthy mesh (small canary samples), if any.
            "rolled_back": int(total(op1, "canaryguard_rollouts", phase="RolledBack")),
        }

    def reaction(self, rollbacks: int, timeout: float) -> dict[str, Any]:
        """With `on`: the first `rollbacks` canaries fail; time each rollback's weight write
        against the end of its sustained window."""
        proc, url = self.start_operator("on")
        # Canaries still running (the noise of a healthy mesh may have rolled some back).
        names = [
            n for n, s in sorted(self._statuses(None).items()) if s.get("phase") == "Progressing"
        ]
        names = names[:rollbacks]
        written: dict[str, float] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(set(names), written, stop))
        try:
            self.wait_ticked(url, proc, timeout=self.interval * 4 + 600)
            watcher.start()
            time.sleep(2)
            body = {
                "services": [f"{NAMESPACE}/{n}" for n in names],
                "version": "v2",
                "set": {"error_rate": 0.5},
            }
            request = urllib.request.Request(  # noqa: S310 - loopback
                self.mesh_url + "/control",
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
            began = time.monotonic()
            while len(written) < rollbacks and time.monotonic() - began < timeout:
                time.sleep(2)
            statuses = self._statuses(names)
        finally:
            stop.set()
            terminate(proc)
        ratios, late = [], []
        for name in names:
            rollback = (statuses.get(name) or {}).get("rollback") or {}
            since = rollback.get("breachingSince")
            if name not in written or not since or rollback.get("reason") != "SLOBreach":
                continue
            window_end = _ts(since) + WINDOW
            seconds = written[name] - window_end
            late.append(seconds)
            ratios.append(seconds / self.interval)
        ratios.sort()
        return {
            "rollbacks_asked": rollbacks,
            "rollbacks_timed": len(ratios),
            "reaction_p50_s": _round(_pick(sorted(late), 0.5)),
            "reaction_max_s": _round(max(late, default=None)),
            "ratio_to_interval_p50": _round(_pick(ratios, 0.5)),
            "ratio_to_interval_p99": _round(_pick(ratios, 0.99)),
            "ratio_to_interval_max": _round(max(ratios, default=None)),
            "within_one_interval": sum(1 for r in ratios if r < 1.0),
        }

    def _watch(self, names: set[str], written: dict[str, float], stop: threading.Event) -> None:
        """Record when each VirtualService of `names` is first written with 100/0."""
        with self.cp.api_client() as client:
            api = kubernetes.client.CustomObjectsApi(client)
            while not stop.is_set():
                watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
                try:
                    for event in watch.stream(  # type: ignore[no-untyped-call]
                        api.list_namespaced_custom_object,
                        "networking.istio.io",
                        "v1",
                        NAMESPACE,
                        "virtualservices",
                        timeout_seconds=30,
                    ):
                        seen = time.time()
                        obj = event["object"]
                        name = obj["metadata"]["name"]
                        if name in names and name not in written and _rolled_back(obj):
                            written[name] = seen
                        if stop.is_set():
                            break
                except Exception:  # a broken watch is restarted
                    time.sleep(0.5)
                finally:
                    watch.stop()  # type: ignore[no-untyped-call]

    def _statuses(self, names: Sequence[str] | None) -> dict[str, dict[str, Any]]:
        """The statuses of the rollouts `names` (None: all)."""
        out = self.cp.kubectl("get", "cro", "-n", NAMESPACE, "-o", "json", timeout=300).stdout
        return {
            item["metadata"]["name"]: item.get("status") or {}
            for item in json.loads(out)["items"]
            if names is None or item["metadata"]["name"] in names
        }


def _rolled_back(vs: dict[str, Any]) -> bool:
    for http in vs.get("spec", {}).get("http") or []:
        weights = {d["destination"].get("subset"): d.get("weight", 0) for d in http["route"]}
        if weights.get("v1") == 100 and weights.get("v2", 0) == 0 and "v2" in weights:
            return True
    return False


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _pick(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- the whole run ---------------------------------------------------------------------------


def run_size(args: argparse.Namespace, rollouts: int, baseline: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"cg-bench-{rollouts}-"))
    cp = ControlPlane(work / "kube")
    scrape = "5s" if rollouts <= 2000 else "10s"
    prom = PrometheusServer(work / "prometheus", scrape_interval=scrape)
    children: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"rollouts": rollouts, "interval_s": args.interval, "scrape": scrape}
    try:
        began = time.monotonic()
        cp.start()
        cp.install_crds(istio_crds(), ROOT / "crds" / "canaryrollout.yaml")
        cp.kubectl("create", "namespace", NAMESPACE)
        cp.kubectl("create", "namespace", "canaryguard-system")
        cp.kubectl("apply", "-f", str(ROOT / "manifests" / "rbac"))
        sa = cp.service_account_kubeconfig(
            "canaryguard-system", "canaryguard", expiration_seconds=6 * 3600
        )
        prom.start()
        port_file = work / "synthetic.port"
        children.append(
            spawn(
                python_module_args(
                    "canaryguard_testbed.synthetic",
                    f"--services={rollouts}",
                    f"--namespace={NAMESPACE}",
                    f"--kubeconfig={cp.admin_kubeconfig}",
                    "--rps=20",
                    "--istio-only",  # the SLOs are builtins: the model's metrics are not read
                    "--port=0",
                    f"--port-file={port_file}",
                    "--max-duration=14400",
                ),
                work / "synthetic.log",
            )
        )
        while not port_file.exists():
            time.sleep(0.1)
        mesh = f"127.0.0.1:{int(port_file.read_text())}"
        prom.add_target("synthetic", mesh)
        apply_all(cp, list(objects(rollouts, prom.url, args.interval)))
        result["setup_s"] = round(time.monotonic() - began, 1)
        print(f"[{rollouts}] stack up, {rollouts} rollouts created in {result['setup_s']}s")
        stack = Stack(
            cp,
            prom,
            f"http://{mesh}",
            sa,
            work,
            rollouts,
            args.interval,
            baseline,
            children=children,
            extra_flags=args.operator_flag,
            settle=args.settle,
        )
        runs = {}
        for config in args.configs:
            if config == "main" and baseline is None:
                continue
            runs[config] = stack.measure(config, args.window)
            print(f"[{rollouts}] {config}: {json.dumps(runs[config])}", flush=True)
        result["runs"] = runs
        if args.rollbacks:
            result["reaction"] = stack.reaction(args.rollbacks, timeout=WINDOW + 8 * args.interval)
            print(f"[{rollouts}] reaction: {json.dumps(result['reaction'])}", flush=True)
    finally:
        for child in reversed(children):
            terminate(child)
        prom.close()
        cp.stop()
    return result


def table(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        ("operator CPU, cores", "cpu_cores"),
        ("CPU per tick, ms", "cpu_ms_per_tick"),
        ("cores for every tick on time", "cpu_cores_at_full_rate"),
        ("RSS, MiB", "rss_mib"),
        ("peak RSS since start, MiB", "rss_peak_mib"),
        ("tick lag p50, s", "tick_lag_p50_s"),
        ("tick lag p99, s", "tick_lag_p99_s"),
        ("tick duration p50, s", "tick_duration_p50_s"),
        ("tick duration p99, s", "tick_duration_p99_s"),
        ("ticks / expected", None),
        ("Prometheus queries per tick", "prometheus_queries_per_tick"),
        ("Prometheus queries per 1 s slot", "prometheus_queries_per_slot_second"),
        ("rollouts per batched query", "batch_members_mean"),
        ("API reads per tick", "api_reads_per_tick"),
        ("API writes per tick", "api_writes_per_tick"),
        ("status patches per s", "status_patches_per_s"),
        ("rolled back by noise", "rolled_back"),
        ("load average (1 min)", None),
        ("other processes' CPU, cores", None),
    ]
    columns = [(r["rollouts"], name, run) for r in results for name, run in r["runs"].items()]
    head = "| | " + " | ".join(f"{n:,} {name}" for n, name, _ in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for label, key in rows:
        cells = []
        for _, _, run in columns:
            if label.startswith("load"):
                cells.append(f"{run['load_average'][0]:g}")
            elif label.startswith("other"):
                others = run.get("neighbour_cpu_cores") or {}
                cells.append(", ".join(f"{k} {v:g}" for k, v in others.items()) or "n/a")
            elif key is None:
                cells.append(f"{run['ticks']}/{run['expected_ticks']}")
            else:
                value = run.get(key)
                cells.append("n/a" if value is None else f"{value:g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, nargs="+", default=[1000])
    parser.add_argument("--interval", type=int, default=30, help="analysis interval, s")
    parser.add_argument("--window", type=float, default=120.0, help="measurement window, s")
    parser.add_argument("--rollbacks", type=int, default=60, help="0: no reaction run")
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to wait after every rollout has ticked once before the window starts "
        "(default 5; one or two intervals measure past the start-up's status writes)",
    )
    parser.add_argument(
        "--operator-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="a flag added to every measured operator's command line (repeatable), e.g. "
        "--operator-flag=--concurrency=128",
    )
    parser.add_argument(
        "--configs",
        type=lambda text: [c for c in text.split(",") if c],
        default=["main", "off", "on"],
        help="which operators to measure, in order (main,off,nocache,on)",
    )
    parser.add_argument(
        "--baseline-ref",
        default="",
        help="git ref of the `main` operator (default: the merge base of HEAD and main)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    unknown = set(args.configs) - set(CONFIG_FLAGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}")
    baseline = None
    if "main" in args.configs:
        ref = (
            args.baseline_ref
            or subprocess.run(
                ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        baseline = baseline_tree(ref, Path(tempfile.mkdtemp(prefix="cg-bench-baseline-")))
        print(f"main: the operator at {ref}")
    results = [run_size(args, n, baseline) for n in args.rollouts]
    print()
    print(table(results))
    for r in results:
        if "reaction" in r:
            print(f"reaction at {r['rollouts']:,} rollouts: {json.dumps(r['reaction'])}")
    if args.json:
        document = {"cores": os.cpu_count(), "results": results}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
