"""How much CPU the operator's own decision path costs per rollout tick.

For N rollouts built from the fraud-model example (4 SLOs), one tick is what the controller
does between I/O: parse the spec from the body, read the status, plan the queries, run the
engine, write the status dict and diff it against the previous one. Prints the mean cost of
a tick and the share of one core that N rollouts at a 30 s interval would use.

    .venv/bin/python bench/bench_engine.py [N] [TICKS]
"""

from __future__ import annotations

import copy
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from canaryguard.adapters.kube import merge_patch
from canaryguard.core import engine
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.sequential import Stratum
from canaryguard.core.spec import parse_spec
from canaryguard.core.status import status_from_dict
from canaryguard.runtime.observe import plan

EXAMPLE = Path(__file__).parents[1] / "examples" / "fraud-model" / "canaryrollout.yaml"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    ticks = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    template = yaml.safe_load(EXAMPLE.read_text())
    bodies = []
    for i in range(count):
        body = copy.deepcopy(template)
        body["metadata"]["name"] = f"model-{i}"
        body["metadata"]["generation"] = 1
        bodies.append(body)
    healthy = Observations(
        {
            # The example's error rate has `confidence`: it is judged on counts since the step.
            "error-rate": SloObservation(0.01, 0.011, 900, 100, counts=Stratum(900, 9, 100, 1)),
            "p99-latency": SloObservation(80.0, 82.0, 900, 100),
            "fraud-flag-rate": SloObservation(0.03, 0.031, 9000, 1000),
            "score-drift": SloObservation(0.0, 0.02, 9000, 3000),
        }
    )
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    writes = 0
    started = time.process_time()
    for n in range(ticks):
        now = t0 + timedelta(seconds=30 * n)
        for body in bodies:
            spec = parse_spec(body)
            before = status_from_dict(body.get("status"))
            plan(spec)
            result = engine.tick(spec, before, healthy, now)
            after = result.status.to_dict()
            patch = merge_patch(before.to_dict(), after)
            if patch:
                writes += 1
                body["status"] = after
    cpu = time.process_time() - started
    per_tick = cpu / (count * ticks)
    print(f"rollouts={count} ticks_each={ticks} total_ticks={count * ticks}")
    print(f"cpu_per_tick_ms={per_tick * 1000:.3f}")
    print(f"core_share_at_30s_interval={count * per_tick / 30:.4f}")
    print(f"status_writes={writes} ({writes / (count * ticks):.1%} of ticks)")


if __name__ == "__main__":
    main()
