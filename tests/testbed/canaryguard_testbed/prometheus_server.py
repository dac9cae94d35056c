"""The real Prometheus server (Debian's package) on a loopback port, for tests, the demo and
benchmarks.

Targets are file-based service discovery entries, so they come and go without a restart.
`stop()` keeps the port and the TSDB, so `start()` afterwards brings back the same server
with its data: the way to stage a metrics outage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from canaryguard_testbed.childproc import (
    ChildProcessError,
    free_port,
    http_ok,
    log_tail,
    spawn,
    terminate,
)

HOST = "127.0.0.1"


class PrometheusNotInstalledError(RuntimeError):
    """The prometheus binary is not on PATH."""


class PrometheusQueryError(RuntimeError):
    """Prometheus answered a query with an error, or could not be reached."""


def find_prometheus(binary: str | None = None) -> str:
    """Path of the prometheus binary: `binary`, $CANARYGUARD_PROMETHEUS, or PATH."""
    name = binary or os.environ.get("CANARYGUARD_PROMETHEUS") or "prometheus"
    found = shutil.which(name)
    if found is None:
        raise PrometheusNotInstalledError(
            f"prometheus binary {name!r} not found on PATH; run `make prometheus` "
            "(installs Debian's prometheus package)"
        )
    return found


class PrometheusServer:
    """A Prometheus server on 127.0.0.1 with a generated config and a temporary TSDB.

    Use as a context manager, or call `start()` and finally `close()`.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        scrape_interval: str = "1s",
        *,
        binary: str | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self._binary = binary
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="cg-prometheus-")) if workdir is None else workdir
        )
        self.scrape_interval = scrape_interval
        self.ready_timeout = ready_timeout
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._targets: dict[str, dict[str, dict[str, str]]] = {}

    # -- paths ------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def targets_dir(self) -> Path:
        return self.workdir / "targets"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:40123 (known once started)."""
        if self.port is None:
            raise RuntimeError("PrometheusServer has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The Prometheus process' id while it runs (benchmarks read its CPU)."""
        return self._proc.pid if self.running and self._proc is not None else None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (same port and data as before if it ran already); wait for /-/ready."""
        if self.running:
            raise RuntimeError(f"Prometheus already running at {self.url}")
        binary = find_prometheus(self._binary)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.targets_dir.mkdir(exist_ok=True)
        if self.port is None:
            self.port = free_port(HOST)
        self._write_config()
        began = time.monotonic()
        self._proc = spawn(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address={HOST}:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            self.log_path,
            cwd=self.workdir,
        )
        deadline = began + self.ready_timeout
        while not http_ok(f"{self.url}/-/ready", timeout=0.5):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise ChildProcessError(
                    f"prometheus exited with code {code} during start-up; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ChildProcessError(
                    f"prometheus not ready after {self.ready_timeout:.0f}s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - began

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server; port, targets and TSDB stay for a later `start()`."""
        if self._proc is not None:
            terminate(self._proc, timeout)
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """Suspend the process (SIGSTOP): queries hang instead of failing, like a stuck server."""
        if self._proc is None:
            raise RuntimeError("Prometheus is not running")
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen server (SIGCONT)."""
        if self._proc is None:
            raise RuntimeError("Prometheus is not running")
        self._proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its working folder if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- targets ----------------------------------------------------------------------------

    def add_target(self, job: str, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape `address` (host:port, path /metrics) as job `job` with extra target labels.
        Takes effect without a restart (file_sd); see `wait_for_targets`."""
        target_labels = dict(labels or {})
        reserved = {"job", "instance"} & target_labels.keys()
        if reserved:
            raise ValueError(f"labels {sorted(reserved)} are set by PrometheusServer")
        self._targets.setdefault(job, {})[address] = target_labels
        self._write_targets(job)

    def remove_target(self, job: str, address: str) -> None:
        """Stop scraping `address` in job `job` (no error if it was not there)."""
        self._targets.get(job, {}).pop(address, None)
        self._write_targets(job)

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus's active targets (the `activeTargets` of /api/v1/targets)."""
        data = self._get_json("/api/v1/targets", {"state": "active"})
        active: list[dict[str, Any]] = data["activeTargets"]
        return active

    def wait_for_targets(self, addresses: Iterable[str], timeout: float = 15.0) -> None:
        """Wait until every address in `addresses` has been scraped successfully."""
        wanted = set(addresses)
        deadline = time.monotonic() + timeout
        up: set[str] = set()
        while time.monotonic() < deadline:
            up = {
                t["labels"].get("instance", "") for t in self.targets() if t.get("health") == "up"
            }
            if wanted <= up:
                return
            time.sleep(0.2)
        raise TimeoutError(f"targets {sorted(wanted - up)} not up after {timeout:.0f}s")

    # -- queries ----------------------------------------------------------------------------

    def query(
        self, promql: str, at: float | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Instant query; returns the result list, e.g. [{"metric": {...}, "value": [t, "1"]}]."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get_json("/api/v1/query", params, timeout)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_by(self, promql: str, label: str) -> dict[str, float]:
        """Instant query returning {value of `label`: sample value}, e.g. split by version."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 15.0,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Poll `promql` until `predicate(result)` holds; returns that result."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql!r} did not satisfy the condition; last: {result!r}")
            time.sleep(interval)

    # -- internals --------------------------------------------------------------------------

    def _write_config(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "localstack",
                    # Each target's `job` label (in its file) overrides this job name.
                    "file_sd_configs": [
                        {"files": [str(self.targets_dir / "*.json")], "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _write_targets(self, job: str) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        groups = [
            {"targets": [address], "labels": {"job": job, **labels}}
            for address, labels in sorted(self._targets.get(job, {}).items())
        ]
        path = self.targets_dir / f"{_file_safe(job)}.json"
        tmp = self.targets_dir / f".{path.name}.tmp"  # outside the *.json glob until renamed
        tmp.write_text(json.dumps(groups, indent=1))
        os.replace(tmp, path)

    def _get_json(self, path: str, params: dict[str, str], timeout: float = 10.0) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise PrometheusQueryError(f"GET {path} {params}: HTTP {err.code}: {detail}") from err
        except (OSError, ValueError) as err:
            raise PrometheusQueryError(f"GET {path} {params}: {err}") from err
        if body.get("status") != "success":
            raise PrometheusQueryError(f"GET {path} {params}: {body.get('error', body)}")
        data: dict[str, Any] = body["data"]
        return data


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"
