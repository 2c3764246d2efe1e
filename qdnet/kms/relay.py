"""Key relay between trusted nodes: hop-by-hop one-time pad over the KMS-to-KMS channel.

When an SAE at KME ``O`` asks for keys shared with an SAE at KME ``F`` and ``O`` and ``F`` share
no QKD link, ``O`` relays the keys along a path ``O = n0, n1, ..., nk = F`` of QKD links
(trusted-node relay: every node on the path learns the key). The messages are modelled on
ITU-T Q.4163 (12/2023) "Protocols for Kx interfaces for quantum key distribution networks",
§7.1 and §8.1-8.2 (the *key relay* message and the *key relay completion notification*), and
on ETSI GS QKD 020 (Interoperable Key Management System API: a KMS hands a key to the next KMS
of a trusted node chain, ``ext_keys``, which later confirms it). They travel over the existing
mutual-TLS KMS-to-KMS channel of each hop (:mod:`qdnet.kms.peer`).

Relay requests (``POST /peer/v1/relay``), from ``n(i-1)`` to ``n(i)``: ``{"requests": [...]}``
(the requests waiting on that link, in the order their pads were carved), each::

    {"relay_id", "path": [n0, ..., nk], "hop": i, "master", "slaves": [...],
     "keys": [[key_ID, size_bits], ...], "pieces": [[block_id, offset, length], ...],
     "ciphertext": base64 | null, "simulated": bool, "ttl_s": seconds left,
     "ack_url": "https://..."}

answered ``{"answers": [...]}``, one per request: ``{"ok": bool, "reason": "...", "avoid_link":
[a, b] | null, "avoid_node": x | null}``.

Relay completion (``POST /peer/v1/relay_completion``), sent *straight to the origin* at the
request's ``ack_url`` (its peer API; ETSI GS QKD 020's ``ack_callback_url``, Q.4163 §8.2's key
relay completion notification) by the far end once the keys are stored, or by the node whose hop
failed::

    {"relay_id", "path", "ok": bool, "reason", "avoid_link", "avoid_node", "simulated": bool}

answered ``{"ok": bool, "reason": "..."}`` (false for a relay the origin no longer waits for).
The origin accepts it only from a KME of that relay's path over mutual TLS (any KME of the
network's ``relay.links``, not only a neighbour, may call this one route), and a success only from
the far end.

The key and the pads
--------------------
The relayed key ``K`` is the first hop's QKD key: ``O`` carves ``len(K)`` bytes from its pool of
link ``n0-n1`` and ``n1`` consumes the same bytes (``pieces``; no ciphertext on the first hop).
Every later hop ``n(i)-n(i+1)`` carves a pad ``P`` of the same length from its own link pool and
sends ``K xor P``; ``n(i+1)`` consumes the same bytes and recovers ``K``. Every relayed bit costs
one key bit on every link of its path, as the one-time pad requires.

No pad is ever used twice
-------------------------
* A sender consumes its pad in its own store (one committed transaction) *before* the
  ciphertext leaves. A crash afterwards leaves the bytes consumed here (reconciliation makes
  them consumed at the other end too): they are never carved again. The price: a hop whose
  next node is down burns its pad (the origin then avoids that node for a while).
* Each end of a link carves from its end of the pool (``lo`` or ``hi`` of each segment), so its
  carvings must reach the peer in the order they were made, or a later one would consume the
  bytes of an earlier one still in flight: the relay requests waiting on a link are carved
  and sent together while the link's carving lock is held (as the ``enc_keys`` batcher does),
  in one message on the link's one ordered connection, and the receiver consumes their pads in
  one transaction, in that order.
* A sender carves relay pads only from *its own half* of each segment of the link pool
  (:meth:`qdnet.kms.store.KeyStore.plan` with ``half``): the two ends of a link, which may both
  relay at the same moment, can never pick the same byte. (``enc_keys`` carving may take any
  byte, but it sends no ciphertext and the other end refuses bytes it already consumed.)
* The receiver consumes the pad bytes with the same refusal of any byte it already consumed.

Delivery
--------
The request travels hop by hop to ``F``; each node answers the previous one as soon as its own
transaction is done and forwards in the background (so a link is held for one hop, not for the
whole path). A middle node carves the next hop's pad in the transaction that consumes the
incoming pad when the next link's carving lock is free (taken in one order, so two messages
never wait for each other), and sends it while holding that lock; otherwise the next link's relay
batcher carves and sends it. ``F`` keeps the keys for their slaves (ordinary reserved keys, in the same
transaction as its pad) and sends the completion to ``O``; a node that consumed the incoming pad
but cannot forward (no key on the next link, next node down: its pad is burned) sends ``O`` a
failed completion naming the link or node to avoid. ``O`` answers its SAE with the keys only
once ``F``'s completion came, so no application holds a key its peer cannot fetch; after a
failure it tries the next path, and after ``relay.timeout_s`` it answers 503.

Two messages per hop instead of four: the completion does not retrace the path, so a relay costs
one request per hop and one completion (the earlier design sent a commit hop by hop after
the request and kept the keys *pending* at ``F`` until it came).

Crashes: if ``F``'s completion is lost (``O`` or ``F`` died, or the deadline passed) ``O``
answers 503 and the keys at ``F`` are orphans no SAE knows the IDs of, like a direct
``enc_keys`` answer lost on its way to the SAE: they expire with ``reserved_key_ttl_s``.

An SAE fetches relayed keys with ``dec_keys`` at its own KME only (any other KME answers 401),
and only keys that name it as a slave.

Path choice (by the origin): shortest path first over ``relay.links`` (networkx); a hop that
lacks key or a node that cannot be reached is avoided for ``AVOID_S`` and the next shortest path
is tried, until ``relay.timeout_s`` or ``MAX_TRIES`` paths; then 503 with every reason in one line.

Waits: a link is held while the next node takes a message of relay requests (one hop, not the
path); the relay deadline (``ttl_s``, less ``HOP_MARGIN_S`` per hop) bounds every wait.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from qdnet.kms.errors import KMSError
from qdnet.kms.peer import RELAY_COMPLETION_PATH, PeerClient, PeerError
from qdnet.kms.store import Allocation, IncomingPad, OnwardPads, Piece, RelayHop, xor

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from qdnet.kms.service import KMSService, PeerLink

AVOID_S = 2.0
"""How long the origin avoids a link without key or a node that could not be reached."""
MAX_TRIES = 4
"""Most paths one relay tries."""
COMPLETION_MIN_S = 0.1
"""Least time a completion is given to reach the origin (every call passes its own timeout)."""
HOP_MARGIN_S = 0.05
"""Each hop gives the next a little less time, so a node answers before its caller gives up."""


@dataclass
class RelayCounters:
    """``status_extension.qdnet_relay``: relays this node originated (delivered), forwarded (as
    a middle node), terminated (stored here as the far end) and failed (originated here and
    answered 503)."""

    originated: int = 0
    forwarded: int = 0
    terminated: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "originated": self.originated,
            "forwarded": self.forwarded,
            "terminated": self.terminated,
            "failed": self.failed,
        }


@dataclass
class RelayRequest:
    """A parsed relay request (see the module notes)."""

    relay_id: str
    path: list[str]
    hop: int
    master: str
    slaves: list[str]
    keys: list[tuple[str, int]]
    pieces: list[Piece]
    ciphertext: bytes | None = field(repr=False)
    simulated: bool
    ttl_s: float
    ack_url: str

    @property
    def nbytes(self) -> int:
        return sum(b for _, b in self.keys) // 8

    def to_json(self) -> dict[str, Any]:
        return {
            "relay_id": self.relay_id,
            "path": self.path,
            "hop": self.hop,
            "master": self.master,
            "slaves": self.slaves,
            "keys": [list(k) for k in self.keys],
            "pieces": [p.to_json() for p in self.pieces],
            "ciphertext": (
                base64.b64encode(self.ciphertext).decode() if self.ciphertext is not None else None
            ),
            "simulated": self.simulated,
            "ttl_s": self.ttl_s,
            "ack_url": self.ack_url,
        }


@dataclass
class RelayJob:
    """A relay request waiting on a link to be carved and sent: its pad size, how to make the
    request once the pad is carved, and where the peer's answer (and the pad) go."""

    nbytes: int
    build: Callable[[Allocation], RelayRequest]
    future: asyncio.Future[tuple[dict[str, Any], Allocation | None]] = field(repr=False)


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and 0 < len(x) <= 256 for x in v)


