"""Fixtures of the integration tier: the real local stack. Each part lives in its own module;
a missing binary or service fails the test (never a skip)."""

from tests.integration.fixtures_e2e import *  # noqa: F403
from tests.integration.fixtures_kube import *  # noqa: F403
from tests.integration.fixtures_mesh import *  # noqa: F403
from tests.integration.fixtures_operator import *  # noqa: F403
from tests.integration.fixtures_pagerduty import *  # noqa: F403
