"""Virtual time for asyncio tests: an event loop whose clock jumps to its next timer.

Time moves only when every task waits, straight to the next timer, so times in a test are
exact whatever the machine's load. Use binary fractions (0.25, 0.5, 1, 10) for durations
that must add up exactly in floating point.
"""

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["VirtualClock", "VirtualTimeLoop", "run_virtual"]


class VirtualClock:
    """Seconds since the test began, moved only by the event loop's selector."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; where the loop would block until its next timer, the clock
    jumps to that timer instead."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: every task waits and no timer is set")
        self._clock.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is `clock`: `asyncio.sleep(5)` returns at once with
    the clock 5 s later."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        super().__init__(_JumpingSelector(clock))

    def time(self) -> float:
        return self.clock.now


def run_virtual(main: Callable[[VirtualClock], Coroutine[Any, Any, None]]) -> VirtualClock:
    """Run `main(clock)` on a virtual-time loop; return the clock (at the end time)."""
    clock = VirtualClock()
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(clock)) as runner:
        runner.run(main(clock))
    return clock