def _id_and_path(raw: Any) -> tuple[str, list[str]]:
    if not isinstance(raw, dict):
        raise ValueError("relay message must be an object")
    relay_id, path = raw.get("relay_id"), raw.get("path")
    if not isinstance(relay_id, str) or not 0 < len(relay_id) <= 64:
        raise ValueError("relay_id must be a string of at most 64 characters")
    if (
        not isinstance(path, list)
        or not _strs(path)
        or len(path) < 2
        or len(set(path)) != len(path)
        or len(path) > 64
    ):
        raise ValueError("path must list 2 to 64 distinct KME IDs")
    return relay_id, list(path)


def _common(raw: Any) -> tuple[str, list[str], int, float]:
    relay_id, path = _id_and_path(raw)
    hop, ttl = raw.get("hop"), raw.get("ttl_s")
    if not isinstance(hop, int) or isinstance(hop, bool) or not 1 <= hop < len(path):
        raise ValueError("hop must index the receiver in path")
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not 0 < ttl <= 600:
        raise ValueError("ttl_s must be a number of seconds in (0, 600]")
    return relay_id, path, hop, float(ttl)


def parse_relay_request(raw: Any, max_key_size: int, max_keys: int) -> RelayRequest:
    """Validate a relay request body; raises ``ValueError`` naming what is wrong."""
    relay_id, path, hop, ttl = _common(raw)
    master, slaves, keys = raw.get("master"), raw.get("slaves"), raw.get("keys")
    if not isinstance(master, str) or not _strs(slaves) or not slaves:
        raise ValueError("master must be a string and slaves a non-empty list of strings")
    if not isinstance(keys, list) or not 0 < len(keys) <= max_keys:
        raise ValueError(f"keys must list 1 to {max_keys} keys")
    parsed: list[tuple[str, int]] = []
    for k in keys:
        if not (isinstance(k, list) and len(k) == 2 and isinstance(k[0], str)):
            raise ValueError("a key must be [key_ID, size_bits]")
        size = k[1]
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % 8:
            raise ValueError("size_bits must be a positive multiple of 8")
        if size > max_key_size:
            raise ValueError(f"size_bits must be at most {max_key_size}")
        uuid.UUID(k[0])  # ValueError if not a UUID
        parsed.append((k[0], size))
    pieces_raw = raw.get("pieces")
    if not isinstance(pieces_raw, list) or not pieces_raw:
        raise ValueError("pieces must be a non-empty list")
    pieces = [Piece.from_json(p) for p in pieces_raw]
    cipher_raw = raw.get("ciphertext")
    ciphertext = None
    if cipher_raw is not None:
        if not isinstance(cipher_raw, str):
            raise ValueError("ciphertext must be base64 or null")
        ciphertext = base64.b64decode(cipher_raw, validate=True)
    simulated = raw.get("simulated")
    if not isinstance(simulated, bool):
        raise ValueError("simulated must be a boolean")
    ack_url = raw.get("ack_url")
    if not isinstance(ack_url, str) or not ack_url.startswith("https://") or len(ack_url) > 512:
        raise ValueError("ack_url must be the origin's https:// peer URL (at most 512 characters)")
    req = RelayRequest(
        relay_id, path, hop, master, list(slaves), parsed, pieces, ciphertext, simulated, ttl,
        ack_url,
    )  # fmt: skip
    if sum(p.length for p in pieces) != req.nbytes:
        raise ValueError("pieces must hold as many bytes as the keys")
    if (ciphertext is None) != (hop == 1) or (ciphertext and len(ciphertext) != req.nbytes):
        raise ValueError("ciphertext must be null on the first hop, as long as the keys after")
    return req


