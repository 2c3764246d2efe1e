"""Link-model commands: ``keyrate``, ``source`` and ``demo``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the link-model commands to the root app."""

    @app.command()
    def version() -> None:
        """Print the qdnet version."""
        from qdnet import __version__

        typer.echo(__version__)
