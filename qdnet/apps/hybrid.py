"""Hybrid keys: the QKD key mixed with an ML-KEM-768 shared secret, so a key stays secret while
either source holds (off by default).

ML-KEM is the module-lattice KEM of NIST FIPS 203 (2024), here from ``cryptography`` (OpenSSL
3.5). The combiner is the concatenation KDF of ETSI TS 103 744 (§8.2, "CatKDF") and NIST
SP 800-56C Rev. 2 §2 (a hybrid secret Z' = Z || T): HKDF-SHA-256 (RFC 5869) over
``qkd_key || mlkem_secret``, with the key ID and a hash of the KEM ciphertext and public key in
``info`` so that the output is bound to this exchange. An attacker must learn both inputs.

The responder makes a fresh ML-KEM key pair for each rotation and sends the public
(encapsulation) key over the authenticated control channel; the initiator encapsulates to it and
sends the ciphertext with the key ID. The responder's decapsulation key is used once and dropped.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HYBRID_LABEL = b"qdnet hybrid QKD + ML-KEM-768 v1"
#: FIPS 203 Table 3: ML-KEM-768 encapsulation key and ciphertext sizes (bytes).
MLKEM768_EK_BYTES = 1184
MLKEM768_CT_BYTES = 1088


def combine(qkd_key: bytes, mlkem_secret: bytes, key_id: str, ek: bytes, ct: bytes) -> bytes:
    """The hybrid key (same length as ``qkd_key``): HKDF-SHA-256 over both secrets."""
    info = HYBRID_LABEL + key_id.encode() + hashlib.sha256(ek + ct).digest()
    return HKDF(hashes.SHA256(), len(qkd_key), salt=None, info=info).derive(qkd_key + mlkem_secret)


class HybridResponder:
    """The responder's side: one fresh key pair per rotation."""

    def __init__(self) -> None:
        self._private: MLKEM768PrivateKey | None = None
        self.public_bytes = b""
        self.renew()

    def renew(self) -> bytes:
        """A new key pair; returns its encapsulation key (to send to the initiator)."""
        self._private = MLKEM768PrivateKey.generate()
        self.public_bytes = self._private.public_key().public_bytes_raw()
        return self.public_bytes

    def mix(self, qkd_key: bytes, key_id: str, ct: bytes) -> bytes:
        """Decapsulate ``ct`` with the current pair, mix, and drop the pair (used once)."""
        if self._private is None:
            raise ValueError("hybrid: no ML-KEM key pair (the last one was used)")
        if len(ct) != MLKEM768_CT_BYTES:
            raise ValueError(f"hybrid: ML-KEM-768 ciphertext must be {MLKEM768_CT_BYTES} bytes")
        secret = self._private.decapsulate(ct)
        ek = self.public_bytes
        self._private = None
        return combine(qkd_key, secret, key_id, ek, ct)


def encapsulate(ek: bytes) -> tuple[bytes, bytes]:
    """The initiator's side: (shared secret, ciphertext) for the responder's key ``ek``."""
    if len(ek) != MLKEM768_EK_BYTES:
        raise ValueError(f"hybrid: ML-KEM-768 public key must be {MLKEM768_EK_BYTES} bytes")
    secret, ct = MLKEM768PublicKey.from_public_bytes(ek).encapsulate()
    return secret, ct
