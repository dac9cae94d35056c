"""Faults injected into the receiver's answers: an error status or a delay for the next N
enqueue calls, queued in the order they were asked for, or an error status for every call
until a deadline (a period of throttling or of an outage). Not locked: the receiver calls it
under its own lock."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from canaryguard_testbed.pagerduty_contract import throttled

__all__ = ["Delay", "Fault", "Faults", "Period"]


@dataclass
class Fault:
    """Answer `status` (with Retry-After when set) to the next `remaining` calls."""

    remaining: int
    status: int
    retry_after: float | None

    def answer(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The status, body and headers to answer with."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            # Retry-After is whole seconds in HTTP; keep fractions for fast tests.
            seconds = self.retry_after
            headers["Retry-After"] = str(int(seconds) if seconds == int(seconds) else seconds)
        if self.status == 429:
            body = throttled()
        else:
            body = {"status": "error", "message": f"injected fault (HTTP {self.status})"}
        return self.status, body, headers


@dataclass
class Period:
    """Answer `fault`'s status to every call until `until` (monotonic seconds)."""

    until: float
    fault: Fault


@dataclass
class Delay:
    """Hold the answer to the next `remaining` calls for `seconds`."""

    remaining: int
    seconds: float


class Faults:
    """The pending faults and delays."""

    def __init__(self) -> None:
        self._faults: collections.deque[Fault] = collections.deque()
        self._delays: collections.deque[Delay] = collections.deque()
        self._periods: list[Period] = []

    def add_period(self, period: Period) -> None:
        self._periods.append(period)

    def add_fault(self, fault: Fault) -> None:
        self._faults.append(fault)

    def add_delay(self, delay: Delay) -> None:
        self._delays.append(delay)

    def take_fault(self, now: float | None = None) -> Fault | None:
        """The fault for this call, if one is pending: counted faults first, then the first
        period still running at `now` (monotonic seconds; periods are ignored without it)."""
        if not self._faults:
            if now is None:
                return None
            self._periods = [p for p in self._periods if p.until > now]
            return self._periods[0].fault if self._periods else None
        fault = self._faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.popleft()
        return fault

    def take_delay(self) -> float:
        """How long to hold this call's answer (0 when no delay is pending)."""
        if not self._delays:
            return 0.0
        delay = self._delays[0]
        delay.remaining -= 1
        if delay.remaining <= 0:
            self._delays.popleft()
        return delay.seconds

    def pending(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The pending faults (counted ones, then periods) and delays, as dicts."""
        periods = [{"until": p.until, **vars(p.fault)} for p in self._periods]
        return [vars(f) for f in self._faults] + periods, [vars(d) for d in self._delays]

    def clear(self) -> None:
        self._faults.clear()
        self._delays.clear()
        self._periods.clear()
