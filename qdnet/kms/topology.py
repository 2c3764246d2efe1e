"""Settings of every KMS of a trusted-node QKD network, from its nodes and links.

:func:`mesh_settings` is the one way to write the settings of a network of KMS nodes (``qdnet
network up`` and the relay tests use it): each node gets one ``peers:`` entry per QKD link (with
the link's own key-block folder ``<workdir>/<kme>/keys/<peer>``), and, when some KMEs are not
neighbours of each other, the ``relay:`` section (every link of the network and the SAEs served
beyond the neighbours) that lets the KMS relay keys hop by hop (:mod:`qdnet.kms.relay`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdnet.kms.client import SAEClient
from qdnet.kms.link import free_port
from qdnet.kms.pki import PKI
from qdnet.kms.server import KMSNode, bind_socket
from qdnet.kms.settings import KMSSettings, settings_from_dict


def _check_topology(nodes: dict[str, list[str]], links: list[tuple[str, str]]) -> None:
    seen_sae: dict[str, str] = {}
    for kme, saes in nodes.items():
        for sae in saes:
            if sae in seen_sae:
                raise ValueError(f"nodes: SAE {sae!r} is served by {seen_sae[sae]} and {kme}")
            seen_sae[sae] = kme
    pairs: set[frozenset[str]] = set()
    for i, (a, b) in enumerate(links):
        for end in (a, b):
            if end not in nodes:
                raise ValueError(f"links[{i}]: unknown KME {end!r}")
        if a == b:
            raise ValueError(f"links[{i}]: a link from {a!r} to itself")
        pair = frozenset((a, b))
        if pair in pairs:
            raise ValueError(f"links[{i}]: {a}-{b} is listed twice")
        pairs.add(pair)
    for kme in nodes:
        if not any(kme in p for p in pairs):
            raise ValueError(f"nodes: KME {kme!r} has no link")


def mesh_settings(
    workdir: str | os.PathLike[str],
    pki: PKI,
    *,
    nodes: dict[str, list[str]],
    links: list[tuple[str, str]],
    ports: dict[str, tuple[int, int]] | None = None,
    database_urls: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, KMSSettings]:
    """Settings of every KMS of the network (resolved, absolute paths), by KME ID.

    ``nodes``: KME ID -> the SAE IDs it serves (may be empty for a pure relay node with two
    links or more); ``links``: the QKD links by KME ID; ``ports``: KME ID -> (SAE listener,
    peer listener), None for free ports; ``database_urls``: KME ID -> store URL (default a SQLite
    file ``<workdir>/<kme>/<kme>.sqlite``); ``extra``: settings merged into every node's.
    The certificates come from ``pki`` (made by :func:`qdnet.kms.pki.create_pki`). Only the
    folders the settings name are created (``<workdir>/<kme>/keys/<peer>``); nothing is written.
    Raises ``ValueError`` naming the bad node or link.
    """
    _check_topology(nodes, links)
    wd = Path(workdir).resolve()
    ports = dict(ports or {})
    for kme in nodes:
        ports.setdefault(kme, (free_port(), free_port()))
    kme_of = {sae: kme for kme, saes in nodes.items() for sae in saes}
    out: dict[str, KMSSettings] = {}
    for kme, saes in nodes.items():
        base = wd / kme
        neighbours = [b if a == kme else a for a, b in links if kme in (a, b)]
        peers = []
        for peer in neighbours:
            folder = base / "keys" / peer
            folder.mkdir(parents=True, exist_ok=True)
            peers.append(
                {
                    "kme_id": peer,
                    "url": f"https://127.0.0.1:{ports[peer][1]}",
                    "saes": list(nodes[peer]),
                    "key_blocks_dir": str(folder),
                }
            )
        cred = pki.credential(kme)
        raw: dict[str, Any] = {
            "kme_id": kme,
            "listen": {"host": "127.0.0.1", "port": ports[kme][0]},
            "peer_listen": {"host": "127.0.0.1", "port": ports[kme][1]},
            "tls": {"ca": str(pki.ca_cert), "cert": str(cred.cert), "key": str(cred.key)},
            "saes": list(saes),
            "peers": peers,
        }
        far = {s: k for s, k in kme_of.items() if k != kme and k not in neighbours}
        if far or not saes:
            raw["relay"] = {"links": [list(link) for link in links], "saes": far}
        if database_urls and kme in database_urls:
            raw["database_url"] = database_urls[kme]
        for key, value in (extra or {}).items():  # mappings merged one level deep
            old = raw.get(key)
            raw[key] = (
                {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
            )
        base.mkdir(parents=True, exist_ok=True)
        out[kme] = settings_from_dict(raw, base, f"{kme}.yaml")
    return out


@dataclass
class KMSMesh:
    """KMS nodes of a network served from background threads of this process (tests, demos);
    :func:`start_mesh` makes one."""

    pki: PKI
    nodes: dict[str, KMSNode]

    def stop(self) -> None:
        """Stop every node (no thread or socket is left behind)."""
        for node in self.nodes.values():
            node.stop()

    def __enter__(self) -> KMSMesh:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def node_of(self, sae: str) -> KMSNode:
        """The node serving SAE ``sae``."""
        for node in self.nodes.values():
            if sae in node.settings.saes:
                return node
        raise KeyError(f"no node serves SAE {sae!r}")

    def client(self, sae: str, at: str | None = None) -> SAEClient:
        """An SAE client for ``sae`` talking to its own KMS (or to KME ``at``)."""
        cred = self.pki.credential(sae)
        node = self.nodes[at] if at is not None else self.node_of(sae)
        return SAEClient(node.url, self.pki.ca_cert, cred.cert, cred.key)


def start_mesh(
    workdir: str | os.PathLike[str],
    pki: PKI,
    *,
    nodes: dict[str, list[str]],
    links: list[tuple[str, str]],
    **kwargs: Any,
) -> KMSMesh:
    """Start the KMS of every node on free ports (in-process); see :func:`mesh_settings`."""
    socks = {kme: (bind_socket(), bind_socket()) for kme in nodes}
    ports = {k: (int(a.getsockname()[1]), int(b.getsockname()[1])) for k, (a, b) in socks.items()}
    settings = mesh_settings(workdir, pki, nodes=nodes, links=links, ports=ports, **kwargs)
    mesh = KMSMesh(pki, {k: KMSNode(settings[k], *socks[k]) for k in nodes})
    started: list[KMSNode] = []
    try:
        for node in mesh.nodes.values():
            node.start()
            started.append(node)
    except BaseException:
        for node in started:
            node.stop()
        for a, b in socks.values():
            a.close()
            b.close()
        raise
    return mesh
