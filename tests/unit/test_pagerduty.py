"""Pure parts of the PagerDuty adapter: truncation, Retry-After, event and client checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryguard.adapters.pagerduty import (
    MAX_DEDUP_KEY,
    MAX_SUMMARY,
    DeliveryOutcome,
    DeliveryResult,
    PageEvent,
    PagerDutyClient,
    _retry_after,
    safe_dedup_key,
    safe_summary,
)


@given(st.text(max_size=3000))
def test_a_summary_fits_and_is_kept_when_it_fits(summary: str) -> None:
    cut = safe_summary(summary)

    assert len(cut) <= MAX_SUMMARY
    if len(summary) <= MAX_SUMMARY:
        assert cut == summary
    else:
        assert cut.endswith("\u2026") and summary.startswith(cut[:-1])


@given(st.text(min_size=1, max_size=1000))
def test_a_dedup_key_fits_is_stable_and_kept_when_it_fits(key: str) -> None:
    cut = safe_dedup_key(key)

    assert len(cut) <= MAX_DEDUP_KEY
    assert safe_dedup_key(key) == cut
    if len(key) <= MAX_DEDUP_KEY:
        assert cut == key


@given(st.text(min_size=256, max_size=600), st.text(min_size=1, max_size=20))
def test_long_dedup_keys_with_a_shared_prefix_stay_distinct(prefix: str, tail: str) -> None:
    assert safe_dedup_key(prefix + "a" + tail) != safe_dedup_key(prefix + "b" + tail)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("nan", None),
        ("soon", None),
        ("Wed, 01 Jan 2025 12:00:30 GMT", 30.0),
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert _retry_after(header, now) == seconds


def test_a_page_event_checks_what_pagerduty_would_refuse() -> None:
    with pytest.raises(ValueError, match="severity"):
        PageEvent("k", "summary", "source", "fatal")
    for blank in ("dedup_key", "summary", "source"):
        fields: dict[str, Any] = {
            "dedup_key": "k",
            "summary": "s",
            "source": "src",
            "severity": "error",
        }
        fields[blank] = "  "
        with pytest.raises(ValueError, match=blank):
            PageEvent(**fields)


@pytest.mark.parametrize(
    "settings",
    [
        {"url": "events.example/v2/enqueue"},
        {"url": "ftp://host/v2/enqueue"},
        {"timeout": 0},
        {"budget_seconds": -1},
        {"max_attempts": 0},
        {"wait_multiplier": -1},
    ],
)
def test_a_misconfigured_client_is_refused_at_once(settings: dict[str, object]) -> None:
    url = str(settings.pop("url", "http://127.0.0.1:1/v2/enqueue"))
    with pytest.raises(ValueError):
        PagerDutyClient(url, **settings)  # type: ignore[arg-type]


def test_a_result_says_whether_it_was_delivered() -> None:
    ok = DeliveryResult(DeliveryOutcome.DELIVERED, 1, 202, "accepted", "k")
    refused = DeliveryResult(DeliveryOutcome.REJECTED, 1, 400, "rejected", "k")

    assert ok.delivered and not refused.delivered
