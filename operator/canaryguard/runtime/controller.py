"""One analysis tick of one rollout, end to end: read, observe, decide, carry out, record.

The decisions are the engine's; this module only moves data between it and the adapters,
in an order chosen so that a crash at any point loses nothing:
0. on a rollback only, its intent (`TickResult.intent`: the rollback's reason and evidence,
   the page Pending, the phase not yet changed), so that a crash after it completes this
   rollback and pages once, whatever the canary's verdicts say by then;
1. weights (a rollback protects traffic before anything else is written, but its intent);
2. the status, with the page marked Pending, before the page is sent;
3. the page, then its delivery result.
A crash between 2 and 3 resends the page with the same dedup key after a restart, and
PagerDuty folds the two into one incident. A status not written after its weights (a failed
status write, or a failed weight write that lowered the canary and may have landed) is kept
in memory and decided from at the next tick. A crash between 0 and 2 loses that memory, but
not the intent: the restarted operator completes the rollback from it (weights 100/0 and no
mirror, phase RolledBack, the page). An intent that could not be written does not hold the
weight write back (traffic first); only then does a crash before 2 leave the restarted
operator to find the canary lowered below the status' weight: it rolls back again while the
breach can still be seen, and after that records the rollback from the breach the status
still shows (the fault campaign's gap, bench/chaos.py). The shadow phase's mirror is part of
the weight write (one object write sets, or removes, both), so it has no crash window of its
own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3.exceptions

from canaryguard.adapters.kube import lean, merge_patch, resource_version
from canaryguard.core import engine
from canaryguard.core.access import (
    AddressNotAllowed,
    Allowlist,
    check_address,
    parse_address,
    strip_credentials,
)
from canaryguard.core.actions import EmitEvent, Page, Resolve, SetWeights
from canaryguard.core.cadence import from_ms
from canaryguard.core.manual import REQUEST_ANNOTATION
from canaryguard.core.observations import Observations
from canaryguard.core.paging import DEFAULT_EVENTS_URL, DeliveryOutcome, Link, PageEvent
from canaryguard.core.ports import (
    Kube,
    MetricsConnector,
    MetricsSource,
    Pager,
    RouteError,
    Router,
    Routers,
    SecretError,
    SecretNotAllowed,
    canary_share,
)
from canaryguard.core.queries import plan
from canaryguard.core.spec import Spec, SpecError
from canaryguard.core.status import FINISHED, Status, format_time, parse_time, status_from_dict
from canaryguard.runtime import metrics
from canaryguard.runtime.batcher import QueryBatcher
from canaryguard.runtime.conflicts import RouteClaims
from canaryguard.runtime.observe import QueryRejected, observe
from canaryguard.runtime.scheduler import Scheduler, TickFn, scheduled_time
from canaryguard.runtime.sharding import Shard
from canaryguard.runtime.specs import SpecCache
from canaryguard.runtime.status_ledger import StatusLedger

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


ALLOW_PROMETHEUS_FLAG = "--allow-prometheus"
ALLOW_PAGERDUTY_FLAG = "--allow-pagerduty"
# Without flags: no Prometheus at all, and PagerDuty's public Events API only.
DEFAULT_ALLOW_PROMETHEUS = Allowlist((), ALLOW_PROMETHEUS_FLAG)
DEFAULT_ALLOW_PAGERDUTY = Allowlist((parse_address(DEFAULT_EVENTS_URL),), ALLOW_PAGERDUTY_FLAG)


@dataclass(frozen=True)
class Settings:
    """Operator-wide knobs (command-line flags). The allowlists say where rollouts may send
    requests, and so the Secrets they name."""

    concurrency: int = 128
    namespaces: tuple[str, ...] = ()  # the operator's scope; empty: every namespace
    allow_prometheus: Allowlist = DEFAULT_ALLOW_PROMETHEUS
    allow_pagerduty: Allowlist = DEFAULT_ALLOW_PAGERDUTY
    # A status that changed only in heartbeat values (`canaryguard.core.relevance`) is
    # written at most this often per rollout; anything a reader needs is written at once.
    status_heartbeat: timedelta = timedelta(seconds=60)
    # Builtin SLO queries of rollouts ticking within `batch_window` seconds of each other are
    # answered by one query per Prometheus and shape (`batcher`); off: one per rollout.
    batch_queries: bool = True
    batch_window: float = 0.1
    # VirtualServices and HTTPRoutes read from a watch cache instead of a GET per tick
    # (handlers build it).
    cache_routes: bool = True
    # Only the rollouts of this shard are ticked (`sharding`).
    shard: Shard = field(default_factory=Shard)


class Controller:
    """Keeps the latest body of every rollout (fed by the watch) and ticks each on schedule."""

    def __init__(
        self,
        kube: Kube,
        router: Router | Routers,
        metrics_connector: MetricsConnector,
        pager: Pager,
        settings: Settings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        scheduler_factory: Callable[[TickFn, int], Scheduler] = Scheduler,
    ) -> None:
        """`scheduler_factory(tick, concurrency)` builds the scheduler (tests record it)."""
        self._kube = kube
        # One router per kind of routing object; a lone router drives VirtualServices.
        self._routers = router if isinstance(router, Routers) else Routers(router)
        self._pager = pager
        self._settings = settings or Settings()
        self._batcher = (
            QueryBatcher(metrics_connector, self._settings.batch_window)
            if self._settings.batch_queries
            else None
        )
        self._metrics: MetricsConnector = self._batcher or metrics_connector
        self._clock = clock
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._phases: dict[Key, str] = {}
        self._phase_counts: dict[str, int] = dict.fromkeys(_PHASES, 0)
        # The status decided last per rollout, written or not (`status_ledger`).
        self._ledger = StatusLedger(self._settings.status_heartbeat)
        self._deleted_meanwhile: set[Key] | None = None  # while a resync is in flight
        self._claims = RouteClaims()  # two rollouts never drive one route
        self._specs = SpecCache()  # parsed again only when the spec or its request changed
        self.scheduler = scheduler_factory(self.tick_key, self._settings.concurrency)
        if self._batcher is not None and isinstance(self.scheduler, Scheduler):
            # Ticks count as on their way from their dispatch, queued behind the bound too.
            self.scheduler.expect = self._batcher.expect

    # --- the watch side ------------------------------------------------------------------

    def seen(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Take a watch event: track, update or forget the rollout."""
        key = _key(body)
        if not self._settings.shard.owns(*key):
            # Another shard's: not ticked here, but it still claims its routes, so two
            # rollouts on one route are told apart whichever shards carry them.
            if event_type == "DELETED":
                self._claims.forget(key)
            else:
                self._claims.note(key, dict(body))
            return
        if event_type == "DELETED":
            if self._deleted_meanwhile is not None:
                self._deleted_meanwhile.add(key)
            self._bodies.pop(key, None)
            self._ledger.forget(key)
            self._specs.forget(key)
            self._claims.forget(key)
            self.scheduler.remove(key)
            metrics.forget_rollout(*key)
            self._count_phase(key, None)
            return
        previous = self._bodies.get(key)
        if previous is not None:
            version, known = resource_version(body), resource_version(previous)
            if version < known:
                return  # the watch is behind a status this operator already wrote
            if event_type == "MODIFIED" and version == known > 0:
                return  # the watch's echo of a status write whose answer was taken already
        self._bodies[key] = lean(body)  # without managedFields: thousands are kept
        self._claims.note(key, self._bodies[key])
        raw = body.get("status")
        metrics.record_rollout(key[0], key[1], self._ledger.base(key, raw, status_from_dict(raw)))
        # A spec edit or a new manual request is acted on at once, not at the next interval
        # (annotations do not bump the generation).
        urgent = previous is None or _urgent_fields(previous) != _urgent_fields(body)
        # Rollouts listed at start-up (event type None) are spread over their interval.
        self.scheduler.upsert(key, self._interval(body), now=urgent, spread=event_type is None)
        self._count_phase(key, str((body.get("status") or {}).get("phase") or "Pending"))

    def _interval(self, body: Mapping[str, Any]) -> float:
        """The rollout's analysis interval, read leniently (an invalid spec still gets ticks,
        which report it)."""
        try:
            return self._specs.parse(body).analysis.interval.total_seconds()
        except SpecError:
            return 30.0

    def _count_phase(self, key: Key, phase: str | None) -> None:
        """Keep the rollouts-by-phase gauge as `key` moves to `phase` (None: gone), without
        going over every rollout at every event."""
        before = self._phases.pop(key, None)
        if phase is not None:
            self._phases[key] = phase
        if before == phase:
            return
        for changed, step in ((before, -1), (phase, 1)):
            if changed is not None:
                self._phase_counts[changed] = self._phase_counts.get(changed, 0) + step
                metrics.ROLLOUTS.labels(phase=changed).set(self._phase_counts[changed])

    # --- leading --------------------------------------------------------------------------

    async def lead(self, resign: asyncio.Event) -> None:
        """Tick every rollout until `resign` is set: what the elected leader runs for its
        term (without leader election, the one replica from start to stop).

        A decision an earlier term left unwritten is dropped, since another replica may have
        moved the rollout on meanwhile; and the rollouts are listed afresh first, so that the
        first tick of a new leader decides from the latest status even if its watch lags.
        """
        self._ledger.clear()
        await self._resync()
        await self.scheduler.run(resign)

    async def _resync(self) -> None:
        """Take a fresh list of the rollouts in scope; the watch keeps them current after."""
        deleted: set[Key] = set()
        self._deleted_meanwhile = deleted
        try:
            bodies = await self._kube.list_rollouts(self._settings.namespaces)
        except Exception as exc:  # the watch's view is still there, and current in general
            log.warning("rollouts not listed afresh error=%s", describe_failure(exc))
            return
        finally:
            self._deleted_meanwhile = None
        for body in bodies:
            key = _key(body)
            if key not in deleted:  # the list was taken before the watch saw it go
                # One the watch has not listed yet is taken as listed at start-up (spread
                # over its interval), not as a change to act on at once: at start-up this
                # list usually comes first, and thousands of rollouts would tick in one slot.
                self.seen("MODIFIED" if key in self._bodies else None, body)

    # --- one tick ---------------------------------------------------------------------------

    async def tick_key(self, key: Hashable) -> None:
        """What the scheduler runs: one tick of a tracked rollout, any failure recorded on it."""
        assert isinstance(key, tuple)
        body = self._bodies.get(key)
        if body is None:
            return
        started = time.monotonic()
        # Batches of queries wait for this tick until it sent its own (or ended).
        arrived = self._batcher.expect() if self._batcher is not None else None
        try:
            await self.tick(body)
        except Exception as exc:  # any failure short of cancellation is shown on the rollout
            # On the rollout as this tick left it: a rollback's intent written before the
            # write that failed is where the decision stands (not the body the tick began on).
            await self._tick_failed(self._bodies.get(key) or body, exc)
        finally:
            if arrived is not None:
                arrived()
            metrics.TICK_SECONDS.observe(time.monotonic() - started)

    async def _tick_failed(self, body: Mapping[str, Any], exc: Exception) -> None:
        """A tick that failed before its decision: counted, logged, and recorded on the
        rollout (condition TickSucceeded, a Warning event when it changes), best effort."""
        meta = body.get("metadata", {})
        reason = failure_reason(exc)
        metrics.TICK_ERRORS.labels(reason=reason).inc()
        log.error(
            "tick failed rollout=%s/%s reason=%s error=%s",
            meta.get("namespace"),
            meta.get("name"),
            reason,
            describe_failure(exc),
            exc_info=reason == "bug",
        )
        raw = body.get("status")
        status = status_from_dict(raw)
        decided = self._ledger.base(_key(body), raw, status)
        now = self._clock()
        result = engine.tick_failed(status, reason, describe_failure(exc), now)
        try:
            # On the stored status: the failure shows even when the decision's own write is
            # what the API server refuses.
            await self._carry_out(body, result, None)
        except Exception as again:  # the API server may be what failed
            log.warning("tick failure not recorded error=%s", describe_failure(again))
        finally:
            if decided is not status:  # a decision not written stands, failure recorded
                failed = engine.tick_failed(decided, reason, describe_failure(exc), now)
                self._ledger.keep(_key(body), failed.status)

    async def tick(self, body: Mapping[str, Any]) -> None:
        """Run one analysis tick for the rollout `body`."""
        generation = body.get("metadata", {}).get("generation")
        raw = body.get("status")
        # A status decided but not written (heartbeat values held back, or a write that
        # failed after its weights were applied, e.g. a rollback's) is where the rollout is:
        # decide from it (`status_ledger`).
        status = self._ledger.base(_key(body), raw, status_from_dict(raw))
        now = self._tick_time()
        try:
            spec = self._specs.parse(body)
            # Before anything is read or sent: an address the installer did not allow makes
            # the rollout Invalid before any Secret is read and before any traffic moves.
            self._check_addresses(spec)
            result = await self._decide(spec, status, now)
        except (SpecError, AddressNotAllowed, RouteError, SecretError, QueryRejected) as exc:
            if isinstance(exc, QueryRejected):
                metrics.QUERY_ERRORS.labels(kind="rejected").inc()
            reason = _INVALID_REASONS.get(type(exc), "InvalidSpec")
            result = engine.invalid(status, str(exc), now, generation, reason)
            await self._carry_out(body, result, None)
            return
        await self._carry_out(body, result, spec)

    def _tick_time(self) -> datetime:
        """A tick's time is its time on the grid (`scheduler.scheduled_time`): ticks of a
        rollout are then whole intervals apart, and so are its heartbeats; its queries are
        evaluated at it. Else (a tick not run by the scheduler, or a slot late) the clock's."""
        at = scheduled_time()
        return self._clock() if at is None else from_ms(round(at * 1000))

    def _check_addresses(self, spec: Spec) -> None:
        """AddressNotAllowed unless the installer allowed every address the spec names."""
        check_address(
            "spec.metrics.prometheus.address",
            spec.metrics.prometheus.address,
            self._settings.allow_prometheus,
        )
        if spec.paging is not None:
            url = spec.paging.pager_duty.url
            check_address(
                "spec.paging.pagerDuty.url" if url else "spec.paging.pagerDuty.url (default)",
                url or DEFAULT_EVENTS_URL,
                self._settings.allow_pagerduty,
            )

    async def _decide(self, spec: Spec, status: Status, now: datetime) -> engine.TickResult:
        namespace = spec.namespace
        target = spec.target
        router = self._routers.for_kind(target.kind)
        vs = await router.get(namespace, target.name)
        routes = router.plan(vs, target.selectors, spec.baseline, spec.canary)
        if (conflict := self._claims.conflict(spec, status.phase, vs, routes, router)) is not None:
            raise RouteError(conflict)
        # What the router has now: the engine never raises the canary's share but by a decision.
        current = router.read(vs, routes, spec.baseline, spec.canary)
        routed = canary_share(current)
        observations = Observations()
        # Finished rollouts are not judged: spare Prometheus the queries. One not yet started
        # is queried though not judged, so a query Prometheus rejects makes it Invalid before
        # any traffic moves to a canary it could not protect. A manual request due now decides
        # the tick without metrics: it is carried out without waiting on Prometheus.
        # A finished rollout given a new revision starts again on this tick: it needs them too.
        judged = status.phase not in FINISHED or engine.restarts(spec, status)
        if judged and not engine.request_due(spec, status):
            source = await self._metrics_source(spec)
            step_age = None
            if (stratum_start := status.stratum_started_at) is not None:
                step_age = (now - stratum_start).total_seconds()
            observations = await observe(spec, source, step_age, now)
            for slo in observations.slos.values():
                if slo.unavailable:
                    metrics.QUERY_ERRORS.labels(kind="unavailable").inc()
        observations = replace(
            observations,
            routed_canary=routed,
            routed_mirror=tuple(w.mirror for w in current),
        )
        return engine.tick(spec, status, observations, now)

    async def _metrics_source(self, spec: Spec) -> MetricsSource:
        prom = spec.metrics.prometheus
        headers: dict[str, str] = {}
        if prom.headers_secret_ref is not None:
            ref = prom.headers_secret_ref
            headers["Authorization"] = await self._kube.read_secret(
                spec.namespace, ref.name, ref.key, spec.name
            )
        interval = spec.analysis.interval.total_seconds()
        return self._metrics.connect(
            prom.address,
            prom.timeout.total_seconds(),
            headers,
            # Retries must end well inside the tick, so a slow Prometheus never stacks ticks.
            retry_budget=max(0.2, min(10.0, interval / 2)),
        )

    async def _carry_out(
        self,
        body: Mapping[str, Any],
        result: engine.TickResult,
        spec: Spec | None,
    ) -> None:
        meta = body.get("metadata", {})
        rollout = f"{meta.get('namespace')}/{meta.get('name')}"
        status = result.status
        pages = [a for a in result.actions if isinstance(a, Page)]
        resolves = [a for a in result.actions if isinstance(a, Resolve)]
        if spec is not None and result.intent is not None:
            try:
                body = await self._write(body, result.intent)
            except Exception as exc:  # traffic first: the rollback's weights are still written
                log.warning(
                    "rollback intent not written rollout=%s error=%s",
                    rollout,
                    describe_failure(exc),
                )
        if spec is not None:
            try:
                await self._apply_weights(spec, result)
            except Exception:
                raw = body.get("status")
                if _lowers_canary(status_from_dict(raw), status):
                    # The write may have landed with its answer lost (the API server died
                    # after committing it, a connection cut): decide the next tick from this
                    # decision, as after a failed status write. If it landed, it is recorded
                    # then; if not, the canary's share is set back down to it.
                    self._ledger.held(_key(body), raw, status)
                raise
        for action in result.actions:
            if isinstance(action, EmitEvent):
                metrics.DECISIONS.labels(action=action.type, reason=action.reason).inc()
                if action.reason == "WeightsReasserted":
                    metrics.WEIGHT_REASSERTS.inc()
                log.info("decision rollout=%s reason=%s %s", rollout, action.reason, action.message)
                await self._event(body, action.type, action.reason, action.message)
        body = await self._write(body, status)
        if spec is None or not (pages or resolves):
            return
        for page in pages:
            after = await self._deliver(body, spec, status, page)
            body = await self._write(body, after)
            status = after
        for resolve in resolves:
            after = await self._deliver_resolve(body, spec, status, resolve)
            body = await self._write(body, after)
            status = after

    async def _apply_weights(self, spec: Spec, result: engine.TickResult) -> None:
        """Carry out the tick's SetWeights, if any. The engine alone decides weights: a
        setting back after an outside change is one of its decisions, and it never raises
        the canary's share but by a judged step or a manual promote."""
        commanded = [a for a in result.actions if isinstance(a, SetWeights)]
        if not commanded:
            return
        wanted = commanded[-1]
        target = spec.target
        await self._routers.for_kind(target.kind).set_weights(
            spec.namespace,
            target.name,
            target.selectors,
            spec.baseline,
            spec.canary,
            wanted.baseline,
            wanted.canary,
            wanted.mirror,
        )

    async def _write(self, body: Mapping[str, Any], after: Status) -> Mapping[str, Any]:
        """Patch what changed from the status `body` holds, when a reader needs it or the
        heartbeat is due (`status_ledger`); keep the answer so the next tick starts from it."""
        key = _key(body)
        raw = body.get("status")
        before = status_from_dict(raw)
        patch = merge_patch(before.to_dict(), after.to_dict())
        if "phase" not in (raw or {}):
            patch["phase"] = after.phase  # a new rollout's Pending is shown, not implied
        now = self._tick_time()
        if not patch:
            self._ledger.held(key, raw, after, pending=False)
            return body
        if not self._ledger.must_write(
            key, before, after, now, parse_time((raw or {}).get("valuesAt"))
        ):
            metrics.STATUS_WRITES.labels(result="deferred").inc()
            metrics.record_rollout(key[0], key[1], after)
            self._ledger.held(key, raw, after)
            return body
        patch["valuesAt"] = format_time(now)
        try:
            updated = await self._kube.patch_status(key[0], key[1], patch)
        except Exception:
            self._ledger.held(key, raw, after)
            raise
        metrics.STATUS_WRITES.labels(result="written").inc()
        self._ledger.wrote(key, updated.get("status") if updated else None, after, now)
        if updated and key in self._bodies:
            self.seen("MODIFIED", updated)
        return updated or body

    async def _deliver(
        self, body: Mapping[str, Any], spec: Spec, status: Status, page: Page
    ) -> Status:
        paging = spec.paging
        assert paging is not None  # the engine pages only when paging is configured
        ref = paging.pager_duty.routing_key_secret_ref
        now = self._clock()
        try:
            routing_key = await self._kube.read_secret(spec.namespace, ref.name, ref.key, spec.name)
        except SecretError as exc:
            metrics.PAGES.labels(result="secret_error").inc()
            if _new_failure(status, str(exc)):
                await self._event(body, "Warning", "PageFailed", f"cannot page: {exc}")
            return engine.record_page_result(status, False, False, str(exc), now)
        result = await self._pager.trigger(
            paging.pager_duty.url or DEFAULT_EVENTS_URL, routing_key, self._page_event(spec, page)
        )
        metrics.PAGES.labels(result=result.outcome.name.lower()).inc()
        delivered = result.outcome is DeliveryOutcome.DELIVERED
        permanent = result.outcome is DeliveryOutcome.REJECTED
        if delivered:
            await self._event(
                body, "Normal", "PageDelivered", f"PagerDuty accepted: {page.summary}"
            )
        elif _new_failure(status, result.message):
            await self._event(
                body,
                "Warning",
                "PageFailed",
                f"PagerDuty {'rejected' if permanent else 'unreachable'} after "
                f"{result.attempts} attempt(s): {result.message}",
            )
        return engine.record_page_result(
            status,
            delivered,
            permanent,
            None if delivered else result.message,
            self._clock(),
            attempts=result.attempts,
        )

    async def _deliver_resolve(
        self, body: Mapping[str, Any], spec: Spec, status: Status, resolve: Resolve
    ) -> Status:
        """Send the resolve the status records as Resolving (written before this call, so a
        crash here sends it again), and record how it went."""
        paging = spec.paging
        assert paging is not None  # the engine resolves only when paging is configured
        ref = paging.pager_duty.routing_key_secret_ref
        try:
            routing_key = await self._kube.read_secret(spec.namespace, ref.name, ref.key, spec.name)
        except SecretError as exc:
            metrics.RESOLVES.labels(result="secret_error").inc()
            return engine.record_resolve_result(
                status, False, False, str(exc), self._clock(), dedup_key=resolve.dedup_key
            )
        result = await self._pager.resolve(
            paging.pager_duty.url or DEFAULT_EVENTS_URL, routing_key, resolve.dedup_key
        )
        metrics.RESOLVES.labels(result=result.outcome.name.lower()).inc()
        delivered = result.outcome is DeliveryOutcome.DELIVERED
        permanent = result.outcome is DeliveryOutcome.REJECTED
        if delivered:
            message = f"PagerDuty resolved the incident (dedup key {resolve.dedup_key})"
            await self._event(body, "Normal", "IncidentResolved", message)
        elif permanent or _resolve_error(status, resolve.dedup_key) != result.message:
            await self._event(
                body,
                "Warning",
                "ResolveFailed",
                f"PagerDuty {'rejected' if permanent else 'unreachable'} after "
                f"{result.attempts} attempt(s): {result.message}",
            )
        return engine.record_resolve_result(
            status,
            delivered,
            permanent,
            None if delivered else result.message,
            self._clock(),
            attempts=result.attempts,
            dedup_key=resolve.dedup_key,
        )

    def _page_event(self, spec: Spec, page: Page) -> PageEvent:
        links = []
        slo_name = page.details.get("slo")
        queries = plan(spec)
        if isinstance(slo_name, str) and slo_name in queries:
            expr = queries[slo_name].value
            url = (
                strip_credentials(spec.metrics.prometheus.address).rstrip("/")
                + "/graph?"
                + urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": "1h"})
            )
            links.append(Link(href=url, text=f"Prometheus: {slo_name}, baseline vs canary"))
        return PageEvent(
            dedup_key=page.dedup_key,
            summary=page.summary,
            source=f"canaryguard/{spec.namespace}/{spec.name}",
            severity=page.severity,
            component=spec.target.name,
            group=spec.namespace,
            event_class="canary-rollback",
            custom_details=page.details,
            links=tuple(links),
        )

    async def _event(self, body: Mapping[str, Any], type_: str, reason: str, msg: str) -> None:
        try:
            await self._kube.post_event(body, type_, reason, msg)
        except Exception as exc:  # an Event is best effort; the decision is in the status
            log.warning("event not posted reason=%s error=%s", reason, exc)


