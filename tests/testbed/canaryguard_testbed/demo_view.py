"""What `make demo` shows: a snapshot of the rollout as the operator sees it, drawn either as
a live terminal view (rich) or as plain timestamped lines, one per change, for terminals that
are not interactive (CI logs)."""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

PANEL_WIDTH = 100
BAR_WIDTH = 40


@dataclass(frozen=True)
class SloView:
    """One SLO row: how it is judged (from the spec) and its last verdict (from status)."""

    name: str
    kind: str  # "errorRate", "latency" or "query"
    tolerance: str
    window_s: float
    verdict: str | None = None
    reason: str = ""
    baseline: float | None = None
    canary: float | None = None
    baseline_samples: float | None = None
    canary_samples: float | None = None
    breaching_s: float | None = None  # how long the current breach run has lasted

    def value(self, value: float | None) -> str:
        """A value in the SLO's unit: percent for error rates, ms for latency."""
        if value is None or not math.isfinite(value):
            return "-"
        if self.kind == "errorRate":
            return f"{value * 100:.2f}%"
        if self.kind == "latency":
            return f"{value:.1f} ms"
        return f"{value:.3f}"

    def verdict_text(self) -> str:
        """The verdict in a few words, e.g. `breach 5s of 8s` or `inconclusive: canary
        n=34/200`."""
        if self.verdict is None:
            return "not judged yet"
        if self.verdict == "breach" and self.breaching_s is not None:
            return f"breach {self.breaching_s:.0f}s of {self.window_s:g}s"
        if self.verdict in ("inconclusive", "unavailable") and self.reason:
            return f"{self.verdict}: {short_reason(self.reason)}"
        return self.verdict


_EVIDENCE = re.compile(r"^(\w+) has ([0-9.eE+-]+) (\w+), needs (\d+)$")
_NO_DATA = re.compile(r"^(\w+) \w+ unknown \(no data\)$")
_TIMESTAMP = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\b")


def short_reason(reason: str) -> str:
    """The judge's reason for an inconclusive verdict, shortened for a table cell."""
    if m := _EVIDENCE.match(reason):
        return f"{m.group(1)} n={float(m.group(2)):.0f}/{m.group(4)}"
    if m := _NO_DATA.match(reason):
        return f"no {m.group(1)} data yet"
    return reason


def demo_times(text: str, wall_start: float) -> str:
    """RFC 3339 timestamps in `text` as demo time (`0:42`), like the rest of the view."""

    def replace(match: re.Match[str]) -> str:
        moment = datetime.fromisoformat(match.group(0).replace("Z", "+00:00"))
        return format_elapsed(moment.timestamp() - wall_start)

    return _TIMESTAMP.sub(replace, text)


@dataclass(frozen=True)
class TimelineEntry:
    """A decision of the operator (from status history) or a step of the demo itself."""

    at: float  # seconds since the demo started
    action: str
    message: str
    source: str = "operator"  # or "demo"


