"""Fixtures for the pagerduty part of the local stack: one receiver per session, reset per
test so no test sees another's events, incidents or pending faults."""

from collections.abc import Iterator

import pytest

from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver

__all__ = ["pagerduty", "pagerduty_receiver_session"]


@pytest.fixture(scope="session")
def pagerduty_receiver_session() -> Iterator[PagerDutyReceiver]:
    """The session's PagerDuty receiver on a free loopback port, stopped at the end."""
    receiver = PagerDutyReceiver(port=0)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def pagerduty(pagerduty_receiver_session: PagerDutyReceiver) -> Iterator[PagerDutyReceiver]:
    """A started PagerDuty receiver with nothing recorded and no faults pending."""
    pagerduty_receiver_session.reset()
    yield pagerduty_receiver_session
    pagerduty_receiver_session.reset()
