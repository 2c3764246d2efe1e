"""Entanglement commands: ``qdnet hom``, ``qdnet swap``, ``qdnet teleport``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qdnet.cli.common import clean_errors, console, print_json

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    """Add ``hom``, ``swap`` and ``teleport``."""

    @app.command("hom")
    @clean_errors
    def hom_command(
        first: Annotated[Path, typer.Argument(help="Link file whose source emits the photons.")],
        second: Annotated[
            Path | None,
            typer.Argument(help="A second link file: two independent emitters interfere."),
        ] = None,
        photon: Annotated[
            str,
            typer.Option(
                "--photon",
                help="x: the exciton (or single) photon; xx: the biexciton photon of a cascade.",
            ),
        ] = "x",
        as_json: JsonOption = False,
    ) -> None:
        """Two-photon (HOM) interference: one dot's photons delayed, or two remote dots."""
        from qdnet.config import ConfigError
        from qdnet.interference.scenario import hom_document, hom_files

        if photon not in ("x", "xx"):
            raise ConfigError(f"--photon must be x or xx, got {photon!r}")
        result, configs = hom_files(first, second, "xx" if photon == "xx" else "x")
        document = hom_document(result, configs)
        document["photon"] = photon
        if as_json:
            print_json(document)
            return
        table = Table(title=f"HOM interference: {' x '.join(document['sources'])}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row("visibility", f"{100 * result.visibility:.2f} %")
        table.add_row("single-photon overlap", f"{result.photon_overlap:.4f}")
        table.add_row("coincidences per pulse pair", f"{result.coincidence_probability:.4g}")
        for name, lost in result.contributions.items():
            table.add_row(f"lost to {name.replace('_', ' ')}", f"{100 * lost:.2f} %")
        console.print(table)

    @app.command("swap")
    @clean_errors
    def swap_command(
        scenario: Annotated[Path, typer.Argument(help="Swap scenario YAML.")],
        as_json: JsonOption = False,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Write a PNG of fidelity against overlap V.")
        ] = None,
    ) -> None:
        """Entanglement swapping of quantum-dot pairs with a linear-optics Bell measurement."""
        from qdnet.interference.scenario import plot_swap_fidelity, swap_document, swap_file

        document = swap_document(swap_file(scenario))
        if plot is not None:
            plot_swap_fidelity(scenario, plot)
        if as_json:
            print_json(document)
            return
        table = Table(title=f"{document['scenario']}: entanglement swapping")
        for column in ("swaps", "HOM visibility", "fidelity", "heralds/s"):
            table.add_column(column, justify="right")
        for entry, visibility in zip(
            document["per_swaps"], document["hom_visibility"], strict=True
        ):
            table.add_row(
                str(entry["swaps"]),
                f"{visibility:.4f}",
                f"{entry['fidelity']:.4f}",
                f"{entry['rate_hz']:.4g}",
            )
        console.print(table)
        if plot is not None:
            console.print(f"plot written to {plot}")

    @app.command("teleport")
    @clean_errors
    def teleport_command(
        scenario: Annotated[Path, typer.Argument(help="Teleportation scenario YAML.")],
        as_json: JsonOption = False,
    ) -> None:
        """Teleportation of a dot photon's polarisation qubit onto another dot's pair."""
        from qdnet.interference.scenario import teleport_file

        document = teleport_file(scenario)
        if as_json:
            print_json(document)
            return
        table = Table(title=f"{document['scenario']}: teleportation")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row("HOM visibility at the BSM", f"{document['hom_visibility']:.4f}")
        table.add_row("average fidelity", f"{document['fidelity']:.4f}")
        table.add_row("entanglement fidelity", f"{document['entanglement_fidelity']:.4f}")
        table.add_row("teleported qubits/s", f"{document['rate_hz']:.4g}")
        console.print(table)