def parse_relay_requests(raw: Any, max_key_size: int, max_keys: int) -> list[RelayRequest]:
    """Validate a relay message ``{"requests": [...]}`` (at most 256, in carving order)."""
    reqs = raw.get("requests") if isinstance(raw, dict) else None
    if not isinstance(reqs, list) or not 0 < len(reqs) <= 256:
        raise ValueError("requests must list 1 to 256 relay requests")
    return [parse_relay_request(r, max_key_size, max_keys) for r in reqs]


def parse_relay_completion(raw: Any) -> tuple[str, list[str], dict[str, Any]]:
    """Validate a relay completion body: ``(relay_id, path, answer)`` where ``answer`` holds
    ``ok``, ``reason``, ``avoid_link``, ``avoid_node`` and ``simulated`` (checked)."""
    relay_id, path = _id_and_path(raw)
    ok, reason, simulated = raw.get("ok"), raw.get("reason", ""), raw.get("simulated", False)
    if not isinstance(ok, bool) or not isinstance(simulated, bool):
        raise ValueError("ok and simulated must be booleans")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise ValueError("reason must be a string of at most 2000 characters")
    link, node = raw.get("avoid_link"), raw.get("avoid_node")
    if link is not None and not (isinstance(link, list) and len(link) == 2 and _strs(link)):
        raise ValueError("avoid_link must be null or two KME IDs")
    if node is not None and not (isinstance(node, str) and 0 < len(node) <= 256):
        raise ValueError("avoid_node must be null or a KME ID")
    answer = {"ok": ok, "reason": reason, "avoid_link": link, "avoid_node": node,
              "simulated": simulated}  # fmt: skip
    return relay_id, path, answer


