"""`canaryguard backtest`: replay a CanaryRollout over Prometheus history and print the
timeline of verdicts and decisions, and the outcome (`canaryguard.core.backtest`).

    canaryguard backtest -f rollout.yaml --prometheus URL --from T1 --to T2

Times are RFC 3339 (`2024-06-01T12:00:00Z`) or UNIX seconds. Ticks fall on the operator's
grid from `--from` (`canaryguard.core.backtest.tick_times`); each of the rollout's queries is
asked as a range query stepped by its analysis interval, once per run of equally spaced ticks
(one run, or two when a slotted grid starts off a whole second).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from canaryguard.adapters.prometheus import PrometheusClient
from canaryguard.cli.errors import CliError
from canaryguard.core.backtest import Replay, TickRecord, replay, runs, tick_times
from canaryguard.core.ports import MetricsUnavailable, QueryRefused, Series
from canaryguard.core.queries import plan
from canaryguard.core.spec import Spec, SpecError, parse_spec
from canaryguard.core.status import format_time


def add_backtest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `backtest` subcommand."""
    backtest = sub.add_parser(
        "backtest",
        help="replay a rollout over Prometheus history",
        description=(
            "Replay the decision engine over Prometheus history as if the rollout had run "
            "then: print each tick's verdicts and decisions, and the outcome. Nothing in "
            "the cluster is read or changed."
        ),
    )
    backtest.add_argument("-f", "--file", required=True, type=Path, help="the CanaryRollout")
    backtest.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus")
    backtest.add_argument("--from", dest="start", required=True, type=_time, metavar="T1")
    backtest.add_argument("--to", dest="end", required=True, type=_time, metavar="T2")
    backtest.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per range query (default 30)"
    )


def _time(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not an RFC 3339 time or UNIX seconds"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_backtest(args: argparse.Namespace) -> int:
    """Run the command; errors become one `error:` line and exit code 1."""
    try:
        print(backtest_text(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def backtest_text(args: argparse.Namespace) -> str:
    spec = _read_spec(args.file)
    interval = spec.analysis.interval
    times = tick_times(args.start, args.end, interval)  # bounds checked before querying
    client = PrometheusClient(args.prometheus, timeout=args.timeout, retry_budget=args.timeout)
    texts = sorted({q for sq in plan(spec).values() for q in (sq.value, sq.samples)})
    step = interval.total_seconds()
    answers: dict[str, list[Series]] = {}
    for text in texts:
        answers[text] = []
        for first, last in runs(times, interval):
            try:
                answers[text] += client.query_range_blocking(text, first, last, step)
            except (MetricsUnavailable, QueryRefused) as exc:
                raise CliError(f"Prometheus did not answer {text!r}: {exc}") from None
    return render(spec, replay(spec, answers, args.start, args.end), args.start, args.end)


def _read_spec(path: Path) -> Spec:
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{path}: {exc}") from None
    rollouts = [d for d in documents if isinstance(d, dict) and d.get("kind") == "CanaryRollout"]
    if len(rollouts) != 1:
        raise CliError(f"{path}: expected one CanaryRollout, found {len(rollouts)}")
    try:
        return parse_spec(rollouts[0])
    except SpecError as exc:
        raise CliError(f"{path}: {exc}") from None


def render(spec: Spec, result: Replay, start: datetime, end: datetime) -> str:
    """The timeline, one tick a line (ticks that saw and decided nothing new are folded),
    then the outcome."""
    who = f"{spec.namespace}/{spec.name}" if spec.namespace else spec.name
    interval = spec.analysis.interval.total_seconds()
    lines = [
        f"backtest of {who} revision {spec.effective_revision()}: {format_time(start)} to "
        f"{format_time(end)}, a tick every {interval:g}s ({len(result.ticks)} ticks replayed)"
    ]
    previous: tuple[Any, ...] | None = None
    for tick in result.ticks:
        shown = _shown(tick)
        if shown == previous and not tick.decisions:
            continue
        previous = shown
        lines.append(_line(tick))
    lines.append(outcome(result))
    return "\n".join(lines)


def _shown(tick: TickRecord) -> tuple[Any, ...]:
    return (
        tick.phase,
        tick.canary_weight,
        tuple((s.name, s.verdict, s.breaching_since) for s in tick.slos),
    )


def _line(tick: TickRecord) -> str:
    weight = "-" if tick.canary_weight is None else f"{tick.canary_weight}%"
    verdicts = ", ".join(f"{s.name} {s.verdict}{_values(s)}" for s in tick.slos) or "not judged"
    text = f"#{tick.index:<4} {format_time(tick.at)} {tick.phase:<11} {weight:>4}  {verdicts}"
    for event in tick.decisions:
        text += f"\n      -> {event.reason}: {event.message}"
    return text


def _values(slo: Any) -> str:
    if slo.baseline is None and slo.canary is None:
        return ""
    return f" (canary {_num(slo.canary)} vs baseline {_num(slo.baseline)})"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def outcome(result: Replay) -> str:
    """`outcome: RolledBack at T (tick N): why`, `outcome: Promoted at ...`, or where the
    rollout still was when the period ended."""
    decided = result.decided
    status = result.status
    if decided is not None:
        why = status.rollback.message if status.rollback is not None else status.message
        return (
            f"outcome: {decided.phase} at {format_time(decided.at)} (tick {decided.index}): {why}"
        )
    return f"outcome: not decided by the end of the period: {status.phase}, {status.message}"
