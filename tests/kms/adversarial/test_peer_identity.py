"""Finding 8: the peer API identifies the peer KME by the SAN URI ``urn:qdnet:kme:<id>`` of a
certificate with the serverAuth usage, never by the CN: an SAE certificate whose CN is the
peer's ID, or another KME's certificate, is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from qdnet.kms.pki import PKI, create_pki, issue
from qdnet.kms.tls import client_context
from tests.kms.adversarial.conftest import spawned_pair

BODY = {"segment_bytes": 4096, "items": []}


def _forger(pki: PKI, tmp_path: Path) -> PKI:
    """The same CA in another folder, to issue extra certificates without touching ``pki``."""
    root = tmp_path / "forger"
    root.mkdir()
    for f in (pki.ca_cert, pki.ca_key):
        shutil.copy(f, root / f.name)
    return PKI.at(root)


def test_sae_certificate_named_like_the_peer_is_refused(tmp_path: Path, pki: PKI) -> None:
    forger = _forger(pki, tmp_path)
    fake = issue(forger, "kme-bob", "sae")  # CN kme-bob, SAN urn:qdnet:sae:kme-bob
    other = issue(forger, "kme-carol", "kme")  # a real KME, but not this KMS's peer
    real = pki.credential("kme-bob")
    with spawned_pair(tmp_path / "w", pki) as pair:
        for cred, want in ((fake, 401), (other, 401), (real, 200)):
            ctx = client_context(pki.ca_cert, cred.cert, cred.key)
            with httpx.Client(verify=ctx, timeout=5) as h:
                r = h.post(pair.peer_url_a + "/peer/v1/allocations", json=BODY)
                assert r.status_code == want, (cred.cert.name, r.text)
                r = h.post(pair.peer_url_a + "/peer/v1/blocks", json={"block_ids": []})
                assert r.status_code == want


def test_kme_identity_needs_the_kme_uri_and_server_auth(tmp_path: Path) -> None:
    from qdnet.kms.tls import kme_of_certificate

    pki = create_pki(tmp_path, ["kme-x"], ["app-y"])

    def der(name: str) -> bytes:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = x509.load_pem_x509_certificate(pki.credential(name).cert.read_bytes())
        return cert.public_bytes(Encoding.DER)

    assert kme_of_certificate(der("kme-x")) == "kme-x"
    assert kme_of_certificate(der("app-y")) is None
    assert kme_of_certificate(None) is None and kme_of_certificate(b"junk") is None
