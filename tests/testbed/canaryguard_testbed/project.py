"""The canaryguard project files the test bed installs: CRDs, RBAC manifests, examples.

The test bed does not carry them; it is pointed at a checkout (or an unpacked release) by
`$CANARYGUARD_PROJECT_DIR`, else the current directory. The Makefile sets the variable, so
`make demo` and `make test` work from anywhere in the tree.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR_ENV = "CANARYGUARD_PROJECT_DIR"


class ProjectNotFoundError(RuntimeError):
    """The folder given as the project has no CanaryRollout CRD."""


def project_dir() -> Path:
    """The project folder, checked to hold `crds/canaryrollout.yaml`."""
    folder = Path(os.environ.get(PROJECT_DIR_ENV) or Path.cwd()).resolve()
    if not (folder / "crds" / "canaryrollout.yaml").is_file():
        raise ProjectNotFoundError(
            f"{folder} is not a canaryguard checkout (no crds/canaryrollout.yaml); run from "
            f"the checkout or set {PROJECT_DIR_ENV} to it"
        )
    return folder


def crds_dir() -> Path:
    """The project's CRDs."""
    return project_dir() / "crds"


def rbac_dir() -> Path:
    """The RBAC manifests the operator ships (the tests run it under them)."""
    return project_dir() / "manifests" / "rbac"


def demo_dir() -> Path:
    """The demo's VirtualService and CanaryRollout."""
    return project_dir() / "examples" / "fraud-model" / "demo"
