"""Shared fixtures: a PKI, key blocks, and a running pair of KMS nodes."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from qdnet.kms.link import KMSLink, start_link
from qdnet.kms.pki import PKI, create_pki
from qdnet.kms.puncturable import Leaf
from qdnet.kms.store import Allocation, KeyStore, keys, metadata
from qdnet.postprocessing.keyblock import KeyBlock, write_key_block

SAES_A = ["app-a", "app-c"]
SAES_B = ["app-b"]


def reserved_leaves(store: KeyStore) -> dict[str, Leaf]:
    """Each reserved key's leaf in the keyring (what seals it in the store)."""
    with store.engine.connect() as c:
        rows = c.execute(select(keys.c.key_id, keys.c.leaf_tree, keys.c.leaf))
        return {str(k): (int(t), int(i)) for k, t, i in rows}


def store_with_block(tmp_path: Path, nbytes: int) -> tuple[KeyStore, KeyBlock, Allocation]:
    """A SQLite store (``s.sqlite``) holding one shared block of ``nbytes``, and a plan of all
    of it from the front."""
    s = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    blk = make_block(nbytes)
    s.ingest(blk)
    s.mark_shared([blk.block_id])
    (x,) = s.plan([nbytes], True)
    assert x is not None
    return s, blk, x


def make_block(nbytes: int = 8192, created: str | None = None, simulated: bool = False) -> KeyBlock:
    """A random key block (not from a simulated link unless ``simulated``)."""
    extra: dict[str, object] = {"created_utc": created} if created else {}
    if "simulated" in KeyBlock.__dataclass_fields__:  # key-block format 2
        extra["simulated"] = simulated
    return KeyBlock(
        block_id=str(uuid.uuid4()),
        link_name="test-link",
        key=os.urandom(nbytes),
        length_bits=nbytes * 8,
        protocol="bb84",
        eps_sec=1e-10,
        eps_cor=1e-15,
        qber=0.02,
        **extra,
    )


def write_blocks(folders: list[Path], count: int, nbytes: int = 8192) -> list[KeyBlock]:
    """Write the same ``count`` blocks into every folder (as both post-processing ends do)."""
    blocks = [make_block(nbytes) for _ in range(count)]
    for folder in folders:
        for b in blocks:
            write_key_block(folder, b)
    return blocks


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    return create_pki(root, ["kme-alice", "kme-bob"], [*SAES_A, *SAES_B, "app-x"])


PG_ENV = "QDNET_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"] if os.environ.get(PG_ENV) else ["sqlite"]
"""Store backends of the ``link`` fixture: PostgreSQL too when ``QDNET_TEST_POSTGRES_URL`` is set."""


def pg_admin_url() -> str | None:
    """``QDNET_TEST_POSTGRES_URL`` if a server answers there, else None."""
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    try:
        eng = create_engine(
            make_url(url).set(drivername="postgresql+psycopg"),
            connect_args={"connect_timeout": 3},
        )
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
    except Exception:
        return None
    return url


@contextlib.contextmanager
def pg_databases(url: str, count: int = 2) -> Iterator[list[str]]:
    """``count`` fresh PostgreSQL databases (URLs), dropped afterwards."""
    base = make_url(url).set(drivername="postgresql+psycopg")
    names = [f"qdnet_kms_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            for n in names:
                c.execute(text(f'CREATE DATABASE "{n}"'))
        yield [base.set(database=n).render_as_string(hide_password=False) for n in names]
    finally:
        with admin.connect() as c:
            for n in names:
                c.execute(text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_pair() -> Iterator[list[str] | None]:
    """Two PostgreSQL databases for the session (emptied by each ``link``), or None."""
    url = pg_admin_url()
    if url is None:
        yield None
        return
    with pg_databases(url) as urls:
        yield urls


def _empty(url: str) -> None:
    eng = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        metadata.create_all(eng)
        with eng.begin() as c:
            c.execute(text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)}"))
    finally:
        eng.dispose()


@pytest.fixture(params=BACKENDS)
def link(
    request: pytest.FixtureRequest, tmp_path: Path, pki: PKI, pg_pair: list[str] | None
) -> Iterator[KMSLink]:
    """Two KMS nodes (SQLite, and PostgreSQL when configured), 4 blocks of 8 KiB ingested."""
    with contextlib.ExitStack() as stack:
        dbs: tuple[str | None, str | None] = (None, None)
        if request.param == "postgresql":
            if pg_pair is None:
                pytest.skip(f"no PostgreSQL server at {PG_ENV}")
            for url in pg_pair:
                _empty(url)
            dbs = (pg_pair[0], pg_pair[1])
        lk = stack.enter_context(
            start_link(
                tmp_path,
                pki,
                saes=(SAES_A, SAES_B),
                database_urls=dbs,
                extra={"ingest_interval_s": 0.05},
            )
        )
        write_blocks([tmp_path / "ka", tmp_path / "kb"], 4)
        lk.ingest(tmp_path / "ka", tmp_path / "kb")
        yield lk


_MANY_CASES = {"test_bad_enc_keys_input_is_clean_400", "test_bad_dec_keys_input_is_clean_400"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The many-case input checks run on PostgreSQL only with ``-m slow`` (they test the API
    layer, which is the same on both stores; every other API test runs on both by default)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (
            callspec is not None
            and callspec.params.get("link") == "postgresql"
            and getattr(item, "originalname", "") in _MANY_CASES
        ):
            item.add_marker(pytest.mark.slow)
