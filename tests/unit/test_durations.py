"""Durations as written in a CanaryRollout."""

from __future__ import annotations

from datetime import timedelta

import pytest

from canaryguard.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("0s", timedelta(0)),
        ("2h5s", timedelta(hours=2, seconds=5)),
        ("1m1500ms", timedelta(minutes=1, milliseconds=1500)),
        ("90s", timedelta(seconds=90)),
    ],
)
def test_valid_durations_parse(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "5", "1.5s", "-1s", "1d", "30m1h", "1m1m", " 1s", "1s\n", "1 s", "s", "1S", "9" * 40],
)
def test_invalid_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(minutes=2), "2m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(seconds=-30), "-30s"),
    ],
)
def test_format_reads_like_the_spec(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize("text", ["500ms", "30s", "5m", "1h30m", "1m1500ms", "3h59m59s"])
def test_format_parses_back(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["8760h1ms", "8761h", "525601m", "99999999999999999999h"])
def test_durations_beyond_a_year_are_rejected_not_overflowed(text: str) -> None:
    """The grammar admits any number of digits; a timedelta (and a datetime plus it) does
    not. The CRD's CEL rules have the same bound."""
    with pytest.raises(ValueError, match=r"^invalid duration '\d+[hm]\w*': must be at most 8760h$"):
        parse_duration(text)
    assert parse_duration("8760h") == parse_duration("525600m") == timedelta(days=365)