_PHASES = ("Pending", "Progressing", "Paused", "Promoted", "RolledBack", "Invalid")


def _key(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def failure_reason(exc: BaseException) -> str:
    """A short, bounded label for a failed tick: the API server's HTTP status, a network
    error or timeout, or a bug (anything else). The Kubernetes client raises urllib3's own
    errors for a server that refuses or drops connections (MaxRetryError, ProtocolError),
    which are not OSErrors: they are the network too."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and 100 <= status <= 599:
        return f"api_{status}"
    if isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, OSError | urllib3.exceptions.HTTPError):
        return "network"
    return "bug"


def describe_failure(exc: BaseException) -> str:
    """One line about the failure, without the response body an API error carries."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"{type(exc).__name__}: HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# The Invalid reasons that say the operator refused, rather than that the spec is wrong.
_INVALID_REASONS: dict[type[Exception], str] = {
    AddressNotAllowed: "AddressNotAllowed",
    SecretNotAllowed: "SecretNotAllowed",
}


def _urgent_fields(body: Mapping[str, Any]) -> tuple[Any, Any]:
    """What, when it changes, calls for a tick at once: the generation and the request."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return meta.get("generation"), annotations.get(REQUEST_ANNOTATION)


def _lowers_canary(before: Status, after: Status) -> bool:
    """Whether `after` decided a lower canary weight than `before` had (a rollback, an
    abort)."""
    return (
        before.canary_weight is not None
        and after.canary_weight is not None
        and after.canary_weight < before.canary_weight
    )


def _resolve_error(status: Status, dedup_key: str) -> str | None:
    """The last delivery error recorded for the incident with that key (None: none yet), so a
    resolve retried for the same reason posts one Event, not one a tick."""
    found = next((i for i in status.incidents if i.dedup_key == dedup_key), None)
    return found.last_error if found is not None else None


def _new_failure(status: Status, error: str) -> bool:
    """Whether a failed delivery says something new: a page retried every tick for the same
    reason posts one Event, not one a tick (the status keeps the attempts and last error)."""
    return status.page is None or status.page.last_error != error
