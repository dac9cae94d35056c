"""What can be checked of the operator image without a Docker engine: the base is pinned, the
user is numeric and the one the Deployment runs as, the entry point is the installed console
script and runs, and the build context holds what the Dockerfile copies."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from canaryguard.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOYMENT = ROOT / "manifests/deployment.yaml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def only(name: str) -> list[str]:
    return [args for word, args in instructions() if word == name]


def test_the_base_image_is_a_pinned_slim_python_3_11() -> None:
    (default,) = [a for a in only("ARG") if a.startswith("PYTHON_IMAGE=")]
    image = default.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
    stages = only("FROM")
    assert len(stages) == 2
    assert all(s.split()[0] == "${PYTHON_IMAGE}" for s in stages)


def test_the_image_runs_as_the_numeric_non_root_user_the_deployment_expects() -> None:
    (user,) = only("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == int(uid)
    assert pod["runAsGroup"] == int(gid)


def test_the_entry_point_is_the_packaged_console_script() -> None:
    (entrypoint,) = only("ENTRYPOINT")
    assert json.loads(entrypoint) == ["canaryguard"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["canaryguard"] == "canaryguard.cli.main:main"
    (cmd,) = only("CMD")
    assert build_parser().parse_args(json.loads(cmd)).command == "run"
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == json.loads(entrypoint)


def test_the_installed_entry_point_runs() -> None:
    script = Path(sys.executable).with_name("canaryguard")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore reading, enough for our patterns: last match wins, `!` keeps."""
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        # `**/` matches any number of folders, none included; a folder's match covers its files.
        forms = {pattern, pattern.replace("**/", "")}
        parts = path.split("/")
        heads = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatch(head, form) for head in heads for form in forms)
        if hit:
            ignored = not keep
    return ignored


def test_the_build_context_holds_what_is_copied_and_nothing_local() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for copy in only("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, _dest = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not _ignored(source, patterns), f"{source} is excluded from the context"
    assert not _ignored("operator/canaryguard/cli/main.py", patterns)
    for local in (".venv", ".git", "tests", ".mypy_cache", "operator/canaryguard.egg-info"):
        assert _ignored(local, patterns), f"{local} would be sent to the build"
