"""kopf wiring, and nothing else: settings, the watch feed, the scheduler's lifetime and
the leader election that gates it.

The analysis loop is the controller's scheduler, not a kopf daemon or timer: rollouts are
fed in by a plain watch-event handler, which puts no finalizer on them, so a rollout can be
deleted while the operator is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from canaryguard.adapters.gateway import HTTPRouteClient
from canaryguard.adapters.istio import VirtualServiceClient
from canaryguard.adapters.kube import GROUP, PLURAL, VERSION, KubeClient, load_api_client
from canaryguard.adapters.leases import LeaseClient
from canaryguard.adapters.pagerduty import PagerDutyPager
from canaryguard.adapters.prometheus import PrometheusConnector
from canaryguard.adapters.route_cache import HTTP_ROUTES, VIRTUAL_SERVICES, CachedRouter, RouteWatch
from canaryguard.core.ports import Router, Routers
from canaryguard.runtime import metrics
from canaryguard.runtime.accounting import CountedKube, CountedRouter
from canaryguard.runtime.controller import Controller, Settings
from canaryguard.runtime.leader import Election, Elector
from canaryguard.runtime.memory import trim_periodically

PREFIX = "canaryguard.io"
log = logging.getLogger(__name__)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf and start the scheduler."""
    # Our own prefix from day one: changing it later would re-handle every resource.
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX)
    # Bounded watches and requests: a silent network never stalls the operator for long.
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # No cluster-wide scans of CRDs and namespaces: the CRD is installed before the operator
    # and namespaces are given by exact name, so the ClusterRole needs neither list.
    settings.scanning.disabled = True
    # Decisions are posted as Events by the controller; kopf's own are for its errors.
    settings.posting.level = 30  # logging.WARNING
    config = memo.get("config") or {}
    operator_settings: Settings = config.get("settings") or Settings()
    concurrency = operator_settings.concurrency
    # Every blocking call (Prometheus, the Kubernetes client) runs in the default executor.
    # asyncio sizes it to cores + 4, so a few slow Prometheus queries would queue everyone
    # else's calls behind them; give each tick in flight room for its queries instead.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=concurrency * 4, thread_name_prefix="canaryguard-io")
    )
    api = load_api_client(config.get("kubeconfig"), pool_size=max(16, 2 * concurrency))
    # The one place adapters are built; the controller only receives them.
    routers: list[Router] = []
    memo["route_watches"] = watches = []
    for client, resource in (
        (VirtualServiceClient(api), VIRTUAL_SERVICES),
        (HTTPRouteClient(api), HTTP_ROUTES),
    ):
        router: Router = CountedRouter(client)
        if operator_settings.cache_routes:
            # Read from a watch, not a GET per tick (writes still read first); each kind is
            # listed from the first tick of a rollout that names one.
            watch = RouteWatch(api, operator_settings.namespaces, resource)
            watches.append(watch)
            router = CachedRouter(router, watch.store, watch.start)
        routers.append(router)
    controller = Controller(
        CountedKube(KubeClient(api)),
        Routers(*routers),
        PrometheusConnector(),
        # PagerDuty delivery inside one tick; what is not delivered is retried next tick.
        PagerDutyPager(budget_seconds=20.0),
        operator_settings,
    )
    memo["controller"] = controller
    memo["stop"] = stop = asyncio.Event()
    # Hand back what the start-up's large lists freed (glibc keeps it), and so on.
    memo["trim"] = asyncio.create_task(trim_periodically(stop), name="canaryguard-trim")
    election: Election | None = config.get("election")
    if election is None:
        # The only replica: it leads from start to stop.
        metrics.LEADER.set(1)
        memo["elector"] = None
        work = asyncio.create_task(controller.lead(stop), name="canaryguard-controller")
    else:
        # Every replica watches; only the Lease's holder ticks.
        memo["elector"] = elector = Elector(LeaseClient(api), election)
        work = asyncio.create_task(elector.run(stop, controller.lead), name="canaryguard-elector")
    work.add_done_callback(_report_end)
    memo["work"] = work


@kopf.on.login()
def login(
    settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any
) -> kopf.ConnectionInfo | None:
    """Log in from `--kubeconfig` (exported as KUBECONFIG) or as the in-cluster account."""
    if (memo.get("config") or {}).get("kubeconfig"):
        return kopf.login_with_kubeconfig(settings=settings, **kwargs)
    return kopf.login_via_client(settings=settings, **kwargs)


def _report_end(task: asyncio.Task[None]) -> None:
    """The scheduler and the elector run until cleanup; say so if one ends before."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop ticking, let ticks in flight finish, and release the Lease if this replica led."""
    memo["stop"].set()
    with contextlib.suppress(Exception):  # already reported by _report_end
        await memo["work"]
    for watch in memo.get("route_watches") or []:
        watch.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def rollout_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Feed every watch event (initial listing included) to the controller."""
    controller: Controller = memo["controller"]
    controller.seen(event.get("type"), event["object"])


@kopf.on.probe(id="rollouts")
async def tracked_rollouts(memo: kopf.Memo, **_: Any) -> int:
    """Liveness data: how many rollouts the scheduler tracks."""
    controller: Controller = memo["controller"]
    return len(controller.scheduler)


@kopf.on.probe(id="leader")
async def leadership(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Liveness data: whether this replica leads. A standby is live; a replica whose
    scheduler or elector has ended is not (the probe fails, so the kubelet restarts it)."""
    work: asyncio.Task[None] = memo["work"]
    if work.done():
        raise kopf.PermanentError(f"{work.get_name()} has ended")
    elector: Elector | None = memo["elector"]
    if elector is None:
        return {"leading": True, "election": False}
    return {
        "leading": elector.leading,
        "election": True,
        "lease": elector.lease_ref,
        "identity": elector.election.identity,
    }
