"""What the link-model commands compute and print: sweeps, tables, plots, the source report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qdnet.cli.common import console, parse_range
from qdnet.keyrate import KeyRatePoint, sweep
from qdnet.optics.polarisation import concurrence, fidelity_phi_plus, with_accidentals
from qdnet.protocols import bbm92
from qdnet.protocols.link import Link
from qdnet.protocols.prepare_measure import detected_g2, gate_share
from qdnet.sources.entangled import EntangledPairSource
from qdnet.sources.laser import WeakCoherentSource
from qdnet.sources.photon_statistics import g2_of, thin
from qdnet.sources.spdc import SpdcSource


def sweep_links(
    link: Link, loss_db: str | None, distance_km: str | None
) -> list[tuple[Link, float | None]]:
    """The links of a sweep (or the link's own channel as one point)."""
    if loss_db is not None and distance_km is not None:
        raise ValueError("give --loss-db or --distance-km, not both")
    if loss_db is not None:
        return [(link.with_loss_db(v), None) for v in parse_range(loss_db, "--loss-db")]
    if distance_km is not None:
        return [(link.with_distance_km(v), v) for v in parse_range(distance_km, "--distance-km")]
    return [(link, getattr(link.channel, "length_km", None))]


def run_sweep(
    link: Link, loss_db: str | None, distance_km: str | None, show_progress: bool
) -> list[KeyRatePoint]:
    """Optimised key-rate points with a progress bar on long sweeps."""
    items = sweep_links(link, loss_db, distance_km)
    if not show_progress or len(items) < 20:
        return sweep(items)
    with Progress(
        TextColumn(f"[bold]{link.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("sweep", total=len(items))
        return sweep(items, progress=lambda: progress.advance(task))


def points_table(name: str, points: list[KeyRatePoint]) -> Table:
    table = Table(title=f"{name}: optimised secret-key rate")
    for column in (
        "distance km",
        "loss dB",
        "QBER Z",
        "QBER X",
        "gain",
        "key bit/s",
        "key bit/pulse",
        "PLOB bit/use",
    ):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(
            "-" if p.distance_km is None else f"{p.distance_km:g}",
            f"{p.loss_db:.2f}",
            f"{100 * p.qber['z']:.2f} %",
            f"{100 * p.qber['x']:.2f} %",
            f"{p.gain:.3e}",
            f"{p.secret_key_rate_bps:.4g}",
            f"{p.secret_bits_per_pulse:.3e}",
            f"{p.plob_bits_per_pulse:.3e}",
        )
    return table


def plot_curves(curves: list[tuple[str, list[KeyRatePoint]]], path: Path) -> None:
    """Secret bits per pulse against channel loss for each link, with PLOB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    all_losses: list[float] = []
    for name, points in curves:
        losses = [p.loss_db for p in points]
        all_losses += losses
        rates = [p.secret_bits_per_pulse if p.secret_bits_per_pulse > 0 else np.nan for p in points]
        ax.semilogy(losses, rates, label=name, lw=2)
    if all_losses:
        grid = np.linspace(max(min(all_losses), 0.1), max(all_losses), 200)
        ax.semilogy(grid, -np.log2(1 - 10 ** (-grid / 10)), "k--", label="PLOB bound")
    ax.set_xlabel("channel loss (dB)")
    ax.set_ylabel("secret bits per pulse")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _matrix_json(rho: NDArray[np.complex128]) -> dict[str, Any]:
    return {"real": rho.real.tolist(), "imag": rho.imag.tolist(), "basis": ["HH", "HV", "VH", "VV"]}


def _pair_after_path(link: Link) -> dict[str, Any]:
    """The pair after the path: the photons' state after the polarisation channel, and the state
    of the detected coincidences (accidentals from noise, daylight, converter noise and multi-pairs
    mixed in as I/4, receiver misalignment not included), with the per-arm background."""
    after = bbm92.path_density_matrix(link)
    stats = bbm92.expected(link)
    coincidence = stats.gain[0]
    true_fraction = stats.true_coincidence_probability / coincidence if coincidence > 0 else 0.0
    detected = with_accidentals(after, true_fraction)
    return {
        "fidelity_after_path": fidelity_phi_plus(after),
        "concurrence_after_path": concurrence(after),
        "density_matrix_after_path": _matrix_json(after),
        "true_coincidence_fraction": true_fraction,
        "fidelity_detected": fidelity_phi_plus(detected),
        "concurrence_detected": concurrence(detected),
        "background_rate_hz_per_detector": {
            "a": link.arm_background_rate_hz("a"),
            "b": link.arm_background_rate_hz("b"),
        },
    }


def source_report(link: Link) -> dict[str, Any]:
    """What the link's source emits, and what reaches the receiver."""
    source = link.source
    eta = link.channel_transmittance
    report: dict[str, Any] = {
        "link": link.name,
        "kind": type(source).__name__,
        "channel_transmittance": eta,
    }
    if isinstance(source, EntangledPairSource | SpdcSource):
        dist = source.pair_number_distribution()
        report["pair_number_distribution"] = dist.tolist()
        report["photon_number_distribution"] = dist.tolist()
        report["g2"] = (
            source.g2
            if isinstance(source, SpdcSource)
            else 2 * float(dist[2]) / float(np.dot(np.arange(len(dist)), dist)) ** 2
        )
        report["qber_z_from_state"] = source.qber_z()
        report["qber_x_from_state"] = source.qber_x()
        if isinstance(source, EntangledPairSource):
            rho = source.density_matrix()
            report["fidelity"] = source.fidelity()
            report["concurrence"] = source.concurrence()
            report["density_matrix"] = _matrix_json(rho)
            report["error_budget_x"] = source.error_budget()
            report["phase_rate_x"] = source.phase_rate
            if link.protocol.kind == "bbm92":
                report.update(_pair_after_path(link))
        return report
    if isinstance(source, WeakCoherentSource) and source.mean_photon_number is None:
        report["mean_photon_number"] = None  # keyrate optimises it; simulate needs one
        report["decoy_intensities"] = list(source.decoy_intensities)
        report["g2"] = source.g2
        return report
    dist = source.photon_number_distribution()
    after = thin(dist, eta)
    report["mean_photon_number"] = source.mean_photon_number
    report["photon_number_distribution"] = dist.tolist()
    report["g2"] = source.g2
    report["photon_number_distribution_after_channel"] = after.tolist()
    report["g2_after_channel"] = g2_of(after)
    report["multiphoton_probability"] = source.multiphoton_probability()
    if isinstance(link.gate_ns, float):
        report["gate_ns"] = link.gate_ns
        report["gate_acceptance"] = gate_share(link, link.gate_ns)
    # With gate_ns optimise (keyrate's choice per point) the clicks of the whole window.
    report["g2_detected"] = detected_g2(
        link if link.gate_ns != "optimise" else link.with_gate_ns(None)
    )
    return report


def source_table(name: str, report: dict[str, Any]) -> Table:
    """The ``qdnet source`` report as a two-column table."""
    table = Table(title=f"{name}: source ({report['kind']})", show_header=False)
    for key, value in report.items():
        if key in ("link", "kind"):
            continue
        if key.startswith("density_matrix"):
            rows = np.array(value["real"]) + 1j * np.array(value["imag"])
            text = "\n".join("  ".join(f"{c.real:+.4f}{c.imag:+.4f}i" for c in row) for row in rows)
            table.add_row(key.replace("_", " ") + " (HH,HV,VH,VV)", text)
        elif isinstance(value, dict):
            table.add_row(key, "\n".join(f"{k}: {v:.4g}" for k, v in value.items()))
        elif isinstance(value, list):
            table.add_row(key, ", ".join(f"{v:.4g}" for v in value))
        elif isinstance(value, float):
            table.add_row(key, f"{value:.6g}")
        else:
            table.add_row(key, str(value))
    return table
