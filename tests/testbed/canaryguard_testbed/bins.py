"""Where the locally built kube-apiserver, kubectl and etcd live.

`make bins` (hack/build-bins.sh) builds them from the pinned wrapper modules under `hack/` into
`$CANARYGUARD_BIN_DIR/<component>-<version>/<component>` (default `~/.cache/canaryguard/bin`).
The script also copies the pinned versions (`hack/versions.env`) and the Istio CRDs it installs
into that folder, so the test bed reads what was built where it was built, never from the
checkout it came from.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BIN_DIR = Path("~/.cache/canaryguard/bin")
BIN_DIR_ENV = "CANARYGUARD_BIN_DIR"


class MissingBinaryError(RuntimeError):
    """A control-plane binary has not been built yet (run `make bins`)."""


@dataclass(frozen=True)
class Versions:
    """The pinned releases: `kube` for kube-apiserver and kubectl, `etcd` for etcd."""

    kube: str
    etcd: str
    istio_api: str
    gateway_api: str = ""


@dataclass(frozen=True)
class Binaries:
    """Paths of the three built binaries."""

    kube_apiserver: Path
    kubectl: Path
    etcd: Path


def read_versions(path: Path | None = None) -> Versions:
    """Parse the pinned versions (KEY=value lines, `#` comments) that `make bins` copied into
    the binaries' folder."""
    path = path or bin_dir() / "versions.env"
    try:
        text = path.read_text()
    except OSError as exc:
        raise MissingBinaryError(
            f"cannot read the pinned versions from {path} ({exc}); run `make bins`"
        ) from exc
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: malformed line {raw!r} (expected KEY=value)")
        values[key.strip()] = value.strip()
    try:
        return Versions(
            kube=values["KUBE_VERSION"],
            etcd=values["ETCD_VERSION"],
            istio_api=values["ISTIO_API_VERSION"],
            gateway_api=values.get("GATEWAY_API_VERSION", ""),
        )
    except KeyError as exc:
        raise ValueError(f"{path}: {exc.args[0]} is not set") from exc


def bin_dir() -> Path:
    """The cache folder: `$CANARYGUARD_BIN_DIR`, else `~/.cache/canaryguard/bin`."""
    configured = os.environ.get(BIN_DIR_ENV, "")
    return Path(configured or DEFAULT_BIN_DIR).expanduser()


def binary_path(component: str, version: str) -> Path:
    """Where `make bins` puts `component` at `version` (whether or not it is there)."""
    return bin_dir() / f"{component}-{version}" / component


def find_binary(component: str, version: str) -> Path:
    """The built `component` at `version`; raises `MissingBinaryError` naming `make bins`."""
    path = binary_path(component, version)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingBinaryError(
            f"{component} {version} is not built: {path} is missing. Run `make bins` "
            f"(builds kube-apiserver, kubectl and etcd from Go modules into {bin_dir()}; "
            f"set {BIN_DIR_ENV} to use another folder)"
        )
    return path


def istio_crds(versions: Versions | None = None) -> Path:
    """Istio's own CRDs (from the istio.io/api module) as `make bins` placed them."""
    v = versions or read_versions()
    path = bin_dir() / f"istio-api-{v.istio_api}" / "customresourcedefinitions.gen.yaml"
    if not path.is_file():
        raise MissingBinaryError(f"{path} is missing; run `make bins`")
    return path


def gateway_api_crds(versions: Versions | None = None) -> Path:
    """Gateway API's standard-channel CRDs (from the sigs.k8s.io/gateway-api module), in one
    file, as `make bins` placed them."""
    v = versions or read_versions()
    if not v.gateway_api:
        # The binaries' folder is shared by checkouts; one made before this pin existed
        # may have copied its own versions.env there. The checkout's pin then decides.
        from canaryguard_testbed.project import project_dir

        v = read_versions(project_dir() / "hack" / "versions.env")
    if not v.gateway_api:
        raise MissingBinaryError("GATEWAY_API_VERSION is not pinned; run `make bins`")
    path = bin_dir() / f"gateway-api-{v.gateway_api}" / "standard-install.yaml"
    if not path.is_file():
        raise MissingBinaryError(f"{path} is missing; run `make bins`")
    return path


def find_binaries(versions: Versions | None = None) -> Binaries:
    """All three binaries at the pinned versions, or `MissingBinaryError` for the first absent."""
    v = versions or read_versions()
    return Binaries(
        kube_apiserver=find_binary("kube-apiserver", v.kube),
        kubectl=find_binary("kubectl", v.kube),
        etcd=find_binary("etcd", v.etcd),
    )


def main() -> int:
    """Print the binaries' paths, or say what is missing (exit code 1)."""
    try:
        bins = find_binaries()
    except MissingBinaryError as exc:
        print(exc, file=sys.stderr)
        return 1
    for path in (bins.kube_apiserver, bins.kubectl, bins.etcd):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
