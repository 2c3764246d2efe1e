"""A small PKI for a QKD network: one CA, KME certificates (server + client, for SAEs and for
the peer KME) and SAE client certificates, all made with ``cryptography`` (EC P-256).

Every certificate carries ``CN=<id>`` and a SAN URI ``urn:qdnet:<kind>:<id>``; KME certificates
also carry ``DNS:localhost`` and ``IP:127.0.0.1`` (plus any extra hosts) so clients that check the
host name accept them. Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

URI_PREFIX = "urn:qdnet:"


@dataclass(frozen=True)
class Credential:
    """Paths of one certificate and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class PKI:
    """Paths of a PKI folder made by :func:`create_pki`."""

    root: Path
    ca_cert: Path
    ca_key: Path

    def credential(self, name: str) -> Credential:
        """Certificate and key of KME or SAE ``name``."""
        return Credential(self.root / f"{name}.crt", self.root / f"{name}.key")

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> PKI:
        """The PKI in an existing folder."""
        r = Path(root)
        return cls(r, r / "ca.crt", r / "ca.key")


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _load_ca(pki: PKI) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pki.ca_key}: expected an EC private key")
    return cert, key


def make_ca(root: Path, common_name: str = "qdnet QKD network CA", days: int = 3650) -> PKI:
    """Create ``ca.crt``/``ca.key`` in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
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
    pki = PKI.at(root)
    _write_key(pki.ca_key, key)
    pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki


def issue(
    pki: PKI,
    name: str,
    kind: str,
    *,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 825,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Credential:
    """Issue a certificate for KME or SAE ``name`` (``kind`` is ``"kme"`` or ``"sae"``)."""
    if kind not in ("kme", "sae"):
        raise ValueError(f"kind must be 'kme' or 'sae', got {kind!r}")
    if not name or "/" in name:
        raise ValueError(f"invalid identity {name!r}")
    ca_cert, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start = not_before or now - dt.timedelta(minutes=5)
    end = not_after or now + dt.timedelta(days=days)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"{URI_PREFIX}{kind}:{name}")]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind == "kme":
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cred = pki.credential(name)
    _write_key(cred.key, key)
    cred.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cred


def create_pki(
    root: str | os.PathLike[str],
    kmes: list[str] | tuple[str, ...],
    saes: list[str] | tuple[str, ...],
    *,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 825,
) -> PKI:
    """Create a CA and certificates for every KME and SAE in ``root`` (``<name>.crt/.key``)."""
    names = list(kmes) + list(saes)
    if len(set(names)) != len(names):
        raise ValueError("KME and SAE IDs must be unique")
    pki = make_ca(Path(root))
    for kme in kmes:
        issue(pki, kme, "kme", hosts=hosts, days=days)
    for sae in saes:
        issue(pki, sae, "sae", days=days)
    return pki
