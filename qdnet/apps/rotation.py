"""Key rotation between the two ends of an application (the job Arnika does for WireGuard).

Every ``interval_s`` the initiator asks its KME for a new key shared with the peer SAE
(``enc_keys``), sends the key ID over the authenticated control channel, and the responder
fetches the key by its ID from its own KME (``dec_keys``), hands it to its application and
answers; the initiator then hands its copy to its own application. The two ends change keys
within one control round trip of each other, and the keys themselves never cross the channel.

When no key arrives in time (KME down, pool empty, peer silent) the rotation is *missed*; after
``max_missed`` missed rotations in a row the application is either torn down (``close``: fail
closed, the default) or left on its last key (``keep``: fail open), and the log says which. The
next key that arrives restores it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from qdnet.apps.control import Channel, ChannelAuth, ChannelError, Listener, connect
from qdnet.apps.hybrid import HybridResponder, combine, encapsulate
from qdnet.apps.keys import AppKeys, KeyUnavailableError

log = logging.getLogger("qdnet.apps")

Role = Literal["initiator", "responder"]
OnMissed = Literal["close", "keep"]
#: WireGuard's REKEY_AFTER_TIME (whitepaper §6.1): the default rotation interval.
DEFAULT_INTERVAL_S = 120.0
_MAX_WAIT_S = 3600.0
#: What a key ID may look like (ETSI GS QKD 014 key IDs are UUIDs) before it reaches the KMS
#: or a log line.
KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Until the first key is in use, the initiator retries this often (not only every interval).
FIRST_KEY_RETRY_S = 1.0


class ApplyError(RuntimeError):
    """The application refused or failed to take a key (the reason is in the text)."""


class KeySink(Protocol):
    """What an application does with keys (WireGuard, strongSwan, a TLS program)."""

    def apply(self, key: bytes, key_id: str) -> None:
        """Start using ``key`` (restoring the application if it was closed)."""

    def close(self) -> None:
        """Fail closed: stop protecting traffic with the old key."""

    def stop(self) -> None:
        """The rotation ends (release what the sink started)."""


@dataclass(frozen=True)
class RotationSettings:
    """One end's rotation settings (see the module docstring)."""

    role: Role
    interval_s: float = DEFAULT_INTERVAL_S
    max_missed: int = 3
    on_missed: OnMissed = "close"
    hybrid: bool = False
    peer_host: str = ""
    peer_port: int = 0
    listen_host: str = "0.0.0.0"
    listen_port: int = 9400

    def __post_init__(self) -> None:
        if self.role not in ("initiator", "responder"):
            raise ValueError(f"--role {self.role!r}: expected initiator or responder")
        if self.on_missed not in ("close", "keep"):
            raise ValueError(f"--on-missed-key {self.on_missed!r}: expected close or keep")
        if not self.interval_s > 0:  # math.inf: one key, no rotation
            raise ValueError(f"--interval {self.interval_s}: must be > 0 s")
        if self.max_missed < 1:
            raise ValueError(f"--max-missed {self.max_missed}: must be >= 1")
        if self.role == "initiator" and not (self.peer_host and 0 < self.peer_port < 65536):
            raise ValueError("--peer-control HOST:PORT is required for the initiator")

    @property
    def grace_s(self) -> float:
        """How late the responder lets a rotation be before counting it missed."""
        return min(max(self.interval_s / 2, 1.0), 30.0)