def fail(
    reason: str, link: tuple[str, str] | None = None, node: str | None = None
) -> dict[str, Any]:
    """A failed relay answer (with the link or node the origin should avoid)."""
    return {
        "ok": False,
        "reason": reason,
        "avoid_link": list(link) if link else None,
        "avoid_node": node,
    }


class Relay:
    """The relay logic of one KMS node (origin, middle node and far end)."""

    def __init__(self, service: KMSService) -> None:
        self.service = service
        self.me = service.settings.kme_id
        relay = service.settings.relay
        self.timeout_s = relay.timeout_s if relay else 10.0
        self.audit_log: Path | None = relay.audit_log if relay else None
        self.ack_url = service.settings.relay_ack_url()
        """Where the other KMEs send this node's relay completions (its peer API)."""
        self.graph: nx.Graph[str] = nx.Graph()
        self.graph.add_edges_from(relay.links if relay else [])
        self.graph.add_edges_from((self.me, p.kme_id) for p in service.settings.peers)
        self.counters = RelayCounters()
        # links without key and nodes not reached lately: (until, reason)
        self._avoid_links: dict[frozenset[str], tuple[float, str]] = {}
        self._avoid_nodes: dict[str, tuple[float, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, tuple[asyncio.Future[dict[str, Any]], list[str]]] = {}
        """Relays this node originated and waits for the completion of: (future, path)."""
        self._ack_clients: dict[tuple[str, str], list[PeerClient]] = {}
        """Idle connections to origins, by (ack_url, KME ID), for completions."""

    # --- origin ------------------------------------------------------------------------------

    def _avoided(self, now: float) -> tuple[list[str], list[tuple[str, str]], list[str]]:
        """Nodes and links avoided at ``now``, and why."""
        nodes = [n for n, (until, _) in self._avoid_nodes.items() if until > now]
        links = [tuple(sorted(k)) for k, (until, _) in self._avoid_links.items() if until > now]
        why = [self._avoid_nodes[n][1] for n in nodes]
        why += [self._avoid_links[frozenset(k)][1] for k in links]
        return nodes, [(a, b) for a, b in links], why

    def _next_path(self, target: str, now: float) -> list[str] | None:
        g = self.graph.copy()
        nodes, links, _ = self._avoided(now)
        if target in nodes:  # the far end itself was not reached lately: spend no pad on it
            return None
        g.remove_nodes_from(n for n in nodes if n not in (self.me, target))
        g.remove_edges_from(links)
        try:
            path: list[str] = nx.shortest_path(g, self.me, target)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return None
        return path

    def first_hop(self, target: str) -> str | None:
        """The neighbour the shortest usable path to ``target`` starts with (for status)."""
        path = self._next_path(target, time.monotonic())
        return path[1] if path and len(path) > 1 else None

    def _avoid(self, answer: dict[str, Any], now: float) -> None:
        reason = str(answer.get("reason"))
        link = answer.get("avoid_link")
        if isinstance(link, list) and len(link) == 2 and all(isinstance(x, str) for x in link):
            self._avoid_links[frozenset(link)] = (now + AVOID_S, reason)
        node = answer.get("avoid_node")
        if isinstance(node, str):
            self._avoid_nodes[node] = (now + AVOID_S, reason)

    async def originate(
        self, master: str, slaves: list[str], number: int, size_bits: int, target: str
    ) -> tuple[list[tuple[str, bytes]], bool]:
        """Relay ``number`` keys of ``size_bits`` to ``target`` (slaves served there); the keys
        once ``target`` committed them, and whether any hop is a simulated link."""
        deadline = time.monotonic() + self.timeout_s
        reasons: list[str] = []
        for _ in range(MAX_TRIES):
            now = time.monotonic()
            path = self._next_path(target, now)
            if path is None:
                why = sorted(set(self._avoided(now)[2]))
                reasons.append(
                    f"no path to {target} left" + (f" (lately: {', '.join(why)})" if why else "")
                )
                break
            if now >= deadline:
                reasons.append(f"relay deadline of {self.timeout_s:g} s passed")
                break
            answer, keys = await self._attempt(path, master, slaves, number, size_bits, deadline)
            if keys is not None:
                self.counters.originated += 1
                n = size_bits // 8
                cut = [(k, keys[i * n : (i + 1) * n]) for i, (k, _) in enumerate(answer["keys"])]
                return cut, bool(answer["simulated"])
            reasons.append(f"via {'-'.join(path)}: {answer['reason']}")
            self._avoid(answer, time.monotonic())
        self.counters.failed += 1
        raise KMSError(
            503, f"no relay path to KME {target} could deliver the keys: " + "; ".join(reasons)
        )

    async def _attempt(
        self,
        path: list[str],
        master: str,
        slaves: list[str],
        number: int,
        size_bits: int,
        deadline: float,
    ) -> tuple[dict[str, Any], bytes | None]:
        """One path: the relay request, then the far end's completion (or a failed one from
        the node where the request stopped)."""
        service = self.service
        first = service.link(path[1])
        if first is None:
            return fail(f"{path[1]} is not a neighbour", node=path[1]), None
        nbytes = number * size_bits // 8
        relay_id = str(uuid.uuid4())
        keys = [(str(uuid.uuid4()), size_bits) for _ in range(number)]

        def build(pad: Allocation) -> RelayRequest:
            return RelayRequest(
                relay_id, path, 1, master, slaves, keys, pad.pieces, None, pad.simulated,
                deadline - time.monotonic(), self.ack_url,
            )  # fmt: skip

        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[relay_id] = (done, path)  # before sending: the completion may be quick
        try:
            answer, alloc = await first.send_relay(nbytes, build)
            if not answer.get("ok") or alloc is None:
                return answer, None
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    result = await done
            except TimeoutError:
                return fail(f"no relay completion from {path[-1]} before the deadline"), None
        finally:
            self._waiting.pop(relay_id, None)
        if not result["ok"]:
            return result, None
        simulated = alloc.simulated or bool(result["simulated"])
        return {"keys": keys, "simulated": simulated}, alloc.material

    def on_completion(self, sender: str, relay_id: str, path: list[str],
                      answer: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """A relay completion from KME ``sender`` (authenticated by its certificate) for a
        relay this node originated: accepted from a node of the relay's path only, and a
        success from its far end only."""
        entry = self._waiting.get(relay_id)
        if entry is None:
            return fail(f"relay {relay_id} is not awaited at {self.me} (done or given up)")
        done, sent_path = entry
        if path != sent_path or sender not in sent_path[1:]:
            return fail(f"{sender} is not on the path of relay {relay_id}")
        if answer["ok"] and sender != sent_path[-1]:
            return fail(f"only {sent_path[-1]} may complete relay {relay_id}")
        if not done.done():
            done.set_result(answer)
        return {"ok": True, "reason": ""}

    async def _complete(self, req: RelayRequest, answer: dict[str, Any]) -> None:
        """Send the origin of ``req`` its completion (straight to its ``ack_url``, on a
        connection of its own); a failure to reach it only costs the origin its wait."""
        origin = req.path[0]
        body = {"relay_id": req.relay_id, "path": req.path, **answer}
        body.setdefault("simulated", False)
        key = (req.ack_url, origin)
        idle = self._ack_clients.setdefault(key, [])
        if idle:
            client = idle.pop()
        else:
            tls = self.service.settings.tls
            try:
                client = PeerClient(
                    req.ack_url,
                    tls.ca,
                    tls.cert,
                    tls.key,
                    COMPLETION_MIN_S,
                    expected_kme=origin,
                )
            except ValueError as err:
                log.warning("relay %s: bad ack_url: %s", req.relay_id, err)
                return
        try:
            await client.post(RELAY_COMPLETION_PATH, body, max(COMPLETION_MIN_S, req.ttl_s))
        except PeerError as err:
            log.warning("relay %s: completion not delivered to %s: %s", req.relay_id, origin, err)
            await client.aclose()
            return
        idle.append(client)

    def audit(self, relay_id: str, peer: str, pieces: list[Piece]) -> None:
        """Append the positions (never the bytes) of a pad this node sent to the audit log."""
        if self.audit_log is None:
            return
        line = json.dumps(
            {"relay_id": relay_id, "link": sorted([self.me, peer]),
             "pieces": [p.to_json() for p in pieces]}, separators=(",", ":"),
        )  # fmt: skip
        with self.audit_log.open("a") as handle:
            handle.write(line + "\n")

    # --- middle node and far end -------------------------------------------------------------

    async def on_requests(self, link: PeerLink, reqs: list[RelayRequest]) -> list[dict[str, Any]]:
        """Relay requests from neighbour ``link``, in the order their pads were carved: their
        pads are consumed in one transaction; each is kept here for its slaves (far end) or
        handed to the next link, and answered at once.

        The pads of the next hops are carved in that same transaction (one commit instead of
        two per hop) on every next link whose carving lock is free; a request for a busy link
        is forwarded afterwards through that link's relay batcher."""
        service = self.service
        answers: list[dict[str, Any] | None] = []
        incoming: list[IncomingPad] = []
        onward: dict[str, list[int]] = {}
        for i, req in enumerate(reqs):
            answer = None
            if req.path[req.hop] != self.me or req.path[req.hop - 1] != link.name:
                answer = fail(f"{self.me}: relay path does not pass {link.name}-{self.me} here")
            keep = None
            if req.hop == len(req.path) - 1:
                foreign = [s for s in req.slaves if s not in service.settings.saes]
                if foreign:
                    answer = fail(f"{self.me} does not serve slave SAE {foreign[0]!r}")
                keep = (req.relay_id, [(k, b, req.master, req.slaves) for k, b in req.keys])
            elif answer is None and service.link(req.path[req.hop + 1]) is not None:
                onward.setdefault(req.path[req.hop + 1], []).append(i)
            answers.append(answer)
            if answer is None:  # a refused request's pad is consumed all the same
                incoming.append(
                    IncomingPad(req.pieces, not link.leader, link.name, req.ciphertext, keep)
                )
            else:
                incoming.append(IncomingPad(req.pieces, not link.leader, link.name, req.ciphertext))
        held: list[PeerLink] = []
        try:
            for name in sorted(onward):  # one order: two handlers never wait on each other
                nxt = service.link(name)
                if nxt is not None and await nxt.hold_for_relay():
                    held.append(nxt)
            carves = [OnwardPads(nxt.name, nxt.leader, onward[nxt.name]) for nxt in held]
            hops = await service.db(service.store.relay_receive, incoming, carves)
        except BaseException:
            for nxt in held:
                nxt.release()
            raise
        carved: dict[int, Allocation | None] = {}
        for nxt, carve in zip(held, carves, strict=True):
            carved.update(carve.pads)
            self._spawn(self._send_carved(nxt, reqs, hops, carve), f"relay-on-{nxt.name}")
        out: list[dict[str, Any]] = []
        for i, (req, answer, hop) in enumerate(zip(reqs, answers, hops, strict=True)):
            if answer is not None:
                out.append(answer)
            elif hop is None:
                out.append(
                    fail(
                        f"pad on link {link.name}-{self.me} refused (bytes already consumed)",
                        link=(link.name, self.me),
                    )
                )
            elif req.hop == len(req.path) - 1:  # the far end: the keys are stored
                self.counters.terminated += 1
                simulated = req.simulated or hop.simulated
                done = {"ok": True, "reason": "", "simulated": simulated}
                self._spawn(self._complete(req, done), f"relay-done-{req.relay_id}")
                out.append({"ok": True, "reason": ""})
            elif i in carved:  # its next pad is carved already: sent by _send_carved
                out.append({"ok": True, "reason": ""})
            else:
                out.append(self._forward(req, hop.key, req.simulated or hop.simulated))
        return out

    async def _send_carved(
        self,
        nxt: PeerLink,
        reqs: list[RelayRequest],
        hops: list[RelayHop | None],
        carve: OnwardPads,
    ) -> None:
        """Send the next hop of the requests whose pads :meth:`on_requests` carved on link
        ``nxt`` (its carving lock is held until the peer answered), then tell the origin of
        each one that failed."""
        sent: list[tuple[RelayRequest, RelayJob]] = []
        pads: list[Allocation | None] = []
        try:
            loop = asyncio.get_running_loop()
            for i in carve.requests:
                hop = hops[i]
                if hop is None:
                    continue
                req = reqs[i]
                build = self._onward_builder(req, hop.key, req.simulated or hop.simulated)
                sent.append((req, RelayJob(req.nbytes, build, loop.create_future())))
                pads.append(carve.pads.get(i))
            if sent:
                await nxt.post_relays([job for _, job in sent], pads)
        finally:
            nxt.release()
        for req, job in sent:
            answer, _ = job.future.result() if job.future.done() else (fail("not sent"), None)
            await self._forwarded(req, answer)

    async def _forwarded(self, req: RelayRequest, answer: dict[str, Any]) -> None:
        """The next node's answer to the forward of ``req``: counted, or sent to the origin as
        a failed completion (the pad here is burned)."""
        if answer.get("ok"):
            self.counters.forwarded += 1
        else:
            await self._complete(req, answer)

    @staticmethod
    def _onward_builder(
        req: RelayRequest, key: bytes, simulated: bool
    ) -> Callable[[Allocation], RelayRequest]:
        """The next hop's request of ``req`` once its pad is carved (key one-time padded; its
        deadline a little earlier than this hop's)."""
        deadline = time.monotonic() + req.ttl_s - HOP_MARGIN_S

        def build(pad: Allocation) -> RelayRequest:
            return RelayRequest(
                req.relay_id, req.path, req.hop + 1, req.master, req.slaves, req.keys,
                pad.pieces, xor(key, pad.material), simulated or pad.simulated,
                deadline - time.monotonic(), req.ack_url,
            )  # fmt: skip

        return build

    def _forward(self, req: RelayRequest, key: bytes, simulated: bool) -> dict[str, Any]:
        """Hand a relay request on to the next link (in the background) and answer it; if the
        next hop fails, tell the origin (its pad here is burned)."""
        nxt = req.path[req.hop + 1]
        out = self.service.link(nxt)
        if out is None:
            return fail(f"{self.me} has no QKD link to {nxt}", link=(self.me, nxt))
        build = self._onward_builder(req, key, simulated)

        async def run() -> None:
            answer, _ = await out.send_relay(req.nbytes, build)
            await self._forwarded(req, answer)

        self._spawn(run(), f"relay-{req.relay_id}")
        return {"ok": True, "reason": ""}

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel the forwards and completions still being sent; close their connections."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for clients in self._ack_clients.values():
            for client in clients:
                await client.aclose()
        self._ack_clients.clear()
