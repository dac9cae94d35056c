"""The real operator carrying many rollouts: CPU share, tick rate and tick latency.

Starts the local stack (kube-apiserver + etcd, Prometheus scraping every 5 s, the synthetic
mesh with N services whose weights follow their VirtualServices), creates N VirtualServices
and N CanaryRollouts (two builtin SLOs each, long holds so they stay Progressing), runs
`canaryguard run` under the shipped RBAC and measures, once every rollout is Progressing,
the operator's CPU time and its tick counters over a window. Prints the figures and what
they mean at a 30 s interval. Everything runs on 127.0.0.1 and stops by itself.

    .venv/bin/python bench/bench_operator.py [--rollouts 200] [--interval 10] [--window 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from canaryguard_testbed.bins import istio_crds
from canaryguard_testbed.childproc import free_port, python_module_args, spawn, terminate
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.prometheus_server import PrometheusServer

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def objects(count: int, prometheus_url: str, interval: int) -> str:
    docs = []
    for i in range(count):
        name = f"svc-{i:04d}"
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "hosts": [name],
                    "http": [
                        {
                            "name": "primary",
                            "route": [{"destination": {"host": name, "subset": "v1"}}],
                        }
                    ],
                },
            }
        )
        docs.append(
            {
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
                    "steps": [{"weight": 10, "hold": "1h"}, {"weight": 100, "hold": "1h"}],
                    "analysis": {
                        "interval": f"{interval}s",
                        "minRequests": 10,
                        "slos": [
                            {
                                "name": "error-rate",
                                "errorRate": {},
                                "margin": {"absolute": 0.02},
                                "lookback": "1m",
                            },
                            {
                                "name": "p99-latency",
                                "latency": {"quantile": 0.99},
                                "margin": {"relative": 0.5},
                                "lookback": "1m",
                            },
                        ],
                    },
                },
            }
        )
    return yaml.safe_dump_all(docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--interval", type=int, default=10, help="analysis interval, s")
    parser.add_argument("--window", type=float, default=60.0, help="measurement window, s")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    cp = ControlPlane()
    prom = PrometheusServer(work / "prometheus", scrape_interval="5s")
    children: list[subprocess.Popen[bytes]] = []
    try:
        cp.start()
        cp.install_crds(istio_crds(), ROOT / "crds" / "canaryrollout.yaml")
        cp.kubectl("create", "namespace", NAMESPACE)
        cp.kubectl("create", "namespace", "canaryguard-system")
        cp.kubectl("apply", "-f", str(ROOT / "manifests" / "rbac"))
        sa = cp.service_account_kubeconfig("canaryguard-system", "canaryguard")
        prom.start()
        port_file = work / "synthetic.port"
        children.append(
            spawn(
                python_module_args(
                    "canaryguard_testbed.synthetic",
                    f"--services={args.rollouts}",
                    f"--namespace={NAMESPACE}",
                    f"--kubeconfig={cp.admin_kubeconfig}",
                    "--rps=20",
                    "--port=0",
                    f"--port-file={port_file}",
                    f"--max-duration={args.window + 900}",
                ),
                work / "synthetic.log",
            )
        )
        while not port_file.exists():
            time.sleep(0.1)
        prom.add_target("synthetic", f"127.0.0.1:{int(port_file.read_text())}")
        began = time.monotonic()
        cp.kubectl(
            "apply", "-f", "-", input=objects(args.rollouts, prom.url, args.interval), timeout=600
        )
        print(f"created {args.rollouts} rollouts in {time.monotonic() - began:.1f}s")
        metrics_port = free_port()
        operator = spawn(
            [
                sys.executable,
                "-m",
                "canaryguard",
                "run",
                f"--kubeconfig={sa}",
                f"--namespace={NAMESPACE}",
                "--liveness=off",
                f"--metrics=127.0.0.1:{metrics_port}",
                "--log-format=json",
                f"--allow-prometheus={prom.url}",
            ],
            work / "operator.log",
        )
        children.append(operator)
        began = time.monotonic()
        while True:
            out = cp.kubectl("get", "cro", "-n", NAMESPACE, "-o", "json", timeout=120).stdout
            phases = [i.get("status", {}).get("phase") for i in json.loads(out)["items"]]
            if phases.count("Progressing") == args.rollouts:
                break
            if time.monotonic() - began > 600:
                raise SystemExit(f"not all Progressing after 600s: {phases.count('Progressing')}")
            time.sleep(2)
        print(f"all {args.rollouts} Progressing after {time.monotonic() - began:.1f}s")
        url = f"http://127.0.0.1:{metrics_port}/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return str(resp.read().decode())

        cpu0, text0, t0 = cpu_seconds(operator.pid), scrape(), time.monotonic()
        time.sleep(args.window)
        cpu1, text1, t1 = cpu_seconds(operator.pid), scrape(), time.monotonic()
        elapsed = t1 - t0
        share = (cpu1 - cpu0) / elapsed
        ticks = metric(text1, "canaryguard_tick_duration_seconds_count") - metric(
            text0, "canaryguard_tick_duration_seconds_count"
        )
        tick_time = metric(text1, "canaryguard_tick_duration_seconds_sum") - metric(
            text0, "canaryguard_tick_duration_seconds_sum"
        )
        errors = metric(text1, "canaryguard_prometheus_query_errors_total") - metric(
            text0, "canaryguard_prometheus_query_errors_total"
        )
        rss = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{operator.pid}/status").read_text())
        expected = args.rollouts * elapsed / args.interval
        print(f"rollouts={args.rollouts} interval={args.interval}s window={elapsed:.0f}s")
        print(f"ticks={ticks:.0f} expected={expected:.0f} ({ticks / expected:.0%})")
        print(f"mean_tick_wall_ms={1000 * tick_time / max(ticks, 1):.1f}")
        print(f"operator_cpu_share={share:.3f} of a core")
        print(f"operator_cpu_per_tick_ms={1000 * (cpu1 - cpu0) / max(ticks, 1):.2f}")
        print(f"at_30s_interval_core_share={share * args.interval / 30:.3f}")
        print(f"query_errors={errors:.0f}")
        print(f"operator_rss_mib={int(rss.group(1)) / 1024 if rss else 0:.0f}")
    finally:
        for child in reversed(children):
            terminate(child)
        prom.close()
        cp.stop()


if __name__ == "__main__":
    main()
