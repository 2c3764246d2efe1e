"""Settings of one KMS node: the pydantic model of the ``kms-alice.yaml`` file a user writes.

Relative paths in the file are resolved against the folder holding the file. Errors name the
offending field, e.g. ``kms-alice.yaml: tls.cert: file not found: pki/kme-alice.crt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    """Where a server listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)


class TLSSettings(_Strict):
    """Certificates of this KME (server for SAEs and peer KME, client towards the peer KME)."""

    ca: Path = Field(description="CA certificate (PEM) that signed SAE and KME certificates")
    cert: Path = Field(description="this KME's certificate (PEM)")
    key: Path = Field(description="this KME's private key (PEM)")
    sae_identity: Literal["cn", "san_uri"] = Field(
        default="cn", description="where the SAE ID comes from: certificate CN or SAN URI"
    )
    sae_uri_prefix: str = Field(
        default="urn:qdnet:sae:", description="prefix stripped from a SAN URI to give the SAE ID"
    )
    minimum_version: Literal["1.2", "1.3"] = "1.2"


class PeerSettings(_Strict):
    """The KMS at the other end of one QKD link of this node (each link has its own key pool)."""

    kme_id: str = Field(min_length=1)
    url: str = Field(description="https://host:port of the peer's KMS-to-KMS listener")
    saes: list[str] = Field(default_factory=list, description="SAE IDs served by the peer KMS")
    timeout_s: float = Field(default=5.0, gt=0)
    key_blocks_dir: Path | None = Field(
        default=None,
        description="this link's post-processing key blocks, ingested while serving",
    )


class RelaySettings(_Strict):
    """Trusted-node key relay (see :mod:`qdnet.kms.relay`): the network beyond the neighbours."""

    links: list[tuple[str, str]] = Field(
        default_factory=list, description="every QKD link of the network, by KME ID"
    )
    saes: dict[str, str] = Field(
        default_factory=dict, description="SAE ID -> KME ID of SAEs served by non-neighbours"
    )
    timeout_s: float = Field(default=10.0, gt=0, description="deadline of a whole relay")
    ack_url: str | None = Field(
        default=None,
        pattern=r"^https://[^/\s]+/?$",
        description="URL of this node's peer API as the other KMEs of the network reach it "
        "(they send it relay completions); default https://<peer_listen.host>:<port>",
    )
    audit_log: Path | None = Field(
        default=None,
        description="file where this node appends the positions (never the bytes) of every "
        "relay pad it sends, one JSON line each: audits that no pad is used twice",
    )


