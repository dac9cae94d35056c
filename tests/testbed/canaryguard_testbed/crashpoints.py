"""The operator with crash points, for fault campaigns (`bench/chaos.py`, the chaos test).

    CANARYGUARD_TESTBED_CRASH_AFTER_ROLLBACK_WEIGHTS=0.5 \\
    CANARYGUARD_TESTBED_CRASH_LOG=crashes.jsonl \\
        python -m canaryguard_testbed.crashpoints run --kubeconfig=... (as `canaryguard run`)

is `canaryguard` with places where the process SIGKILLs itself, each with the probability
(0 to 1) its environment variable gives; unset or 0 never crashes:

- `CANARYGUARD_TESTBED_CRASH_AFTER_WEIGHTS`: right after a tick wrote a VirtualService's
  weights for a step (a start, an advance, a promote, a setting back) and before it writes
  the rollout's status;
- `CANARYGUARD_TESTBED_CRASH_AFTER_ROLLBACK_WEIGHTS`: the same, for a rollback's 100/0: the
  traffic is safe, the status still says Progressing and nobody has been paged;
- `CANARYGUARD_TESTBED_CRASH_AFTER_PAGE`: right after PagerDuty answered a page and before
  the delivery is written to the status (delivery is at least once; the dedup key must make
  the resend one incident).

Before it dies, a crash appends one JSON line to `CANARYGUARD_TESTBED_CRASH_LOG` (if set):
`at` (UNIX time), `point`, `rollout`, the weights or the page's outcome, and `in_flight`:
the other rollouts whose ticks had written weights and not yet their status (the crash
kills those ticks in that same window).
`CANARYGUARD_TESTBED_CRASH_SEED` seeds the draws. With `CANARYGUARD_TESTBED_IN_FLIGHT` set
to a path, that file always holds (as JSON) the rollouts whose weights were written and whose
status is not yet: what any kill of this process, a SIGKILL from outside included, cuts
between the two writes.

Why crash points, and why here: a SIGKILL at a random instant almost never lands in the few
milliseconds between two API calls of one tick, and SIGSTOP timing cannot aim at them either;
these points put a crash exactly there, as often as asked. They wrap two methods of the
runtime controller from outside, so the operator's package and image carry no switch that
could make it kill itself. `install` fails loudly when those methods are gone, so a renamed
method cannot silently disarm a campaign.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AFTER_WEIGHTS_ENV = "CANARYGUARD_TESTBED_CRASH_AFTER_WEIGHTS"
AFTER_ROLLBACK_WEIGHTS_ENV = "CANARYGUARD_TESTBED_CRASH_AFTER_ROLLBACK_WEIGHTS"
AFTER_PAGE_ENV = "CANARYGUARD_TESTBED_CRASH_AFTER_PAGE"
LOG_ENV = "CANARYGUARD_TESTBED_CRASH_LOG"
IN_FLIGHT_ENV = "CANARYGUARD_TESTBED_IN_FLIGHT"
SEED_ENV = "CANARYGUARD_TESTBED_CRASH_SEED"

AFTER_WEIGHTS = "after-weights"
AFTER_ROLLBACK_WEIGHTS = "after-rollback-weights"
AFTER_PAGE = "after-page"


@dataclass(frozen=True)
class CrashPoints:
    """The probability of a crash at each point, and where crashes are recorded."""

    after_weights: float = 0.0
    after_rollback_weights: float = 0.0
    after_page: float = 0.0
    log_path: str | None = None
    seed: int | None = None
    in_flight_path: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CrashPoints:
        def probability(name: str) -> float:
            value = float(env.get(name) or 0)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability between 0 and 1, not {value}")
            return value

        seed = env.get(SEED_ENV)
        return cls(
            after_weights=probability(AFTER_WEIGHTS_ENV),
            after_rollback_weights=probability(AFTER_ROLLBACK_WEIGHTS_ENV),
            after_page=probability(AFTER_PAGE_ENV),
            log_path=env.get(LOG_ENV) or None,
            seed=int(seed) if seed else None,
            in_flight_path=env.get(IN_FLIGHT_ENV) or None,
        )

    def env(self) -> dict[str, str]:
        """The environment variables that arm these points in an operator process."""
        out = {
            AFTER_WEIGHTS_ENV: f"{self.after_weights:g}",
            AFTER_ROLLBACK_WEIGHTS_ENV: f"{self.after_rollback_weights:g}",
            AFTER_PAGE_ENV: f"{self.after_page:g}",
        }
        if self.log_path:
            out[LOG_ENV] = self.log_path
        if self.seed is not None:
            out[SEED_ENV] = str(self.seed)
        if self.in_flight_path:
            out[IN_FLIGHT_ENV] = self.in_flight_path
        return out


def crash(log_path: str | None, point: str, **details: Any) -> None:
    """Record the crash (one JSON line, appended in one write) and SIGKILL this process."""
    if log_path:
        line = json.dumps({"at": time.time(), "point": point, **details}) + "\n"
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    os.write(2, f"crashpoints: SIGKILL at {point} {details}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)


def install(points: CrashPoints) -> None:
    """Wrap the runtime controller's weight write and page delivery with the crash points."""
    from canaryguard.core.actions import SetWeights
    from canaryguard.runtime.controller import Controller

    wrapped = ("_apply_weights", "_write", "_deliver", "tick_key")
    missing = [m for m in wrapped if not hasattr(Controller, m)]
    if missing:
        raise RuntimeError(f"crash points cannot be placed: Controller has no {missing}")
    rng = random.Random(points.seed)
    apply_weights = Controller._apply_weights
    deliver = Controller._deliver
    tick_key = Controller.tick_key
    write = Controller._write
    # Rollouts whose weights were written and whose decided status is not written yet: in
    # the middle of a tick, or held in memory after a failed status write (`StatusLedger.pending`).
    in_flight: dict[str, str] = {}
    decided: dict[str, tuple[str, int]] = {}  # the phase and weight their status will have

    def publish() -> None:
        if points.in_flight_path:
            path = points.in_flight_path
            with open(path + ".tmp", "w") as f:
                json.dump(in_flight, f)
            os.replace(path + ".tmp", path)

    async def apply_weights_then_maybe_crash(self: Controller, spec: Any, result: Any) -> None:
        written = [a for a in result.actions if isinstance(a, SetWeights)]
        if not written:
            await apply_weights(self, spec, result)
            return
        rollout = f"{spec.namespace}/{spec.name}"
        weights = f"{written[-1].baseline}/{written[-1].canary} {result.status.phase}"
        # Marked before the write: a write under way may land even if the process dies
        # before the answer comes back.
        in_flight[rollout] = f"writing {weights}"
        decided[rollout] = (result.status.phase, written[-1].canary)
        publish()
        await apply_weights(self, spec, result)
        in_flight[rollout] = weights
        publish()
        rollback = result.status.phase == "RolledBack" and written[-1].canary == 0
        p = points.after_rollback_weights if rollback else points.after_weights
        if p and rng.random() < p:
            crash(
                points.log_path,
                AFTER_ROLLBACK_WEIGHTS if rollback else AFTER_WEIGHTS,
                rollout=rollout,
                baseline=written[-1].baseline,
                canary=written[-1].canary,
                phase=result.status.phase,
                in_flight={k: v for k, v in in_flight.items() if k != rollout},
            )

    def done(rollout: str) -> None:
        if in_flight.pop(rollout, None) is not None:
            decided.pop(rollout, None)
            publish()

    async def write_and_track(self: Controller, body: Any, after: Any) -> Any:
        updated = await write(self, body, after)
        meta = body.get("metadata") or {}
        rollout = f"{meta.get('namespace')}/{meta.get('name')}"
        if decided.get(rollout) == (after.phase, after.canary_weight):
            done(rollout)  # the status that goes with the weights is written
        return updated

    async def tick_and_track(self: Controller, key: Any) -> None:
        await tick_key(self, key)
        rollout = f"{key[0]}/{key[1]}"
        held = self._ledger.pending(key)
        if held is None or (held.phase, held.canary_weight) != decided.get(rollout):
            done(rollout)  # the status that goes with the weights is not left unwritten

    async def deliver_then_maybe_crash(
        self: Controller, body: Any, spec: Any, status: Any, page: Any
    ) -> Any:
        after = await deliver(self, body, spec, status, page)
        if points.after_page and rng.random() < points.after_page:
            crash(
                points.log_path,
                AFTER_PAGE,
                rollout=f"{spec.namespace}/{spec.name}",
                page=after.page.state if after.page is not None else None,
                dedup_key=page.dedup_key,
                in_flight=dict(in_flight),
            )
        return after

    Controller._apply_weights = apply_weights_then_maybe_crash  # type: ignore[method-assign]
    Controller._deliver = deliver_then_maybe_crash  # type: ignore[method-assign]
    Controller._write = write_and_track  # type: ignore[method-assign]
    Controller.tick_key = tick_and_track  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    """`canaryguard` with the crash points the environment arms."""
    install(CrashPoints.from_env(os.environ))
    from canaryguard.cli.main import main as canaryguard_main

    return canaryguard_main(argv)


if __name__ == "__main__":
    sys.exit(main())
