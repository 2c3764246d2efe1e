"""Finding 4: after keys were delivered (enc_keys to the master, dec_keys to the slave) and
both KMS were killed with SIGKILL, an attacker who takes every file they keep recovers no
delivered key: not in clear in any file (stores, WAL, journals, keyrings; PostgreSQL's table
files and ``pg_wal`` when readable), and not by decrypting any version of the store's sealed
rows (kept by the test as the old row versions a database leaves behind) with any key found in
any file (every 32-byte value of every SQLite file, ratcheted forward too)."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url

from qdnet.kms.keyring import ratchet, unseal, unseal_reserved
from qdnet.kms.pki import PKI
from qdnet.kms.puncturable import DEPTH, descend
from qdnet.kms.tls import client_context
from tests.kms.adversarial.conftest import Pair, spawned_pair, wait_shared

Snapshot = tuple[str, int, int, bytes]  # block_id, idx, version, sealed data
Reserved = tuple[str, int, int, bytes]  # key_id, leaf_tree, leaf, sealed material


@contextlib.contextmanager
def _connected(url: str) -> Iterator[Connection]:
    """A read connection to a store (SQLite or PostgreSQL), its engine disposed after."""
    pg = url.startswith("postgresql")
    eng = create_engine(make_url(url).set(drivername="postgresql+psycopg") if pg else url)
    try:
        with eng.connect() as c:
            yield c
    finally:
        eng.dispose()


def _rows(url: str) -> list[Snapshot]:
    with _connected(url) as c:  # every column, by name (a store of any version)
        rows = c.execute(text("SELECT * FROM kms_segments")).mappings()
        return [(r["block_id"], r["idx"], r.get("version", 0), bytes(r["data"])) for r in rows]


def _reserved_rows(url: str) -> list[Reserved]:
    with _connected(url) as c:
        rows = c.execute(text("SELECT key_id, leaf_tree, leaf, material FROM kms_keys"))
        return [(r[0], int(r[1]), int(r[2]), bytes(r[3])) for r in rows]


def _pg_files(url: str) -> list[Path]:
    """The database's table files and the server's WAL (empty if not readable here)."""
    with _connected(url) as c:
        data = Path(c.execute(text("SHOW data_directory")).scalar_one())
        oid = c.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()"))
        base = data / "base" / str(oid.scalar_one())
    try:
        return [p for d in (base, data / "pg_wal") for p in d.rglob("*") if p.is_file()]
    except PermissionError:
        return []


def _candidate_keys(files: list[Path]) -> set[bytes]:
    keys: set[bytes] = set()
    for f in files:
        try:
            con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for t in tables:
                for row in con.execute(f'SELECT * FROM "{t}"'):
                    keys.update(v for v in row if isinstance(v, bytes) and len(v) == 32)
            con.close()
        except sqlite3.DatabaseError:
            continue
    return keys


def _deliver(
    pair: Pair, rounds: int, snapshots: list[Snapshot], reserved: list[Reserved]
) -> list[bytes]:
    ca = pair.pki.ca_cert
    ca_, cb = pair.pki.credential("app-a"), pair.pki.credential("app-b")
    delivered: list[bytes] = []
    urls = [s.database_url for s in pair.settings]
    with (
        httpx.Client(verify=client_context(ca, ca_.cert, ca_.key), timeout=30) as a,
        httpx.Client(verify=client_context(ca, cb.cert, cb.key), timeout=30) as b,
    ):
        for i in range(rounds):
            for u in urls:
                assert u is not None
                snapshots.extend(_rows(u))
            master, slave, m_url, s_url, m_id, s_id = (
                (a, b, pair.url_a, pair.url_b, "app-a", "app-b")
                if i % 2 == 0
                else (b, a, pair.url_b, pair.url_a, "app-b", "app-a")
            )
            r = master.get(f"{m_url}/api/v1/keys/{s_id}/enc_keys?number=16&size=256")
            assert r.status_code == 200
            keys = r.json()["keys"]
            for u in urls:  # the slave's sealed rows of these keys, as old versions keep them
                assert u is not None
                reserved.extend(_reserved_rows(u))
            body = {"key_IDs": [{"key_ID": k["key_ID"]} for k in keys]}
            got = slave.post(f"{s_url}/api/v1/keys/{m_id}/dec_keys", json=body).json()["keys"]
            assert [g["key"] for g in got] == [k["key"] for k in keys]
            delivered.extend(base64.b64decode(k["key"]) for k in keys)
        # keys handed to the master but not yet to the slave stay (legitimately) at the slave's KMS
        assert a.get(f"{pair.url_a}/api/v1/keys/app-b/enc_keys?number=4").status_code == 200
        for u in urls:
            assert u is not None
            reserved.extend(_reserved_rows(u))
    return delivered


def test_no_delivered_key_on_disk_after_kill_9(
    tmp_path: Path,
    pki: PKI,
    dbs: tuple[str | None, str | None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    snapshots: list[Snapshot] = []
    reserved: list[Reserved] = []
    with spawned_pair(tmp_path, pki, database_urls=dbs, blocks=3, block_bytes=6000) as pair:
        wait_shared(pair)
        delivered = _deliver(pair, 8, snapshots, reserved)
        pair.kill("a", signal.SIGKILL)
        pair.kill("b", signal.SIGKILL)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for u in dbs:
        if u is not None:
            files += _pg_files(u)
    assert len(delivered) == 8 * 16 and len(set(delivered)) == len(delivered)
    found = scanned = 0
    for f in files:
        data = f.read_bytes()
        scanned += len(data)
        found += sum(data.count(k) for k in delivered)
    assert found == 0, f"{found} delivered keys in clear on disk"
    # every SQLite file this KMS keeps is private
    for f in files:
        if f.is_relative_to(tmp_path) and ("sqlite" in f.name or "keyring" in f.name):
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    # decrypt every version of every sealed row with every key the files hold
    keys = _candidate_keys([f for f in files if f.is_relative_to(tmp_path)])
    assert keys, "no keyring found"
    wanted = set(delivered)
    opened = recovered = 0
    for block_id, idx, version, blob in set(snapshots):
        for k in keys:
            for steps in range(0, 10):
                try:
                    plain = unseal(ratchet(k, steps), (block_id, idx), version, blob)
                except InvalidTag:
                    continue
                opened += 1
                recovered += sum(plain[i : i + 32] in wanted for i in range(0, len(plain), 1))
    assert recovered == 0, f"{recovered} delivered keys decrypted from old row versions"
    assert opened > 0  # the current rows (undelivered bytes) do open: the scan can find keys
    # every sealed reserved-key row, with every key found taken as any node above its leaf
    rows = set(reserved)
    assert len(rows) >= len(delivered) + 4
    reserved_opened = reserved_recovered = 0
    for key_id, tree, leaf, blob in rows:
        for k in keys:
            for depth in range(DEPTH + 1):
                try:
                    plain = unseal_reserved(descend(k, depth, leaf), key_id, (tree, leaf), blob)
                except InvalidTag:
                    continue
                reserved_opened += 1
                reserved_recovered += plain in wanted
    assert reserved_recovered == 0, f"{reserved_recovered} delivered keys opened from the store"
    assert reserved_opened >= 4  # the 4 keys still waiting open: the scan can find leaves
    with capsys.disabled():
        print(
            f"disk scan: {len(files)} files, {scanned} bytes, {len(delivered)} delivered keys, "
            f"{found} found in clear; {len(set(snapshots))} sealed row versions x {len(keys)} "
            f"keys found x 10 ratchet steps: {recovered} delivered keys decrypted; "
            f"{len(rows)} sealed reserved keys x {len(keys)} keys x {DEPTH + 1} depths: "
            f"{reserved_recovered} delivered keys opened ({reserved_opened} waiting keys did)"
        )
