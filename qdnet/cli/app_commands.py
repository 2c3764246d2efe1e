"""``qdnet app wireguard|ipsec|tls-psk``: applications keyed by the KMS (see ``qdnet.apps``)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer

from qdnet.cli.common import clean_errors

_SHARED_HELP = {
    "kms": "URL of this SAE's KME, e.g. https://10.0.0.1:8443",
    "sae": "this application's SAE ID",
    "peer_sae": "the peer application's SAE ID",
    "role": "initiator (asks the KMS for keys) or responder (listens on --listen)",
    "peer_control": "initiator: the responder's control channel HOST:PORT",
    "listen": "responder: HOST:PORT of the control channel (default 0.0.0.0:9400)",
    "pki": "folder of `qdnet pki init` (ca.crt, <sae>.crt/.key)",
    "control_secret": "file with a MAC secret (>= 32 bytes) for the control channel "
    "instead of mutual TLS",
    "on_missed_key": "after --max-missed missed rotations: close (fail closed) or keep",
    "hybrid": "mix an ML-KEM-768 secret into each key (HKDF); both ends must agree",
    "events": "append one JSON line per rotation event (no key material) to this file",
}


def _run(opts: Any, sink: Any, stop_when: threading.Event | None = None) -> None:
    """Rotate until SIGINT/SIGTERM (or ``stop_when``), logging to stderr."""
    from qdnet.apps.keys import AppKeys
    from qdnet.apps.rotation import EventLog, Rotator

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per KMS request otherwise
    keys = AppKeys(opts.access)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if stop_when is not None:

        def relay() -> None:
            stop_when.wait()
            stop.set()

        threading.Thread(target=relay, daemon=True).start()
    try:
        Rotator(opts.rotation, keys, opts.auth, sink, EventLog(opts.events)).run(stop)
    finally:
        keys.close()


def register(app: typer.Typer) -> None:
    """Add the ``app`` command group to the root app (qdnet.apps loads when a command runs)."""
    app_app = typer.Typer(
        help="Applications keyed by the KMS: WireGuard, IPsec (IKEv2 PPK), TLS 1.3 PSK.",
        no_args_is_help=True,
    )
    app.add_typer(app_app, name="app")

    def shared(
        config: Path | None,
        given: dict[str, Any],
        extra: set[str],
        default_interval: str | None,
    ) -> tuple[Any, dict[str, Any]]:
        from qdnet.apps.options import COMMON_NAMES, app_options, load_options

        opts = load_options(config, given, COMMON_NAMES | extra)
        return app_options(opts, default_interval), opts

    Opt = typer.Option

    @app_app.command("wireguard")
    @clean_errors
    def wireguard(
        interface: str = Opt(None, help="WireGuard interface, e.g. wg0"),
        peer_public_key: str = Opt(None, help="the peer's WireGuard public key (base64)"),
        kms: str = Opt(None, help=_SHARED_HELP["kms"]),
        sae: str = Opt(None, help=_SHARED_HELP["sae"]),
        peer_sae: str = Opt(None, help=_SHARED_HELP["peer_sae"]),
        role: str = Opt(None, help=_SHARED_HELP["role"]),
        peer_control: str = Opt(None, help=_SHARED_HELP["peer_control"]),
        listen: str = Opt(None, help=_SHARED_HELP["listen"]),
        pki: Path = Opt(None, help=_SHARED_HELP["pki"]),
        ca: Path = Opt(None, help="CA certificate (instead of --pki)"),
        cert: Path = Opt(None, help="this SAE's certificate (instead of --pki)"),
        key: Path = Opt(None, help="this SAE's private key (instead of --pki)"),
        control_secret: Path = Opt(None, help=_SHARED_HELP["control_secret"]),
        interval: str = Opt(None, help="rotation interval (default 120s, WireGuard's rekey time)"),
        on_missed_key: str = Opt(None, help=_SHARED_HELP["on_missed_key"]),
        max_missed: int = Opt(None, help="missed rotations before --on-missed-key (default 3)"),
        hybrid: bool = Opt(None, "--hybrid/--no-hybrid", help=_SHARED_HELP["hybrid"]),
        events: Path = Opt(None, help=_SHARED_HELP["events"]),
        config: Path = Opt(None, help="YAML file with the same option names"),
    ) -> None:
        """Rotate a WireGuard peer's preshared key with QKD keys (Arnika's job)."""
        given = dict(locals())
        from qdnet.apps.wireguard import WireGuardSink

        given.pop("config")
        names = {"interface", "peer-public-key"}
        opts, raw = shared(config, _dashed(given), names, "120s")
        for name in sorted(names):
            if not raw.get(name):
                raise ValueError(f"--{name} is required")
        _run(opts, WireGuardSink(str(raw["interface"]), str(raw["peer-public-key"])))

    @app_app.command("ipsec")
    @clean_errors
    def ipsec(
        connection: str = Opt(None, help="strongSwan connection name"),
        connection_file: Path = Opt(
            None, help="YAML: connection name -> swanctl.conf settings (ppk_id is set here)"
        ),
        vici: str = Opt(None, help="charon's VICI socket (default unix:///var/run/charon.vici)"),
        kms: str = Opt(None, help=_SHARED_HELP["kms"]),
        sae: str = Opt(None, help=_SHARED_HELP["sae"]),
        peer_sae: str = Opt(None, help=_SHARED_HELP["peer_sae"]),
        role: str = Opt(None, help=_SHARED_HELP["role"]),
        peer_control: str = Opt(None, help=_SHARED_HELP["peer_control"]),
        listen: str = Opt(None, help=_SHARED_HELP["listen"]),
        pki: Path = Opt(None, help=_SHARED_HELP["pki"]),
        ca: Path = Opt(None, help="CA certificate (instead of --pki)"),
        cert: Path = Opt(None, help="this SAE's certificate (instead of --pki)"),
        key: Path = Opt(None, help="this SAE's private key (instead of --pki)"),
        control_secret: Path = Opt(None, help=_SHARED_HELP["control_secret"]),
        interval: str = Opt(None, help="re-authentication interval (default 1h)"),
        on_missed_key: str = Opt(None, help=_SHARED_HELP["on_missed_key"]),
        max_missed: int = Opt(None, help="missed rotations before --on-missed-key (default 3)"),
        hybrid: bool = Opt(None, "--hybrid/--no-hybrid", help=_SHARED_HELP["hybrid"]),
        events: Path = Opt(None, help=_SHARED_HELP["events"]),
        config: Path = Opt(None, help="YAML file with the same option names"),
    ) -> None:
        """Key an IKEv2 connection with RFC 8784 PPKs from the KMS (strongSwan, VICI)."""
        given = dict(locals())
        from qdnet.apps.ipsec import IPsecSink, load_connection

        given.pop("config")
        names = {"connection", "connection-file", "vici"}
        opts, raw = shared(config, _dashed(given), names, "1h")
        for name in ("connection", "connection-file"):
            if not raw.get(name):
                raise ValueError(f"--{name} is required")
        conn = load_connection(Path(raw["connection-file"]), str(raw["connection"]))
        vici_uri = str(raw.get("vici", "unix:///var/run/charon.vici"))
        initiator = opts.rotation.role == "initiator"
        _run(opts, IPsecSink(vici_uri, str(raw["connection"]), conn, initiator))

    @app_app.command(
        "tls-psk", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )
    @clean_errors
    def tls_psk(
        command: list[str] = typer.Argument(None, help="-- COMMAND ARGS (gets QDNET_PSK_HEX)"),
        kms: str = Opt(None, help=_SHARED_HELP["kms"]),
        sae: str = Opt(None, help=_SHARED_HELP["sae"]),
        peer_sae: str = Opt(None, help=_SHARED_HELP["peer_sae"]),
        role: str = Opt(None, help=_SHARED_HELP["role"]),
        peer_control: str = Opt(None, help=_SHARED_HELP["peer_control"]),
        listen: str = Opt(None, help=_SHARED_HELP["listen"]),
        pki: Path = Opt(None, help=_SHARED_HELP["pki"]),
        ca: Path = Opt(None, help="CA certificate (instead of --pki)"),
        cert: Path = Opt(None, help="this SAE's certificate (instead of --pki)"),
        key: Path = Opt(None, help="this SAE's private key (instead of --pki)"),
        control_secret: Path = Opt(None, help=_SHARED_HELP["control_secret"]),
        interval: str = Opt(
            None, help="restart COMMAND with a new key this often (default: never)"
        ),
        on_missed_key: str = Opt(None, help=_SHARED_HELP["on_missed_key"]),
        max_missed: int = Opt(None, help="missed rotations before --on-missed-key (default 3)"),
        hybrid: bool = Opt(None, "--hybrid/--no-hybrid", help=_SHARED_HELP["hybrid"]),
        events: Path = Opt(None, help=_SHARED_HELP["events"]),
        config: Path = Opt(None, help="YAML file with the same option names"),
    ) -> None:
        """Run COMMAND with a QKD key as TLS 1.3 external PSK (QDNET_PSK_HEX, QDNET_PSK_IDENTITY).

        Exits with COMMAND's exit status once it ends by itself.
        """
        given = dict(locals())
        from qdnet.apps.tls_psk import CommandSink

        given.pop("config")
        given.pop("command")
        opts, _raw = shared(config, _dashed(given), set(), None)
        sink = CommandSink(list(command or []))
        _run(opts, sink, stop_when=sink.exited)
        raise typer.Exit(sink.returncode if sink.returncode is not None else 1)


def _dashed(given: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("_", "-"): v for k, v in given.items()}
