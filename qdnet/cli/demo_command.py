"""``qdnet demo``: the README's main job, the whole chain from quantum dot to application."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from qdnet.cli.common import clean_errors, console

if TYPE_CHECKING:
    from qdnet.apps.chain import ChainSummary

#: A file that marks a folder as the demo's own, so it may be emptied on the next run.
DEMO_MARKER = ".qdnet-demo"


def examples_directory() -> Path:
    """``examples/links`` of the source tree (the README installs qdnet editable from it)."""
    return Path(__file__).resolve().parents[2] / "examples" / "links"


def prepare_workdir(workdir: Path) -> None:
    """Create (or empty a previous demo's) working folder; never touch a foreign folder."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / DEMO_MARKER).is_file():
            raise ValueError(f"--workdir {workdir} exists and is not a qdnet demo folder")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / DEMO_MARKER).write_text("created by qdnet demo; emptied on the next run\n")


def link_comparison(folder: Path) -> Table:
    """Part 1: a quantum-dot BB84 link against a decoy laser and PLOB over distance."""
    from qdnet.cli.link_reports import run_sweep
    from qdnet.config import load_link_config

    dot = load_link_config(folder / "telecom-dot-bb84.yaml").build()
    laser = load_link_config(folder / "telecom-laser-decoy.yaml").build()
    dot_points = run_sweep(dot, None, "0:200:50", False)
    laser_points = run_sweep(laser, None, "0:200:50", False)
    table = Table(
        title="1. Link model: quantum dot vs decoy laser (asymptotic, 80 MHz, 0.18 dB/km)"
    )
    for column in ("km", "loss dB", "dot bit/s", "QBER", "decoy laser bit/s", "PLOB bit/s"):
        table.add_column(column, justify="right")
    for d, las in zip(dot_points, laser_points, strict=True):
        table.add_row(
            f"{d.distance_km:g}",
            f"{d.loss_db:.1f}",
            f"{d.secret_key_rate_bps:.4g}",
            f"{100 * d.qber['z']:.2f} %",
            f"{las.secret_key_rate_bps:.4g}",
            f"{d.plob_bits_per_pulse * dot.repetition_rate_hz:.4g}",
        )
    return table


def chain_tables(summary: ChainSummary) -> list[Table]:
    """Part 2 as tables (no key material is ever shown)."""
    honest, tapped = summary.honest_run, summary.tapped_run
    hd, td = summary.honest_distillation, summary.tapped_distillation
    runs = Table(title="2. Monte Carlo runs of the quantum-dot link (telecom-dot-bb84 at 50 km)")
    for column in ("run", "pulses", "detections", "QBER Z", "expected", "verdict"):
        runs.add_column(column)
    for name, run in (("honest", honest), ("intercept-resend", tapped)):
        runs.add_row(
            name,
            f"{run['pulses']:.3g}",
            str(run["detections"]),
            f"{100 * run['qber']['z']:.2f} %",
            f"{100 * run['expected_qber']['z']:.2f} %",
            run["verdict"],
        )
    pp = Table(title="3. Post-processing, Alice and Bob over authenticated TCP")
    for column in ("block", "sifted bits", "EC f", "verified", "secret bits", "result"):
        pp.add_column(column)
    for name, d in (("honest", hd), ("intercept-resend", td)):
        pp.add_row(
            name,
            str(d["sifted_key_bits"]),
            "-" if d["efficiency_f"] is None else f"{d['efficiency_f']:.3f}",
            "-" if d["verified"] is None else str(d["verified"]),
            str(d["final_key_bits"]),
            f"refused: {d['reason']}" if d["aborted"] else "identical keys at both ends",
        )
    kms = Table(title="4. Key management (ETSI GS QKD 014 over mutual TLS) and applications")
    kms.add_column("step")
    kms.add_column("result")
    kms.add_row("keys stored in each KMS (256 bit)", str(summary.kms["stored_key_count_before"]))
    kms.add_row(
        "app A enc_keys -> key IDs", ", ".join(k[:8] + "..." for k in summary.kms["key_ids"])
    )
    kms.add_row("app B dec_keys -> same keys", str(summary.kms["same_keys_at_b"]))
    kms.add_row(
        "AES-256-GCM message A -> B",
        f"{summary.application['message_bytes']} bytes, decrypted: {summary.application['decrypted_ok']}",
    )
    kms.add_row(
        "keys stored after the tapped block", str(summary.kms["stored_key_count_after_tap"])
    )
    kms.add_row("key from the tapped block delivered", str(summary.tapped_block_delivered))
    return [runs, pp, kms]


def register(app: typer.Typer) -> None:
    """Add ``qdnet demo``."""

    @app.command()
    @clean_errors
    def demo(
        workdir: Annotated[
            Path,
            typer.Option(
                "--workdir", help="Working folder (created; emptied if a previous demo's)."
            ),
        ] = Path("qdnet-demo"),
        pulses: Annotated[
            float, typer.Option("--pulses", help="Pulses per Monte Carlo block.")
        ] = 4e8,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the Monte Carlo runs.")] = 7,
        reconciliation: Annotated[
            str, typer.Option("--reconciliation", help="Error correction: ldpc or cascade.")
        ] = "ldpc",
    ) -> None:
        """The whole chain: quantum-dot link, Monte Carlo, post-processing over TCP, two KMS over
        mutual TLS, applications with AES-256-GCM, and an eavesdropper whose block is refused."""
        folder = examples_directory()
        if not folder.is_dir():
            raise ValueError(f"example links not found at {folder}; run qdnet from its source tree")
        if reconciliation not in ("ldpc", "cascade"):
            raise ValueError(f"--reconciliation must be ldpc or cascade, got {reconciliation!r}")
        prepare_workdir(workdir)
        from qdnet.apps import warmup

        # Kernels compile in child processes while the chain's modules import and the link model
        # runs (fresh clone: no cache); each step of the chain waits only for the kernels it runs.
        link_file = folder / "telecom-dot-bb84.yaml"
        warm = warmup.start(link_file, reconciliation)
        try:
            from qdnet.apps.chain import ChainSettings, run_chain

            settings = ChainSettings(
                link_file=link_file,
                workdir=workdir.resolve(),
                pulses=int(pulses),
                seed=seed,
                reconciliation=reconciliation,
            )
            console.print(link_comparison(folder))
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("starting", total=None)

                def step(name: str) -> None:
                    progress.update(task, description=name)
                    warmup.finish(warm, warmup.parts_needed_by(name))

                summary = run_chain(settings, step=step)
        finally:
            warmup.stop(warm)
        for table in chain_tables(summary):
            console.print(table)
        total = sum(summary.timings_s.values())
        ok = summary.application["decrypted_ok"] and not summary.tapped_block_delivered
        console.print(
            Panel(
                f"{'OK' if ok else 'FAILED'}: keys from a quantum dot reached two applications; "
                f"the tapped block was refused and none of its key was delivered. "
                f"Chain time {total:.1f} s. Files in {workdir}/; no process left running.",
                title="summary",
            )
        )
        if not ok:
            raise typer.Exit(1)
