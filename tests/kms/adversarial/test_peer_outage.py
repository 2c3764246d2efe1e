"""Finding 3: a peer outage during enc_keys costs no key (nothing is consumed before the peer
agreed), and is logged once when it starts and once when it ends, not once per request."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from qdnet.kms.pki import PKI
from qdnet.kms.tls import client_context
from tests.kms.adversarial.conftest import spawned_pair, wait_shared


def test_peer_outage_burns_no_key_and_logs_once(tmp_path: Path, pki: PKI) -> None:
    cred = pki.credential("app-a")
    ctx = client_context(pki.ca_cert, cred.cert, cred.key)
    with (
        spawned_pair(tmp_path, pki, blocks=4, block_bytes=65536) as pair,
        httpx.Client(verify=ctx, timeout=30) as h,
    ):
        wait_shared(pair)
        status = pair.url_a + "/api/v1/keys/app-b/status"
        # one call that reaches kme-bob ends the outage kme-alice saw while kme-bob started
        assert h.get(pair.url_a + "/api/v1/keys/app-b/enc_keys").status_code == 200
        before = h.get(status).json()["stored_key_count"]
        start = len(pair.log().splitlines())
        pair.kill("b", signal.SIGKILL)
        for _ in range(3):
            r = h.post(
                pair.url_a + "/api/v1/keys/app-b/enc_keys", json={"number": 64, "size": 8192}
            )
            assert r.status_code == 503 and r.json()["message"] == "peer KME kme-bob is unreachable"
        for _ in range(40):
            assert h.get(pair.url_a + "/api/v1/keys/app-b/enc_keys").status_code == 503
        assert h.get(status).json()["stored_key_count"] == before  # no key burned
        pair.start("b")
        r = h.post(pair.url_a + "/api/v1/keys/app-b/enc_keys", json={"number": 64, "size": 8192})
        assert r.status_code == 200
        assert h.get(status).json()["stored_key_count"] == before - 64 * 8192 // 256
        lines = pair.log().splitlines()[start:]
    assert sum("peer KME kme-bob unreachable" in x for x in lines) == 1, lines
    assert sum("peer KME kme-bob reachable again" in x for x in lines) == 1, lines
