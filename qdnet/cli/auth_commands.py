"""``qdnet auth init FILE``: a fresh pre-shared secret for two endpoints on two hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``auth`` command group to the root app."""
    auth = typer.Typer(help="Pre-shared secrets for the authenticated classical channel.")

    @auth.command("init")
    def init(
        file: Annotated[Path, typer.Argument(help="New secret file (refused if it exists).")],
    ) -> None:
        """Write a fresh 4096-byte pre-shared secret (mode 0600) and print its fingerprint.

        Copy the file to both hosts over a channel you trust; each endpoint starts its pool from
        it once (`qdnet endpoint ... --psk FILE`), a second start is refused.
        """
        from qdnet.transport.authentication import PSK_BYTES, PoolError, write_psk

        try:
            fingerprint = write_psk(file)
        except (PoolError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"wrote {PSK_BYTES}-byte pre-shared secret {file} (fingerprint {fingerprint}); "
            "copy it to both hosts and start each endpoint with --psk once"
        )

    app.add_typer(auth, name="auth")
