"""Load generator: POSTs seeded fraud-model requests at a steady rate, bounded in count and
time, and counts the answers by status.

    python -m canaryguard_testbed.loadgen --url http://127.0.0.1:P/predict \\
        --rate 100 --max-requests 2000 --max-duration 60 [--seed 1] [--concurrency 64]

Open loop: request i is due at start + i / rate whatever earlier answers did, so a slow
backend does not slow the offered load (up to `concurrency` requests in flight). Prints a JSON
summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from canaryguard_testbed.fraudmodel import random_transaction


@dataclass
class LoadResult:
    """What a load run did. Status 0 counts requests that got no HTTP answer."""

    sent: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    duration_s: float = 0.0
    stopped_by: str = ""  # "max_requests" or "max_duration"
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def answered(self) -> int:
        return sum(n for code, n in self.by_status.items() if code)

    @property
    def rate(self) -> float:
        """Achieved requests per second."""
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0

    def latency_quantile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "duration_s": round(self.duration_s, 3),
            "rate": round(self.rate, 1),
            "stopped_by": self.stopped_by,
            "p50_ms": round(self.latency_quantile(0.5), 2),
            "p99_ms": round(self.latency_quantile(0.99), 2),
        }


async def run_load(
    url: str,
    *,
    rate: float = 100.0,
    max_requests: int = 1000,
    max_duration: float = 60.0,
    seed: int = 1,
    concurrency: int = 64,
    request_timeout: float = 10.0,
    headers: dict[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> LoadResult:
    """Send up to `max_requests` requests at `rate`/s for at most `max_duration` seconds;
    requests still in flight at the deadline are awaited (each bounded by `request_timeout`)."""
    if rate <= 0 or max_requests < 0 or max_duration <= 0 or concurrency < 1:
        raise ValueError("rate, max_duration and concurrency must be positive")
    rng = random.Random(seed)
    result = LoadResult()
    limit = asyncio.Semaphore(concurrency)
    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    own_session = session is None
    http = session or aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), headers=headers
    )

    async def one(payload: dict[str, Any]) -> None:
        began = time.perf_counter()
        try:
            async with http.post(url, json=payload, timeout=client_timeout) as resp:
                await resp.read()
                result.by_status[resp.status] += 1
        except (aiohttp.ClientError, TimeoutError):
            result.by_status[0] += 1
        finally:
            result.latencies_ms.append((time.perf_counter() - began) * 1000.0)
            limit.release()

    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    deadline = start + max_duration
    try:
        result.stopped_by = "max_requests"
        for i in range(max_requests):
            due = start + i / rate
            now = time.monotonic()
            if due >= deadline or now >= deadline:
                result.stopped_by = "max_duration"
                break
            if due > now:
                await asyncio.sleep(due - now)
            await limit.acquire()
            payload = {"features": random_transaction(rng).to_dict()}
            task = asyncio.create_task(one(payload))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            result.sent += 1
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        if own_session:
            await http.close()
    result.duration_s = time.monotonic() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m canaryguard_testbed.loadgen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8080/predict")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--max-duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    args = parser.parse_args(argv)
    result = asyncio.run(
        run_load(
            args.url,
            rate=args.rate,
            max_requests=args.max_requests,
            max_duration=args.max_duration,
            seed=args.seed,
            concurrency=args.concurrency,
            request_timeout=args.timeout,
        )
    )
    print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
