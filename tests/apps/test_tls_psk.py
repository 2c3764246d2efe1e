"""The Python helper returns the same external PSK at both ends, once."""

from __future__ import annotations

import pytest

from qdnet.apps.keys import KeyUnavailableError, KMSAccess
from qdnet.apps.tls_psk import CommandSink, external_psk
from qdnet.kms.link import KMSLink
from qdnet.kms.pki import PKI


def test_both_ends_get_the_same_psk_by_its_identity(kms_link: KMSLink, app_pki: PKI) -> None:
    a = KMSAccess.from_pki(kms_link.a.url, "app-a", "app-b", app_pki.root)
    b = KMSAccess.from_pki(kms_link.b.url, "app-b", "app-a", app_pki.root)
    psk = external_psk(a)
    assert len(psk.key) == 32 and psk.key.hex() not in repr(psk)
    assert external_psk(b, psk.identity) == psk
    with pytest.raises(KeyUnavailableError, match="dec_keys"):  # a key is delivered once
        external_psk(b, psk.identity)


def test_a_command_is_required() -> None:
    with pytest.raises(ValueError, match="command"):
        CommandSink([])
