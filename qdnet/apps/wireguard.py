"""WireGuard preshared-key rotation (what Arnika does): the QKD key becomes the peer's 256-bit
preshared key, mixed by WireGuard into every handshake (Noise IKpsk2, WireGuard whitepaper §5.4),
so the tunnel's session keys stay secret even against an attacker who later breaks Curve25519.

Keys are set with ``wg set IF peer PUB preshared-key /dev/stdin`` (the key goes through a pipe,
never through argv). This works for the kernel module and for ``wireguard-go`` (which netlink
cannot reach). A new preshared key takes effect at the peer's next handshake (WireGuard rekeys
every 120 s, the default ``--interval``).

Fail closed removes the peer from the interface (its endpoint, allowed IPs and keepalive are
remembered and restored with the next key), so no traffic flows on a stale key.
"""

from __future__ import annotations

import base64
import binascii
import re
import subprocess
from dataclasses import dataclass

from qdnet.apps.rotation import ApplyError

_INTERFACE = re.compile(r"^[A-Za-z0-9_.=+-]{1,15}$")


def check_public_key(text: str, option: str = "--peer-public-key") -> str:
    """``text`` if it is a WireGuard public key (base64 of 32 bytes), else ValueError."""
    try:
        ok = len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{option} {text!r}: expected a WireGuard key (base64 of 32 bytes)")
    return text


def check_interface(name: str) -> str:
    """``name`` if it is a valid interface name (at most 15 characters), else ValueError."""
    if not _INTERFACE.match(name):
        raise ValueError(f"--interface {name!r}: expected an interface name of 1-15 characters")
    return name


def _wg(*args: str, stdin: str | None = None, wg: str = "wg") -> str:
    try:
        done = subprocess.run(
            [wg, *args], input=stdin, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ApplyError(f"wg {args[0]}: {error}") from None
    if done.returncode != 0:
        raise ApplyError(f"wg {' '.join(args[:3])}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def preshared_keys(interface: str, wg: str = "wg") -> dict[str, str]:
    """Peer public key -> preshared key (base64; ``(none)`` when unset) of ``interface``."""
    out = _wg("show", interface, "preshared-keys", wg=wg)
    return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)


@dataclass
class PeerConfig:
    """What fail closed removes and the next key restores (no key material)."""

    endpoint: str
    allowed_ips: str
    keepalive: str

    def args(self) -> list[str]:
        out = []
        if self.endpoint != "(none)":
            out += ["endpoint", self.endpoint]
        if self.allowed_ips != "(none)":
            out += ["allowed-ips", self.allowed_ips]
        if self.keepalive not in ("off", "0"):
            out += ["persistent-keepalive", self.keepalive]
        return out


class WireGuardSink:
    """Sets the preshared key of one peer of one WireGuard interface."""

    def __init__(self, interface: str, peer_public_key: str, wg: str = "wg") -> None:
        self.interface = check_interface(interface)
        self.peer = check_public_key(peer_public_key)
        self.wg = wg
        self._removed: PeerConfig | None = None

    def _peer_config(self) -> PeerConfig:
        # wg show IF dump, peer lines: public-key preshared-key endpoint allowed-ips
        # latest-handshake rx tx persistent-keepalive
        for line in _wg("show", self.interface, "dump", wg=self.wg).splitlines()[1:]:
            fields = line.split("\t")
            if fields[0] == self.peer:
                return PeerConfig(fields[2], fields[3], fields[7])
        raise ApplyError(f"peer {self.peer} is not configured on {self.interface}")

    def apply(self, key: bytes, key_id: str) -> None:
        """Set ``key`` as the peer's preshared key (re-adding the peer after fail closed)."""
        extra = self._removed.args() if self._removed is not None else []
        if self._removed is None:
            self._peer_config()  # the peer must exist: never create one by accident
        psk = base64.b64encode(key).decode() + "\n"
        _wg(
            "set",
            self.interface,
            "peer",
            self.peer,
            "preshared-key",
            "/dev/stdin",
            *extra,
            stdin=psk,
            wg=self.wg,
        )
        self._removed = None

    def close(self) -> None:
        """Fail closed: remove the peer (remembering its endpoint and allowed IPs)."""
        if self._removed is None:
            self._removed = self._peer_config()
            _wg("set", self.interface, "peer", self.peer, "remove", wg=self.wg)

    def stop(self) -> None:
        """Nothing to release: the interface belongs to the user."""
