"""One service's data plane as child processes: a model server per version and a router that
follows the service's VirtualService, registered as Prometheus targets. Used by the
integration tests, the demo and benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canaryguard_testbed.childproc import (
    python_module_args,
    spawn,
    terminate,
    wait_for_port_file,
)
from canaryguard_testbed.loadgen import LoadResult, run_load
from canaryguard_testbed.prometheus_server import PrometheusServer

ROUTER_JOB = "mesh-router"
MODEL_JOB = "model-servers"


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


class Mesh:
    """Model servers (one per version) and a router for `service` in `namespace`."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        virtual_service: str,
        service: str = "fraud-model",
        versions: tuple[str, ...] = ("v1", "v2"),
        scenario: str | Path = "healthy",
        route: str | None = None,
        seed: int = 1,
        prometheus: PrometheusServer | None = None,
        workdir: Path | None = None,
        http_route: str | None = None,
    ) -> None:
        """With `http_route`, the router follows that Gateway API HTTPRoute instead of the
        VirtualService, and each version is its own Service `<service>-<version>` (what the
        HTTPRoute's backendRefs name), labelled app=<service> as Istio reports it."""
        self.http_route = http_route
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.virtual_service = virtual_service
        self.service = service
        self.versions = versions
        self.scenario = str(scenario)
        self.route = route
        self.seed = seed
        self.prometheus = prometheus
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"cg-mesh-{namespace}-"))
        self.epoch: float | None = None
        self.models: dict[str, _Child] = {}
        self.router: _Child | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the model servers, then the router; register all as Prometheus targets.
        On failure everything started so far is stopped."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.epoch = time.time()  # scenario t=0, shared by every version
        for version in self.versions:
            port_file = self.workdir / f"model-{version}.port"
            log_path = self.workdir / f"model-{version}.log"
            args = python_module_args(
                "canaryguard_testbed.modelserver",
                "--port=0",
                f"--port-file={port_file}",
                f"--version={version}",
                f"--scenario={self.scenario}",
                f"--seed={self.seed}",
                f"--epoch={self.epoch}",
            )
            self.models[version] = _Child(version, spawn(args, log_path), log_path)
        for version, child in self.models.items():
            child.port = wait_for_port_file(
                self.workdir / f"model-{version}.port", child.proc, child.log_path
            )
        port_file = self.workdir / "router.port"
        log_path = self.workdir / "router.log"
        args = python_module_args(
            "canaryguard_testbed.router",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
            (
                f"--http-route={self.http_route}"
                if self.http_route
                else f"--virtual-service={self.virtual_service}"
            ),
            f"--service-name={self.service}",
            "--port=0",
            f"--port-file={port_file}",
            f"--seed={self.seed}",
            *(self._backend(v, c.url) for v, c in self.models.items()),
            *([f"--route={self.route}"] if self.route else []),
        )
        router = _Child("router", spawn(args, log_path), log_path)
        self.router = router
        router.port = wait_for_port_file(port_file, router.proc, log_path)
        if self.prometheus is not None:
            self.prometheus.add_target(
                ROUTER_JOB, router.address, {"namespace": self.namespace, "pod": "router"}
            )
            for version, child in self.models.items():
                self.prometheus.add_target(
                    MODEL_JOB,
                    child.address,
                    {
                        "namespace": self.namespace,
                        "app": self.service,
                        "pod": f"{self.service}-{version}",
                    },
                )

    def _backend(self, version: str, url: str) -> str:
        if self.http_route:
            svc = f"{self.service}-{version}"
            return f"--backend={svc}/{version}={url},app={self.service},workload={svc}"
        return f"--backend={self.service}/{version}={url}"

    def stop(self) -> None:
        """Deregister the targets, stop every process and remove the working folder."""
        children = [c for c in (self.router, *self.models.values()) if c is not None]
        if self.prometheus is not None:
            for child in children:
                if child.port:
                    job = ROUTER_JOB if child is self.router else MODEL_JOB
                    self.prometheus.remove_target(job, child.address)
        for child in children:
            terminate(child.proc)
        self.router = None
        self.models = {}
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Mesh:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- use --------------------------------------------------------------------------------

    @property
    def router_url(self) -> str:
        if self.router is None:
            raise RuntimeError("mesh is not running")
        return self.router.url

    @property
    def predict_url(self) -> str:
        return f"{self.router_url}/predict"

    def scrape_addresses(self) -> list[str]:
        """host:port of every process Prometheus scrapes."""
        children = [c for c in (self.router, *self.models.values()) if c is not None]
        return [c.address for c in children]

    def wait_scraped(self, timeout: float = 20.0) -> None:
        """Wait until Prometheus scrapes every process of this mesh."""
        if self.prometheus is None:
            raise RuntimeError("this mesh has no Prometheus")
        self.prometheus.wait_for_targets(self.scrape_addresses(), timeout)

    def control(self, version: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Override a version's behaviour now, e.g. control("v2", {"error_rate": 0.04})."""
        return self._post(self.models[version].url + "/control", changes)

    def reset(self, version: str) -> dict[str, Any]:
        """Drop a version's overrides: back to the scenario."""
        return self._post(self.models[version].url + "/control", {"reset": True})

    def current_route(self) -> dict[str, Any]:
        """The router's current route and shares (its /-/route)."""
        with urllib.request.urlopen(self.router_url + "/-/route", timeout=5) as resp:  # noqa: S310
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def wait_route(self, shares: dict[str, float], timeout: float = 10.0) -> float:
        """Wait until the router applies `shares` ({subset: share}); returns seconds waited."""
        began = time.monotonic()
        while True:
            current = {
                key.rsplit("/", 1)[-1]: share
                for key, share in self.current_route()["shares"].items()
            }
            if all(abs(current.get(k, 0.0) - v) < 1e-9 for k, v in shares.items()):
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"router route {current} is not {shares} after {timeout}s")
            time.sleep(0.05)

    def load(
        self,
        *,
        rate: float = 100.0,
        max_requests: int = 1000,
        max_duration: float = 60.0,
        seed: int = 1,
        concurrency: int = 64,
    ) -> LoadResult:
        """Send bounded load through the router (blocking)."""
        return asyncio.run(
            run_load(
                self.predict_url,
                rate=rate,
                max_requests=max_requests,
                max_duration=max_duration,
                seed=seed,
                concurrency=concurrency,
            )
        )

    @staticmethod
    def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - URL of a loopback child
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
                data: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise ValueError(f"POST {url}: HTTP {err.code}: {detail}") from err
        return data
