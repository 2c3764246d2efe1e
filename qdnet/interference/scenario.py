"""Link files and scenario YAML for ``qdnet hom``, ``qdnet swap`` and ``qdnet teleport``.

A **swap scenario** (paths relative to the scenario file)::

    name: two-dot-swap
    left: ../links/gaas-dot-bbm92.yaml         # pair link: photon 1 to the left node, 2 to the BSM
    right: ../links/gaas-dot-remote.yaml       # pair link: photon 3 to the BSM, 4 to the right node
    # segments: [a.yaml, b.yaml, c.yaml]       # instead of left/right: a chain, one swap per junction
    bsm: {efficiency: 0.6, dark_count_rate_hz: 100, window_ns: 1.0, hom_visibility: null}

Each pair link's channel is the fibre between its two photons' detectors, split by
``protocol.source_position`` (0: source at the left end); the photon that goes to a Bell
measurement is detected with ``bsm.efficiency``, an end photon with the link's
``receiver.efficiency``. ``hom_visibility: null`` computes the overlap V of the two measured
photons from their sources (:mod:`qdnet.interference.hom`; one dot's consecutive pairs when both
sides name the same file).

A **teleportation scenario**: ``{name, input: LINK.yaml (a single-photon source carries the qubit),
pair: LINK.yaml (an entangled pair: photon 2 to the BSM, photon 3 to the receiver), bsm: {...}}``.
The channel of the input link brings the qubit photon to the Bell measurement. The teleportation
channel's entanglement fidelity F_e is the swap of an ideal pair (a reference qubit and the input
photon) with the real pair; the average fidelity over input states is F = (2 F_e + 1)/3
(Horodecki et al., PRA 60, 1888 (1999)). The input photon's multi-photon part is white noise of
weight P(2)/P(1), as for pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qdnet.config import (
    ConfigError,
    LinkConfig,
    load_link_config,
    read_yaml_mapping,
    validation_message,
)
from qdnet.interference.hom import HomEmitter, HomResult, hom, photon_overlap
from qdnet.interference.swapping import BsmSettings, Pair, SwapOutcome, projector, swap, swap_chain
from qdnet.optics.fibre import transmittance_from_loss_db
from qdnet.sources.entangled import EntangledPairSource
from qdnet.sources.quantum_dot import SinglePhotonSource


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BsmConfig(_Strict):
    """``bsm:`` of a swap or teleportation scenario."""

    efficiency: float = Field(default=1.0, gt=0, le=1)
    dark_count_rate_hz: float = Field(default=0.0, ge=0)
    window_ns: float = Field(default=1.0, gt=0)
    hom_visibility: float | None = Field(default=None, ge=0, le=1)


class SwapScenario(_Strict):
    """A swap scenario file."""

    name: str = Field(min_length=1)
    description: str | None = None
    left: str | None = None
    right: str | None = None
    segments: list[str] | None = None
    bsm: BsmConfig = BsmConfig()

    @model_validator(mode="after")
    def _one_form(self) -> SwapScenario:
        pairwise = self.left is not None or self.right is not None
        if pairwise and self.segments is not None:
            raise ValueError("give left and right, or segments, not both")
        if self.segments is None and (self.left is None or self.right is None):
            raise ValueError("give left and right (one swap) or segments (a chain)")
        if self.segments is not None and len(self.segments) < 2:
            raise ValueError("segments: a chain needs at least two pair links")
        return self

    @property
    def links(self) -> list[str]:
        """The pair link files, left to right."""
        if self.segments is not None:
            return list(self.segments)
        assert self.left is not None and self.right is not None
        return [self.left, self.right]


class TeleportScenario(_Strict):
    """A teleportation scenario file."""

    name: str = Field(min_length=1)
    description: str | None = None
    input: str
    pair: str
    bsm: BsmConfig = BsmConfig()


def _load_document(path: Path, model: type[BaseModel], what: str) -> Any:
    document = read_yaml_mapping(path, f"the fields of a {what}")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise ConfigError(validation_message(str(path), error, what)) from None


def _link(base: Path, relative: str, field: str) -> LinkConfig:
    path = base / relative
    if not path.is_file():
        raise ConfigError(f"{field}: no such link file {path}")
    return load_link_config(path)


Photon = Literal["x", "xx"]


def cascade_indistinguishability(exciton_lifetime_ns: float, biexciton_lifetime_ns: float) -> float:
    """Upper bound on the HOM overlap of either photon of a biexciton-exciton cascade.

    The exciton is born when the biexciton photon leaves, at a random time, so the two photons'
    wavepackets are entangled in time and each one alone is mixed: M <= T_X / (T_X + T_XX)
    (Simon and Poizat, PRL 94, 030502 (2005); Schoell et al., PRL 125, 233605 (2020), Eq. 1).
    """
    return exciton_lifetime_ns / (exciton_lifetime_ns + biexciton_lifetime_ns)


def _brightness_and_g2(config: LinkConfig) -> tuple[float, float]:
    source = config.source
    if source.kind == "single-photon":
        built = config.source.build()
        assert isinstance(built, SinglePhotonSource)
        _, p1, p2 = built.photon_number_distribution()
        return float(p1 + p2), built.g2
    if source.kind == "entangled-pair":
        assert source.pair_efficiency is not None
        p2 = source.multi_pair_probability
        p1 = source.pair_efficiency - p2
        g2 = 2.0 * p2 / (p1 + 2.0 * p2) ** 2 if p1 + p2 > 0 else 0.0
        return source.pair_efficiency, g2
    raise ConfigError(
        f"{config.name}: two-photon interference needs a quantum-dot source "
        f"(single-photon or entangled-pair), got source.kind {source.kind}"
    )


def emitter(config: LinkConfig, photon: Photon = "x") -> HomEmitter:
    """The photon a link's source sends into two-photon interference.

    ``photon="x"``: the exciton (or single) photon, with the source's measured figures.
    ``photon="xx"``: the biexciton photon of an entangled-pair source: lifetime
    ``source.biexciton_lifetime_ns`` (required), line ``source.biexciton_wavelength_nm`` (default:
    the exciton's, i.e. the two dots' XX lines detuned as their X lines), overlap
    ``source.biexciton_indistinguishability`` or, when it is not measured, the cascade limit of
    :func:`cascade_indistinguishability` (an upper bound: dephasing lowers it further). Spectral
    diffusion and polarisation mismatch are the exciton's (same environment, same optics).
    """
    source = config.source
    brightness, g2 = _brightness_and_g2(config)
    lifetime_ns, wavelength_nm = source.exciton_lifetime_ns, source.wavelength_nm
    overlap, linewidth_uev = source.indistinguishability, source.linewidth_uev
    if photon == "xx":
        if source.kind != "entangled-pair":
            raise ConfigError(
                f"{config.name}: --photon xx needs an entangled-pair source (a biexciton "
                f"cascade), got source.kind {source.kind}"
            )
        if source.biexciton_lifetime_ns is None:
            raise ConfigError(
                f"{config.name}: source.biexciton_lifetime_ns is required for --photon xx "
                "(the biexciton's radiative lifetime, e.g. 0.12 for a GaAs dot)"
            )
        lifetime_ns = source.biexciton_lifetime_ns
        wavelength_nm = source.biexciton_wavelength_nm or source.wavelength_nm
        measured = source.biexciton_indistinguishability
        overlap = (
            cascade_indistinguishability(source.exciton_lifetime_ns, lifetime_ns)
            if measured is None
            else measured
        )
        linewidth_uev = None
    try:
        return HomEmitter(
            brightness=brightness,
            g2=min(g2, 1.0),
            indistinguishability=overlap,
            multiphoton_model=source.multiphoton_model,
            lifetime_ns=lifetime_ns,
            wavelength_nm=wavelength_nm,
            linewidth_uev=linewidth_uev,
            spectral_diffusion_uev=source.spectral_diffusion_uev,
            polarisation_deg=source.polarisation_mismatch_deg,
        )
    except ValueError as error:
        raise ConfigError(f"{config.name}: {error}") from None


def hom_files(
    first: Path, second: Path | None, photon: Photon = "x"
) -> tuple[HomResult, list[LinkConfig]]:
    """``qdnet hom A.yaml [B.yaml] [--photon x|xx]``."""
    configs = [load_link_config(first)] + ([load_link_config(second)] if second else [])
    emitters = [emitter(c, photon) for c in configs]
    return hom(emitters[0], emitters[1] if len(emitters) > 1 else None), configs


def hom_document(result: HomResult, configs: list[LinkConfig]) -> dict[str, Any]:
    """JSON of ``qdnet hom``."""
    return {
        "sources": [c.name for c in configs],
        "visibility": result.visibility,
        "coincidence_probability": result.coincidence_probability,
        "photon_overlap": result.photon_overlap,
        "mean_photons": list(result.mean_photons),
        "contributions": result.contributions,
    }


def _arm_efficiencies(
    config: LinkConfig, left_detector: float, right_detector: float
) -> tuple[float, float]:
    """(left photon, right photon): extraction x its share of the channel x its detector."""
    link = config.build()
    source = link.source
    extraction = source.extraction_efficiency if isinstance(source, EntangledPairSource) else 1.0
    loss_db = link.channel_loss_db
    position = link.protocol.source_position
    return (
        extraction * transmittance_from_loss_db(position * loss_db) * left_detector,
        extraction * transmittance_from_loss_db((1.0 - position) * loss_db) * right_detector,
    )


def pair_of(config: LinkConfig, left_detector: float, right_detector: float) -> Pair:
    """A pair link as the swap sees it."""
    source = config.build().source
    if not isinstance(source, EntangledPairSource):
        raise ConfigError(
            f"{config.name}: swapping needs source.kind entangled-pair, got {config.source.kind}"
        )
    p2 = source.multi_pair_probability
    p1 = source.pair_efficiency - p2
    left, right = _arm_efficiencies(config, left_detector, right_detector)
    return Pair(
        density_matrix=source.density_matrix(),
        pair_probability=source.pair_efficiency,
        multi_pair_weight=p2 / p1 if p1 > 0 else 1.0,
        left_efficiency=left,
        right_efficiency=right,
        repetition_rate_hz=source.repetition_rate_hz,
    )


def _visibility(bsm: BsmConfig, a: LinkConfig, b: LinkConfig, same: bool) -> float:
    if bsm.hom_visibility is not None:
        return bsm.hom_visibility
    return photon_overlap(emitter(a), None if same else emitter(b))


@dataclass(frozen=True)
class SwapReport:
    """Outcome of each swap of a chain (one entry for a single swap)."""

    scenario: SwapScenario
    visibilities: list[float]
    outcomes: list[SwapOutcome]
    repetition_rate_hz: float


@dataclass(frozen=True)
class SwapSetup:
    """What a swap scenario asks for: its pairs and one Bell measurement per junction."""

    scenario: SwapScenario
    pairs: list[Pair]
    measurements: list[BsmSettings]

    @property
    def repetition_rate_hz(self) -> float:
        """Attempts per second: the slowest source sets the pace."""
        return min(p.repetition_rate_hz for p in self.pairs)


def swap_setup(path: Path, visibility: float | None = None) -> SwapSetup:
    """Read a swap scenario (``visibility`` overrides the scenario's overlap V)."""
    scenario: SwapScenario = _load_document(path, SwapScenario, "swap scenario")
    if visibility is not None:
        bsm = scenario.bsm.model_copy(update={"hom_visibility": visibility})
        scenario = scenario.model_copy(update={"bsm": bsm})
    base = path.resolve().parent
    names = scenario.links
    configs = [_link(base, name, f"segments[{i}]") for i, name in enumerate(names)]
    bsm = scenario.bsm
    pairs = []
    for i, config in enumerate(configs):
        left_detector = config.receiver.efficiency if i == 0 else bsm.efficiency
        right_detector = config.receiver.efficiency if i == len(configs) - 1 else bsm.efficiency
        pairs.append(pair_of(config, left_detector, right_detector))
    visibilities = [
        _visibility(bsm, configs[i], configs[i + 1], names[i] == names[i + 1])
        for i in range(len(configs) - 1)
    ]
    measurements = [
        BsmSettings(bsm.efficiency, bsm.dark_count_rate_hz, bsm.window_ns, visibility)
        for visibility in visibilities
    ]
    return SwapSetup(scenario, pairs, measurements)


def swap_file(path: Path, visibility: float | None = None) -> SwapReport:
    """``qdnet swap SCENARIO.yaml`` (``visibility`` overrides the scenario's overlap V)."""
    setup = swap_setup(path, visibility)
    outcomes = swap_chain(setup.pairs, setup.measurements)
    return SwapReport(
        setup.scenario,
        [m.hom_visibility for m in setup.measurements],
        outcomes,
        setup.repetition_rate_hz,
    )


def _matrix(rho: np.ndarray) -> dict[str, list[list[float]]]:
    return {"real": rho.real.tolist(), "imag": rho.imag.tolist()}


def swap_document(report: SwapReport) -> dict[str, Any]:
    """JSON of ``qdnet swap``: the last swap's state, and every swap count for a chain."""
    last = report.outcomes[-1]
    return {
        "scenario": report.scenario.name,
        "hom_visibility": report.visibilities,
        "fidelity": last.fidelity,
        "density_matrix": _matrix(last.density_matrix),
        "basis": ["HH", "HV", "VH", "VV"],
        "success_probability_per_attempt": last.success_probability_per_attempt,
        "rate_hz": last.success_probability_per_attempt * report.repetition_rate_hz,
        "fourfold_rate_hz": last.fourfold_probability_per_attempt * report.repetition_rate_hz,
        "per_swaps": [
            {
                "swaps": k + 1,
                "fidelity": outcome.fidelity,
                "rate_hz": outcome.success_probability_per_attempt * report.repetition_rate_hz,
            }
            for k, outcome in enumerate(report.outcomes)
        ],
    }


def teleport_file(path: Path) -> dict[str, Any]:
    """``qdnet teleport SCENARIO.yaml``: its JSON document."""
    scenario: TeleportScenario = _load_document(path, TeleportScenario, "teleportation scenario")
    base = path.resolve().parent
    qubit = _link(base, scenario.input, "input")
    pair_config = _link(base, scenario.pair, "pair")
    if qubit.source.kind != "single-photon":
        raise ConfigError(f"input: needs source.kind single-photon, got {qubit.source.kind}")
    bsm = scenario.bsm
    photon = emitter(qubit)
    p1, p2 = photon.photon_numbers
    input_efficiency = transmittance_from_loss_db(qubit.build().channel_loss_db) * bsm.efficiency
    reference = Pair(
        density_matrix=projector("phi+"),
        pair_probability=p1 + p2,
        multi_pair_weight=p2 / p1 if p1 > 0 else 1.0,
        left_efficiency=1.0,
        right_efficiency=input_efficiency,
        repetition_rate_hz=qubit.source.repetition_rate_hz,
    )
    pair = pair_of(pair_config, bsm.efficiency, pair_config.receiver.efficiency)
    visibility = _visibility(bsm, qubit, pair_config, False)
    settings = BsmSettings(bsm.efficiency, bsm.dark_count_rate_hz, bsm.window_ns, visibility)
    outcome, _ = swap(reference, pair, settings)
    entanglement_fidelity = outcome.fidelity
    rate = min(reference.repetition_rate_hz, pair.repetition_rate_hz)
    return {
        "scenario": scenario.name,
        "hom_visibility": visibility,
        "fidelity": (2.0 * entanglement_fidelity + 1.0) / 3.0,
        "entanglement_fidelity": entanglement_fidelity,
        "success_probability_per_attempt": outcome.success_probability_per_attempt,
        "rate_hz": outcome.fourfold_probability_per_attempt * rate,
        "heralds_per_s": outcome.success_probability_per_attempt * rate,
    }


def plot_swap_fidelity(path: Path, output: Path, points: int = 51) -> None:
    """PNG of the swapped fidelity against the overlap V, per swap count, the scenario's V marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = swap_file(path)
    grid = np.linspace(0.0, 1.0, points)
    curves = [swap_file(path, float(v)).outcomes for v in grid]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for k in range(len(report.outcomes)):
        axes.plot(grid, [c[k].fidelity for c in curves], label=f"{k + 1} swap{'s' if k else ''}")
        axes.plot(report.visibilities[k], report.outcomes[k].fidelity, "o", color="black")
    axes.axhline(0.5, color="grey", lw=0.8, ls="--")
    axes.set_xlabel("two-photon overlap V at the Bell measurement")
    axes.set_ylabel("fidelity of the swapped state")
    axes.set_title(f"{report.scenario.name}: dots mark the scenario's own V")
    axes.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
