"""Network commands: ``qdnet network plan``, ``simulate``, ``up``, ``down`` and ``status``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qdnet.cli.common import clean_errors, console, error_console, print_json

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@contextmanager
def _link_progress(enabled: bool) -> Iterator[Callable[[int], Callable[[], None]] | None]:
    """A progress bar over the link-model optimisations (None when disabled)."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("[bold]modelling links"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:

        def start(total: int) -> Callable[[], None]:
            task = progress.add_task("links", total=total)
            return lambda: progress.advance(task)

        yield start


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
        help="Trusted-node QKD networks: plan, simulate, or run them (up/down/status).",
        no_args_is_help=True,
    )
    app.add_typer(network, name="network")
    register_simulate(network)
    register_up(network)

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
        with _link_progress(not as_json) as progress:
            planned = plan_network(network_file, chosen, paths, progress)
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


def _simulation_tables(document: dict[str, Any]) -> list[Table]:
    hours = document["duration_s"] / 3600.0
    demands = Table(
        title=f"{document['network']}: {hours:g} h, {document['routing']} routing, seed {document['seed']}"
    )
    for column in ("demand", "asked", "planned", "served", "blocked", "latency ms", "paths used"):
        demands.add_column(
            column, justify="left" if column in ("demand", "paths used") else "right"
        )
    for d in document["demands"]:
        latency = d["mean_relay_latency_ms"]
        demands.add_row(
            f"{d['from']} -> {d['to']}",
            _rate(d["rate_bps"]),
            _rate(d["planned_rate_bps"]),
            _rate(d["served_rate_bps"]),
            f"{100 * d['blocking_probability']:.1f} %",
            "-" if latency is None else f"{latency:.2f}",
            "; ".join(f"{'-'.join(p['nodes'])} {_rate(p['served_bps'])}" for p in d["paths"][:3]),
        )
    links = Table(title="links (bits over the run)")
    for column in ("link", "produced", "consumed", "discarded", "blocks", "refused", "final pool"):
        links.add_column(column, justify="left" if column == "link" else "right")
    for link in document["links"]:
        links.add_row(
            "-".join(link["between"]),
            f"{link['key_produced_bits']:.4g}",
            f"{link['key_consumed_bits']:.4g}",
            f"{link['key_discarded_bits']:.4g}",
            str(link["blocks_delivered"]),
            str(link["blocks_refused"]),
            f"{link['final_pool_bits']:.4g}",
        )
    return [demands, links]


def register_simulate(network: typer.Typer) -> None:
    """Add ``network simulate``."""

    @network.command("simulate")
    @clean_errors
    def simulate_command(
        network_file: Annotated[Path, typer.Argument(help="Network YAML file.")],
        duration: Annotated[
            str, typer.Option("--duration", help="Simulated time, e.g. 90s, 2h, 24h, 7d.")
        ] = "24h",
        seed: Annotated[
            int, typer.Option("--seed", help="Seed of the run's random generator.")
        ] = 1,
        tap: Annotated[
            list[str] | None,
            typer.Option(
                "--tap", help="Tap a link: C-B@2h:0.5 (from 2 h, fraction 0.5); repeatable."
            ),
        ] = None,
        fail: Annotated[
            list[str] | None,
            typer.Option("--fail", help="Link down: A-C@3h+1h (from 3 h for 1 h); repeatable."),
        ] = None,
        routing: Annotated[
            str, typer.Option("--routing", help="shortest | key-aware | planned.")
        ] = "key-aware",
        step: Annotated[str, typer.Option("--step", help="Time step, e.g. 1s.")] = "1s",
        pool_bits: Annotated[
            float, typer.Option("--pool-bits", help="Key pool capacity per link, bits.")
        ] = 1e8,
        hop_ms: Annotated[
            float, typer.Option("--hop-ms", help="Relay processing time per hop, ms.")
        ] = 1.0,
        as_json: JsonOption = False,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Write a PNG of the key pools over time.")
        ] = None,
    ) -> None:
        """Run the network over time: blocks fill pools, demands draw relayed keys, taps bite."""
        from qdnet.network.scenario import draw_pools, simulate_file, simulation_document
        from qdnet.units import parse_duration_s

        if routing not in ("shortest", "key-aware", "planned"):
            raise ValueError(f"--routing {routing!r}: expected shortest, key-aware or planned")
        if hop_ms < 0:
            raise ValueError(f"--hop-ms must be >= 0, got {hop_ms}")
        with _link_progress(not as_json) as progress:
            run = simulate_file(
                network_file,
                parse_duration_s(duration, "--duration"),
                seed,
                tap or [],
                fail or [],
                routing=routing,  # type: ignore[arg-type]
                step_s=parse_duration_s(step, "--step"),
                pool_bits=pool_bits,
                hop_processing_s=hop_ms * 1e-3,
                progress=progress,
            )
        document = simulation_document(run)
        if plot is not None:
            draw_pools(run, plot)
        if as_json:
            print_json(document)
            return
        for table in _simulation_tables(document):
            console.print(table)
        engine = document["engine"]
        console.print(
            f"{engine['events']} events (blocks and key requests) in {engine['wall_s']:.3f} s"
        )
        if plot is not None:
            console.print(f"plot written to {plot}")


