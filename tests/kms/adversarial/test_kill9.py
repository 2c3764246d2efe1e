"""``kill -9`` under load, alternately on either KMS, then the byte accounting of both stores.

Invariants after the campaign (and one reconciliation):
* no key ID and no key bytes were delivered twice; every key app-a received is handed to app-b
  exactly once;
* both stores hold exactly the same bytes (no drift);
* bytes consumed = delivered keys + keys reserved at kme-bob whose answer was lost in a crash
  (orphans, never known to anyone) + bytes consumed without a key (lost); orphans and lost
  bytes are at most what was in flight at the kills.
Runs on SQLite and, when ``QDNET_TEST_POSTGRES_URL`` reaches a server, on PostgreSQL.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from qdnet.kms.client import SAEClient
from qdnet.kms.pki import PKI
from qdnet.kms.service import open_store
from tests.kms.adversarial.conftest import Pair, spawned_pair, wait_shared

THREADS = 4
MAX_KEYS = 4


def campaign(pair: Pair, kills: int) -> dict[str, int]:
    """Run the load, kill -9 ``kills`` times (alternating sides), account; figures."""
    wait_shared(pair)
    cred_a, cred_b = pair.pki.credential("app-a"), pair.pki.credential("app-b")
    delivered: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(seed: int) -> None:
        rng = random.Random(seed)
        client = SAEClient(pair.url_a, pair.pki.ca_cert, cred_a.cert, cred_a.key, timeout_s=10)
        while not stop.is_set():
            try:
                keys = client.enc_keys("app-b", number=rng.randint(1, MAX_KEYS), size=256)
            except Exception:
                client.close()
                time.sleep(0.02)
                client = SAEClient(
                    pair.url_a, pair.pki.ca_cert, cred_a.cert, cred_a.key, timeout_s=10
                )
                continue
            with lock:
                delivered.extend((k.key_id, k.key) for k in keys)
        client.close()

    def progress(count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(delivered) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(delivered) >= count, "no progress after a restart"

    threads = [threading.Thread(target=load, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    try:
        progress(30)
        for i in range(kills):
            side = "a" if i % 2 == 0 else "b"
            pair.kill(side, signal.SIGKILL)
            time.sleep(0.3)
            pair.start(side)
            progress(len(delivered) + 30)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    ids = [k for k, _ in delivered]
    assert len(set(ids)) == len(ids), "a key ID delivered twice"
    assert len({m for _, m in delivered}) == len(delivered), "key bytes delivered twice"
    with SAEClient(pair.url_b, pair.pki.ca_cert, cred_b.cert, cred_b.key) as b:
        for i in range(0, len(delivered), 100):
            chunk = delivered[i : i + 100]
            got = b.dec_keys("app-a", [k for k, _ in chunk])
            assert [g.key for g in got] == [m for _, m in chunk]

    sa, sb = pair.settings
    store_a, store_b = open_store(sa), open_store(sb)
    try:
        deadline = time.monotonic() + 30
        while True:  # the leader reconciles after every restart and periodically
            pool_a, pool_b = store_a.pool_summary(), store_b.pool_summary()
            if pool_a["held_bytes"] == pool_b["held_bytes"]:
                break
            assert time.monotonic() < deadline, ("stores drifted", pool_a, pool_b)
            time.sleep(0.1)
        orphans = len(store_b.reserved_key_ids())
        assert pool_a["reserved_keys"] == 0
    finally:
        store_a.close()
        store_b.close()
    total = sum(len(b.key) for b in pair.blocks)
    used = total - pool_a["held_bytes"]
    lost = used - 32 * (len(delivered) + orphans)
    in_flight = kills * THREADS * MAX_KEYS * 32
    assert lost >= 0 and 32 * orphans + lost <= in_flight, (used, len(delivered), orphans)
    return {
        "kills": kills,
        "delivered": len(delivered),
        "duplicated": 0,
        "drift_bytes": pool_a["held_bytes"] - pool_b["held_bytes"],
        "orphan_keys": orphans,
        "lost_bytes": lost,
    }


def test_kill_9_under_load(
    tmp_path: Path, pki: PKI, dbs: tuple[str | None, str | None], capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"reconcile_interval_s": 0.5}
    with spawned_pair(tmp_path, pki, database_urls=dbs, blocks=6, extra=extra) as pair:
        figures = campaign(pair, kills=2)
    with capsys.disabled():
        print("kill -9 campaign:", figures)


@pytest.mark.slow
def test_kill_9_campaign(
    tmp_path: Path, pki: PKI, dbs: tuple[str | None, str | None], capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"reconcile_interval_s": 0.5}
    with spawned_pair(tmp_path, pki, database_urls=dbs, blocks=64, extra=extra) as pair:
        figures = campaign(pair, kills=24)
    with capsys.disabled():
        print("kill -9 campaign:", figures)
