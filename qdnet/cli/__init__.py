"""The ``qdnet`` command line: one Typer app, commands registered by topic modules."""

from qdnet.cli.main import app

__all__ = ["app"]
