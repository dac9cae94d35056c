"""Shared pytest wiring: every test under tests/integration/ is marked `integration`, every
test under tests/kind/ is marked `kind`. The kind tier needs a Docker engine and minutes of
set-up, so tests/kind/ is not even collected unless the `-m` expression selects `kind` tests
(`make e2e-kind` runs `pytest -m kind tests/kind`, and so does `make test` after
`pytest -m 'not kind' tests`); `make unit` and `make integration` never see it."""

from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

INTEGRATION_DIR = Path(__file__).parent / "integration"
KIND_DIR = Path(__file__).parent / "kind"


def selects_kind(markexpr: str) -> bool:
    """Whether `-m markexpr` selects a test marked `kind` (and nothing else)."""
    if not markexpr:
        return False
    return Expression.compile(markexpr).evaluate(lambda name, **_: name == "kind")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path == KIND_DIR and not selects_kind(config.getoption("markexpr") or ""):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parents = Path(item.path).parents
        if INTEGRATION_DIR in parents:
            item.add_marker(pytest.mark.integration)
        elif KIND_DIR in parents:
            item.add_marker(pytest.mark.kind)
