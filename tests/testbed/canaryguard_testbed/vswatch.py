"""Watch Istio VirtualServices (or Gateway API HTTPRoutes) in the Kubernetes API server (list,
then watch; list again on every resync period or when the watch expires), with aiohttp.

The last objects seen stay in use while the API server is unreachable, as an Envoy keeps its
last configuration while istiod is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from canaryguard_testbed.weights import (
    RouteSnapshot,
    VirtualServiceError,
    httproute_snapshot,
    route_snapshot,
)

log = logging.getLogger("canaryguard_testbed.vswatch")

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1")


@dataclass(frozen=True)
class KubeEndpoint:
    """How to reach and authenticate to an API server."""

    server: str
    ssl_context: ssl.SSLContext
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None = None) -> KubeEndpoint:
        """Read server, CA, client certificate or bearer token from a kubeconfig file."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), context=context, client_configuration=cfg, persist_config=False
        )
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        headers: dict[str, str] = {}
        token = (cfg.api_key or {}).get("BearerToken") or (cfg.api_key or {}).get("authorization")
        if token:
            headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        return cls(str(cfg.host).rstrip("/"), ctx, headers)


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class VirtualServiceWatcher:
    """Keeps the VirtualServices of one namespace (or all, or one by name) up to date."""

    group = GROUP
    plural = "virtualservices"
    versions: tuple[str, ...] = VERSIONS

    def __init__(
        self,
        kube: KubeEndpoint,
        namespace: str | None = None,
        name: str | None = None,
        *,
        resync_s: float = 30.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.resync_s = resync_s
        self.synced = asyncio.Event()
        self.revision = 0  # bumped on every change; readers cache on it
        self._objects: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._version: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._objects.get((namespace, name))

    def objects(self) -> Mapping[tuple[str, str], Mapping[str, Any]]:
        return dict(self._objects)

    async def start(self) -> None:
        """Start watching in the background (see `synced`)."""
        connector = aiohttp.TCPConnector(ssl=self.kube.ssl_context)
        self._session = aiohttp.ClientSession(connector=connector, headers=dict(self.kube.headers))
        self._task = asyncio.create_task(self._run(), name="virtualservice-watch")

    async def wait_synced(self, seconds: float) -> bool:
        """Wait up to `seconds` for the first successful list; True once synced."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.synced.wait(), seconds)
        return self.synced.is_set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.2
        failing = False
        while True:
            try:
                rv = await self._list()
                if failing:
                    log.info("virtualservice watch recovered")
                failing, delay = False, 0.2
                with contextlib.suppress(_Expired):
                    await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if not failing:
                    log.warning("virtualservice watch failed, keeping last state: %s", err)
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _path(self, version: str) -> str:
        if self.namespace is None:
            return f"/apis/{self.group}/{version}/{self.plural}"
        return f"/apis/{self.group}/{version}/namespaces/{self.namespace}/{self.plural}"

    def _params(self) -> dict[str, str]:
        return {"fieldSelector": f"metadata.name={self.name}"} if self.name else {}

    async def _list(self) -> str:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=15)
        for version in (self._version,) if self._version else self.versions:
            url = self.kube.server + self._path(version)
            async with self._session.get(url, params=self._params(), timeout=timeout) as resp:
                if resp.status == 404 and self._version is None:
                    continue  # this API version is not served here; try the next
                if resp.status != 200:
                    raise RuntimeError(f"list {url}: HTTP {resp.status}: {await resp.text()}")
                body = await resp.json()
            self._version = version
            objects = {_key(item): item for item in body.get("items") or []}
            if objects != self._objects:
                self._objects = objects
                self.revision += 1
            self.synced.set()
            return str(body["metadata"]["resourceVersion"])
        raise RuntimeError(
            f"{self.group} {self.plural} are not served (tried {list(self.versions)})"
        )

    async def _watch(self, resource_version: str) -> None:
        assert self._session is not None and self._version is not None
        params = {
            **self._params(),
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(self.resync_s))),
        }
        url = self.kube.server + self._path(self._version)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.resync_s + 30)
        async with self._session.get(url, params=params, timeout=timeout) as resp:
            if resp.status == 410:
                raise _Expired
            if resp.status != 200:
                raise RuntimeError(f"watch {url}: HTTP {resp.status}: {await resp.text()}")
            async for raw in resp.content:
                if raw.strip():
                    self._apply(json.loads(raw))

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired
            raise RuntimeError(f"watch error: {obj.get('message', obj)}")
        if kind in ("ADDED", "MODIFIED"):
            self._objects[_key(obj)] = obj
        elif kind == "DELETED":
            self._objects.pop(_key(obj), None)
        else:
            return  # BOOKMARK: nothing changed
        self.revision += 1


class HTTPRouteWatcher(VirtualServiceWatcher):
    """Keeps the Gateway API HTTPRoutes of one namespace (or all, or one by name) up to date."""

    group = "gateway.networking.k8s.io"
    plural = "httproutes"
    versions = ("v1", "v1beta1")


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class KubeVirtualServiceSource:
    """A WeightSource reading one route of one VirtualService from a watcher (or, given an
    `HTTPRouteWatcher`, one rule of an HTTPRoute: `route_name` a rule name or index)."""

    def __init__(
        self,
        watcher: VirtualServiceWatcher,
        namespace: str,
        name: str,
        route_name: str | None = None,
    ) -> None:
        self.watcher = watcher
        self._snapshot_of = (
            httproute_snapshot if isinstance(watcher, HTTPRouteWatcher) else route_snapshot
        )
        self.namespace = namespace
        self.name = name
        self.route_name = route_name
        self._seen = -1
        self._snapshot: RouteSnapshot | None = None

    def current(self) -> RouteSnapshot | None:
        if self.watcher.revision != self._seen:
            self._seen = self.watcher.revision
            vs = self.watcher.get(self.namespace, self.name)
            if vs is None:
                if self._snapshot is not None:
                    log.info("virtualservice %s/%s is gone", self.namespace, self.name)
                self._snapshot = None
            else:
                try:
                    snapshot = self._snapshot_of(vs, self.route_name)
                except VirtualServiceError as err:
                    # istiod would reject such a config; keep serving the last good one.
                    log.warning("ignoring %s/%s: %s", self.namespace, self.name, err)
                else:
                    if snapshot != self._snapshot:
                        log.info(
                            "route %s: %s",
                            snapshot.origin,
                            ", ".join(
                                f"{d.host}/{d.subset or '*'}={d.weight}"
                                for d in snapshot.destinations
                            ),
                        )
                    self._snapshot = snapshot
        return self._snapshot
