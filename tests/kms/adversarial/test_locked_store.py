"""Finding 5: database work runs off the event loop with lock timeouts: while another process
holds the store, the calls that need it answer 503 "key store busy" after
``timeouts.database_s``, and everything else (OpenAPI, TLS handshakes) is served at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from qdnet.kms.pki import PKI
from qdnet.kms.tls import client_context
from tests.kms.adversarial.conftest import spawned_pair, wait_shared


@contextmanager
def _locked(url: str) -> Iterator[None]:
    if url.startswith("sqlite"):
        con = sqlite3.connect(make_url(url).database, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            con.close()
        return
    eng = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with eng.begin() as c:
            c.execute(text("LOCK TABLE kms_segments, kms_keys IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        eng.dispose()


def test_a_locked_store_answers_503_and_the_rest_is_served(
    tmp_path: Path, pki: PKI, dbs: tuple[str | None, str | None]
) -> None:
    cred = pki.credential("app-a")
    ctx = client_context(pki.ca_cert, cred.cert, cred.key)
    with (
        spawned_pair(tmp_path, pki, database_urls=dbs) as pair,  # timeouts.database_s: 3
        httpx.Client(verify=ctx, timeout=30) as h,
    ):
        wait_shared(pair)
        url = pair.settings[0].database_url
        assert url is not None
        answers: dict[str, tuple[int, float]] = {}

        def enc() -> None:
            t0 = time.monotonic()
            with httpx.Client(verify=ctx, timeout=30) as c:
                r = c.get(pair.url_a + "/api/v1/keys/app-b/enc_keys")
            answers["enc"] = (r.status_code, time.monotonic() - t0)
            assert r.status_code != 503 or "key store busy" in r.json()["message"]

        with _locked(url):
            worker = threading.Thread(target=enc)
            worker.start()
            time.sleep(0.2)
            for _ in range(5):  # served at once while enc_keys waits for the lock
                t0 = time.monotonic()
                assert h.get(pair.url_a + "/openapi.json").status_code == 200
                assert time.monotonic() - t0 < 0.5
            t0 = time.monotonic()
            r = h.get(pair.url_a + "/api/v1/keys/app-b/status")
            assert r.status_code in (200, 503) and time.monotonic() - t0 < 6.0
            if r.status_code == 503:
                assert "key store busy" in r.json()["message"]
            worker.join(20)
        status, took = answers["enc"]
        assert status == 503 and took < 8.0, answers
        # once the lock is gone everything works again (and no key went missing)
        assert h.get(pair.url_a + "/api/v1/keys/app-b/enc_keys").status_code == 200
