"""Link-model commands: ``keyrate`` and ``source`` (the work is in :mod:`qdnet.cli.link_reports`,
imported when a command runs, so that ``qdnet --help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qdnet.cli.common import clean_errors, console, print_json

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a link field, e.g. --set protocol.block_size=1e8 (repeatable)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    """Add the link-model commands to the root app."""

    @app.command()
    @clean_errors
    def keyrate(
        link_file: Annotated[Path, typer.Argument(help="Link YAML file.")],
        loss_db: Annotated[
            str | None, typer.Option("--loss-db", help="Sweep channel loss START:STOP:STEP (dB).")
        ] = None,
        distance_km: Annotated[
            str | None,
            typer.Option("--distance-km", help="Sweep fibre length START:STOP:STEP (km)."),
        ] = None,
        compare: Annotated[
            list[Path] | None, typer.Option("--compare", help="More link files on the same sweep.")
        ] = None,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Write a PNG of key per pulse vs loss.")
        ] = None,
        overrides: SetOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Optimised secret-key rate (bit/s, bit/pulse), QBER, gain and PLOB per sweep point."""
        from qdnet.cli.link_reports import plot_curves, points_table, run_sweep
        from qdnet.config import load_link_config
        from qdnet.keyrate import KeyRatePoint

        files = [link_file, *(compare or [])]
        curves: list[tuple[str, list[KeyRatePoint]]] = []
        for path in files:
            link = load_link_config(path, overrides).build()
            curves.append((link.name, run_sweep(link, loss_db, distance_km, not as_json)))
        if plot is not None:
            plot_curves(curves, plot)
        if as_json:
            documents = [
                {"link": name, "points": [p.to_json() for p in pts]} for name, pts in curves
            ]
            print_json(documents[0] if len(documents) == 1 else {"links": documents})
            return
        for name, points in curves:
            console.print(points_table(name, points))
        if plot is not None:
            console.print(f"plot written to {plot}")

    @app.command()
    @clean_errors
    def source(
        link_file: Annotated[Path, typer.Argument(help="Link YAML file.")],
        overrides: SetOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """What the source emits: photon statistics, g2 after loss, density matrix, fidelity."""
        from qdnet.cli.link_reports import source_report, source_table
        from qdnet.config import load_link_config

        link = load_link_config(link_file, overrides).build()
        report = source_report(link)
        if as_json:
            print_json(report)
            return
        console.print(source_table(link.name, report))