class EventLog:
    """Optional JSON-lines record of rotations (no key material), for operators and tests."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def write(self, event: str, **fields: Any) -> None:
        if self._path is None:
            return
        line = json.dumps({"t": time.time(), "event": event, **fields})
        with open(self._path, "a") as out:
            out.write(line + "\n")


class Rotator:
    """Runs one end's rotations until ``stop`` is set."""

    def __init__(
        self,
        settings: RotationSettings,
        keys: AppKeys,
        auth: ChannelAuth,
        sink: KeySink,
        events: EventLog | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.auth = auth
        self.sink = sink
        self.events = events or EventLog(None)
        self.rotations = 0
        self.missed = 0
        self.closed = False
        self._channel: Channel | None = None
        self._peer_ek: bytes | None = None
        self._hybrid = (
            HybridResponder() if settings.hybrid and settings.role == "responder" else None
        )

    # -- shared -------------------------------------------------------------------------
    def _applied(self, key: bytes, key_id: str, started: float, kms_s: float) -> None:
        """Hand the key to the application; record the timings (``started``: perf_counter at
        the start of this side's rotation, ``kms_s``: its KMS call)."""
        applying = time.perf_counter()
        self.sink.apply(key, key_id)
        done = time.perf_counter()
        timing = {"kms_s": kms_s, "apply_s": done - applying, "rotation_s": done - started}
        self.rotations += 1
        if self.closed:
            log.warning(
                "key %s arrived: %s restored after %d missed rotations",
                key_id,
                self.settings.role,
                self.missed,
            )
        self.closed = False
        self.missed = 0
        log.info(
            "rotation %d: key %s in use%s",
            self.rotations,
            key_id,
            " (hybrid QKD + ML-KEM-768)" if self.settings.hybrid else "",
        )
        self.events.write(
            "applied", rotation=self.rotations, key_id=key_id, hybrid=self.settings.hybrid, **timing
        )

    def _miss(self, reason: str) -> None:
        self.missed += 1
        log.warning(
            "rotation missed (%d in a row, limit %d): %s",
            self.missed,
            self.settings.max_missed,
            reason,
        )
        self.events.write("missed", missed=self.missed, reason=reason)
        if self.missed < self.settings.max_missed:
            return
        if self.settings.on_missed == "close":
            if not self.closed:
                try:
                    self.sink.close()
                except ApplyError as error:  # tried again at the next missed rotation
                    log.error("fail closed: could not tear down: %s", error)
                    return
                self.closed = True
                log.error(
                    "fail closed: %d rotations missed, torn down until a key arrives", self.missed
                )
                self.events.write("closed", missed=self.missed)
        elif self.missed == self.settings.max_missed:
            log.error(
                "fail open: %d rotations missed, keeping the previous key (--on-missed-key keep)",
                self.missed,
            )
            self.events.write("kept", missed=self.missed)

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def run(self, stop: threading.Event) -> None:
        """Rotate until ``stop`` is set, then release the sink and the connections."""
        try:
            if self.settings.role == "initiator":
                self._run_initiator(stop)
            else:
                self._run_responder(stop)
        finally:
            self._drop_channel()
            self.sink.stop()

    # -- initiator ----------------------------------------------------------------------
    def _open_channel(self) -> Channel:
        if self._channel is None:
            s = self.settings
            channel = connect(s.peer_host, s.peer_port, self.auth)
            try:
                hello = channel.recv(10.0)
                if hello.get("type") != "hello" or bool(hello.get("hybrid")) != s.hybrid:
                    raise ChannelError(
                        f"hybrid option differs: peer {bool(hello.get('hybrid'))}, here {s.hybrid}"
                    )
                self._peer_ek = bytes.fromhex(hello["ek"]) if s.hybrid else None
            except BaseException:
                channel.close()
                raise
            self._channel = channel
        return self._channel

    def _rotate_once(self) -> None:
        start = time.perf_counter()
        channel = self._open_channel()
        asked = time.perf_counter()
        delivered = self.keys.new_key()
        kms_s = time.perf_counter() - asked
        key, message = delivered.key, {"type": "rotate", "key_id": delivered.key_id}
        if self.settings.hybrid:
            assert self._peer_ek is not None
            secret, ct = encapsulate(self._peer_ek)
            key = combine(key, secret, delivered.key_id, self._peer_ek, ct)
            message["ct"] = ct.hex()
        channel.send(message)
        reply = channel.recv(self.keys.access.timeout_s + 10.0)
        if reply.get("type") != "applied" or reply.get("key_id") != delivered.key_id:
            raise KeyUnavailableError(
                f"peer did not take key {delivered.key_id}: "
                f"{reply.get('reason', reply.get('type'))}"
            )
        if self.settings.hybrid:
            self._peer_ek = bytes.fromhex(reply["ek"])
        self._applied(key, delivered.key_id, start, kms_s)

    def _tell_missed(self, reason: str) -> None:
        """Tell the responder why this rotation brought no key (it counts the miss now)."""
        if self._channel is None:
            return
        try:
            self._channel.send({"type": "missed", "reason": reason})
        except OSError:
            self._drop_channel()

    def _run_initiator(self, stop: threading.Event) -> None:
        next_at = time.monotonic()
        while not stop.wait(min(max(0.0, next_at - time.monotonic()), _MAX_WAIT_S)):
            if time.monotonic() < next_at:
                continue
            next_at += self.settings.interval_s
            try:
                self._rotate_once()
            except (KeyUnavailableError, ApplyError) as error:
                self._miss(str(error))
                self._tell_missed(str(error))
            except (OSError, ValueError, KeyError) as error:
                # OSError covers ChannelError, TimeoutError and refused connections.
                self._drop_channel()
                self._miss(str(error) or type(error).__name__)
            if self.rotations == 0:  # no key yet (e.g. the responder is starting): retry soon
                next_at = min(next_at, time.monotonic() + FIRST_KEY_RETRY_S)
            if next_at < time.monotonic():  # a slow rotation: do not catch up in a burst
                next_at = time.monotonic()

    # -- responder ----------------------------------------------------------------------
    def _hello(self, channel: Channel) -> None:
        ek = self._hybrid.renew().hex() if self._hybrid else None
        channel.send({"type": "hello", "hybrid": self.settings.hybrid, "ek": ek})

    def _serve(self, channel: Channel, message: dict[str, Any]) -> None:
        if message.get("type") != "rotate" or not isinstance(message.get("key_id"), str):
            raise ChannelError(f"unexpected control message {str(message.get('type'))[:40]!r}")
        if not KEY_ID.fullmatch(message["key_id"]):  # ETSI key IDs are UUIDs: nothing else
            raise ChannelError("malformed key ID on the control channel")
        key_id = message["key_id"]
        start = time.perf_counter()
        try:
            delivered = self.keys.key_by_id(key_id)
            key = delivered.key
            if self._hybrid is not None:
                key = self._hybrid.mix(key, key_id, bytes.fromhex(str(message.get("ct", ""))))
            kms_s = time.perf_counter() - start
            self._applied(key, key_id, start, kms_s)
        except (KeyUnavailableError, ApplyError, ValueError) as error:
            channel.send({"type": "failed", "key_id": key_id, "reason": str(error)})
            raise KeyUnavailableError(str(error)) from None
        ek = self._hybrid.renew().hex() if self._hybrid else None
        channel.send({"type": "applied", "key_id": key_id, "ek": ek})

    def _accept(self, listener: Listener, timeout_s: float) -> Channel | None:
        """An authenticated connection that got the hello, or None."""
        try:
            channel = listener.accept(timeout_s)
            if channel is not None:
                self._hello(channel)
            return channel
        except OSError as error:  # refused (authentication) or dropped during the hello
            log.warning("control channel: connection refused: %s", error)
            return None

    def _run_responder(self, stop: threading.Event) -> None:
        s = self.settings
        listener = Listener(s.listen_host, s.listen_port, self.auth)
        log.info("control channel listening on %s:%d", s.listen_host, listener.port)
        deadline = time.monotonic() + s.interval_s + s.grace_s
        try:
            while not stop.is_set():
                if time.monotonic() > deadline:
                    self._miss(f"no key from the initiator in {s.interval_s + s.grace_s:g} s")
                    deadline = time.monotonic() + s.interval_s
                # A new authenticated connection replaces the current one (the initiator may
                # have restarted, or its host vanished without closing the old connection).
                fresh = self._accept(listener, 0.2 if self._channel is None else 0.0)
                if fresh is not None:
                    self._drop_channel()
                    self._channel = fresh
                    continue
                if self._channel is None:
                    continue
                try:
                    message = self._channel.recv(0.2)
                except TimeoutError:
                    continue
                except OSError as error:  # ChannelError, a dropped connection
                    log.warning("control channel: %s", error)
                    self._drop_channel()
                    continue
                if message.get("type") == "missed":
                    self._miss(f"initiator: {str(message.get('reason', ''))[:300]}")
                    deadline = time.monotonic() + s.interval_s + s.grace_s
                    continue
                try:
                    self._serve(self._channel, message)
                    deadline = time.monotonic() + s.interval_s + s.grace_s
                except KeyUnavailableError as error:
                    self._miss(str(error))
                except OSError as error:
                    log.warning("control channel: %s", error)
                    self._drop_channel()
        finally:
            listener.close()
