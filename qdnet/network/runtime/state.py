"""``network.json`` (see :mod:`qdnet.network.runtime.layout` for its fields) and the other small
JSON files of a running network, which other processes read while they are rewritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qdnet.files import atomic_file

NETWORK_JSON = "network.json"
FORMAT_VERSION = 1


class WorkdirError(ValueError):
    """A working folder that cannot be used (the message says why)."""


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` so that readers see the old or the new file, never half."""
    with atomic_file(path, text=True) as handle:
        json.dump(document, handle, indent=1)


def read_state(workdir: Path) -> dict[str, Any]:
    """``DIR/network.json`` (``WorkdirError`` when the folder holds no network)."""
    path = workdir / NETWORK_JSON
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise WorkdirError(f"{workdir}: no network here (no {NETWORK_JSON})") from None
    except (OSError, ValueError) as error:
        raise WorkdirError(f"{path}: unreadable ({error})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise WorkdirError(f"{path}: not a network.json of format_version {FORMAT_VERSION}")
    return state


def status_identity(state: dict[str, Any], node: str) -> tuple[str, str]:
    """The SAE (its certificate, in the network's PKI) and a slave SAE to ask node ``node``'s
    KMS for ``status``: the node's ``status_sae`` and the first other application SAE."""
    caller = str(state["nodes"][node]["status_sae"])
    return caller, next(s for s in sorted(state["saes"]) if s != caller)
