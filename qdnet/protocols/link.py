"""A QKD link: source + channel + receiver + protocol settings (built from the YAML by ``qdnet.config``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from qdnet.optics.conversion import FrequencyConversion, on_arm
from qdnet.optics.daylight import Daylight
from qdnet.optics.fibre import FibreChannel, transmittance_from_loss_db
from qdnet.optics.free_space import FreeSpaceChannel
from qdnet.optics.polarisation import PolarisationChannel
from qdnet.optics.receiver import Receiver
from qdnet.security.finite_key import EpsSplit
from qdnet.sources.entangled import EntangledPairSource
from qdnet.sources.laser import WeakCoherentSource
from qdnet.sources.quantum_dot import SinglePhotonSource
from qdnet.sources.spdc import SpdcSource

ProtocolKind = Literal["bb84", "decoy-bb84", "bbm92", "three-state-time-bin", "mdi-bb84"]
Source = SinglePhotonSource | EntangledPairSource | WeakCoherentSource | SpdcSource
PrepareMeasureSource = SinglePhotonSource | WeakCoherentSource
PairSource = EntangledPairSource | SpdcSource
Channel = FibreChannel | FreeSpaceChannel
Arm = Literal["a", "b"]


@dataclass(frozen=True)
class ProtocolSettings:
    """Protocol choices; ``basis_bias`` None means the optimiser chooses P(Z)."""

    kind: ProtocolKind
    basis_bias: float | None = None
    error_correction_efficiency: float = 1.16
    block_size: float | None = None
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    source_position: float = 0.0
    optimise_intensity: bool = True
    #: ``z``: key from the Z basis only; ``both``: from both bases (``qdnet.keyrate``).
    key_bases: Literal["z", "both"] = "z"
    #: Shares of eps_sec (``protocol.eps_split``); None, the published split of the analysis.
    eps_split: EpsSplit | None = None
    #: Qubit encoding: ``time-bin`` for three-state-time-bin (:mod:`qdnet.protocols.three_state`).
    encoding: Literal["polarisation", "time-bin"] = "polarisation"


@dataclass(frozen=True)
class MdiRelay:
    """``protocol.kind: mdi-bb84`` (:mod:`qdnet.protocols.mdi`): the untrusted relay's place (the
    share of the channel loss from Alice to it), Bob's source, and the single-photon overlap of
    the two sources' photons (1 for lasers) with the HOM visibility behind it (dots)."""

    relay_position: float
    bob_source: PrepareMeasureSource
    photon_overlap: float = 1.0
    hom_visibility: float | None = None


@dataclass(frozen=True)
class Link:
    """Everything the analytic model and the Monte Carlo need to know about one link."""

    name: str
    source: Source
    channel: Channel
    receiver: Receiver
    protocol: ProtocolSettings
    #: Receiver time gate (``receiver.gate_ns``): None, the window keeps the whole emission; a width
    #: in ns (:mod:`qdnet.sources.time_profile`); "optimise", keyrate chooses it.
    gate_ns: float | Literal["optimise"] | None = None
    #: Optical elements of the path (``channel.frequency_conversion``, ``channel.daylight``, and for
    #: pairs the polarisation channel; a prepare-and-measure link's polarisation channel is folded
    #: into ``receiver.misalignment`` by :mod:`qdnet.config`, exactly: see
    #: :mod:`qdnet.optics.polarisation`).
    conversion: FrequencyConversion | None = None
    daylight: Daylight | None = None
    polarisation: PolarisationChannel | None = None
    #: mdi-bb84 only: the relay and Bob's source.
    mdi: MdiRelay | None = None

    @property
    def repetition_rate_hz(self) -> float:
        """Pulses (excitations) per second."""
        return self.source.repetition_rate_hz

    @property
    def channel_loss_db(self) -> float:
        """Total channel loss (both arms for BBM92)."""
        return self.channel.loss_db

    @property
    def channel_transmittance(self) -> float:
        """Total channel transmittance (both arms for BBM92)."""
        return self.channel.transmittance

    @property
    def background_rate_hz(self) -> float:
        """Background counts per second per detector at Bob (the one receiver of a prepare-and-
        measure link): :meth:`arm_background_rate_hz` of arm b."""
        return self.arm_background_rate_hz("b")

    def arm_channel_transmittance(self, arm: Arm) -> float:
        """Channel transmittance of one arm: BBM92 splits the loss at ``protocol.source_position``
        (arm a from the source to Alice); a prepare-and-measure link has one path, arm b."""
        if self.protocol.kind != "bbm92":
            return self.channel_transmittance
        position = self.protocol.source_position
        share = position if arm == "a" else 1.0 - position
        return transmittance_from_loss_db(share * self.channel_loss_db)

    def arm_conversion_efficiency(self, arm: Arm) -> float:
        """Efficiency of the frequency converter on this arm (1 without one)."""
        if self.conversion is None or not on_arm(self.conversion.arms, arm):
            return 1.0
        return self.conversion.efficiency

    def arm_wavelength_nm(self, arm: Arm) -> float:
        """Wavelength of the photons reaching the arm's receiver."""
        if self.conversion is not None and on_arm(self.conversion.arms, arm):
            return self.conversion.output_wavelength_nm
        return self.source.wavelength_nm

    def arm_background_rate_hz(self, arm: Arm) -> float:
        """Background counts per second per detector of the arm's receiver: the channel's
        ``background_rate_hz``, daylight (:mod:`qdnet.optics.daylight`) and the converter's noise
        photons after the arm's channel (:mod:`qdnet.optics.conversion`)."""
        detector = self.receiver.detector
        rate = self.channel.background_rate_hz
        if self.daylight is not None and on_arm(self.daylight.arms, arm):
            rate += self.daylight.background_rate_hz(
                self.arm_wavelength_nm(arm), detector.efficiency
            )
        if self.conversion is not None and on_arm(self.conversion.arms, arm):
            rate += self.conversion.background_rate_hz(
                self.arm_channel_transmittance(arm), detector.efficiency, detector.window_ns
            )
        return rate

    def with_distance_km(self, length_km: float) -> Link:
        """The same link over another fibre length (fibre channels only)."""
        if not isinstance(self.channel, FibreChannel):
            raise ValueError(
                "--distance-km needs channel.kind: fibre; use --loss-db for free space"
            )
        return replace(
            self, channel=replace(self.channel, length_km=length_km, loss_db_override=None)
        )

    def with_loss_db(self, loss_db: float) -> Link:
        """The same link with the channel loss set to ``loss_db``."""
        if isinstance(self.channel, FibreChannel):
            channel: Channel = replace(self.channel, loss_db_override=loss_db)
        else:
            channel = replace(self.channel, loss_db=loss_db)
        return replace(self, channel=channel)

    def with_gate_ns(self, gate_ns: float | Literal["optimise"] | None) -> Link:
        """The same link with another receiver time gate."""
        return replace(self, gate_ns=gate_ns)

    def with_protocol(self, **changes: object) -> Link:
        """The same link with some protocol settings changed."""
        return replace(self, protocol=replace(self.protocol, **changes))  # type: ignore[arg-type]
