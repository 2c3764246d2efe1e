"""TLS 1.3 with an external pre-shared key (RFC 8446 §2.2, §4.2.11; RFC 9258 for importing
external PSKs): the QKD key is the PSK and its key ID the PSK identity.

``qdnet app tls-psk ... -- COMMAND`` runs COMMAND with the key in its environment
(``QDNET_PSK_HEX``, ``QDNET_PSK_IDENTITY``); OpenSSL's ``s_server``/``s_client`` take them as
``-psk "$QDNET_PSK_HEX" -psk_identity "$QDNET_PSK_IDENTITY"``. OpenSSL binds a ``-psk`` key to
SHA-256, so use a SHA-256 suite (``TLS_AES_128_GCM_SHA256`` or ``TLS_CHACHA20_POLY1305_SHA256``).
With ``--interval`` the command is restarted with each new key. Note that OpenSSL takes the key
on its command line, where other local users can read it in the process list: run such commands
on a host you trust, or use :func:`external_psk` and pass the key in memory.

Python 3.11's ``ssl`` module has no external-PSK API, so :func:`external_psk` returns the
identity and key for programs that set the PSK themselves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field

from qdnet.apps.keys import AppKeys, KMSAccess
from qdnet.apps.rotation import ApplyError

PSK_ENV = "QDNET_PSK_HEX"
IDENTITY_ENV = "QDNET_PSK_IDENTITY"
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class ExternalPSK:
    """A TLS 1.3 external PSK: ``identity`` is the KMS key ID (``key`` never shown in repr)."""

    identity: str
    key: bytes = field(repr=False)


def external_psk(access: KMSAccess, identity: str | None = None) -> ExternalPSK:
    """A new PSK shared with ``access.peer_sae`` (``identity`` None: this side is the master
    SAE, send the identity to the peer), or the peer's PSK ``identity`` (this side is the slave).
    """
    keys = AppKeys(access)
    try:
        k = keys.new_key() if identity is None else keys.key_by_id(identity)
    finally:
        keys.close()
    return ExternalPSK(k.key_id, k.key)


class CommandSink:
    """Runs ``command`` with the current PSK in its environment; restarts it on a new key."""

    def __init__(self, command: list[str]) -> None:
        if not command:
            raise ValueError("tls-psk: give the command to run after --")
        self.command = command
        self.exited = threading.Event()
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self._lock:
            if self._proc is proc:  # it ended by itself (not restarted or stopped by us)
                self.returncode = code
                self.exited.set()

    def apply(self, key: bytes, key_id: str) -> None:
        """(Re)start the command with ``key`` and ``key_id`` in its environment."""
        env = {**os.environ, PSK_ENV: key.hex(), IDENTITY_ENV: key_id}
        with self._lock:
            self._terminate()
            try:
                proc = subprocess.Popen(self.command, env=env, start_new_session=True)
            except OSError as error:
                raise ApplyError(f"tls-psk: cannot run {self.command[0]}: {error}") from None
            self._proc = proc
        threading.Thread(target=self._watch, args=(proc,), daemon=True).start()

    def close(self) -> None:
        """Fail closed: stop the command."""
        with self._lock:
            self._terminate()

    def stop(self) -> None:
        """Stop the command if it still runs."""
        self.close()
