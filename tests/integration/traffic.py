"""Background HTTP load through a mesh's router for the length of an end-to-end test."""

import threading
import time
from types import TracebackType

from canaryguard_testbed.mesh import Mesh


class Traffic:
    """Sends `rate` requests/s through `mesh` in a thread, in 2 s bursts, until stopped or
    `max_seconds` have passed (so it always ends by itself)."""

    def __init__(self, mesh: Mesh, rate: float = 100.0, max_seconds: float = 180.0) -> None:
        self.mesh = mesh
        self.rate = rate
        self.max_seconds = max_seconds
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        seed = 1
        while not self._stop.is_set() and time.monotonic() < deadline:
            result = self.mesh.load(
                rate=self.rate, max_requests=int(self.rate * 2) + 1, max_duration=2.0, seed=seed
            )
            self.sent += result.sent
            seed += 1

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