class Limits(_Strict):
    """The figures reported by ``status`` and enforced on every request."""

    key_size: int = Field(default=256, gt=0, description="default key size in bits")
    min_key_size: int = Field(default=64, gt=0)
    max_key_size: int = Field(default=8192, gt=0)
    max_key_per_request: int = Field(default=128, gt=0)
    max_key_count: int = Field(
        default=1_000_000, gt=0, description="pool capacity, in keys of key_size"
    )
    max_SAE_ID_count: int = Field(default=4, ge=0, description="most additional_slave_SAE_IDs")  # noqa: N815
    max_connections: int = Field(
        default=1000, ge=2, description="open connections per listener (TLS handshake done)"
    )
    reserved_connections: int = Field(
        default=100,
        ge=1,
        description="of max_connections, kept for clients with a certificate (a client without "
        "one is turned away once max_connections - reserved_connections are open)",
    )
    max_body_bytes: int = Field(
        default=65536, ge=1024, description="largest request body (checked before reading)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Limits:
        for name in ("key_size", "min_key_size", "max_key_size"):
            if getattr(self, name) % 8:
                raise ValueError(f"{name} must be a multiple of 8")
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError("need min_key_size <= key_size <= max_key_size")
        if self.reserved_connections >= self.max_connections:
            raise ValueError("need reserved_connections < max_connections")
        return self


class Timeouts(_Strict):
    """Deadlines that keep one slow or silent client from holding the service."""

    handshake_s: float = Field(default=10.0, gt=0, description="TLS handshake")
    header_s: float = Field(
        default=10.0, gt=0, description="from a request's first byte to its last header"
    )
    idle_s: float = Field(
        default=30.0, gt=0, description="a connection with no request (before the first, between)"
    )
    body_s: float = Field(default=10.0, gt=0, description="reading a whole request body")
    database_s: float = Field(
        default=3.0,
        gt=0,
        description="lock and statement timeout of every database call (then 503, key store busy)",
    )


class KMSSettings(_Strict):
    """One KMS node (``kms-alice.yaml``)."""

    kme_id: str = Field(min_length=1)
    listen: Listen = Field(
        default_factory=lambda: Listen(), description="ETSI GS QKD 014 API for SAEs"
    )
    peer_listen: Listen = Field(
        default_factory=lambda: Listen(port=9443), description="KMS-to-KMS mTLS API"
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default a SQLite file <kme_id>.sqlite next to the file",
    )
    tls: TLSSettings
    peers: list[PeerSettings] = Field(
        min_length=1,
        description="one entry per QKD link of this node (``peer:``, one mapping, is accepted "
        "as a one-element list)",
    )
    saes: list[str] = Field(
        default_factory=list,
        description="SAE IDs served by this KMS (empty only for a relay node)",
    )
    relay: RelaySettings | None = None
    limits: Limits = Field(default_factory=lambda: Limits())
    remove_ingested_blocks: bool = Field(
        default=True, description="delete a block file once its key is safely in the store"
    )
    ingest_interval_s: float = Field(default=1.0, gt=0)
    allow_self_addressed: bool = Field(
        default=False, description="TEST ONLY: let an SAE request keys addressed to itself"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "warning"
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts())
    reserved_key_ttl_s: float | None = Field(
        default=86400.0,
        gt=0,
        description="a reserved key no slave collected within this time is erased (null: never)",
    )
    reconcile_interval_s: float = Field(
        default=60.0, gt=0, description="how often the leader reconciles consumed bytes"
    )
    docs_require_client_cert: bool = Field(
        default=True, description="/docs and /openapi.json only for clients with a certificate"
    )
    keyring_path: Path | None = Field(
        default=None,
        description="SQLite file of the data keys and reserved keys, the one place where key "
        "material is erased for good (default: <store file>.keyring beside a SQLite store, "
        "<kme_id>.keyring beside this file with PostgreSQL); local disk, never shared",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_peer(cls, raw: Any) -> Any:
        """``peer:`` (one mapping) is ``peers:`` with one element; the top-level
        ``key_blocks_dir`` of that form is the key_blocks_dir of its one link."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        if "peer" in raw:
            if "peers" in raw:
                raise ValueError("peer and peers: give one of them (peers is a list of links)")
            peer = raw.pop("peer")
            if isinstance(peer, dict) and "key_blocks_dir" in raw:
                peer = {**peer, "key_blocks_dir": raw.pop("key_blocks_dir")}
            raw["peers"] = [peer]
        if "key_blocks_dir" in raw:
            raise ValueError(
                "key_blocks_dir: with peers, give each link its own peers[].key_blocks_dir"
            )
        return raw

    @model_validator(mode="after")
    def _ids(self) -> KMSSettings:
        seen: dict[str, str] = {sae: self.kme_id for sae in self.saes}
        kmes = {self.kme_id}
        for i, peer in enumerate(self.peers):
            if peer.kme_id in kmes:
                raise ValueError(f"peers[{i}].kme_id: {peer.kme_id!r} is this KME or listed twice")
            kmes.add(peer.kme_id)
            both = set(seen) & set(peer.saes)
            if both:
                raise ValueError(f"SAE IDs served by both KMS: {sorted(both)}")
            seen.update((sae, peer.kme_id) for sae in peer.saes)
        if not self.saes and len(self.peers) < 2 and self.relay is None:
            raise ValueError("saes: at least one SAE (none only for a relay node: 2+ peers)")
        if self.relay is not None:
            for i, link in enumerate(self.relay.links):
                if link[0] == link[1]:
                    raise ValueError(f"relay.links[{i}]: a link from {link[0]!r} to itself")
            for sae, kme in self.relay.saes.items():
                if sae in seen and seen[sae] != kme:
                    raise ValueError(f"relay.saes: {sae!r} is served by {seen[sae]!r}, not {kme!r}")
            if self.relay.ack_url is None and self.peer_listen.host in ("0.0.0.0", "::", ""):
                raise ValueError(
                    "relay.ack_url: give the https:// URL the other KMEs reach this node's peer "
                    f"API at (peer_listen.host {self.peer_listen.host!r} is not one)"
                )
        return self

    def resolved(self, base: Path) -> KMSSettings:
        """A copy with relative paths (and the default database) anchored at ``base``."""

        def anchor(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        tls = self.tls.model_copy(
            update={
                "ca": anchor(self.tls.ca),
                "cert": anchor(self.tls.cert),
                "key": anchor(self.tls.key),
            }
        )
        db = self.database_url or f"sqlite:///{(base / f'{self.kme_id}.sqlite').resolve()}"
        peers = [
            p.model_copy(update={"key_blocks_dir": anchor(p.key_blocks_dir)})
            if p.key_blocks_dir
            else p
            for p in self.peers
        ]
        keyring = anchor(self.keyring_path) if self.keyring_path else None
        if keyring is None and not db.startswith("sqlite"):
            keyring = (base / f"{self.kme_id}.keyring").resolve()
        relay = self.relay
        if relay is not None and relay.audit_log is not None:
            relay = relay.model_copy(update={"audit_log": anchor(relay.audit_log)})
        return self.model_copy(
            update={
                "relay": relay,
                "tls": tls,
                "database_url": db,
                "peers": peers,
                "keyring_path": keyring,
            }
        )

    def relay_ack_url(self) -> str:
        """Where the other KMEs send this node's relay completions: ``relay.ack_url``, or the
        peer listener's address."""
        if self.relay is not None and self.relay.ack_url is not None:
            return self.relay.ack_url.rstrip("/")
        host = self.peer_listen.host
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{self.peer_listen.port}"

    def is_leader(self, peer_kme: str) -> bool:
        """On the link to ``peer_kme``, the KME whose ID sorts first carves keys from the front
        of each segment (and leads the reconciliation)."""
        return self.kme_id < peer_kme

    def peer(self, kme_id: str) -> PeerSettings | None:
        """The link to neighbour ``kme_id`` (None: not a neighbour)."""
        for p in self.peers:
            if p.kme_id == kme_id:
                return p
        return None

    def kme_of(self, sae_id: str) -> str | None:
        """Which KME serves ``sae_id`` (None: unknown SAE)."""
        if sae_id in self.saes:
            return self.kme_id
        for p in self.peers:
            if sae_id in p.saes:
                return p.kme_id
        if self.relay is not None:
            return self.relay.saes.get(sae_id)
        return None


def _format_error(source: str, err: ValidationError, one_peer: bool) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        if one_peer:  # the file says peer:, not peers:
            loc = loc.replace("peers.0", "peer", 1)
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def settings_from_dict(raw: Any, base: Path, source: str = "settings") -> KMSSettings:
    """Validate a mapping (as read from YAML); raise :class:`SettingsError` naming the field."""
    if not isinstance(raw, dict):
        raise SettingsError(f"{source}: expected a mapping at the top level")
    try:
        settings = KMSSettings.model_validate(raw).resolved(base)
    except ValidationError as err:
        raise SettingsError(_format_error(source, err, "peer" in raw)) from None
    for name in ("ca", "cert", "key"):
        p = getattr(settings.tls, name)
        if not p.is_file():
            raise SettingsError(f"{source}: tls.{name}: file not found: {p}")
    return settings


def load_settings(path: str | os.PathLike[str]) -> KMSSettings:
    """Read and validate a KMS settings file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as err:
        raise SettingsError(f"{p}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SettingsError(f"{p}: not valid YAML: {err}") from None
    return settings_from_dict(raw, p.parent.resolve(), str(p))


def dump_settings(settings: KMSSettings) -> str:
    """YAML text for ``settings`` (paths as strings; fields left at their default omitted)."""
    return yaml.safe_dump(
        settings.model_dump(mode="json", exclude_none=True, exclude_defaults=True), sort_keys=False
    )
