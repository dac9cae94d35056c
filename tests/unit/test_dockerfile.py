"""What can be checked of the operator image without a Docker engine: the base is pinned, the
user is numeric, named, and the one the Deployment runs as, the entry point is the installed
console script and runs, the build context holds what the Dockerfile copies, and an offline
wheelhouse never reaches the runtime stage. (hack/images/operator.sh builds the image and
checks it in a Docker engine.)"""

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


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, FROM first."""
    out: list[list[tuple[str, str]]] = []
    for word, args in instructions():
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, args))
    return out


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


def test_the_runtime_user_has_a_name_because_kopf_asks_for_it() -> None:
    # kopf's peering identity calls getpass.getuser(), which fails for a UID without a passwd
    # entry; the runtime stage creates the user and group that USER names by number.
    (user,) = only("USER")
    uid, _, gid = user.partition(":")
    runtime = " ".join(args for word, args in stages()[-1] if word == "RUN")
    assert re.search(rf"groupadd\b[^&]*--gid {gid}\b", runtime), runtime
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b[^&]*--gid {gid}\b", runtime), runtime


def test_the_build_runs_on_debians_python3_as_well_as_the_python_image() -> None:
    # The offline build uses a Debian base, whose python3 package has no `python` command.
    for run in only("RUN"):
        assert not re.search(r"(^|[\s;&|])python\s", run), run


def test_the_runtime_stage_takes_only_the_virtualenv_from_the_build() -> None:
    # The build stage may hold a wheelhouse; nothing but /opt/canaryguard leaves it.
    runtime = stages()[-1]
    copies = [args for word, args in runtime if word == "COPY"]
    assert copies == ["--from=build /opt/canaryguard /opt/canaryguard"]


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
            # A wildcard source is optional (the wheelhouse exists only while
            # hack/images/operator.sh builds); it must still get through .dockerignore.
            if not any(c in source for c in "*?["):
                assert (ROOT / source).exists(), source
            example = re.sub(r"\[(.)\]", r"\1", source).replace("*", "x").replace("?", "x")
            assert not _ignored(example, patterns), f"{source} is excluded from the context"
            assert not _ignored(f"{example}/x.whl", patterns), f"{source} content is excluded"
    assert not _ignored("operator/canaryguard/cli/main.py", patterns)
    for local in (".venv", ".git", "tests", ".mypy_cache", "operator/canaryguard.egg-info"):
        assert _ignored(local, patterns), f"{local} would be sent to the build"
    # Only the wheelhouse of dist/: release wheels built there stay out.
    assert _ignored("dist/canaryguard-0.1.0-py3-none-any.whl", patterns)
