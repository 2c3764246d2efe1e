"""Crash safety: ``kill -9`` a KMS under load, restart it, and account for every key.

Accounting (the master side, kme-alice, is killed; app-b's KMS keeps running):
* every key app-a received with a 200 is handed to app-b exactly once by ``dec_keys``;
* no key bytes were ever delivered under two key IDs;
* consumed bytes == delivered bytes + bytes of keys reserved at kme-bob whose ``enc_keys``
  answer was lost in the crash + bytes kme-alice carved but never sent; the last two are at most
  the requests in flight at the kill and are never handed out to anyone;
* after the restart both KMS serve again and keep their pools in step.
Runs on SQLite and, when ``QDNET_TEST_POSTGRES_URL`` reaches a server, on PostgreSQL.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdnet.kms.client import KMEError, SAEClient
from qdnet.kms.link import free_port, ingest, link_settings, spawn_kms, wait_until_serving
from qdnet.kms.pki import PKI
from qdnet.kms.store import KeyStore
from tests.kms.conftest import PG_ENV, pg_admin_url, pg_databases, write_blocks


@pytest.fixture(params=["sqlite", "postgresql"])
def database_urls(request: pytest.FixtureRequest) -> Iterator[tuple[str | None, str | None]]:
    if request.param == "sqlite":
        yield (None, None)
        return
    url = pg_admin_url()
    if url is None:
        pytest.skip(f"no PostgreSQL server: set {PG_ENV} (e.g. postgresql://u:p@127.0.0.1/db)")
    with pg_databases(url, 2) as (alice, bob):
        yield (alice, bob)


def test_kill_9_under_load_loses_and_duplicates_nothing(
    tmp_path: Path, pki: PKI, database_urls: tuple[str | None, str | None]
) -> None:
    ports = (free_port(), free_port(), free_port(), free_port())
    sa, sb = link_settings(
        tmp_path,
        pki,
        saes=(["app-a"], ["app-b"]),
        ports=ports,
        database_urls=database_urls,
        extra={"ingest_interval_s": 0.1},
    )
    blocks = write_blocks([tmp_path / "ka", tmp_path / "kb"], 6)
    total = sum(len(b.key) for b in blocks)
    ingest(sa, tmp_path / "ka")
    ingest(sb, tmp_path / "kb")
    url_a, url_b = f"https://127.0.0.1:{ports[0]}", f"https://127.0.0.1:{ports[2]}"
    log = tmp_path / "kms.log"
    procs = {"a": spawn_kms(tmp_path / "kme-alice.yaml", log)}
    procs["b"] = spawn_kms(tmp_path / "kme-bob.yaml", log)
    try:
        wait_until_serving(url_a, pki, "app-a", "app-b")
        wait_until_serving(url_b, pki, "app-b", "app-a")
        cred_a, cred_b = pki.credential("app-a"), pki.credential("app-b")
        deadline = time.monotonic() + 10
        with SAEClient(url_a, pki.ca_cert, cred_a.cert, cred_a.key) as probe:
            while probe.status("app-b")["stored_key_count"] * 32 < total:
                assert time.monotonic() < deadline, "blocks never shared"
                time.sleep(0.05)

        delivered: list[tuple[str, bytes]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load(seed: int) -> None:
            rng = random.Random(seed)
            client = SAEClient(url_a, pki.ca_cert, cred_a.cert, cred_a.key, timeout_s=5)
            while not stop.is_set():
                try:
                    keys = client.enc_keys("app-b", number=rng.randint(1, 4), size=256)
                except (KMEError, OSError, Exception):
                    client.close()
                    time.sleep(0.02)
                    client = SAEClient(url_a, pki.ca_cert, cred_a.cert, cred_a.key, timeout_s=5)
                    continue
                with lock:
                    delivered.extend((k.key_id, k.key) for k in keys)
            client.close()

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()

        def wait_for_deliveries(count: int, timeout_s: float = 30.0) -> None:
            # Wait on progress, not on the clock: a loaded CI machine may be slow to serve.
            deadline = time.monotonic() + timeout_s
            while len(delivered) < count and time.monotonic() < deadline:
                time.sleep(0.05)

        wait_for_deliveries(40)
        before_kill = len(delivered)
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(10)
        time.sleep(0.3)
        procs["a"] = spawn_kms(tmp_path / "kme-alice.yaml", log)
        wait_until_serving(url_a, pki, "app-a", "app-b")
        wait_for_deliveries(before_kill + 40)
        stop.set()
        for t in threads:
            t.join(20)
        assert before_kill > 20 and len(delivered) > before_kill, (before_kill, len(delivered))

        ids = [k for k, _ in delivered]
        assert len(set(ids)) == len(ids)
        assert len({m for _, m in delivered}) == len(delivered), "key bytes delivered twice"
        with SAEClient(url_b, pki.ca_cert, cred_b.cert, cred_b.key) as b:
            for i in range(0, len(delivered), 100):
                chunk = delivered[i : i + 100]
                got = b.dec_keys("app-a", [k for k, _ in chunk])
                assert [g.key for g in got] == [m for _, m in chunk]
            with pytest.raises(KMEError) as err:
                b.dec_keys("app-a", [ids[0]])
            assert err.value.status == 400
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    assert sa.database_url and sb.database_url
    store_a, store_b = KeyStore(sa.database_url), KeyStore(sb.database_url)
    try:
        pool_a, pool_b = store_a.pool_summary(), store_b.pool_summary()
        orphans = store_b.reserved_key_ids()
    finally:
        store_a.close()
        store_b.close()
    in_flight = 4 * 4 * 32  # 4 load threads, up to 4 keys of 32 bytes each
    used_a, used_b = total - pool_a["held_bytes"], total - pool_b["held_bytes"]
    accounted = 32 * (len(delivered) + len(orphans))
    # kme-alice may have carved (and committed) one batch it never got to send: those bytes are
    # discarded on both sides (kme-bob skips them when the next carving arrives), never handed out
    assert accounted <= used_b <= used_a <= accounted + in_flight, (
        used_a, used_b, len(delivered), len(orphans)
    )  # fmt: skip
    assert len(orphans) * 32 <= in_flight
    assert pool_a["reserved_keys"] == 0