def _up_tables(state: dict[str, Any]) -> list[Table]:
    nodes = Table(title=f"{state['network']}: KMS per node (network.json in {state['workdir']})")
    for column in ("node", "KME", "KMS URL", "SAEs"):
        nodes.add_column(column)
    for name, node in state["nodes"].items():
        nodes.add_row(name, node["kme_id"], node["kms_url"], ", ".join(node["saes"]) or "-")
    links = Table(title="links")
    for column in ("link", "keys from", "tap"):
        links.add_column(column)
    for name, link in state["links"].items():
        tap = link["tap"]
        links.add_row(
            name,
            "Monte Carlo + post-processing"
            if link["kind"] == "modelled"
            else f"CSPRNG at {_rate(link['key_rate_bps'])} bit/s",
            "-" if tap is None else f"from {tap['from_s']:g} s, fraction {tap['fraction']:g}",
        )
    return [nodes, links]


def _status_tables(document: dict[str, Any]) -> list[Table]:
    alive = {True: "yes", False: "[red]no[/red]"}
    nodes = Table(
        title=f"{document['network']} ({document['state']}; supervisor running: "
        f"{'yes' if document['supervisor_alive'] else 'no'})"
    )
    for column in ("node", "KMS running", "pools per link (bytes, blocks)", "relay o/f/t/failed"):
        nodes.add_column(column)
    for name, node in document["nodes"].items():
        pools = (
            node["error"]
            if node["pools"] is None
            else "; ".join(
                f"{peer}: {pool.get('stored_key_bytes', 0)} B, {pool.get('blocks_ingested', 0)}"
                for peer, pool in sorted(node["pools"].items())
            )
            or "-"
        )
        relay = node["relay"]
        counters = (
            "-"
            if relay is None
            else "/".join(
                str(relay.get(k, 0)) for k in ("originated", "forwarded", "terminated", "failed")
            )
        )
        nodes.add_row(name, alive[node["alive"]], pools, counters)
    links = Table(title="links")
    for column in ("link", "kind", "loop running", "blocks", "refused", "key bit/s", "tap"):
        links.add_column(column, justify="left" if column in ("link", "kind", "tap") else "right")
    for name, link in document["links"].items():
        stats = link["stats"] or {}
        tap = link["tap"]
        links.add_row(
            name,
            link["kind"],
            "[red]halted[/red]" if stats.get("halted") else alive[link["alive"]],
            str(stats.get("blocks_delivered", 0)),
            str(stats.get("blocks_refused", 0)),
            _rate(stats.get("key_rate_bps", 0.0)),
            "-" if tap is None else f"{tap['fraction']:g} from {tap['from_s']:g} s",
        )
    return [nodes, links]


def register_up(network: typer.Typer) -> None:
    """Add ``network up``, ``network down`` and ``network status``."""

    @network.command("up")
    @clean_errors
    def up_command(
        network_file: Annotated[Path, typer.Argument(help="Network YAML file.")],
        workdir: Annotated[
            Path, typer.Option("--workdir", help="New folder for the running network.")
        ],
        fast: Annotated[
            bool,
            typer.Option("--fast", help="Modelled links as fast as the CPU allows, not at pace."),
        ] = False,
        detach: Annotated[
            bool, typer.Option("--detach", help="Return once every KMS answers.")
        ] = False,
        tap: Annotated[
            list[str] | None,
            typer.Option(
                "--tap", help="Tap a link: C-B@0s:0.5 (from 0 s, fraction 0.5); repeatable."
            ),
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the links' Monte Carlo.")] = 1,
        workers: Annotated[
            int | None,
            typer.Option("--workers", help="Links simulated at once (default: half the CPUs)."),
        ] = None,
    ) -> None:
        """Run the network for real: a KMS per node, key-producing links, key relay."""
        import os

        from qdnet.network.runtime.layout import prepare_workdir
        from qdnet.network.runtime.supervisor import detach as detach_network
        from qdnet.network.runtime.supervisor import serve

        slots = workers if workers is not None else max(1, (os.cpu_count() or 2) // 2)
        prepare_workdir(
            network_file, workdir, taps=tap or [], fast=fast, seed=seed, cpu_slots=slots
        )
        try:
            if detach:
                state = detach_network(workdir)
                for table in _up_tables(state):
                    console.print(table)
                console.print(f"running in the background; stop with: qdnet network down {workdir}")
                return

            def ready(state: dict[str, Any]) -> None:
                for table in _up_tables(state):
                    console.print(table)
                console.print(f"running; Ctrl-C or `qdnet network down {workdir}` stops it")

            serve(workdir, ready, lambda line: error_console.print(f"[yellow]{line}[/yellow]"))
        except (RuntimeError, TimeoutError) as error:
            error_console.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(code=1) from None
        console.print("stopped")

    @network.command("down")
    @clean_errors
    def down_command(
        workdir: Annotated[Path, typer.Argument(help="Folder of a network started by `up`.")],
    ) -> None:
        """Stop every process of a running network."""
        from qdnet.network.runtime.supervisor import down

        stopped = down(workdir)
        if stopped:
            console.print(f"stopped {len(stopped)} processes of the network in {workdir}")
        else:
            console.print(f"no process of the network in {workdir} was running")

    @network.command("status")
    @clean_errors
    def status_command(
        workdir: Annotated[Path, typer.Argument(help="Folder of a network started by `up`.")],
        as_json: JsonOption = False,
    ) -> None:
        """Key pools per link, link key rates, relay counters and processes of each node."""
        from qdnet.network.runtime.status import network_status

        document = network_status(workdir)
        if as_json:
            print_json(document)
            return
        for table in _status_tables(document):
            console.print(table)
        for name, link in document["links"].items():
            if (link["stats"] or {}).get("halted"):
                console.print(f"{name} halted: {link['stats']['halted']}")
