"""Typer root application; each topic module adds its commands with ``register(app)``."""

from __future__ import annotations

import typer

from qdnet.cli import (
    app_commands,
    auth_commands,
    demo_command,
    entanglement_commands,
    kms_commands,
    link_commands,
    network_commands,
    postprocessing_commands,
    simulate_commands,
)

app = typer.Typer(
    name="qdnet",
    help="Quantum-dot quantum networks: emitters, QKD links, post-processing, key management.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Quantum-dot quantum networks: emitters, QKD links, post-processing, key management."""


for _module in (
    demo_command,
    link_commands,
    simulate_commands,
    postprocessing_commands,
    kms_commands,
    network_commands,
    entanglement_commands,
    auth_commands,
    app_commands,
):
    _module.register(app)
