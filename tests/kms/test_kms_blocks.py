"""Key blocks in the KMS: format versions 1 and 2 (literal documents), the ``simulated`` label
shown through ``status_extension`` / ``key_container_extension``, and never a block from the
``pending/`` subfolder (blocks not yet confirmed by an authenticated exchange)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from qdnet.kms.link import start_link
from qdnet.kms.pki import PKI
from qdnet.kms.service import ingest_folder
from qdnet.kms.store import KeyStore
from qdnet.kms.tls import client_context
from tests.kms.conftest import SAES_A, SAES_B


def v1(key: bytes) -> dict[str, Any]:
    return {
        "format_version": 1,
        "block_id": str(uuid.uuid4()),
        "link_name": "test-link",
        "created_utc": "2026-12-01T10:00:00+00:00",
        "length_bits": 8 * len(key),
        "protocol": "bb84",
        "eps_sec": 1e-10,
        "eps_cor": 1e-15,
        "qber": 0.02,
        "key_b64": base64.b64encode(key).decode(),
    }


def v2(key: bytes, simulated: bool) -> dict[str, Any]:
    doc = v1(key)
    doc.update(
        format_version=2,
        created_utc="2026-12-01T11:00:00+00:00",
        simulated=simulated,
        eps_auth=1e-20,
        eps_total=1e-10 + 1e-15 + 1e-20,
    )
    return doc


def put(folder: Path, doc: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{doc['block_id']}.json").write_text(json.dumps(doc))


def test_both_formats_are_read_and_pending_is_never_ingested(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    old, new, sim = v1(os.urandom(64)), v2(os.urandom(64), False), v2(os.urandom(64), True)
    for doc in (old, new, sim):
        put(folder, doc)
    pending = v2(os.urandom(64), False)
    put(folder / "pending", pending)
    put(folder / "pending" / "deeper", v1(os.urandom(64)))
    (folder / "via-link.json").symlink_to(folder / "pending" / f"{pending['block_id']}.json")
    store = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        report = ingest_folder(store, folder, remove=True)
        assert report.ingested == 3
        held = store.held_block_ids([old["block_id"], new["block_id"], sim["block_id"]])
        assert len(held) == 3
        assert store.held_block_ids([pending["block_id"]]) == []
        assert (folder / "pending" / f"{pending['block_id']}.json").exists()
        store.mark_shared(held)
        # version 1 does not say where the key came from: it counts as simulated
        assert store.pool_summary()["simulated_bytes"] == 128
    finally:
        store.close()


def test_simulated_keys_are_labelled(tmp_path: Path, pki: PKI) -> None:
    real = v2(os.urandom(4096), False)
    real["created_utc"] = "2026-12-01T09:00:00+00:00"
    docs = [v2(os.urandom(4096), True), real]
    for side in ("ka", "kb"):
        for d in docs:
            put(tmp_path / side, d)
    with start_link(tmp_path, pki, saes=(SAES_A, SAES_B)) as link:
        link.ingest(tmp_path / "ka", tmp_path / "kb")
        with link.client("app-a") as a:
            ext = a.status("app-b")["status_extension"]
            assert ext["qdnet_simulated"] is True
            assert ext["qdnet_simulated_key_count"] == 4096 * 8 // 256

        def raw(sae: str) -> httpx.Client:
            cred = pki.credential(sae)
            return httpx.Client(
                base_url=link.node_of(sae).url + "/api/v1/keys",
                verify=client_context(pki.ca_cert, cred.cert, cred.key),
            )

        with raw("app-a") as a, raw("app-b") as b:
            # the real block is older: the leader carves it first
            got = a.get("/app-b/enc_keys?number=128").json()
            assert "key_container_extension" not in got  # 4096 bytes of the real block
            got = a.get("/app-b/enc_keys?number=2").json()
            assert got["key_container_extension"] == {"qdnet_simulated": True}
            ids = {"key_IDs": [{"key_ID": k["key_ID"]} for k in got["keys"]]}
            back = b.post("/app-a/dec_keys", json=ids).json()
            assert back["key_container_extension"] == {"qdnet_simulated": True}
            assert [k["key"] for k in back["keys"]] == [k["key"] for k in got["keys"]]
