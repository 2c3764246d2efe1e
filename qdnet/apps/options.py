"""The options every application takes (``qdnet app wireguard|ipsec|tls-psk``), from the
command line or a YAML file with the same names (``peer-sae: app-b``); the command line wins."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qdnet.apps.control import ChannelAuth
from qdnet.apps.keys import KMSAccess
from qdnet.apps.rotation import RotationSettings
from qdnet.units import parse_duration_s

DEFAULT_CONTROL_PORT = 9400


def load_options(path: Path | None, given: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    """``given`` (None = not given) over the YAML file ``path``; unknown names are an error."""
    merged: dict[str, Any] = {}
    if path is not None:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path}: not YAML ({error})") from None
        if not isinstance(doc, dict):
            raise ValueError(f"--config {path}: expected a mapping of option names to values")
        unknown = sorted(str(k) for k in doc if str(k).replace("_", "-") not in allowed)
        if unknown:
            raise ValueError(f"--config {path}: unknown option(s) {', '.join(unknown)}")
        merged = {str(k).replace("_", "-"): v for k, v in doc.items()}
    merged.update({k: v for k, v in given.items() if v is not None})
    return merged


def host_port(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:9400``) or ValueError naming ``option``."""
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option} {text!r}: expected HOST:PORT, e.g. 10.0.0.2:9400")
    return host, int(port)


@dataclass(frozen=True)
class AppOptions:
    """What the three applications share, checked."""

    access: KMSAccess
    auth: ChannelAuth
    rotation: RotationSettings
    events: Path | None


def app_options(opts: dict[str, Any], default_interval: str | None = None) -> AppOptions:
    """Build and check the shared options (``default_interval`` None: one key, no rotation)."""
    for name in ("kms", "sae", "peer-sae", "role"):
        if not opts.get(name):
            raise ValueError(f"--{name} is required (on the command line or in --config)")
    sae, peer = str(opts["sae"]), str(opts["peer-sae"])
    if opts.get("pki"):
        if any(opts.get(n) for n in ("ca", "cert", "key")):
            raise ValueError("give either --pki or --ca/--cert/--key, not both")
        access = KMSAccess.from_pki(str(opts["kms"]), sae, peer, Path(opts["pki"]))
    elif all(opts.get(n) for n in ("ca", "cert", "key")):
        access = KMSAccess(
            str(opts["kms"]),
            sae,
            peer,
            Path(opts["ca"]),
            Path(opts["cert"]),
            Path(opts["key"]),
        )
    else:
        raise ValueError("KMS credentials: give --pki DIR or all of --ca, --cert and --key")
    access.check()
    if opts.get("control-secret"):
        auth = ChannelAuth(sae, peer, mac_secret=ChannelAuth.read_secret(opts["control-secret"]))
    else:
        auth = ChannelAuth(sae, peer, ca=access.ca, cert=access.cert, key=access.key)
    interval = opts.get("interval", default_interval)
    interval_s = math.inf if interval is None else parse_duration_s(str(interval), "--interval")
    peer_host, peer_port = "", 0
    if opts.get("peer-control"):
        peer_host, peer_port = host_port(opts["peer-control"], "--peer-control")
    listen_host, listen_port = host_port(
        opts.get("listen", f"0.0.0.0:{DEFAULT_CONTROL_PORT}"), "--listen"
    )
    try:
        max_missed = int(opts.get("max-missed", 3))
    except (TypeError, ValueError):
        raise ValueError(f"--max-missed {opts.get('max-missed')!r}: expected an integer") from None
    rotation = RotationSettings(
        role=opts["role"],
        interval_s=interval_s,
        max_missed=max_missed,
        on_missed=opts.get("on-missed-key", "close"),
        hybrid=bool(opts.get("hybrid", False)),
        peer_host=peer_host,
        peer_port=peer_port,
        listen_host=listen_host,
        listen_port=listen_port,
    )
    events = Path(opts["events"]) if opts.get("events") else None
    return AppOptions(access, auth, rotation, events)


COMMON_NAMES = {
    "kms",
    "sae",
    "peer-sae",
    "role",
    "peer-control",
    "listen",
    "pki",
    "ca",
    "cert",
    "key",
    "control-secret",
    "interval",
    "on-missed-key",
    "max-missed",
    "hybrid",
    "events",
}
"""Option names every application takes (also the keys of ``--config`` files)."""
