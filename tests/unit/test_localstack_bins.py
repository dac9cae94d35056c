"""Locating the control-plane binaries and the throwaway PKI, without starting anything."""

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from canaryguard_testbed import bins, certs

VERSIONS_FILE = Path(__file__).resolve().parents[2] / "hack" / "versions.env"


def test_versions_file_pins_both_components() -> None:
    versions = bins.read_versions(VERSIONS_FILE)
    assert versions.kube.startswith("v1.")
    assert versions.etcd.startswith("v3.")


def test_versions_file_parsing(tmp_path: Path) -> None:
    path = tmp_path / "versions.env"
    path.write_text(
        "# comment\n\nKUBE_VERSION=v1.2.3\n ETCD_VERSION = v3.4.5 \nISTIO_API_VERSION=v1.32.0\n"
    )
    assert bins.read_versions(path) == bins.Versions(
        kube="v1.2.3", etcd="v3.4.5", istio_api="v1.32.0"
    )
    path.write_text("KUBE_VERSION=v1.2.3\n")
    with pytest.raises(ValueError, match="ETCD_VERSION"):
        bins.read_versions(path)


def test_layout_follows_bin_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CANARYGUARD_BIN_DIR", str(tmp_path))
    assert bins.binary_path("etcd", "v3.6.0") == tmp_path / "etcd-v3.6.0" / "etcd"
    monkeypatch.setenv("CANARYGUARD_BIN_DIR", "")
    assert bins.bin_dir() == Path("~/.cache/canaryguard/bin").expanduser()


def test_missing_binary_says_make_bins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CANARYGUARD_BIN_DIR", str(tmp_path))
    with pytest.raises(bins.MissingBinaryError, match=r"kube-apiserver v1\.2\.3.*`make bins`"):
        bins.find_binaries(bins.Versions(kube="v1.2.3", etcd="v3.4.5", istio_api="v1.32.0"))


def test_present_binaries_are_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CANARYGUARD_BIN_DIR", str(tmp_path))
    versions = bins.Versions(kube="v1.2.3", etcd="v3.4.5", istio_api="v1.32.0")
    for name, version in (("kube-apiserver", "v1.2.3"), ("kubectl", "v1.2.3"), ("etcd", "v3.4.5")):
        path = tmp_path / f"{name}-{version}" / name
        path.parent.mkdir()
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    found = bins.find_binaries(versions)
    assert found.etcd == tmp_path / "etcd-v3.4.5" / "etcd"
    found.kubectl.chmod(0o644)  # not executable counts as missing
    with pytest.raises(bins.MissingBinaryError, match="kubectl"):
        bins.find_binaries(versions)


def test_pki_has_admin_in_system_masters_and_private_keys_0600(tmp_path: Path) -> None:
    pki = certs.generate(tmp_path, ip_addresses=["127.0.0.1"])
    admin = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes())
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    org = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert org == "system:masters"
    client_ca = x509.load_pem_x509_certificate(pki.client_ca.read_bytes())
    admin.verify_directly_issued_by(client_ca)
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    serving.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.serving_ca.read_bytes()))
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    for key in (pki.serving_key, pki.admin_key, pki.service_account_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
