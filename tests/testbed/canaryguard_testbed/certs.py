"""Throwaway PKI for the local kube-apiserver: a serving CA and serving certificate, a client CA
and an admin client certificate (CN=admin, O=system:masters), and the ServiceAccount token
signing key pair. Everything is generated fresh for each control plane and never reused."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any test session or demo, short enough that a leaked file is soon worthless.
VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class ControlPlaneCerts:
    """PEM files written by `generate`."""

    serving_ca: Path
    serving_cert: Path
    serving_key: Path
    client_ca: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: accepted everywhere kube-apiserver takes a key, and generated in microseconds.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + VALIDITY)
    )


def _ca(common_name: str) -> _Issued:
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issued(cert, key)


def _leaf(
    ca: _Issued,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> _Issued:
    key = _new_key()
    builder = (
        _builder(subject, ca.cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return _Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    # Private keys are created 0600 from the start, never readable by others even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate(cert_dir: Path, ip_addresses: Sequence[str] = ("127.0.0.1",)) -> ControlPlaneCerts:
    """Create a fresh PKI in `cert_dir`. The serving certificate is valid for `localhost`, the
    in-cluster names of the `kubernetes` Service and every address in `ip_addresses`."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    serving_ca = _ca("canaryguard-local-serving-ca")
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    serving = _leaf(serving_ca, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_ca = _ca("canaryguard-local-client-ca")
    admin = _leaf(client_ca, _name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = _new_key()
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ControlPlaneCerts(
        serving_ca=_write(cert_dir / "serving-ca.crt", _cert_pem(serving_ca.cert)),
        serving_cert=_write(cert_dir / "apiserver.crt", _cert_pem(serving.cert)),
        serving_key=_write(cert_dir / "apiserver.key", _key_pem(serving.key), private=True),
        client_ca=_write(cert_dir / "client-ca.crt", _cert_pem(client_ca.cert)),
        admin_cert=_write(cert_dir / "admin.crt", _cert_pem(admin.cert)),
        admin_key=_write(cert_dir / "admin.key", _key_pem(admin.key), private=True),
        service_account_key=_write(cert_dir / "sa.key", _key_pem(sa_key), private=True),
        service_account_pub=_write(cert_dir / "sa.pub", sa_pub),
    )
