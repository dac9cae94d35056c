"""Shared pytest wiring: every test under tests/integration/ is marked `integration`, every
test under tests/kind/ is marked `kind`. The kind tier needs a Docker engine and minutes of
set-up, so tests/kind/ is not even collected unless the `-m` expression names `kind`
(`make e2e-kind` runs `pytest -m kind tests/kind`); `make unit`, `make integration` and
`make test` never see it."""

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"
KIND_DIR = Path(__file__).parent / "kind"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path == KIND_DIR and "kind" not in (config.getoption("markexpr") or ""):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parents = Path(item.path).parents
        if INTEGRATION_DIR in parents:
            item.add_marker(pytest.mark.integration)
        elif KIND_DIR in parents:
            item.add_marker(pytest.mark.kind)
