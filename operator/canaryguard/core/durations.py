"""Durations as users write them in a CanaryRollout: `500ms`, `30s`, `5m`, `1h30m`.

The grammar is a subset of Go's `time.ParseDuration` (whole numbers, units `h`, `m`, `s`, `ms`
in that order, each at most once), so the CRD's `pattern` and this parser accept exactly the
same strings and CEL's `duration()` can read every one of them.
"""

from __future__ import annotations

import re
from datetime import timedelta

# Keep in step with DURATION_PATTERN in crds/canaryrollout.yaml (tests compare the two).
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"
_DURATION = re.compile(DURATION_PATTERN)
_MAX_LENGTH = 32
# The CRD's CEL rules say the same. Far beyond any rollout, well inside what a timedelta and
# a datetime plus it can hold (`99999999999999999999h` matches the grammar).
MAX_DURATION = timedelta(hours=8760)


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m`, `5m`, `30s`, `500ms` (or `0s`) into a timedelta, at most MAX_DURATION.

    Raises ValueError with a message that quotes the input when it is not such a duration.
    """
    match = _DURATION.fullmatch(text) if len(text) <= _MAX_LENGTH else None
    if not text or match is None:
        raise ValueError(f"invalid duration {text!r}: use whole numbers with h, m, s, ms (1h30m)")
    hours, minutes, seconds, millis = (
        int(group[: -2 if group.endswith("ms") else -1]) if group else 0 for group in match.groups()
    )
    total_millis = ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis  # no overflow: int
    if total_millis > MAX_DURATION // timedelta(milliseconds=1):
        raise ValueError(
            f"invalid duration {text!r}: must be at most {format_duration(MAX_DURATION)}"
        )
    return timedelta(milliseconds=total_millis)


def format_duration(value: timedelta) -> str:
    """Write a timedelta the way a user would (`1h30m`, `2m`, `1500ms`, `0s`), for messages.

    Sub-millisecond parts are dropped; negative values keep their sign.
    """
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    sign = "-" if millis < 0 else ""
    millis = abs(millis)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    if millis:
        # Keep the output inside the grammar above, so every message parses back.
        return sign + _join(hours, minutes, 0) + f"{seconds * 1000 + millis}ms"
    return sign + _join(hours, minutes, seconds)


def _join(hours: int, minutes: int, seconds: int) -> str:
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n)
