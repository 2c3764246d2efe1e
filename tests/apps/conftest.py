"""Fixtures of the application tests: a PKI for two KMEs and two SAEs, and a KMS pair in this
process with key blocks (the namespace tests in ``test_*_netns.py`` build their own)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdnet.kms.link import KMSLink, start_link
from qdnet.kms.pki import PKI, create_pki
from qdnet.postprocessing.keyblock import KeyBlock, write_key_block

KMES = ("kme-alice", "kme-bob")
SAES = ("app-a", "app-b")


@pytest.fixture(scope="session")
def app_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """CA, two KMEs (certificates valid for the test addresses too) and SAEs app-a, app-b, app-x."""
    hosts = ("localhost", "127.0.0.1", "10.201.0.1", "10.201.0.2")
    return create_pki(tmp_path_factory.mktemp("pki"), KMES, [*SAES, "app-x"], hosts=hosts)


def write_random_blocks(folders: list[Path], count: int, nbytes: int = 4096) -> None:
    """The same ``count`` random key blocks in every folder (unit tests only)."""
    for _ in range(count):
        block = KeyBlock(
            block_id=str(uuid.uuid4()),
            link_name="test-link",
            key=os.urandom(nbytes),
            length_bits=nbytes * 8,
            protocol="bb84",
            eps_sec=1e-10,
            eps_cor=1e-15,
            qber=0.02,
            simulated=False,
        )
        for folder in folders:
            write_key_block(folder, block)


@pytest.fixture
def kms_link(tmp_path: Path, app_pki: PKI) -> Iterator[KMSLink]:
    """Two KMS nodes (threads of this process) serving app-a and app-b, 4 blocks ingested."""
    with start_link(tmp_path / "kms", app_pki, saes=(["app-a"], ["app-b"])) as link:
        write_random_blocks([tmp_path / "ka", tmp_path / "kb"], 4)
        link.ingest(tmp_path / "ka", tmp_path / "kb")
        yield link


from tests.apps.netns import distilled, kms_pair, netpair  # noqa: E402, F401  (namespace fixtures)
