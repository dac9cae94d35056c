"""The fault campaign: at least 50 canary rollouts, a random half breaching, carried by the
real operator while it is SIGKILLed at random instants and at crash points (between a
VirtualService write and the status write, after a page), the API server and Prometheus
are restarted and PagerDuty answers 429 with Retry-After and 500 for periods. Prints the
counts (goal 0: lost rollbacks, promotions of a breaching canary, second incidents, late
rollbacks) and the figures, and writes them as JSON. Everything runs on 127.0.0.1 and stops
by itself (see canaryguard_testbed.chaos for what is counted and how).

    .venv/bin/python bench/chaos.py [--rollouts 50] [--seed 1] [--json chaos.json]

Exit code 0 when every goal-zero count is 0, 1 otherwise, 2 when the campaign itself could
not be carried out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from canaryguard_testbed.chaos import Campaign, CampaignError, Config, dump, render


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Config()
    parser.add_argument("--rollouts", type=int, default=defaults.rollouts)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument(
        "--spacing",
        type=float,
        default=defaults.spacing,
        help="seconds between two rollouts' creation",
    )
    parser.add_argument("--kills", type=int, help="SIGKILLs at random instants (default: scaled)")
    parser.add_argument("--apiserver-restarts", type=int)
    parser.add_argument("--prometheus-restarts", type=int)
    parser.add_argument("--pagerduty-periods", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    if args.rollouts < 2:
        parser.error("--rollouts must be at least 2")
    scale = args.rollouts / defaults.rollouts

    def scaled(given: int | None, default: int) -> int:
        return given if given is not None else max(1, round(default * scale))

    config = Config(
        rollouts=args.rollouts,
        seed=args.seed,
        spacing=args.spacing,
        kills=scaled(args.kills, defaults.kills),
        apiserver_restarts=scaled(args.apiserver_restarts, defaults.apiserver_restarts),
        prometheus_restarts=scaled(args.prometheus_restarts, defaults.prometheus_restarts),
        pagerduty_periods=scaled(args.pagerduty_periods, defaults.pagerduty_periods),
    )
    began = time.monotonic()
    campaign = Campaign(
        config, progress=lambda m: print(f"[{time.monotonic() - began:6.1f}s] {m}", flush=True)
    )
    try:
        report = campaign.run()
    except CampaignError as exc:
        print(f"the campaign could not be carried out: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            campaign.cleanup()
    print()
    print(render(report))
    if args.json:
        dump(report, args.json)
        print(f"\nreport written to {args.json}")
    return 0 if not any(report["goal_zero"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
