"""What the two distributions contain: the operator's wheel (what its image installs) holds
only the operator, and the test bed's wheel holds the test bed and its data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(source: Path, out: Path, parts: list[str]) -> zipfile.ZipFile:
    """`pip wheel` of one distribution (its `parts` copied out first, so the build leaves no
    build/ folder in the checkout), without its dependencies; the built archive."""
    tree = out / "src"
    for part in parts:
        if (source / part).is_dir():
            shutil.copytree(
                source / part,
                tree / part,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
            )
        else:
            tree.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, tree / part)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(tree)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def requirements(archive: zipfile.ZipFile) -> set[str]:
    (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    headers = Parser().parsestr(archive.read(meta).decode())
    return {
        r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip()
        for r in headers.get_all("Requires-Dist") or []
        if "extra ==" not in r
    }


@pytest.fixture(scope="module")
def operator_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return build_wheel(
        ROOT, tmp_path_factory.mktemp("operator-wheel"), ["pyproject.toml", "README.md", "operator"]
    )


def test_the_operator_wheel_holds_the_operator_and_nothing_of_the_test_bed(
    operator_wheel: zipfile.ZipFile,
) -> None:
    names = operator_wheel.namelist()
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"canaryguard"}
    assert not [n for n in names if "testbed" in n or "localstack" in n or "demo" in n]
    for layer in ("core", "adapters", "runtime", "cli"):
        assert f"canaryguard/{layer}/__init__.py" in names
    assert "canaryguard/core/engine.py" in names
    assert "canaryguard/py.typed" in names


def test_the_operator_needs_none_of_the_test_beds_libraries(
    operator_wheel: zipfile.ZipFile,
) -> None:
    needs = requirements(operator_wheel)
    assert {"kopf", "kubernetes", "aiohttp"} <= needs
    # PyYAML is the operator's own (canaryguard backtest reads a rollout's YAML), and the
    # Kubernetes client requires it anyway; the others are the test bed's alone.
    assert not needs & {"rich", "cryptography", "canaryguard-testbed"}


def test_the_test_bed_wheel_carries_its_scenarios_and_depends_on_the_operator(
    tmp_path: Path,
) -> None:
    archive = build_wheel(
        ROOT / "tests" / "testbed", tmp_path, ["pyproject.toml", "canaryguard_testbed"]
    )
    names = archive.namelist()
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"canaryguard_testbed"}
    assert "canaryguard_testbed/scenarios/error-spike.yaml" in names
    assert "canaryguard_testbed/demo.py" in names
    assert "canaryguard" in requirements(archive)