@dataclass(frozen=True)
class Snapshot:
    """Everything the views draw, read at one moment."""

    elapsed: float
    rollout: str = ""
    phase: str | None = None
    message: str = ""
    step_index: int | None = None
    steps: tuple[tuple[int, float], ...] = ()  # (weight, hold seconds)
    step_elapsed: float | None = None
    weights: tuple[int, int] | None = None  # (v1, v2) from the VirtualService
    traffic: Mapping[str, float] = field(default_factory=dict)  # req/s by version
    slos: tuple[SloView, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()


class View(Protocol):
    """How the demo reports; used as a context manager around the run."""

    def __enter__(self) -> View: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def stage(self, message: str) -> None:
        """A part of the local stack is up, or the demo did something."""

    def update(self, snapshot: Snapshot) -> None:
        """The latest state of the rollout."""

    def note(self, message: str) -> None:
        """A line outside the live area (after it stopped, or in plain mode)."""

    def page(self, event: Mapping[str, Any]) -> None:
        """The PagerDuty event the receiver accepted."""

    def result(self, ok: bool, message: str) -> None:
        """The outcome of the demo."""


def format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(max(0, int(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def weights_text(weights: tuple[int, int] | None) -> str:
    if weights is None:
        return "-"
    return f"v1 {weights[0]}% / v2 {weights[1]}%"


def step_text(snapshot: Snapshot) -> str:
    if snapshot.step_index is None or not snapshot.steps:
        return ""
    weight, hold = snapshot.steps[min(snapshot.step_index, len(snapshot.steps) - 1)]
    where = f"step {snapshot.step_index + 1}/{len(snapshot.steps)}"
    if snapshot.phase == "RolledBack":
        return f"canary back to 0% from {weight}% at {where}"
    if snapshot.phase == "Promoted":
        return f"canary at 100% after all {len(snapshot.steps)} steps"
    held = "" if snapshot.step_elapsed is None else f", held {snapshot.step_elapsed:.0f}s"
    return f"{where}: canary {weight}% for {hold:g}s{held}"


def traffic_text(traffic: Mapping[str, float]) -> str:
    total = sum(traffic.values())
    parts = ", ".join(f"{v} {traffic[v]:.0f}" for v in sorted(traffic))
    return f"{total:.0f} req/s ({parts})" if traffic else "no traffic measured yet"


@dataclass(frozen=True)
class PageView:
    """The parts of a PagerDuty event worth reading; never the routing key."""

    summary: str
    dedup_key: str
    action: str
    severity: str
    source: str
    details: tuple[tuple[str, str], ...]
    slos: tuple[str, ...]
    links: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> PageView:
        body = event.get("event", {})
        payload = body.get("payload", {})
        details = dict(payload.get("custom_details") or {})
        slos = details.pop("slos", None) or []
        return cls(
            summary=str(payload.get("summary", "")),
            dedup_key=str(event.get("dedup_key") or body.get("dedup_key", "")),
            action=str(body.get("event_action", "")),
            severity=str(payload.get("severity", "")),
            source=str(payload.get("source", "")),
            details=tuple((k, str(v)) for k, v in details.items() if v is not None),
            slos=tuple(
                f"{s.get('name')} {s.get('verdict')} (v1 {s.get('baseline')}, v2 {s.get('canary')})"
                for s in slos
                if isinstance(s, Mapping)
            ),
            links=tuple(
                (str(link.get("text", "")), str(link.get("href", "")))
                for link in body.get("links", []) or []
            ),
        )


# -- plain lines ----------------------------------------------------------------------------


class PlainView:
    """One timestamped line per change, for logs and terminals that are not interactive."""

    def __init__(self, out: TextIO | None = None, clock: float | None = None) -> None:
        self.out = out or sys.stdout
        self.began = clock if clock is not None else time.monotonic()
        self._last: Snapshot | None = None
        self._seen_timeline: set[tuple[float, str, str]] = set()
        self._followed: tuple[int, int] | None = None

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _line(self, text: str, at: float | None = None) -> None:
        at = time.monotonic() - self.began if at is None else at
        self.out.write(f"[{at:6.1f}s] {text}\n")
        self.out.flush()

    def stage(self, message: str) -> None:
        self._line(message)

    def note(self, message: str) -> None:
        self._line(message)

    def update(self, snapshot: Snapshot) -> None:
        last = self._last
        for entry in snapshot.timeline:
            key = (entry.at, entry.action, entry.message)
            if key not in self._seen_timeline:
                self._seen_timeline.add(key)
                who = "decision" if entry.source == "operator" else "demo"
                self._line(f"{who} {entry.action}: {entry.message}")
        if snapshot.phase is not None and (last is None or snapshot.phase != last.phase):
            self._line(f"phase {snapshot.phase}: {snapshot.message}")
        if snapshot.weights is not None and (last is None or snapshot.weights != last.weights):
            self._line(f"VirtualService weights {weights_text(snapshot.weights)}")
        if (
            snapshot.weights is not None
            and snapshot.weights != self._followed
            and traffic_follows(snapshot.traffic, snapshot.weights)
        ):
            self._followed = snapshot.weights
            self._line(f"traffic through the router now: {traffic_text(snapshot.traffic)}")
        before = {slo.name: slo for slo in (last.slos if last else ())}
        for slo in snapshot.slos:
            old = before.get(slo.name)
            if slo.verdict is not None and (old is None or old.verdict != slo.verdict):
                self._line(
                    f"SLO {slo.name}: {slo.verdict} (baseline {slo.value(slo.baseline)}, "
                    f"canary {slo.value(slo.canary)}; tolerance {slo.tolerance})"
                    + (f": {slo.reason}" if slo.verdict != "healthy" and slo.reason else "")
                )
        self._last = snapshot

    def page(self, event: Mapping[str, Any]) -> None:
        page = PageView.of(event)
        self._line(f"PagerDuty receiver got a {page.action} event:")
        rows = [
            ("summary", page.summary),
            ("dedup_key", page.dedup_key),
            ("severity", page.severity),
            ("source", page.source),
            *((f"custom_details.{k}", v) for k, v in page.details),
            *(("custom_details.slos", slo) for slo in page.slos),
            *((f"link {text}", href) for text, href in page.links),
        ]
        for label, text in rows:
            self.out.write(f"           {label:<34} {text}\n")
        self.out.flush()

    def result(self, ok: bool, message: str) -> None:
        self._line(("RESULT OK: " if ok else "RESULT FAILED: ") + message)


def traffic_follows(traffic: Mapping[str, float], weights: tuple[int, int]) -> bool:
    """Whether the traffic Prometheus measured is split as the weights say (within 7 points:
    the router picks a version per request at random)."""
    total = sum(traffic.values())
    if total < 1:
        return False
    return all(
        abs(traffic.get(version, 0.0) / total * 100 - weight) <= 7
        for version, weight in zip(("v1", "v2"), weights, strict=True)
    )


# -- live view -----------------------------------------------------------------------------


_PHASE_STYLE = {
    "Progressing": "bold cyan",
    "Promoted": "bold green",
    "RolledBack": "bold red",
    "Paused": "bold yellow",
    "Invalid": "bold red",
}
_VERDICT_STYLE = {
    "healthy": "green",
    "breach": "bold red",
    "inconclusive": "yellow",
    "unavailable": "magenta",
}


class LiveView:
    """A live panel redrawn four times a second: the stack coming up, then the rollout's
    step, weights, live traffic, SLO table and timeline. Fits a 100x30 terminal."""

    def __init__(
        self,
        title: str,
        subtitle: str,
        story: str,
        wall_start: float | None = None,
        console: Console | None = None,
    ) -> None:
        self.console = console or Console()
        self.title = title
        self.subtitle = subtitle
        self.story = story
        self.wall_start = time.time() if wall_start is None else wall_start
        self.began = time.monotonic() - (time.time() - self.wall_start)
        self._stages: list[str] = []
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._live = Live(
            get_renderable=self._render,
            console=self.console,
            refresh_per_second=4,
            transient=False,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._running = False

    def __enter__(self) -> LiveView:
        self._live.start()
        self._running = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._live.refresh()
            self._live.stop()

    def stage(self, message: str) -> None:
        with self._lock:
            self._stages.append(message)

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def note(self, message: str) -> None:
        elapsed = format_elapsed(time.monotonic() - self.began)
        if self._running:
            self._live.console.print(Text(f"{elapsed}  {message}", style="dim"))
        else:
            self.console.print(Text(f"{elapsed}  {message}", style="dim"))

    def page(self, event: Mapping[str, Any]) -> None:
        self.stop()
        page = PageView.of(event)
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        table.add_row("summary", Text(page.summary))
        table.add_row("dedup_key", Text(page.dedup_key, style="bold"))
        table.add_row(
            "event", Text(f"{page.action}, severity {page.severity}, source {page.source}")
        )
        details = Text()
        for key, value in page.details:
            if key != "explanation":
                details.append(f"{key}=", style="dim").append(value).append("  ")
        table.add_row("custom_details", details)
        for slo in page.slos:
            table.add_row("", Text(f"slos: {slo}"))
        for text, href in page.links:
            table.add_row("link", Text(text, style=f"link {href} underline"))
        self.console.print(
            Panel(
                table,
                title="[bold]PagerDuty: the page on-call received[/]",
                title_align="left",
                border_style="red",
                width=min(self.console.width, PANEL_WIDTH),
            )
        )

    def result(self, ok: bool, message: str) -> None:
        self.stop()
        style = "bold green" if ok else "bold red"
        self.console.print(Text(("✔ " if ok else "✘ ") + message, style=style))

    # -- drawing ------------------------------------------------------------------------------

    def _render(self) -> RenderableType:
        with self._lock:
            snapshot, stages = self._snapshot, list(self._stages)
        elapsed = time.monotonic() - self.began
        width = min(self.console.width, PANEL_WIDTH)
        height = self.console.height
        if snapshot is None or snapshot.phase is None:
            body: RenderableType = self._render_startup(stages)
        else:
            body = self._render_rollout(snapshot, width, height)
        return Panel(
            body,
            title=f"[bold]{self.title}[/]",
            title_align="left",
            subtitle=f"{self.subtitle} · {format_elapsed(elapsed)}",
            subtitle_align="right",
            border_style="blue",
            width=width,
        )

    def _render_startup(self, stages: Sequence[str]) -> RenderableType:
        lines = [Text(self.story, style="bold"), Text("")]
        lines += [Text.assemble(("✔ ", "green"), (s, "")) for s in stages]
        spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"[int(time.monotonic() * 8) % 10]
        lines.append(Text(f"{spinner} starting the local stack…", style="cyan"))
        return Group(*lines)

    def _render_rollout(self, s: Snapshot, width: int, height: int) -> RenderableType:
        phase = s.phase or "Pending"
        head = Text.assemble(
            (s.rollout, "bold"),
            "  ",
            (phase, _PHASE_STYLE.get(phase, "bold")),
            "  ",
            step_text(s),
        )
        message = Text(
            demo_times(s.message, self.wall_start), style="dim", overflow="ellipsis", no_wrap=True
        )
        bars = [self._bar("v1", s.weights[0] if s.weights else None, s.traffic.get("v1"), "blue")]
        bars.append(
            self._bar("v2", s.weights[1] if s.weights else None, s.traffic.get("v2"), "magenta")
        )
        slo_table = Table(
            box=box.SIMPLE_HEAD,
            expand=True,
            padding=(0, 1),
            show_edge=False,
            header_style="bold",
        )
        slo_table.add_column("SLO", no_wrap=True)
        slo_table.add_column("baseline", justify="right", no_wrap=True)
        slo_table.add_column("canary", justify="right", no_wrap=True)
        slo_table.add_column("tolerance (v2 vs v1)", no_wrap=True)
        slo_table.add_column("verdict", no_wrap=True, overflow="ellipsis", ratio=1)
        for slo in s.slos:
            slo_table.add_row(
                slo.name,
                slo.value(slo.baseline),
                slo.value(slo.canary),
                slo.tolerance,
                Text(slo.verdict_text(), style=_VERDICT_STYLE.get(slo.verdict or "", "dim")),
            )
        # Panel border (2) + header, message, 2 bars, blank, table (3 + SLOs), blank, title.
        room = max(3, height - 12 - len(s.slos) - 2)
        timeline = Table.grid(padding=(0, 1), expand=True)
        timeline.add_column(no_wrap=True, style="dim")
        timeline.add_column(no_wrap=True)
        timeline.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        for entry in s.timeline[-room:]:
            style = _action_style(entry)
            timeline.add_row(
                format_elapsed(entry.at),
                Text(entry.action, style=style),
                Text(demo_times(entry.message, self.wall_start), overflow="ellipsis", no_wrap=True),
            )
        if not s.timeline:
            timeline.add_row("", "", Text("waiting for the first decision…", style="dim"))
        return Group(
            head,
            message,
            *bars,
            Text(""),
            slo_table,
            Text("Timeline", style="bold"),
            timeline,
        )

    @staticmethod
    def _bar(version: str, weight: int | None, rate: float | None, colour: str) -> Text:
        filled = 0 if weight is None else round(BAR_WIDTH * weight / 100)
        weight_text = "  -" if weight is None else f"{weight:3d}%"
        rate_text = "" if rate is None else f"   {rate:5.1f} req/s served"
        return Text.assemble(
            (f"{version} ", "bold"),
            ("█" * filled, colour),
            ("░" * (BAR_WIDTH - filled), "grey35"),
            f" {weight_text} of traffic",
            (rate_text, "dim"),
        )


def _action_style(entry: TimelineEntry) -> str:
    if entry.source == "demo":
        return "bold yellow"
    if entry.action in ("RolledBack", "PageFailed", "MetricsOutage", "ManualAbort"):
        return "bold red"
    if entry.action in ("Promoted", "PageDelivered"):
        return "bold green"
    return "cyan"


def seconds_since(moment: datetime | None, now: datetime) -> float | None:
    """Seconds from `moment` to `now`, or None."""
    return None if moment is None else max(0.0, (now - moment).total_seconds())
