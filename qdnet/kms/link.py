"""One QKD link's key management, ready to use from Python (demo, tests, notebooks).

>>> pki = create_pki("work/pki", ["kme-alice", "kme-bob"], ["app-a", "app-b"])  # doctest: +SKIP
>>> with start_link("work", pki) as link:                                      # doctest: +SKIP
...     link.ingest("work/keys-alice", "work/keys-bob")
...     with link.client("app-a") as a, link.client("app-b") as b:
...         k = a.enc_keys("app-b", number=1, size=256)[0]
...         assert b.dec_keys("app-a", [k.key_id])[0].key == k.key
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from qdnet.kms.client import SAEClient
from qdnet.kms.pki import PKI, create_pki
from qdnet.kms.server import KMSNode, bind_socket
from qdnet.kms.service import IngestReport, ingest_folder, open_store
from qdnet.kms.settings import KMSSettings, dump_settings, settings_from_dict
from qdnet.kms.tls import client_context

__all__ = [
    "KMSLink",
    "create_pki",
    "free_port",
    "ingest",
    "link_settings",
    "spawn_kms",
    "start_link",
    "wait_until_serving",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for subprocess servers)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def link_settings(
    workdir: str | os.PathLike[str],
    pki: PKI,
    *,
    kmes: tuple[str, str] = ("kme-alice", "kme-bob"),
    saes: tuple[list[str], list[str]] = (["app-a"], ["app-b"]),
    ports: tuple[int, int, int, int] | None = None,
    database_urls: tuple[str | None, str | None] = (None, None),
    key_blocks_dirs: tuple[str | None, str | None] = (None, None),
    allow_self_addressed: bool = False,
    extra: dict[str, Any] | None = None,
    write_yaml: bool = True,
) -> tuple[KMSSettings, KMSSettings]:
    """Settings of the two KMS of a link; ``ports`` = (sae A, peer A, sae B, peer B).

    With ``write_yaml`` the files ``<kme>.yaml`` are written into ``workdir`` too.
    """
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    ports = ports or (0, 0, 0, 0)
    out = []
    for i in (0, 1):
        j = 1 - i
        raw: dict[str, Any] = {
            "kme_id": kmes[i],
            "listen": {"host": "127.0.0.1", "port": ports[2 * i]},
            "peer_listen": {"host": "127.0.0.1", "port": ports[2 * i + 1]},
            "tls": {
                "ca": str(pki.ca_cert),
                "cert": str(pki.credential(kmes[i]).cert),
                "key": str(pki.credential(kmes[i]).key),
            },
            "peer": {
                "kme_id": kmes[j],
                "url": f"https://127.0.0.1:{ports[2 * j + 1]}",
                "saes": list(saes[j]),
            },
            "saes": list(saes[i]),
            "allow_self_addressed": allow_self_addressed,
        }
        if database_urls[i]:
            raw["database_url"] = database_urls[i]
        if key_blocks_dirs[i]:
            raw["key_blocks_dir"] = key_blocks_dirs[i]
        raw.update(extra or {})
        s = settings_from_dict(raw, wd, f"{kmes[i]}.yaml")
        if write_yaml:
            (wd / f"{kmes[i]}.yaml").write_text(dump_settings(s))
        out.append(s)
    return out[0], out[1]


def ingest(
    settings: KMSSettings,
    folder: str | os.PathLike[str],
    remove: bool = False,
    peer: str | None = None,
) -> IngestReport:
    """Ingest a folder of key blocks into the pool of the link to ``peer`` (a KME ID; may be
    left out when the node has one peer) of a KMS's store (server running or not)."""
    if peer is None:
        if len(settings.peers) != 1:
            raise ValueError(
                f"{settings.kme_id} has {len(settings.peers)} peers: name the link's peer KME"
            )
        peer = settings.peers[0].kme_id
    elif settings.peer(peer) is None:
        raise ValueError(f"{peer!r} is not a peer of {settings.kme_id}")
    store = open_store(settings)
    try:
        cap = settings.limits.max_key_count * settings.limits.key_size // 8
        return ingest_folder(store, folder, capacity_bytes=cap, remove=remove, link=peer)
    finally:
        store.close()


@dataclass
class KMSLink:
    """Two peered KMS nodes served from background threads of this process."""

    pki: PKI
    a: KMSNode
    b: KMSNode

    def start(self) -> KMSLink:
        """Start both nodes."""
        self.a.start()
        try:
            self.b.start()
        except BaseException:
            self.a.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both nodes (no thread or socket is left behind)."""
        self.b.stop()
        self.a.stop()

    def __enter__(self) -> KMSLink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def node_of(self, sae: str) -> KMSNode:
        """The node serving SAE ``sae``."""
        return self.a if sae in self.a.settings.saes else self.b

    def client(self, sae: str) -> SAEClient:
        """An SAE client for ``sae`` talking to its own KMS."""
        cred = self.pki.credential(sae)
        return SAEClient(self.node_of(sae).url, self.pki.ca_cert, cred.cert, cred.key)

    def ingest(
        self,
        folder_a: str | os.PathLike[str],
        folder_b: str | os.PathLike[str],
        wait_s: float = 10.0,
    ) -> tuple[IngestReport, IngestReport]:
        """Ingest each side's key-block folder, then wait until both pools are in step."""
        ra = ingest(self.a.settings, folder_a)
        rb = ingest(self.b.settings, folder_b)
        self.wait_shared(wait_s)
        return ra, rb

    def wait_shared(self, wait_s: float = 10.0) -> None:
        """Wait until every ingested block is confirmed by the peer (shared)."""
        deadline = time.monotonic() + wait_s
        for node in (self.a, self.b):
            store = open_store(node.settings)
            try:
                while store.unshared_block_ids(limit=1):
                    if time.monotonic() > deadline:
                        raise TimeoutError("key blocks not confirmed by the peer KMS in time")
                    time.sleep(0.05)
            finally:
                store.close()


def start_link(
    workdir: str | os.PathLike[str],
    pki: PKI,
    **kwargs: Any,
) -> KMSLink:
    """Start two peered KMS nodes on free ports (in-process); see :func:`link_settings`.

    Keyword arguments go to :func:`link_settings` (``ports`` excepted).
    """
    socks = [bind_socket() for _ in range(4)]
    ports = tuple(int(s.getsockname()[1]) for s in socks)
    sa, sb = link_settings(workdir, pki, ports=ports, **kwargs)  # type: ignore[arg-type]
    link = KMSLink(pki, KMSNode(sa, socks[0], socks[1]), KMSNode(sb, socks[2], socks[3]))
    try:
        return link.start()
    except BaseException:
        for s in socks:
            s.close()
        raise


def spawn_kms(
    settings_path: str | os.PathLike[str],
    log_path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``qdnet kms serve`` for one settings file as a subprocess (``env``: its whole
    environment; to serve another checkout of qdnet give its folder as ``cwd``: ``python -m``
    looks there first)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "qdnet.kms.server", str(settings_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def wait_until_serving(url: str, pki: PKI, sae: str, slave: str, timeout_s: float = 20.0) -> None:
    """Poll ``status`` until the KMS at ``url`` answers (any JSON answer counts)."""
    cred = pki.credential(sae)
    ctx = client_context(pki.ca_cert, cred.cert, cred.key)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(verify=ctx, timeout=2.0) as http:
        while True:
            try:
                http.get(f"{url}/api/v1/keys/{slave}/status")
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"KMS at {url} did not start in {timeout_s} s") from None
                time.sleep(0.1)
