"""The mesh in miniature: an HTTP router that splits real requests between model versions as
an Istio VirtualService's (or a Gateway API HTTPRoute's) weights say, and reports Istio's
standard metrics, with Istio's labels whichever object sets the weights.

    python -m canaryguard_testbed.router --kubeconfig K --namespace NS \\
        (--virtual-service VS | --http-route HR) [--route NAME] --service-name fraud-model \\
        --backend fraud-model/v1=http://127.0.0.1:P1 \\
        --backend fraud-model/v2=http://127.0.0.1:P2 --port P [--port-file F]

A backend is `HOST/SUBSET=URL`, optionally followed by `,version=V`, `,workload=W`, `,app=A`
(defaults: version = subset, workload = <service>-<version>, app = service). Requests to any
path are proxied; the router's own endpoints are `GET /metrics` (`istio_requests_total`,
`istio_request_duration_milliseconds`, reporter="destination"), `GET /-/ready` and
`GET /-/route` (the current route and shares, as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from canaryguard.runtime import logs
from canaryguard_testbed.childproc import write_port_file
from canaryguard_testbed.exposition import CONTENT_TYPE, CounterFamily
from canaryguard_testbed.istio_telemetry import IstioTelemetry, Source, Workload, service_fqdn
from canaryguard_testbed.weights import RouteSnapshot, WeightSource, traffic_shares

log = logging.getLogger("canaryguard_testbed.router")

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True)
class Backend:
    """The pods of one subset of a service, reachable at `url`."""

    host: str  # service FQDN
    subset: str
    url: str
    workload: Workload


def parse_backend(spec: str, namespace: str) -> Backend:
    """Parse `HOST/SUBSET=URL[,version=V][,workload=W][,app=A]`."""
    target, sep, rest = spec.partition("=")
    host, slash, subset = target.partition("/")
    if not sep or not slash or not host or not subset:
        raise ValueError(f"backend {spec!r}: expected HOST/SUBSET=URL")
    url, *options = rest.split(",")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"backend {spec!r}: URL must start with http:// or https://")
    extra: dict[str, str] = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq or key not in {"version", "workload", "app"} or not value:
            raise ValueError(
                f"backend {spec!r}: unknown option {option!r} (version, workload, app)"
            )
        extra[key] = value
    short = host.split(".")[0]
    hosts_namespace = host.split(".")[1] if "." in host else namespace
    workload = Workload(
        service=short,
        namespace=hosts_namespace,
        version=extra.get("version", subset),
        workload=extra.get("workload", ""),
        app=extra.get("app", ""),
    )
    return Backend(service_fqdn(host, namespace), subset, url.rstrip("/"), workload)


@dataclass(frozen=True)
class _Table:
    """A compiled route: cumulative shares and, per share, the backends that serve it
    (empty: nothing serves that destination)."""

    snapshot: RouteSnapshot | None
    cumulative: tuple[float, ...]
    choices: tuple[tuple[Backend, ...], ...]
    shares: tuple[tuple[str, float], ...]


class Router:
    """Weighted HTTP proxy with Istio telemetry. `choose()` holds the routing decision."""

    def __init__(
        self,
        backends: Sequence[Backend],
        weights: WeightSource,
        *,
        namespace: str,
        service: str,
        source: Source | None = None,
        seed: int | None = None,
        upstream_timeout: float = 30.0,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        if not backends:
            raise ValueError("a router needs at least one backend")
        self.backends = tuple(backends)
        self.weights = weights
        self.namespace = namespace
        self.service_host = service_fqdn(service, namespace)
        self.source = source or Source(namespace=namespace)
        self.telemetry = IstioTelemetry()
        self.unroutable = CounterFamily(
            "router_unroutable_requests_total",
            "Requests the router could not send anywhere (503 no healthy upstream).",
            ("reason",),
        )
        self._rng = random.Random(seed)
        self._timeout = aiohttp.ClientTimeout(total=upstream_timeout)
        self._ready = ready or (lambda: True)
        self._table: _Table | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- routing ----------------------------------------------------------------------------

    def _compile(self, snapshot: RouteSnapshot | None) -> _Table:
        if snapshot is None:
            # No VirtualService: the Kubernetes Service spreads over all its pods.
            pods = tuple(b for b in self.backends if b.host == self.service_host)
            return _Table(None, (1.0,), (pods,), (("*", 1.0),))
        cumulative: list[float] = []
        choices: list[tuple[Backend, ...]] = []
        shares: list[tuple[str, float]] = []
        total = 0.0
        for dest, share in traffic_shares(snapshot.destinations):
            host = service_fqdn(dest.host, self.namespace)
            served = tuple(
                b
                for b in self.backends
                if b.host == host and (dest.subset is None or b.subset == dest.subset)
            )
            total += share
            cumulative.append(total)
            choices.append(served)
            shares.append((f"{host}/{dest.subset or '*'}", share))
        return _Table(snapshot, tuple(cumulative), tuple(choices), tuple(shares))

    def table(self) -> _Table:
        snapshot = self.weights.current()
        table = self._table
        if table is None or table.snapshot is not snapshot:
            table = self._compile(snapshot)
            self._table = table
        return table

    def choose(self) -> Backend | None:
        """Pick the backend for one request; None when the route leads nowhere."""
        table = self.table()
        if not table.cumulative:
            return None
        i = bisect.bisect_right(table.cumulative, self._rng.random() * table.cumulative[-1])
        served = table.choices[min(i, len(table.choices) - 1)]
        if not served:
            return None
        return served[0] if len(served) == 1 else self._rng.choice(served)

    # -- HTTP -------------------------------------------------------------------------------

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        began = time.perf_counter()
        body = await request.read()
        backend = self.choose()
        if backend is None:
            self.unroutable.inc(("no_healthy_upstream",))
            return web.Response(status=503, text="no healthy upstream")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        flags = "-"
        try:
            async with self._session.request(
                request.method,
                backend.url + request.path_qs,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                out_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
                }
        except TimeoutError:
            status, payload, out_headers, flags = 504, b"upstream request timeout", {}, "UT"
        except aiohttp.ClientError:
            status, payload, out_headers, flags = 503, b"upstream connect error", {}, "UF"
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        out_headers["x-envoy-upstream-service-time"] = str(int(elapsed_ms))
        self.telemetry.record(self.source, backend.workload, status, elapsed_ms, flags)
        return web.Response(status=status, body=payload, headers=out_headers)

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.telemetry.render()
        out: list[str] = []
        self.unroutable.render(out)
        return web.Response(
            body=body + "".join(out).encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def ready(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="route not synced yet\n")

    async def route(self, request: web.Request) -> web.Response:
        table = self.table()
        data: dict[str, Any] = {
            "origin": table.snapshot.origin if table.snapshot else "service (no virtualservice)",
            "shares": dict(table.shares),
        }
        return web.json_response(data)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/-/ready", self.ready)
        app.router.add_get("/-/route", self.route)
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on host:port (0 picks a free port); returns the port."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), auto_decompress=False
        )
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _serve(args: argparse.Namespace, backends: list[Backend]) -> int:
    from canaryguard_testbed.vswatch import (
        HTTPRouteWatcher,
        KubeEndpoint,
        KubeVirtualServiceSource,
        VirtualServiceWatcher,
    )

    kube = KubeEndpoint.from_kubeconfig(args.kubeconfig, args.context)
    # An HTTPRoute rule's backendRefs map to the same weighted destinations as a route's.
    watcher_type = HTTPRouteWatcher if args.http_route else VirtualServiceWatcher
    name = args.http_route or args.virtual_service
    watcher = watcher_type(kube, args.namespace, name, resync_s=args.resync)
    source = KubeVirtualServiceSource(watcher, args.namespace, name, args.route)
    router = Router(
        backends,
        source,
        namespace=args.namespace,
        service=args.service_name,
        source=Source(
            workload=args.source_workload,
            namespace=args.source_namespace or args.namespace,
            app=args.source_workload,
        ),
        seed=args.seed,
        upstream_timeout=args.upstream_timeout,
        ready=watcher.synced.is_set,
    )
    await watcher.start()
    try:
        if not await watcher.wait_synced(args.sync_timeout):
            log.error("could not list virtualservices within %ss", args.sync_timeout)
            return 1
        source.current()  # log the initial route
        port = await router.start(args.host, args.port)
        log.info(
            "listening address=%s:%s virtualservice=%s/%s backends=%s",
            args.host,
            port,
            args.namespace,
            args.virtual_service,
            ",".join(f"{b.subset}={b.url}" for b in backends),
        )
        if args.port_file is not None:
            write_port_file(args.port_file, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await router.stop()
        await watcher.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m canaryguard_testbed.router", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--context", help="kubeconfig context (default: current)")
    parser.add_argument("--namespace", required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--virtual-service")
    target.add_argument("--http-route", help="a Gateway API HTTPRoute instead")
    parser.add_argument(
        "--route",
        help="http route name, or the HTTPRoute rule's name or index "
        "(default: first route or rule without match)",
    )
    parser.add_argument("--service-name", required=True, help="short name of the service")
    parser.add_argument(
        "--backend", action="append", required=True, help="HOST/SUBSET=URL[,version=V]..."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here when ready")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed of the weighted choice")
    parser.add_argument("--source-workload", default="loadgen")
    parser.add_argument("--source-namespace", help="default: --namespace")
    parser.add_argument("--resync", type=float, default=30.0, help="seconds between relists")
    parser.add_argument("--sync-timeout", type=float, default=30.0)
    parser.add_argument("--upstream-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    logs.configure("text")
    try:
        backends = [parse_backend(spec, args.namespace) for spec in args.backend]
    except ValueError as err:
        parser.error(str(err))
    return asyncio.run(_serve(args, backends))


if __name__ == "__main__":
    raise SystemExit(main())
