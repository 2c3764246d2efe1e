"""``qdnet network status DIR``: pools, key rates, relay counters and processes of a network.

Each node's KMS is asked for the ETSI GS QKD 014 ``status`` (as the node's ``status_sae``, about
another SAE); its ``status_extension`` carries ``qdnet_links`` (per link: ``stored_key_bytes``,
``blocks_ingested``) and ``qdnet_relay`` (``originated``, ``forwarded``, ``terminated``,
``failed``). Each link's loop reports its blocks and key rate in ``stats.json``. JSON document::

    {"network": "line-3", "workdir": "/abs/DIR", "state": "running", "supervisor_alive": true,
     "nodes": {"A": {"kme_id": "kme-A", "kms_url": "https://127.0.0.1:40001", "alive": true,
                     "pools": {"kme-B": {"stored_key_bytes": 4096, "blocks_ingested": 3}},
                     "relay": {"originated": 2, "forwarded": 0, "terminated": 0, "failed": 0},
                     "error": null}, ...},
     "links": {"A-B": {"between": ["A", "B"], "kind": "modelled", "alive": true,
                       "tap": null, "stats": {"blocks_delivered": 3, "blocks_refused": 0,
                       "key_bits_delivered": 98304, "key_rate_bps": 24576.0, ...}}, ...}}

``error`` names why a node did not answer (its pools and relay counters are then null).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from qdnet.kms.client import KMEError, SAEClient
from qdnet.kms.pki import PKI
from qdnet.network.runtime.processes import ProcessRef
from qdnet.network.runtime.state import read_state, status_identity

#: Seconds a node has to answer ``status``.
STATUS_TIMEOUT_S = 5.0


def _alive(entry: dict[str, Any] | None) -> bool:
    return entry is not None and ProcessRef.from_json(entry).alive()


def node_status(state: dict[str, Any], name: str) -> dict[str, Any]:
    """One node: its process, its link pools and relay counters (from the KMS's ``status``)."""
    node = state["nodes"][name]
    sae, slave = status_identity(state, name)
    credential = PKI.at(Path(state["ca"]).parent).credential(sae)
    out: dict[str, Any] = {
        "kme_id": node["kme_id"],
        "kms_url": node["kms_url"],
        "alive": _alive(node.get("process")),
        "pools": None,
        "relay": None,
        "error": None,
    }
    if not out["alive"]:
        out["error"] = "process not running"
        return out
    try:
        with SAEClient(
            node["kms_url"],
            state["ca"],
            credential.cert,
            credential.key,
            timeout_s=STATUS_TIMEOUT_S,
        ) as client:
            status = client.status(slave)
    except (httpx.HTTPError, KMEError, OSError) as error:
        out["error"] = f"status: {error}"
        return out
    extension = status.get("status_extension") or {}
    out["pools"] = extension.get("qdnet_links", {})
    out["relay"] = extension.get("qdnet_relay", {})
    return out


def link_status(entry: dict[str, Any]) -> dict[str, Any]:
    """One link: its process and what its loop counted (``stats.json``; null before it starts)."""
    try:
        stats = json.loads(Path(entry["stats"]).read_text())
    except (OSError, ValueError):
        stats = None
    return {
        "between": entry["between"],
        "kind": entry["kind"],
        "alive": _alive(entry.get("process")),
        "tap": entry["tap"],
        "stats": stats,
    }


def network_status(workdir: Path) -> dict[str, Any]:
    """The status document of the network in ``workdir`` (see the module docstring)."""
    state = read_state(workdir.resolve())
    return {
        "network": state["network"],
        "workdir": state["workdir"],
        "state": state["state"],
        "supervisor_alive": _alive(state.get("supervisor")),
        "nodes": {name: node_status(state, name) for name in state["nodes"]},
        "links": {name: link_status(entry) for name, entry in state["links"].items()},
    }


def wait_for_pools(workdir: Path, min_bytes: int = 1, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait until every untapped link holds ``min_bytes`` of key at both ends; return the status.

    Raises ``TimeoutError`` naming the links still short of key.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        document = network_status(workdir)
        short = []
        for name, link in document["links"].items():
            if link["tap"] is not None:
                continue
            for end, peer in (link["between"], link["between"][::-1]):
                pools = document["nodes"][end]["pools"] or {}
                stored = pools.get(document["nodes"][peer]["kme_id"], {}).get("stored_key_bytes", 0)
                if stored < min_bytes:
                    short.append(f"{name} at {end}")
        if not short:
            return document
        if time.monotonic() > deadline:
            raise TimeoutError(f"links without {min_bytes} B of key after {timeout_s} s: {short}")
        time.sleep(0.25)
