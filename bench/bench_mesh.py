"""Measure the local stack's mesh part on this machine.

    .venv/bin/python bench/bench_mesh.py [prometheus] [router] [synthetic]

prometheus: start-up time of the real Prometheus (fresh, and restarted with data).
router:     requests/s the router sustains (model servers, router and load generator are
            separate processes, as in the tests), with its CPU use.
synthetic:  CPU of the synthetic mode exporting 500 services, and of Prometheus scraping it.
Every process is started here and stopped before the script ends; all load is bounded.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from canaryguard_testbed.childproc import (
    python_module_args,
    spawn,
    terminate,
    wait_for_port_file,
)
from canaryguard_testbed.prometheus_server import PrometheusServer

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def bench_prometheus() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh: list[float] = []
        for i in range(5):
            server = PrometheusServer(Path(tmp) / f"p{i}")
            server.start()
            assert server.startup_seconds is not None
            fresh.append(server.startup_seconds)
            server.close()
        server = PrometheusServer(Path(tmp) / "restart")
        server.start()
        time.sleep(3)
        restarts: list[float] = []
        for _ in range(5):
            server.restart()
            assert server.startup_seconds is not None
            restarts.append(server.startup_seconds)
        server.close()
    print(
        f"prometheus start-up: fresh median {statistics.median(fresh) * 1000:.0f} ms "
        f"(max {max(fresh) * 1000:.0f}), restart with data median "
        f"{statistics.median(restarts) * 1000:.0f} ms"
    )


def bench_router() -> None:
    from canaryguard_testbed.bins import istio_crds
    from canaryguard_testbed.controlplane import ControlPlane
    from canaryguard_testbed.mesh import Mesh

    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as cp:
        cp.install_crds(istio_crds())
        cp.kubectl("create", "namespace", "bench")
        vs = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "fraud-model", "namespace": "bench"},
            "spec": {
                "hosts": ["fraud-model"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "fraud-model", "subset": "v1"}, "weight": 90},
                            {"destination": {"host": "fraud-model", "subset": "v2"}, "weight": 10},
                        ]
                    }
                ],
            },
        }
        cp.kubectl("apply", "-f", "-", input=json.dumps(vs))
        scenario = Path(tmp) / "fast.yaml"
        scenario.write_text(
            "seed: 1\ndefaults: {error_rate: 0, latency: {median_ms: 1, sigma: 0}}\n"
        )
        with Mesh(
            kubeconfig=cp.admin_kubeconfig,
            namespace="bench",
            virtual_service="fraud-model",
            scenario=scenario,
            workdir=Path(tmp) / "mesh",
        ) as mesh:
            assert mesh.router is not None
            router_pid = mesh.router.proc.pid
            for rate in (200, 500, 1000, 2000, 4000):
                requests = int(min(rate * 8, 20_000))
                before = cpu_seconds(router_pid)
                out = subprocess.run(
                    python_module_args(
                        "canaryguard_testbed.loadgen",
                        f"--url={mesh.predict_url}",
                        f"--rate={rate}",
                        f"--max-requests={requests}",
                        "--max-duration=15",
                        "--concurrency=128",
                    ),
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=60,
                ).stdout
                summary = json.loads(out)
                used = cpu_seconds(router_pid) - before
                ok = summary["by_status"].get("200", 0)
                print(
                    f"router: offered {rate}/s -> achieved {summary['rate']}/s, "
                    f"{ok}/{summary['sent']} ok, p50 {summary['p50_ms']} ms, "
                    f"p99 {summary['p99_ms']} ms, router CPU {used / summary['duration_s']:.0%}"
                )


def bench_synthetic(services: int = 500, seconds: float = 60.0) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for interval in ("5s", "1s"):
            prom = PrometheusServer(Path(tmp) / f"prom-{interval}", scrape_interval=interval)
            prom.start()
            port_file, log_path = Path(tmp) / f"syn-{interval}.port", Path(tmp) / "syn.log"
            proc = spawn(
                python_module_args(
                    "canaryguard_testbed.synthetic",
                    f"--services={services}",
                    "--rps=20",
                    "--regress=25",
                    f"--port-file={port_file}",
                    f"--max-duration={seconds + 60}",
                ),
                log_path,
            )
            try:
                port = wait_for_port_file(port_file, proc, log_path)
                address = f"127.0.0.1:{port}"
                # Both versions carry traffic, as in a rollout half way.
                request = urllib.request.Request(
                    f"http://{address}/weights",
                    data=json.dumps({"weights": {"v1": 50, "v2": 50}}).encode(),
                    method="POST",
                )
                urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
                prom.add_target("synthetic", address)
                prom.wait_for_targets([address], timeout=30)
                assert prom._proc is not None
                syn0, prom0 = cpu_seconds(proc.pid), cpu_seconds(prom._proc.pid)
                time.sleep(seconds)
                syn = (cpu_seconds(proc.pid) - syn0) / seconds
                prom_cpu = (cpu_seconds(prom._proc.pid) - prom0) / seconds
                scrape = prom.query(f'scrape_duration_seconds{{instance="{address}"}}')
                samples = prom.query(f'scrape_samples_scraped{{instance="{address}"}}')
                up = prom.query(f'up{{instance="{address}"}}')
                print(
                    f"synthetic {services} services, scrape every {interval}: synthetic CPU "
                    f"{syn:.0%}, prometheus CPU {prom_cpu:.0%}, scrape "
                    f"{float(scrape[0]['value'][1]):.2f} s, "
                    f"{int(float(samples[0]['value'][1]))} samples, up={up[0]['value'][1]}"
                )
            finally:
                terminate(proc)
                prom.close()


def main(argv: list[str]) -> int:
    parts = argv or ["prometheus", "router", "synthetic"]
    for part in parts:
        {"prometheus": bench_prometheus, "router": bench_router, "synthetic": bench_synthetic}[
            part
        ]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
