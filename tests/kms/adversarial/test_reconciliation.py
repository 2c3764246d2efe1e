"""Finding 6: the two stores are reconciled (bytes consumed on one side only become consumed on
both) at start, after a peer restart and periodically; reserved keys nobody collects expire
(``reserved_key_ttl_s``) and the expiries are reported in ``status_extension``."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from qdnet.kms.pki import PKI
from qdnet.kms.service import open_store
from qdnet.kms.store import KeyStore
from qdnet.kms.tls import client_context
from tests.kms.adversarial.conftest import spawned_pair, wait_shared


def _drift(store: KeyStore, nbytes: int, front: bool, link: str) -> None:
    """Consume bytes on this side only (what a crash between the two commits leaves)."""
    (alloc,) = store.plan([nbytes], front, link)
    assert alloc is not None
    reservation = [(alloc.pieces, [("x", 8 * nbytes, "m", [])])]
    assert store.apply_allocations(reservation, front, link) == [True]


def test_stores_drifted_by_crashes_are_reconciled(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki, extra={"reconcile_interval_s": 0.5}) as pair:
        wait_shared(pair)
        sa, sb = pair.settings
        a, b = open_store(sa), open_store(sb)
        try:
            _drift(a, 1000, True, "kme-bob")
            _drift(b, 300, False, "kme-alice")
            deadline = time.monotonic() + 20
            while True:
                pa, pb = a.pool_summary(), b.pool_summary()
                if pa["held_bytes"] == pb["held_bytes"]:
                    break
                assert time.monotonic() < deadline, (pa, pb)
                time.sleep(0.1)
            total = sum(len(x.key) for x in pair.blocks)
            assert pa["held_bytes"] == total - 1300
            ids = a.shared_block_ids()
            assert a.segment_state(ids) == b.segment_state(ids)
        finally:
            a.close()
            b.close()
        cred = pki.credential("app-a")
        with httpx.Client(verify=client_context(pki.ca_cert, cred.cert, cred.key)) as h:
            st = h.get(pair.url_a + "/api/v1/keys/app-b/status").json()
            assert st["status_extension"]["qdnet_reconciled_bytes"] > 0
            r = h.get(pair.url_a + "/api/v1/keys/app-b/enc_keys?number=8")
            assert r.status_code == 200  # both ends go on in step


def test_uncollected_reserved_keys_expire(tmp_path: Path, pki: PKI) -> None:
    ca = pki.ca_cert
    ca_, cb = pki.credential("app-a"), pki.credential("app-b")
    with (
        spawned_pair(tmp_path, pki, extra={"reserved_key_ttl_s": 1.0}) as pair,
        httpx.Client(verify=client_context(ca, ca_.cert, ca_.key)) as a,
        httpx.Client(verify=client_context(ca, cb.cert, cb.key)) as b,
    ):
        wait_shared(pair)
        keys = a.get(pair.url_a + "/api/v1/keys/app-b/enc_keys?number=3").json()["keys"]
        deadline = time.monotonic() + 15
        while True:
            ext = b.get(pair.url_b + "/api/v1/keys/app-a/status").json()["status_extension"]
            if ext["qdnet_expired_reserved_keys"] >= 3:
                break
            assert time.monotonic() < deadline, ext
            time.sleep(0.2)
        assert ext["qdnet_reserved_key_ttl_s"] == 1.0 and ext["qdnet_reserved_key_count"] == 0
        r = b.get(pair.url_b + f"/api/v1/keys/app-a/dec_keys?key_ID={keys[0]['key_ID']}")
        assert r.status_code == 400
