"""Routing objects (Istio VirtualServices, Gateway API HTTPRoutes) read from a watch cache,
not a GET per tick.

`RouteWatch` lists and watches the objects of one kind (`VIRTUAL_SERVICES`, `HTTP_ROUTES`) in
each watched namespace (or the cluster) in a worker thread and keeps the latest object of
each. A scope counts as synced from its list until its watch fails; while it is not, reads go
to the API server, so a broken watch never serves stale weights for long: it is noticed at
its next failure and every read goes to the API server until the next list.

`CachedRouter` is the `Router` port on top of it: a read of a synced scope comes from the
cache (a miss, such as an object created a moment ago, is read from the API server); a
weight write goes to the API server as before, reading the object first and replacing it
with the resourceVersion it read (a 409 reads again), and what it wrote is put in the cache
at once, so the next tick never sees its own write missing. Its watch starts at its first
read, so an operator whose rollouts never name an HTTPRoute never lists HTTPRoutes (nor
needs Gateway API installed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from canaryguard.adapters import gateway, istio
from canaryguard.adapters.kube import lean, resource_version
from canaryguard.core.ports import Router, RouterWrapper, WeightChange
from canaryguard.core.spec import Destination

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
ALL = ""  # the scope of a cluster-wide watch


@dataclass(frozen=True)
class RoutingResource:
    """A kind of routing object as the API server serves it."""

    kind: str
    group: str
    plural: str
    versions: tuple[str, ...]  # newest first


VIRTUAL_SERVICES = RoutingResource(
    istio.VirtualServiceClient.kind, istio.GROUP, istio.PLURAL, istio.VERSIONS
)
HTTP_ROUTES = RoutingResource(gateway.KIND, gateway.GROUP, gateway.PLURAL, gateway.VERSIONS)


class RouteStore:
    """The latest routing objects of one kind by (namespace, name), and which scopes are
    synced. Written by the watch threads and the write path, read by the event loop (single
    dict operations, atomic under the GIL)."""

    def __init__(self) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}
        self._synced: dict[str, bool] = {}
        self._lock = threading.Lock()

    def synced(self, namespace: str) -> bool:
        """Whether reads in `namespace` may be served from the cache."""
        return self._synced.get(namespace, False) or self._synced.get(ALL, False)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((namespace, name))

    def put(self, obj: Mapping[str, Any]) -> None:
        """Keep `obj` unless a newer version of it is kept already."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._lock:
            kept = self._objects.get(key)
            if kept is None or resource_version(obj) >= resource_version(kept):
                self._objects[key] = lean(obj)

    def delete(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        with self._lock:
            self._objects.pop((str(meta.get("namespace")), str(meta.get("name"))), None)

    def replace_scope(self, scope: str, objects: Sequence[Mapping[str, Any]]) -> None:
        """A fresh list of `scope` (a namespace, or ALL): it replaces what was kept there."""
        with self._lock:
            for key in [k for k in self._objects if scope == ALL or k[0] == scope]:
                del self._objects[key]
            for obj in objects:
                meta = obj.get("metadata") or {}
                self._objects[(str(meta.get("namespace")), str(meta.get("name")))] = lean(obj)
            self._synced[scope] = True

    def lost(self, scope: str) -> None:
        """The watch of `scope` failed: read from the API server until it is listed again."""
        self._synced[scope] = False

    def __len__(self) -> int:
        return len(self._objects)


class RouteWatch:
    """Lists and watches the objects of `resource` per scope in daemon threads, into a
    store; `start` is idempotent."""

    def __init__(
        self,
        api_client: ApiClient,
        namespaces: Sequence[str],
        resource: RoutingResource = VIRTUAL_SERVICES,
        store: RouteStore | None = None,
        timeout_seconds: int = 120,
        request_timeout: float = 30.0,
    ) -> None:
        self.resource = resource
        self.store = store or RouteStore()
        self._api = CustomObjectsApi(api_client)
        self._scopes = list(namespaces) or [ALL]
        self._timeout = timeout_seconds
        self._request_timeout = request_timeout
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._version: str | None = None

    def start(self) -> None:
        if self._threads or self._stop.is_set():
            return
        for scope in self._scopes:
            thread = threading.Thread(
                target=self._run,
                args=(scope,),
                name=f"{self.resource.plural}-watch-{scope or 'all'}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every scope has been listed (for tests and start-up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.store.synced(scope) for scope in self._scopes):
                return True
            time.sleep(0.05)
        return False

    def _run(self, scope: str) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self._list_and_watch(scope)
                delay = 1.0
            except Exception as exc:  # any failure: reads go to the API server, then retry
                self.store.lost(scope)
                log.warning(
                    "route watch failed resource=%s scope=%s error=%s retry_in=%.0fs",
                    self.resource.plural,
                    scope or "cluster",
                    _describe(exc),
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _list_and_watch(self, scope: str) -> None:
        version = self._served_version(scope)
        listed = self._list(scope, version)()
        if not isinstance(listed, dict):
            raise RuntimeError(f"unexpected answer to a list of {self.resource.plural}")
        self.store.replace_scope(scope, listed.get("items") or [])
        resource_version = (listed.get("metadata") or {}).get("resourceVersion")
        log.info(
            "routes listed resource=%s scope=%s count=%d version=%s",
            self.resource.plural,
            scope or "cluster",
            len(listed.get("items") or []),
            version,
        )
        while not self._stop.is_set():
            resource_version = self._watch(scope, version, resource_version)

    def _watch(self, scope: str, version: str, resource_version: str | None) -> str | None:
        """One watch request, until the server ends it; returns where to continue. A watch
        that can no longer continue (410 Gone) raises, so the scope is listed again."""
        watch = Watch()  # type: ignore[no-untyped-call]
        stream: Iterator[dict[str, Any]] = watch.stream(  # type: ignore[no-untyped-call]
            self._list(scope, version),
            resource_version=resource_version,
            timeout_seconds=self._timeout,
            allow_watch_bookmarks=True,
        )
        try:
            for event in stream:
                kind, obj = event.get("type"), event.get("raw_object") or event.get("object")
                if kind == "ERROR" or not isinstance(obj, dict):
                    raise RuntimeError(f"watch error: {str(obj)[:200]}")
                resource_version = (obj.get("metadata") or {}).get(
                    "resourceVersion", resource_version
                )
                if kind == "DELETED":
                    self.store.delete(obj)
                elif kind in ("ADDED", "MODIFIED"):
                    self.store.put(obj)
                if self._stop.is_set():
                    break
        finally:
            watch.stop()  # type: ignore[no-untyped-call]
        return resource_version

    def _list(self, scope: str, version: str) -> Callable[..., Any]:
        """The list call of `scope`, as `Watch.stream` calls it (with `watch=True` and an
        unread response) and as a plain list."""

        def call(**kwargs: Any) -> Any:
            # A watch the server keeps open for `timeout_seconds`, a list at once; a silent
            # connection fails after this, and the scope is listed again.
            kwargs.setdefault("_request_timeout", self._request_timeout + self._timeout)
            group, plural = self.resource.group, self.resource.plural
            if scope == ALL:
                return self._api.list_cluster_custom_object(group, version, plural, **kwargs)
            return self._api.list_namespaced_custom_object(group, version, scope, plural, **kwargs)

        call.__doc__ = f"List {self.resource.plural}."  # Watch.stream reads the docstring
        return call

    def _served_version(self, scope: str) -> str:
        """The newest version of the resource the API server serves."""
        if self._version is not None:
            return self._version
        for version in self.resource.versions:
            try:
                self._list(scope, version)(limit=1)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            self._version = version
            return version
        raise RuntimeError(f"no version of {self.resource.group} is served")


class CachedRouter(RouterWrapper):
    """The `Router` port reading its objects from a watch cache (see the module); `start`,
    if given, is called at every read (the watch's idempotent start)."""

    def __init__(
        self, router: Router, store: RouteStore, start: Callable[[], None] | None = None
    ) -> None:
        super().__init__(router)
        self._store = store
        self._start = start

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        if self._start is not None:
            self._start()
        if self._store.synced(namespace):
            cached = self._store.get(namespace, name)
            if cached is not None:
                return cached  # read only: callers copy before changing anything
        obj = await self._inner.get(namespace, name)
        self._store.put(obj)
        return obj

    async def set_weights(
        self,
        namespace: str,
        name: str,
        route_names: Sequence[str | int],
        baseline: Destination,
        canary: Destination,
        baseline_weight: int,
        canary_weight: int,
        mirror: int = 0,
    ) -> WeightChange:
        change = await self._inner.set_weights(
            namespace, name, route_names, baseline, canary, baseline_weight, canary_weight, mirror
        )
        if change.current is not None:
            self._store.put(change.current)
        return change


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"{type(exc).__name__}: HTTP {status}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
