"""Shared fixtures: a PKI, key blocks, and a running pair of KMS nodes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdnet.kms.link import KMSLink, start_link
from qdnet.kms.pki import PKI, create_pki
from qdnet.postprocessing.keyblock import KeyBlock, write_key_block

SAES_A = ["app-a", "app-c"]
SAES_B = ["app-b"]


def make_block(nbytes: int = 8192, created: str | None = None) -> KeyBlock:
    """A random key block."""
    extra = {"created_utc": created} if created else {}
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


@pytest.fixture
def link(tmp_path: Path, pki: PKI) -> Iterator[KMSLink]:
    """Two KMS nodes (SQLite), 4 blocks of 8 KiB ingested and shared."""
    with start_link(tmp_path, pki, saes=(SAES_A, SAES_B), extra={"ingest_interval_s": 0.05}) as lk:
        write_blocks([tmp_path / "ka", tmp_path / "kb"], 4)
        lk.ingest(tmp_path / "ka", tmp_path / "kb")
        yield lk
