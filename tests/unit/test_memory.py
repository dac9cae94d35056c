"""Freed memory handed back (`canaryguard.runtime.memory`): glibc's malloc_trim is found
here (the operator's image and this machine run glibc) and called once a period until
stop."""

from __future__ import annotations

import asyncio

import pytest

from canaryguard.runtime import memory


def test_glibc_s_malloc_trim_is_found_and_callable() -> None:
    trim = memory.trimmer()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released, 0: there was none to release


def test_the_trim_runs_once_a_period_until_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()

        def trim() -> int:
            calls.append(1)
            if len(calls) == 3:
                stop.set()
            return 0

        monkeypatch.setattr(memory, "trimmer", lambda: trim)
        task = asyncio.create_task(memory.trim_periodically(stop, period=0.01))
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert len(calls) == 3  # the third call set stop: the loop ended right after it
