"""``qdnet simulate``: photon-level Monte Carlo of a link, with optional eavesdropper (issue 3).

A swap scenario (``qdnet swap``'s YAML: ``left``/``right`` or ``segments``, and ``bsm``) runs the
Monte Carlo of entanglement swapping instead (:mod:`qdnet.simulation.swapping`): ``--pulses`` is
the number of attempts, and every figure is compared with the analytic model.

With ``--out RUN`` the records go to RUN (public ``meta.json``, ``alice.npz``, ``bob.npz``) and the
seed to ``RUN/private/seed.json`` (mode 0600): whoever holds the seed can re-simulate Alice's
records bit for bit, so keys distilled from a simulated run are labelled ``simulated`` and are not
secret. Decoy-state BB84 from a quantum-dot source is refused: the finite-key decoy bound (Lim et
al. 2014) behind the verdict assumes Poisson photon numbers (``qdnet keyrate`` bounds a dot's
decoys in finite size with the linear program, :func:`qdnet.security.finite_key.lp_decoy_key_length`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to the root app."""

    @app.command()
    def simulate(
        link_file: Path = typer.Argument(..., help="Link YAML file."),
        pulses: float = typer.Option(
            1e8, "--pulses", help="Pulses (excitations) to simulate, e.g. 1e10."
        ),
        seed: int = typer.Option(
            7, "--seed", help="Seed of the run's random generator (bit-identical runs)."
        ),
        out: Path | None = typer.Option(None, "--out", help="Directory for the raw records."),
        attack: str | None = typer.Option(
            None,
            "--attack",
            help="intercept-resend | pns | beam-splitting (bbm92: intercept-resend).",
        ),
        attack_fraction: float = typer.Option(
            1.0, "--attack-fraction", help="Fraction intercepted or tapped."
        ),
        attack_basis: str = typer.Option(
            "random", "--attack-basis", help="Eve's basis: random | z | x | P(Z)."
        ),
        method: str = typer.Option(
            "event", "--method", help="event (event skipping) or pulse (per pulse)."
        ),
        workers: int = typer.Option(1, "--workers", help="Processes (prepare-and-measure links)."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON summary."),
        set_: list[str] = typer.Option(
            [], "--set", help="Override a link field, e.g. channel.length_km=50."
        ),
    ) -> None:
        """Simulate a link photon by photon and judge the observed statistics."""
        import numpy as np
        import yaml
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from qdnet.attacks import make_attack
        from qdnet.cli.common import clean_errors, console, error_console
        from qdnet.config import ConfigError, apply_overrides, load_link_config
        from qdnet.simulation.runner import simulate as run_simulation

        @clean_errors
        def body() -> None:
            if not math.isfinite(pulses) or pulses < 1:
                raise ConfigError(f"--pulses must be >= 1, got {pulses}")
            if _is_swap_scenario(link_file):
                if attack or out is not None or set_:
                    raise ConfigError(
                        "a swap scenario takes --pulses (attempts), --seed and --json only "
                        "(no --attack, --out or --set)"
                    )
                _simulate_swap(link_file, int(pulses), seed, as_json)
                return
            config = load_link_config(link_file, list(set_))
            if config.protocol.kind == "mdi-bb84":
                if attack:
                    raise ConfigError(
                        "the mdi-bb84 Monte Carlo has no eavesdropper: the relay is untrusted "
                        "by design (--attack applies to bb84, decoy-bb84 and bbm92 links)"
                    )
                document = apply_overrides(yaml.safe_load(Path(link_file).read_text()), list(set_))
                _simulate_mdi(config.build(), int(pulses), seed, as_json, out, document)
                return
            if config.protocol.kind == "decoy-bb84" and config.source.kind != "weak-coherent":
                raise ConfigError(
                    f"decoy-bb84 with a {config.source.kind} source: the Monte Carlo's finite-key "
                    "verdict (Lim et al. 2014) assumes Poisson photon numbers (source.kind "
                    "weak-coherent); qdnet keyrate has the finite-size bound for a dot with decoys"
                )
            link = config.build()
            document = apply_overrides(yaml.safe_load(Path(link_file).read_text()), list(set_))
            eve = (
                make_attack(attack, attack_fraction, attack_basis, link.protocol.kind)
                if attack
                else None
            )
            with Progress(
                TextColumn("simulating"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TimeRemainingColumn(),
                console=error_console,
                transient=True,
                disable=not error_console.is_terminal,
            ) as bar:
                task = bar.add_task("run", total=int(pulses))
                result = run_simulation(
                    link,
                    int(pulses),
                    np.random.default_rng(seed),
                    attack=eve,
                    method=method,
                    keep_records=False,
                    workers=workers,
                    progress=lambda done, total: bar.update(task, completed=done),
                    seed=seed,
                    link_document=document,
                    out=out,
                )
            summary = result.to_json()
            summary["attack"] = eve.describe() if eve is not None else None
            summary["seed"] = seed
            summary["records"] = str(out) if out is not None else None
            if as_json:
                typer.echo(json.dumps(summary, default=float))
                return
            _print_table(console, summary)

        body()


def _is_swap_scenario(path: Path) -> bool:
    """A ``qdnet swap`` scenario (a mapping with ``bsm``) rather than a link file."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # the link loader reports it
    return isinstance(document, dict) and "bsm" in document


def _simulate_swap(path: Path, attempts: int, seed: int, as_json: bool) -> None:
    """Monte Carlo of a single swap, figure by figure against the analytic model."""
    import numpy as np
    from rich.table import Table

    from qdnet.cli.common import console
    from qdnet.config import ConfigError
    from qdnet.interference.scenario import swap_setup
    from qdnet.simulation.swapping import simulate_swap

    setup = swap_setup(path)
    if len(setup.pairs) != 2:
        raise ConfigError(
            f"{path}: the swap Monte Carlo runs one swap (left and right, or two segments); "
            f"this scenario has {len(setup.pairs) - 1} (qdnet swap gives chains analytically)"
        )
    result = simulate_swap(
        setup.pairs[0], setup.pairs[1], setup.measurements[0], attempts, np.random.default_rng(seed)
    )
    document = result.to_json()
    document["scenario"] = setup.scenario.name
    document["seed"] = seed
    document["repetition_rate_hz"] = setup.repetition_rate_hz
    if as_json:
        typer.echo(json.dumps(document, default=float))
        return
    table = Table(title=f"{setup.scenario.name}: {attempts:.3g} swap attempts (seed {seed})")
    for column in ("figure", "Monte Carlo", "sigma", "analytic", "dev sigma"):
        table.add_column(column, justify="right")
    rows = [
        ("heralds per attempt", result.herald_probability),
        ("fourfolds per attempt", result.fourfold_probability),
        *((f"QBER {basis.upper()}", estimate) for basis, estimate in result.qber.items()),
        ("fidelity to Phi+", result.fidelity),
    ]
    for name, estimate in rows:
        if math.isnan(estimate.value):
            table.add_row(name, "no data", "", f"{estimate.expected:.4g}", "")
            continue
        table.add_row(
            name,
            f"{estimate.value:.4g}",
            f"{estimate.sigma:.2g}",
            f"{estimate.expected:.4g}",
            f"{estimate.deviation_sigma:+.1f}",
        )
    console.print(table)
    console.print(
        f"{result.heralds['psi-']} Psi- and {result.heralds['psi+']} Psi+ heralds, "
        f"{result.fourfolds} fourfolds; {result.attempts / result.elapsed_s:.3g} attempts/s"
    )


def _simulate_mdi(
    link: object,
    pulses: int,
    seed: int,
    as_json: bool,
    out: Path | None,
    document: dict[str, object],
) -> None:
    """Monte Carlo of an MDI link, per class pair and basis against the analytic model."""
    import numpy as np
    from rich.table import Table

    from qdnet.cli.common import console
    from qdnet.protocols.link import Link
    from qdnet.simulation.mdi import simulate_mdi

    assert isinstance(link, Link)
    result = simulate_mdi(
        link, pulses, np.random.default_rng(seed), out=out, seed=seed, link_document=document
    )
    summary = result.to_json()
    summary["link"] = link.name
    summary["seed"] = seed
    summary["records"] = str(out) if out is not None else None
    if as_json:
        typer.echo(json.dumps(summary, default=float))
        return
    table = Table(title=f"{link.name}: {pulses:.3g} pulse pairs, mdi-bb84 (seed {seed})")
    for column in (
        "classes",
        "basis",
        "announced",
        "gain",
        "expected",
        "dev",
        "QBER",
        "expected",
        "dev",
    ):
        table.add_column(column, justify="right")
    for row in result.rows:
        if row.pulses == 0:
            continue
        qber = "" if math.isnan(row.qber.value) else f"{row.qber.value:.3%}"
        qber_dev = "" if math.isnan(row.qber.value) else f"{row.qber.deviation_sigma:+.1f}"
        table.add_row(
            f"{row.classes[0]}/{row.classes[1]}",
            row.basis.upper(),
            str(row.successes),
            f"{row.gain.value:.4g}",
            f"{row.gain.expected:.4g}",
            f"{row.gain.deviation_sigma:+.1f}",
            qber,
            f"{row.qber.expected:.3%}",
            qber_dev,
        )
    console.print(table)
    console.print(
        f"{summary['announcements']} announcements; largest deviation "
        f"{result.max_deviation_sigma:.1f} sigma; {pulses / result.elapsed_s:.3g} pulse pairs/s"
    )


def _print_table(console: object, summary: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    assert isinstance(console, Console)
    table = Table(title=f"{summary['protocol']}: {summary['pulses']:.3g} pulses")
    for column in (
        "class",
        "pulses",
        "gain",
        "expected",
        "dev sigma",
        "QBER Z",
        "expected",
        "QBER X",
        "expected",
    ):
        table.add_column(column, justify="right")
    per_class = summary["per_class"]
    expected = summary["expected"]
    deviations = summary["deviation_sigma"]
    assert (
        isinstance(per_class, list) and isinstance(expected, dict) and isinstance(deviations, dict)
    )
    for k, row in enumerate(per_class):
        ex = expected["per_class"][k]
        tag = "" if len(per_class) == 1 else f"[{k}]"
        table.add_row(
            f"{row['intensity']:.3g}",
            f"{row['pulses']:.4g}",
            f"{row['gain']:.4e}",
            f"{ex['gain']:.4e}",
            f"{deviations.get('gain' + tag, 0.0):+.1f}",
            f"{row['qber']['z']:.3%}",
            f"{ex['qber']['z']:.3%}",
            f"{row['qber']['x']:.3%}",
            f"{ex['qber']['x']:.3%}",
        )
    console.print(table)
    colour = "green" if summary["key_possible"] else "red"
    console.print(
        f"[{colour}]{summary['verdict']}[/{colour}]: {summary['reason']}", highlight=False
    )
