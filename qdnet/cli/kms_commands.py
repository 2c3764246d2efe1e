"""Key-management commands: ``qdnet pki init`` and ``qdnet kms serve|ingest|pool``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    """Add the ``pki`` and ``kms`` command groups to the root app."""
    pki_app = typer.Typer(help="Certificates for KMEs and SAEs.", no_args_is_help=True)
    kms_app = typer.Typer(
        help="Key management: ETSI GS QKD 014 over mutual TLS.", no_args_is_help=True
    )
    app.add_typer(pki_app, name="pki")
    app.add_typer(kms_app, name="kms")

    @pki_app.command("init")
    def pki_init(
        folder: Path = typer.Argument(..., help="folder for ca.crt and <name>.crt/.key"),
        kme: list[str] = typer.Option([], "--kme", help="KME ID (repeat)"),
        sae: list[str] = typer.Option([], "--sae", help="SAE ID (repeat)"),
        host: list[str] = typer.Option(
            ["localhost", "127.0.0.1"], "--host", help="DNS name or IP in KME certificates"
        ),
        days: int = typer.Option(825, help="validity of KME and SAE certificates"),
        force: bool = typer.Option(False, help="overwrite an existing CA"),
    ) -> None:
        """Create a CA and the KME and SAE certificates (EC P-256, SAN 127.0.0.1 and localhost)."""
        from qdnet.kms.pki import create_pki

        if (folder / "ca.key").exists() and not force:
            typer.echo(f"error: {folder}/ca.key exists (use --force to replace the PKI)", err=True)
            raise typer.Exit(2)
        if not kme and not sae:
            typer.echo("error: name at least one --kme or --sae", err=True)
            raise typer.Exit(2)
        try:
            pki = create_pki(folder, kme, sae, hosts=tuple(host), days=days)
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"CA: {pki.ca_cert}")
        for name in [*kme, *sae]:
            cred = pki.credential(name)
            typer.echo(f"{name}: {cred.cert} {cred.key}")

    def _settings(path: Path) -> object:
        from qdnet.kms.settings import SettingsError, load_settings

        try:
            return load_settings(path)
        except SettingsError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    @kms_app.command("serve")
    def kms_serve(settings_file: Path = typer.Argument(..., help="KMS settings (YAML)")) -> None:
        """Serve the ETSI GS QKD 014 API and the KMS-to-KMS API (Ctrl-C stops)."""
        import logging

        from qdnet.kms.server import run_kms
        from qdnet.kms.settings import KMSSettings

        settings = _settings(settings_file)
        assert isinstance(settings, KMSSettings)
        logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
        typer.echo(
            f"KME {settings.kme_id}: SAE API https://{settings.listen.host}:{settings.listen.port}"
            f", peer API https://{settings.peer_listen.host}:{settings.peer_listen.port}"
            + "".join(f" (peer {p.kme_id} at {p.url})" for p in settings.peers)
        )
        run_kms(settings)

    @kms_app.command("ingest")
    def kms_ingest(
        settings_file: Path = typer.Argument(..., help="KMS settings (YAML)"),
        folder: Path = typer.Argument(..., help="folder of key blocks (<block_id>.json)"),
        remove: bool = typer.Option(False, help="delete block files once stored"),
        peer: str = typer.Option(None, help="the link's peer KME (needed with several peers)"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Store key blocks from post-processing (idempotent; the server pairs them with peer)."""
        from qdnet.kms.link import ingest
        from qdnet.kms.settings import KMSSettings

        settings = _settings(settings_file)
        assert isinstance(settings, KMSSettings)
        if not folder.is_dir():
            typer.echo(f"error: {folder} is not a folder", err=True)
            raise typer.Exit(2)
        try:
            rep = ingest(settings, folder, remove=remove, peer=peer)
        except ValueError as err:
            typer.echo(f"error: --peer: {err}", err=True)
            raise typer.Exit(2) from None
        out = {
            "ingested": rep.ingested,
            "already_known": rep.already_known,
            "deferred": rep.deferred,
        }
        if as_json:
            typer.echo(json.dumps(out))
        else:
            typer.echo(
                f"{rep.ingested} new block(s), {rep.already_known} already known, "
                f"{rep.deferred} left for later (pool full)"
            )

    @kms_app.command("pool")
    def kms_pool(
        settings_file: Path = typer.Argument(..., help="KMS settings (YAML)"),
        link: str | None = typer.Option(
            None, "--link", help="only the pool of the link to this peer KME"
        ),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Summary of the key pools, the node's and each link's (no key material)."""
        from qdnet.kms.service import open_store
        from qdnet.kms.settings import KMSSettings

        settings = _settings(settings_file)
        assert isinstance(settings, KMSSettings)
        peers = [p.kme_id for p in settings.peers]
        if link is not None and link not in peers:
            typer.echo(
                f"error: --link: {link!r} is not a peer of {settings.kme_id} "
                f"(peers: {', '.join(peers)})",
                err=True,
            )
            raise typer.Exit(2)
        store = open_store(settings)
        try:
            summary: dict[str, Any] = store.pool_summary(link)
            if link is None:
                summary["links"] = {p: store.pool_summary(p) for p in peers}
        finally:
            store.close()
        if as_json:
            typer.echo(json.dumps(summary))
            return
        per_link = summary.pop("links", {})
        typer.echo(f"{'link ' + link if link else 'node ' + settings.kme_id}:")
        for k, v in summary.items():
            typer.echo(f"{k:>15}: {v}")
        for peer, figures in per_link.items():
            typer.echo(f"link {settings.kme_id}-{peer}:")
            for k, v in figures.items():
                typer.echo(f"{k:>15}: {v}")
