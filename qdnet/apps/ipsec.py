"""IPsec with IKEv2 post-quantum preshared keys (RFC 8784) through strongSwan's VICI interface.

RFC 8784 mixes a PPK into the IKE SA's keys (SK_d, SK_pi, SK_pr, §3), so the SA and the Child
SAs it creates stay secret against an attacker who later breaks (EC)DH. A PPK binds only the IKE
SA that authenticated with it, so each rotation loads the new key and *re-authenticates*:

* both ends load the key with VICI ``load-shared`` (type ``PPK``, owner = the key ID, which is
  the PPK_ID) under one fixed ID per connection, so the previous PPK is replaced, not kept;
* both ends reload the connection with ``ppk_id`` = the key ID and ``ppk_required = yes``
  (strongSwan checks the received PPK_ID against the configured one);
* the responder does this first (the control channel's answer says it is done), then the
  initiator re-authenticates make-before-break: it initiates a new IKE SA with the reloaded
  connection (VICI ``rekey`` with ``reauth`` would reuse the old SA's configuration, hence the
  old PPK_ID) and then deletes the old IKE SA with its Child SAs.

The connection is given as the ``connections.<name>`` section of swanctl.conf written as YAML
(the same keys VICI ``load-conn`` takes). Fail closed terminates the IKE SA and unloads the
connection; the next key brings it back.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import vici
import yaml

from qdnet.apps.rotation import ApplyError

VICI_TIMEOUT_S = 30.0


def parse_vici_uri(uri: str) -> str:
    """The socket path of a ``unix://PATH`` VICI URI (strongSwan's own syntax)."""
    if not uri.startswith("unix://") or len(uri) <= len("unix://"):
        raise ValueError(f"--vici {uri!r}: expected unix:///path/to/charon.vici")
    return uri[len("unix://") :]


def load_connection(path: str | Path, name: str) -> dict[str, Any]:
    """Connection ``name`` from a YAML file (a mapping of connection names to settings)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"--connection-file {path}: not YAML ({error})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(name), dict):
        raise ValueError(f"--connection-file {path}: no mapping for connection {name!r}")
    conn = doc[name]
    children = conn.get("children")
    if not isinstance(children, dict) or not children:
        raise ValueError(f"--connection-file {path}: connection {name!r} needs children")
    if str(conn.get("version", 2)) != "2":
        raise ValueError(f"--connection-file {path}: PPKs need IKEv2 (version: 2)")
    return dict(_as_vici(conn))


def _as_vici(value: Any) -> Any:
    """VICI messages hold strings, lists and sections only: numbers and booleans as text."""
    if isinstance(value, dict):
        return {str(k): _as_vici(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_vici(v) for v in value]
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class IPsecSink:
    """Loads each key as the PPK of one strongSwan connection and (re)authenticates it."""

    def __init__(self, vici_uri: str, name: str, connection: dict[str, Any], initiator: bool):
        self.socket_path = parse_vici_uri(vici_uri)
        self.name = name
        self.connection = connection
        self.initiator = initiator
        self.child = next(iter(connection["children"]))
        self.secret_id = f"qdnet-ppk-{name}"

    def _session(self) -> tuple[vici.Session, socket.socket]:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(VICI_TIMEOUT_S)
        try:
            sock.connect(self.socket_path)
        except OSError as error:
            sock.close()
            raise ApplyError(f"VICI {self.socket_path}: {error}") from None
        return vici.Session(sock), sock

    def _ike_sas(self, session: vici.Session) -> list[dict[str, Any]]:
        return [sa[self.name] for sa in session.list_sas({"ike": self.name}) if self.name in sa]

    def apply(self, key: bytes, key_id: str) -> None:
        """Load the PPK and the connection with its PPK_ID; the initiator (re)authenticates."""
        session, sock = self._session()
        try:
            session.load_shared(
                {"id": self.secret_id, "type": "PPK", "data": key, "owners": [key_id]}
            )
            conn = copy.deepcopy(self.connection)
            conn.update({"ppk_id": key_id, "ppk_required": "yes"})
            session.load_conn({self.name: conn})
            if not self.initiator:
                return
            # Make before break: a new IKE SA with the new connection (a "reauth" rekey would
            # reuse the old SA's configuration, hence its PPK_ID), then delete the old ones.
            old = [sa["uniqueid"] for sa in self._ike_sas(session)]
            timeout_ms = int(VICI_TIMEOUT_S * 1000) - 1000
            for _ in session.initiate(
                {"child": self.child, "ike": self.name, "timeout": timeout_ms}
            ):
                pass
            for unique_id in old:
                for _ in session.terminate({"ike-id": unique_id, "timeout": timeout_ms}):
                    pass
        except (vici.exception.CommandException, vici.exception.SessionException) as error:
            raise ApplyError(f"strongSwan {self.name}: {error}") from None
        except OSError as error:
            raise ApplyError(f"VICI {self.socket_path}: {error}") from None
        finally:
            sock.close()

    def close(self) -> None:
        """Fail closed: terminate the IKE SA, unload the connection and the PPK."""
        session, sock = self._session()
        try:
            if self._ike_sas(session):
                for _ in session.terminate({"ike": self.name, "force": "yes", "timeout": 5000}):
                    pass
            session.unload_conn({"name": self.name})
            session.unload_shared({"id": self.secret_id})
        except (vici.exception.CommandException, vici.exception.SessionException) as error:
            raise ApplyError(f"strongSwan {self.name}: {error}") from None
        finally:
            sock.close()

    def stop(self) -> None:
        """Nothing to release: charon and its SAs belong to the user."""
