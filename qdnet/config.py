"""Pydantic models of the link YAML a user writes, and how a link is built from it.

Field names are a public contract (see README, "Link YAML"). Unknown fields are errors, so a typo
never silently falls back to a default. Errors name the field path and what was expected.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qdnet.optics.conversion import FrequencyConversion
from qdnet.optics.daylight import Daylight
from qdnet.optics.detectors import Detector
from qdnet.optics.fibre import FibreChannel, default_attenuation_db_per_km
from qdnet.optics.free_space import FreeSpaceChannel
from qdnet.optics.polarisation import PolarisationChannel, compose_errors
from qdnet.optics.receiver import Receiver
from qdnet.protocols.link import Channel, Link, MdiRelay, ProtocolSettings, Source
from qdnet.security.finite_key import EpsSplit
from qdnet.sources.entangled import EntangledPairSource
from qdnet.sources.laser import WeakCoherentSource
from qdnet.sources.quantum_dot import SinglePhotonSource
from qdnet.sources.spdc import SpdcSource


class ConfigError(ValueError):
    """A link file that cannot be used; the message names the field and the expectation."""


class _Strict(BaseModel):
    # Every number of a link is finite: nan or inf gets "Input should be a finite number".
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourceConfig(_Strict):
    """``source:`` block."""

    kind: Literal["single-photon", "entangled-pair", "weak-coherent", "spdc"]
    repetition_rate_hz: float = Field(gt=0)
    wavelength_nm: float = Field(default=1550.0, gt=0)
    mean_photon_number: float | None = Field(default=None, ge=0)
    brightness: float | None = Field(default=None, ge=0, le=1)
    g2: float | None = Field(default=None, ge=0, le=1)
    indistinguishability: float = Field(default=1.0, ge=0, le=1)
    decoy_intensities: list[float] = Field(default_factory=list)
    decoy_g2: list[float] = Field(default_factory=list)
    pair_efficiency: float | None = Field(default=None, ge=0, le=1)
    extraction_efficiency: float = Field(default=1.0, ge=0, le=1)
    fss_uev: float = Field(default=0.0, ge=0)
    exciton_lifetime_ns: float = Field(default=0.25, gt=0)
    spin_scattering_time_ns: float | None = Field(default=None, gt=0)
    cross_dephasing_time_ns: float | None = Field(default=None, gt=0)
    background_fraction: float = Field(default=0.0, ge=0, le=1)
    time_resolved: bool = False
    detector_time_resolution_ps: float = Field(default=0.0, ge=0)
    multi_pair_probability: float = Field(default=0.0, ge=0, le=0.5)
    intrinsic_error: float = Field(default=0.0, ge=0, le=0.5)
    # Two-photon interference (``qdnet hom``, swapping, teleportation; see qdnet/interference):
    multiphoton_model: Literal["distinguishable", "indistinguishable"] = "distinguishable"
    linewidth_uev: float | None = Field(default=None, gt=0)
    spectral_diffusion_uev: float = Field(default=0.0, ge=0)
    polarisation_mismatch_deg: float = Field(default=0.0, ge=-180, le=180)
    # The biexciton photon of an entangled-pair source (``qdnet hom --photon xx``):
    biexciton_lifetime_ns: float | None = Field(default=None, gt=0)
    biexciton_wavelength_nm: float | None = Field(default=None, gt=0)
    biexciton_indistinguishability: float | None = Field(default=None, ge=0, le=1)
    reference: str | None = None

    @model_validator(mode="after")
    def _required_per_kind(self) -> SourceConfig:
        if self.decoy_g2 and self.kind != "single-photon":
            raise ValueError(
                "source.decoy_g2 is the g2 of a quantum dot at each decoy's excitation power "
                f"(kind single-photon), not for kind {self.kind}"
            )
        if self.kind == "single-photon":
            if self.g2 is None:
                raise ValueError("source.g2 is required for kind single-photon")
            if (self.mean_photon_number is None) == (self.brightness is None):
                raise ValueError(
                    "give exactly one of source.mean_photon_number or source.brightness for kind single-photon"
                )
        elif self.kind == "spdc":
            if self.mean_photon_number is None:
                raise ValueError("source.mean_photon_number is required for kind spdc")
        elif self.kind == "entangled-pair" and self.pair_efficiency is None:
            raise ValueError("source.pair_efficiency is required for kind entangled-pair")
        return self

    def build(self) -> Source:
        """The physics object for this source."""
        if self.kind == "single-photon":
            assert self.g2 is not None
            mu = self.mean_photon_number
            if self.brightness is not None:
                mu = SinglePhotonSource.from_brightness(
                    self.brightness, self.g2, self.repetition_rate_hz
                ).mean_photon_number
            assert mu is not None
            return SinglePhotonSource(
                mu,
                self.g2,
                self.repetition_rate_hz,
                self.wavelength_nm,
                self.indistinguishability,
                tuple(self.decoy_intensities),
                lifetime_ns=self.exciton_lifetime_ns,
                decoy_g2=tuple(self.decoy_g2),
            )
        if self.kind == "weak-coherent":
            return WeakCoherentSource(
                self.mean_photon_number,
                self.repetition_rate_hz,
                self.wavelength_nm,
                tuple(self.decoy_intensities),
            )
        if self.kind == "spdc":
            assert self.mean_photon_number is not None
            return SpdcSource(
                self.mean_photon_number,
                self.repetition_rate_hz,
                self.wavelength_nm,
                self.intrinsic_error,
            )
        assert self.pair_efficiency is not None
        return EntangledPairSource(
            pair_efficiency=self.pair_efficiency,
            repetition_rate_hz=self.repetition_rate_hz,
            fss_uev=self.fss_uev,
            exciton_lifetime_ns=self.exciton_lifetime_ns,
            extraction_efficiency=self.extraction_efficiency,
            spin_scattering_time_ns=self.spin_scattering_time_ns,
            cross_dephasing_time_ns=self.cross_dephasing_time_ns,
            background_fraction=self.background_fraction,
            time_resolved=self.time_resolved,
            detector_time_resolution_ps=self.detector_time_resolution_ps,
            multi_pair_probability=self.multi_pair_probability,
            wavelength_nm=self.wavelength_nm,
        )


class FrequencyConversionConfig(_Strict):
    """``channel.frequency_conversion:`` (:mod:`qdnet.optics.conversion`)."""

    efficiency: float = Field(gt=0, le=1)
    output_wavelength_nm: float = Field(gt=0)
    noise_counts_per_gate: float = Field(default=0.0, ge=0)
    arms: Literal["both", "a", "b"] = "both"

    def build(self) -> FrequencyConversion:
        """The converter."""
        return FrequencyConversion(**self.model_dump())


class DaylightConfig(_Strict):
    """``channel.daylight:`` (:mod:`qdnet.optics.daylight`)."""

    sky_radiance_w_m2_sr_nm: float = Field(ge=0)
    field_of_view_urad: float = Field(gt=0)
    aperture_m: float = Field(gt=0)
    filter_nm: float = Field(gt=0)
    arms: Literal["both", "a", "b"] = "both"

    def build(self) -> Daylight:
        """The sky background."""
        return Daylight(**self.model_dump())


class ChannelConfig(_Strict):
    """``channel:`` block. For fibre, ``loss_db`` (if given) overrides length x attenuation."""

    kind: Literal["fibre", "free-space"]
    length_km: float = Field(default=0.0, ge=0)
    loss_db: float | None = Field(default=None, ge=0)
    attenuation_db_per_km: float | None = Field(default=None, ge=0)
    extra_loss_db: float = Field(default=0.0, ge=0)
    background_rate_hz: float = Field(default=0.0, ge=0)
    frequency_conversion: FrequencyConversionConfig | None = None
    polarisation_visibility: float = Field(default=1.0, ge=0, le=1)
    polarisation_rotation_deg: float = Field(default=0.0, ge=-180, le=180)
    polarisation_drift_deg_rms: float = Field(default=0.0, ge=0)
    daylight: DaylightConfig | None = None

    @model_validator(mode="after")
    def _free_space_needs_loss(self) -> ChannelConfig:
        if self.kind == "free-space" and self.loss_db is None:
            raise ValueError("channel.loss_db is required for kind free-space")
        if self.daylight is not None and self.kind != "free-space":
            raise ValueError("channel.daylight needs channel.kind free-space")
        return self

    def polarisation(self) -> PolarisationChannel | None:
        """The polarisation channel (None when it is the identity)."""
        channel = PolarisationChannel(
            self.polarisation_visibility,
            self.polarisation_rotation_deg,
            self.polarisation_drift_deg_rms,
        )
        return None if channel.is_identity else channel

    def build(self, wavelength_nm: float) -> Channel:
        """The physics object for this channel (the fibre's attenuation at the wavelength that
        travels it: a frequency converter's output wavelength where there is one)."""
        if self.kind == "free-space":
            assert self.loss_db is not None
            return FreeSpaceChannel(self.loss_db, self.background_rate_hz, self.length_km)
        if self.frequency_conversion is not None:
            wavelength_nm = self.frequency_conversion.output_wavelength_nm
        attenuation = (
            self.attenuation_db_per_km
            if self.attenuation_db_per_km is not None
            else default_attenuation_db_per_km(wavelength_nm)
        )
        return FibreChannel(self.length_km, attenuation, self.extra_loss_db, self.loss_db)


class ReceiverConfig(_Strict):
    """``receiver:`` block (the same detectors at every output; for BBM92 at both ends)."""

    efficiency: float = Field(gt=0, le=1)
    dark_count_rate_hz: float = Field(default=0.0, ge=0)
    window_ns: float = Field(default=1.0, gt=0)
    misalignment: float = Field(default=0.0, ge=0, le=0.5)
    afterpulse_probability: float = Field(default=0.0, ge=0, lt=1)
    dead_time_ns: float = Field(default=0.0, ge=0)
    jitter_ps: float = Field(default=0.0, ge=0)
    gate_ns: float | Literal["optimise"] | None = None
    interferometer_visibility: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _gate_inside_window(self) -> ReceiverConfig:
        gate = self.gate_ns
        if isinstance(gate, float) and not 0 < gate <= self.window_ns:
            raise ValueError(
                f"receiver.gate_ns must be in (0, receiver.window_ns = {self.window_ns}], got {gate}"
            )
        return self

    def build(self) -> Receiver:
        """The physics object for this receiver."""
        detector = Detector(
            efficiency=self.efficiency,
            dark_count_rate_hz=self.dark_count_rate_hz,
            window_ns=self.window_ns,
            dead_time_ns=self.dead_time_ns,
            afterpulse_probability=self.afterpulse_probability,
            jitter_ps=self.jitter_ps,
        )
        return Receiver(detector, self.misalignment, self.interferometer_visibility)


class EpsSplitConfig(_Strict):
    """``protocol.eps_split:`` shares of eps_sec (:class:`qdnet.security.finite_key.EpsSplit`)."""

    estimation: float = Field(gt=0, lt=1)
    privacy_amplification: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> EpsSplitConfig:
        self.build()
        return self

    def build(self) -> EpsSplit:
        """The split."""
        return EpsSplit(self.estimation, self.privacy_amplification)


class ProtocolConfig(_Strict):
    """``protocol:`` block."""

    kind: Literal["bb84", "decoy-bb84", "bbm92", "three-state-time-bin", "mdi-bb84"]
    encoding: Literal["polarisation", "time-bin"] | None = None
    basis_bias: float | None = Field(default=None, ge=0.5, lt=1)
    error_correction_efficiency: float = Field(default=1.16, ge=1)
    block_size: float | None = Field(default=None, ge=1e3)
    eps_sec: float = Field(default=1e-10, gt=0, lt=1)
    eps_cor: float = Field(default=1e-15, gt=0, lt=1)
    source_position: float = Field(default=0.0, ge=0, le=1)
    optimise_intensity: bool = True
    key_bases: Literal["z", "both"] = "z"
    eps_split: EpsSplitConfig | None = None
    # mdi-bb84 (qdnet.protocols.mdi): the relay's place as the share of channel.length_km (of the
    # channel loss) from Alice, and the link file whose source Bob uses (default: this file's).
    relay_position: float = Field(default=0.5, ge=0, le=1)
    bob_source: str | None = None

    def build(self) -> ProtocolSettings:
        """The protocol settings."""
        fields = self.model_dump(exclude={"eps_split", "encoding", "relay_position", "bob_source"})
        split = None if self.eps_split is None else self.eps_split.build()
        encoding = self.encoding or (
            "time-bin" if self.kind == "three-state-time-bin" else "polarisation"
        )
        return ProtocolSettings(**fields, eps_split=split, encoding=encoding)


class LinkConfig(_Strict):
    """A whole link file."""

    name: str = Field(min_length=1)
    description: str | None = None
    source: SourceConfig
    channel: ChannelConfig
    receiver: ReceiverConfig
    protocol: ProtocolConfig

    @model_validator(mode="after")
    def _compatible(self) -> LinkConfig:
        pm = {"single-photon", "weak-coherent"}
        pair = {"entangled-pair", "spdc"}
        kind, source = self.protocol.kind, self.source.kind
        if kind in ("bb84", "decoy-bb84", "three-state-time-bin") and source not in pm:
            raise ValueError(
                f"protocol.kind {kind} needs source.kind single-photon or weak-coherent, got {source}"
            )
        if kind == "bbm92" and source not in pair:
            raise ValueError(
                f"protocol.kind bbm92 needs source.kind entangled-pair or spdc, got {source}"
            )
        _check_encoding(self)
        _check_mdi(self)
        for element in ("frequency_conversion", "daylight"):
            setting = getattr(self.channel, element)
            if setting is None:
                continue
            if kind != "bbm92" and setting.arms != "both":
                raise ValueError(
                    f"channel.{element}.arms is for bbm92 links (a prepare-and-measure link has "
                    f"one path); got {setting.arms}"
                )
        conversion = self.channel.frequency_conversion
        uses_default_attenuation = (
            self.channel.kind == "fibre"
            and self.channel.attenuation_db_per_km is None
            and self.channel.loss_db is None
        )
        if kind == "bbm92" and conversion is not None and conversion.arms != "both":
            other_share = (
                self.protocol.source_position
                if conversion.arms == "b"
                else 1 - self.protocol.source_position
            )
            if uses_default_attenuation and other_share > 0:
                raise ValueError(
                    f"channel.frequency_conversion.arms {conversion.arms}: the unconverted arm "
                    "would cross fibre at another wavelength; set protocol.source_position to "
                    f"{0 if conversion.arms == 'b' else 1} or channel.attenuation_db_per_km"
                )
        if self.receiver.gate_ns is not None and kind == "bbm92":
            raise ValueError(
                "receiver.gate_ns is modelled for bb84 and decoy-bb84 links (prepare and measure)"
            )
        if kind == "decoy-bb84" and source != "weak-coherent" and not self.source.decoy_intensities:
            raise ValueError(
                "protocol.kind decoy-bb84 with a single-photon source needs "
                "source.decoy_intensities (the excitation powers of the dot's decoys)"
            )
        return self

    def build(self) -> Link:
        """The physics objects of the link (raises ConfigError on inconsistent values)."""
        try:
            source = self.source.build()
            receiver = self.receiver.build()
            polarisation = self.channel.polarisation()
            if polarisation is not None and self.protocol.kind != "bbm92":
                # One photon per pulse: the channel's flips compose with the receiver's exactly.
                error = compose_errors(receiver.misalignment, polarisation.photon_error())
                receiver = replace(receiver, misalignment=error)
                polarisation = None
            conversion, daylight = self.channel.frequency_conversion, self.channel.daylight
            return Link(
                name=self.name,
                source=source,
                channel=self.channel.build(self.source.wavelength_nm),
                receiver=receiver,
                protocol=self.protocol.build(),
                gate_ns=self.receiver.gate_ns,
                conversion=None if conversion is None else conversion.build(),
                daylight=None if daylight is None else daylight.build(),
                polarisation=polarisation,
                mdi=_mdi_relay(self, source) if self.protocol.kind == "mdi-bb84" else None,
            )
        except ValueError as error:
            raise ConfigError(f"{self.name}: {error}") from None


def _check_encoding(link: LinkConfig) -> None:
    """``protocol.encoding`` and ``receiver.interferometer_visibility`` against the protocol."""
    kind, encoding = link.protocol.kind, link.protocol.encoding
    if kind == "three-state-time-bin":
        if encoding == "polarisation":
            raise ValueError("protocol.kind three-state-time-bin needs protocol.encoding time-bin")
        if link.protocol.key_bases != "z":
            raise ValueError(
                "protocol.key_bases: three-state-time-bin keys the Z basis only (X sends |+> alone)"
            )
        if link.channel.polarisation() is not None:
            raise ValueError(
                "channel.polarisation_*: a time-bin qubit does not depend on the path's "
                "polarisation; give the interferometer's receiver.interferometer_visibility"
            )
        return
    if encoding == "time-bin":
        raise ValueError(
            f"protocol.encoding time-bin is modelled for protocol.kind three-state-time-bin, "
            f"not {kind}"
        )
    if link.receiver.interferometer_visibility != 1.0:
        raise ValueError(
            "receiver.interferometer_visibility is for protocol.encoding time-bin "
            "(protocol.kind three-state-time-bin)"
        )


def _check_mdi(link: LinkConfig) -> None:
    """What an mdi-bb84 link models (:mod:`qdnet.protocols.mdi`) and the fields only it takes."""
    protocol, receiver = link.protocol, link.receiver
    if protocol.kind != "mdi-bb84":
        if protocol.bob_source is not None or protocol.relay_position != 0.5:
            raise ValueError("protocol.relay_position and protocol.bob_source are for mdi-bb84")
        return
    if link.source.kind not in ("single-photon", "weak-coherent"):
        raise ValueError(
            f"protocol.kind mdi-bb84 needs source.kind single-photon or weak-coherent, got "
            f"{link.source.kind}"
        )
    unsupported = {
        "channel.frequency_conversion": link.channel.frequency_conversion is not None,
        "channel.daylight": link.channel.daylight is not None,
        "receiver.gate_ns": receiver.gate_ns is not None,
        "receiver.dead_time_ns": receiver.dead_time_ns > 0,
        "receiver.afterpulse_probability": receiver.afterpulse_probability > 0,
        "protocol.key_bases both": protocol.key_bases != "z",
    }
    for name, present in unsupported.items():
        if present:
            raise ValueError(f"{name} is not modelled for protocol.kind mdi-bb84 (leave it out)")


def _mdi_relay(config: LinkConfig, alice: Source) -> MdiRelay:
    """The relay of an mdi-bb84 link: Bob's source (``protocol.bob_source`` or this file's) and,
    for two quantum dots, the single-photon overlap and HOM visibility of their photons
    (:mod:`qdnet.interference.hom`)."""
    from qdnet.interference.hom import hom, photon_overlap
    from qdnet.interference.scenario import emitter

    path = config.protocol.bob_source
    bob_config = config if path is None else load_link_config(path)
    if bob_config.source.kind != config.source.kind:
        raise ValueError(
            f"protocol.bob_source {path}: source.kind {bob_config.source.kind} differs from "
            f"Alice's {config.source.kind} (both quantum dots or both decoy lasers)"
        )
    bob = bob_config.source.build()
    assert isinstance(bob, SinglePhotonSource | WeakCoherentSource)
    if bob.repetition_rate_hz != alice.repetition_rate_hz:
        raise ValueError(
            f"protocol.bob_source {path}: source.repetition_rate_hz {bob.repetition_rate_hz:g} "
            f"differs from Alice's {alice.repetition_rate_hz:g} (the pulses meet at the relay)"
        )
    position = config.protocol.relay_position
    if isinstance(bob, WeakCoherentSource):
        return MdiRelay(position, bob)
    try:
        a, b = emitter(config), emitter(bob_config)
    except ConfigError as error:  # named by its link file already; build() names it again
        raise ValueError(str(error).removeprefix(f"{config.name}: ")) from None
    return MdiRelay(position, bob, photon_overlap(a, b), hom(a, b).visibility)


def validation_message(origin: str, error: ValidationError, what: str = "link file") -> str:
    """One line per invalid field: ``origin: invalid WHAT`` then ``  field.path: message (got x)``."""
    lines = [f"{origin}: invalid {what}"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {path or what.split()[0]}: {message}{shown}")
    return "\n".join(lines)


def read_yaml_mapping(path: str | Path, expected: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; errors name the file (``expected`` says what it should hold)."""
    origin = str(path)
    try:
        document = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{origin}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{origin}: is a folder, expected a YAML file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin}: not valid YAML ({error})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{origin}: expected a mapping with {expected}")
    return document


def parse_override(text: str) -> tuple[list[str], Any]:
    """``protocol.block_size=1e8`` -> (["protocol", "block_size"], 1e8) (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(
            f"--set {text!r}: expected FIELD.PATH=VALUE, e.g. protocol.block_size=1e8"
        )
    path, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    return path.strip().split("."), value


def apply_overrides(document: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted fields in a raw link document."""
    for text in overrides:
        keys, value = parse_override(text)
        node = document
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {key!r} is not a section of the link file")
            node = child
        node[keys[-1]] = value
    return document


def resolve_link_paths(document: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A link document with its file paths (``protocol.bob_source``) made relative to the folder
    of the file ``path`` it was read from."""
    protocol = document.get("protocol")
    if isinstance(protocol, dict) and isinstance(protocol.get("bob_source"), str):
        protocol["bob_source"] = str(Path(path).parent / protocol["bob_source"])
    return document


def load_link_config(path: str | Path, overrides: list[str] | None = None) -> LinkConfig:
    """Read and validate a link YAML file."""
    document = read_yaml_mapping(path, "name, source, channel, receiver, protocol")
    document = resolve_link_paths(apply_overrides(document, overrides or []), path)
    try:
        return LinkConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(validation_message(str(path), error)) from None


def load_link(path: str | Path, overrides: list[str] | None = None) -> Link:
    """Read, validate and build a link."""
    return load_link_config(path, overrides).build()
