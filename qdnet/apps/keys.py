"""KMS access for applications: one SAE's credentials, and the two calls a key rotation makes.

The initiator asks its KME for a new key shared with the peer SAE (ETSI GS QKD 014 ``enc_keys``,
§5.2); the responder fetches the same key by its ID from its own KME (``dec_keys``, §5.3). The
KMS hands each key out once per side, so a key is never fetched twice and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from qdnet.kms.client import DeliveredKey, KMEError, SAEClient
from qdnet.kms.pki import PKI

#: Key size (bits) that WireGuard preshared keys, IKEv2 PPKs and TLS PSKs take here.
APP_KEY_BITS = 256


class KeyUnavailableError(RuntimeError):
    """The KMS gave no key (unreachable, refused, or pool empty); the reason is in the text."""


@dataclass(frozen=True)
class KMSAccess:
    """Where an application's KME is and how it authenticates as SAE ``sae``."""

    url: str
    sae: str
    peer_sae: str
    ca: Path
    cert: Path
    key: Path
    timeout_s: float = 5.0

    @classmethod
    def from_pki(
        cls, url: str, sae: str, peer_sae: str, pki_dir: str | Path, timeout_s: float = 5.0
    ) -> KMSAccess:
        """Credentials found by SAE name in a folder made by ``qdnet pki init``."""
        pki = PKI.at(pki_dir)
        cred = pki.credential(sae)
        return cls(url, sae, peer_sae, pki.ca_cert, cred.cert, cred.key, timeout_s)

    def check(self) -> None:
        """Every file present and the two SAE names distinct, or a ValueError naming the field."""
        if not self.sae or not self.peer_sae:
            raise ValueError("--sae and --peer-sae: both SAE IDs are required")
        if self.sae == self.peer_sae:
            raise ValueError(f"--peer-sae {self.peer_sae!r}: must differ from --sae")
        for field_name, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            if not Path(path).is_file():
                raise ValueError(f"--{field_name} {path}: no such file")
        if not self.url.startswith("https://"):
            raise ValueError(f"--kms {self.url!r}: expected an https:// URL")


class AppKeys:
    """The key calls of one application (keep-alive connection to its KME)."""

    def __init__(self, access: KMSAccess) -> None:
        access.check()
        self.access = access
        self._client = SAEClient(
            access.url, access.ca, access.cert, access.key, timeout_s=access.timeout_s
        )

    def close(self) -> None:
        """Close the connection to the KME."""
        self._client.close()

    def new_key(self) -> DeliveredKey:
        """A fresh 256-bit key shared with the peer SAE (this side is the master SAE)."""
        try:
            return self._client.enc_keys(self.access.peer_sae, number=1, size=APP_KEY_BITS)[0]
        except (KMEError, httpx.HTTPError, OSError) as error:
            raise KeyUnavailableError(f"enc_keys for {self.access.peer_sae}: {error}") from None

    def key_by_id(self, key_id: str) -> DeliveredKey:
        """The key ``key_id`` that the peer SAE (master) obtained for this SAE."""
        try:
            keys = self._client.dec_keys(self.access.peer_sae, [key_id])
        except (KMEError, httpx.HTTPError, OSError) as error:
            raise KeyUnavailableError(
                f"dec_keys {key_id} from {self.access.peer_sae}: {error}"
            ) from None
        if len(keys) != 1 or keys[0].key_id != key_id or len(keys[0].key) * 8 != APP_KEY_BITS:
            raise KeyUnavailableError(f"dec_keys {key_id}: the KME answered with another key")
        return keys[0]
