"""Network commands: ``qdnet network plan`` (and the over-time simulation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from qdnet.cli.common import clean_errors, console, print_json

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _rate(value: float) -> str:
    return f"{value:.4g}"


def _plan_tables(document: dict[str, object]) -> list[Table]:
    links = Table(title=f"{document['network']}: links (secret-key rate, share used by the plan)")
    for column in ("link", "from", "length km", "QBER", "key bit/s", "used"):
        links.add_column(column, justify="right" if column not in ("link", "from") else "left")
    for link in document["links"]:  # type: ignore[attr-defined]
        length = link["length_km"]
        links.add_row(
            "-".join(link["between"]),
            link["protocol"] or "given",
            "-" if length is None else f"{length:g}",
            f"{100 * link['qber']:.2f} %",
            _rate(link["secret_key_rate_bps"]),
            f"{100 * link['used_fraction']:.1f} %",
        )
    demands = Table(title=f"demands (all at once: lambda = {document['concurrent_fraction']:.4g})")
    for column in ("demand", "asked bit/s", "planned bit/s", "alone max bit/s", "paths"):
        demands.add_column(column, justify="left" if column in ("demand", "paths") else "right")
    for demand in document["demands"]:  # type: ignore[attr-defined]
        paths = "; ".join(
            f"{'-'.join(p['nodes'])} {_rate(p['rate_bps'])}" for p in demand["paths"][:3]
        )
        if len(demand["paths"]) > 3:
            paths += f"; +{len(demand['paths']) - 3} more"
        demands.add_row(
            f"{demand['from']} -> {demand['to']}",
            _rate(demand["rate_bps"]),
            _rate(demand["max_rate_bps"]),
            _rate(demand["alone_max_rate_bps"]),
            paths,
        )
    return [links, demands]


def register(app: typer.Typer) -> None:
    """Add the ``network`` command group."""
    network = typer.Typer(
        help="Trusted-node QKD networks: plan the key each demand can get.", no_args_is_help=True
    )
    app.add_typer(network, name="network")

    @network.command("plan")
    @clean_errors
    def plan_command(
        network_file: Annotated[Path, typer.Argument(help="Network YAML file.")],
        as_json: JsonOption = False,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Write a PNG of the topology, links by rate.")
        ] = None,
        method: Annotated[
            str, typer.Option("--method", help="auto | exact (arc LP) | paths (path LP).")
        ] = "auto",
        paths: Annotated[
            int, typer.Option("--paths", help="Shortest paths per demand to start the path LP.")
        ] = 3,
    ) -> None:
        """Each link's secret-key rate and the most key every demand can get, all at once."""
        from qdnet.network.planning import draw_plan, plan_document, plan_network

        if method not in ("auto", "exact", "paths"):
            raise ValueError(f"--method {method!r}: expected auto, exact or paths")
        chosen: Literal["auto", "exact", "paths"] = method  # type: ignore[assignment]
        planned = plan_network(network_file, chosen, paths)
        document = plan_document(planned)
        if plot is not None:
            draw_plan(planned, plot)
        if as_json:
            print_json(document)
            return
        for table in _plan_tables(document):
            console.print(table)
        bottlenecks = ", ".join("-".join(b["between"]) for b in document["bottlenecks"]) or "none"
        console.print(f"bottleneck links (saturated at lambda): {bottlenecks}")
        gap = document["path_lp"]["gap_to_exact"]
        if gap is not None:
            console.print(f"path LP gap to the exact LP: {gap:.2e}")
        if plot is not None:
            console.print(f"plot written to {plot}")
