"""Two-photon (Hong-Ou-Mandel) interference of quantum-dot photons at a 50:50 beam splitter.

**Source model** (Pont et al., PRX 12, 031033 (2022); Perceval's ``Source``): per pulse a dot
emits 0, 1 or 2 photons with P(1) + P(2) = brightness and g2 = 2 P(2) / (P(1) + 2 P(2))^2. The
signal photon sits in the source's pure wavepacket with probability sqrt(M) (else in a mode of its
own), so that two photons of the same dot overlap with probability M, the indistinguishability.
The extra photon of a two-photon emission is either in a mode of its own (``distinguishable``) or
in the source's pure wavepacket (``indistinguishable``), Perceval's two ``multiphoton_model``\\ s.

**Visibility.** For independent, phase-randomised inputs a and b with mean photon numbers N, pair
moments G = <n(n-1)> and first-order coherence matrices Gamma (over internal modes), the 50:50
outputs c, d give (normal ordering; no loss or detector model is needed, as for g2)::

    <n_c n_d> = (G_a + G_b + 2 N_a N_b - 2 Tr(Gamma_a Gamma_b)) / 4,  <n_c> = <n_d> = (N_a + N_b) / 2

and the pulsed HOM visibility, central peak over side peaks, V = 1 - 2 <n_c n_d> / (<n_c><n_d>).
With the model above, Tr(Gamma_a Gamma_b) = n0_a n0_b X cos^2(theta), where n0 is the mean number
of photons in a source's pure wavepacket, theta the polarisation mismatch, and X the overlap of
the two pure wavepackets. For one source (its photons delayed onto each other) X = 1 and V = M
at g2 = 0 (Ollivier et al., PRL 126, 063602 (2021): V ~ M - (1 + M) g2 with distinguishable
noise photons, to first order).

**Two emitters.** A dot with radiative lifetime T1 (rate Gamma = 1/T1) and Markovian pure
dephasing gamma* emits a Lorentzian line of FWHM hbar (Gamma + 2 gamma*); its photons overlap
with M = Gamma / (Gamma + 2 gamma*) = T2 / (2 T1) (Bylander et al., EPJ D 22, 295 (2003)). Two
such dots, detuned by Delta (angular frequency), have single-photon overlap (Kambs and Becher,
New J. Phys. 20, 115003 (2018), Eq. 9 without time filtering)::

    O(Delta) = Gamma_1 Gamma_2 (Gamma_s + gamma*) / (Gamma_s ((Gamma_s + gamma*)^2 + Delta^2)),
    Gamma_s = (Gamma_1 + Gamma_2) / 2,   gamma* = gamma_1* + gamma_2*

Slow spectral diffusion (a Gaussian spread of each line's centre, FWHM ``spectral_diffusion_uev``,
frozen during one pair of photons, independent between dots) averages O over a Gaussian
detuning of variance sigma_1^2 + sigma_2^2: a Voigt profile, evaluated with the Faddeeva function
(Re w). Consecutive photons of one dot see neither the detuning nor the diffusion. X is then
O / sqrt(M_1 M_2) (at most 1, by Cauchy-Schwarz). The time-integrated visibility does not depend
on the detectors' timing jitter (Legero et al., Appl. Phys. B 77, 797 (2003)); jitter matters
only with a coincidence window shorter than the wavepacket, which is not modelled here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from scipy.special import wofz

from qdnet.sources.entangled import HBAR_UEV_NS

#: h c in ueV nm (CODATA 2018: 1.239841984 eV um).
HC_UEV_NM = 1.239841984e9
#: Gaussian FWHM / standard deviation.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

MultiphotonModel = Literal["distinguishable", "indistinguishable"]


@dataclass(frozen=True)
class HomEmitter:
    """What HOM interference needs of one source (see the module docstring).

    ``indistinguishability`` is M of consecutive photons; ``linewidth_uev`` (Lorentzian FWHM), when
    given, sets M = hbar / (T1 * linewidth) instead. ``spectral_diffusion_uev`` is the FWHM of
    the slow Gaussian wander of the line's centre.
    """

    brightness: float
    g2: float = 0.0
    indistinguishability: float = 1.0
    multiphoton_model: MultiphotonModel = "distinguishable"
    lifetime_ns: float = 0.25
    wavelength_nm: float = 780.0
    linewidth_uev: float | None = None
    spectral_diffusion_uev: float = 0.0
    polarisation_deg: float = 0.0

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("source.brightness", self.brightness, 0.0, 1.0),
            ("source.g2", self.g2, 0.0, 1.0),
            ("source.indistinguishability", self.indistinguishability, 0.0, 1.0),
        ):
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        if self.brightness <= 0:
            raise ValueError("source.brightness must be > 0 for two-photon interference")
        if not self.lifetime_ns > 0 or not self.wavelength_nm > 0:
            raise ValueError("source.exciton_lifetime_ns and source.wavelength_nm must be > 0")
        if self.spectral_diffusion_uev < 0:
            raise ValueError(
                f"source.spectral_diffusion_uev must be >= 0, got {self.spectral_diffusion_uev}"
            )
        if self.linewidth_uev is not None and self.linewidth_uev < self.transform_limit_uev * (
            1 - 1e-9
        ):
            raise ValueError(
                f"source.linewidth_uev {self.linewidth_uev} is below the transform limit "
                f"hbar / T1 = {self.transform_limit_uev:.4g} ueV of exciton_lifetime_ns "
                f"{self.lifetime_ns}"
            )
        if self.multiphoton_model not in ("distinguishable", "indistinguishable"):
            raise ValueError(
                "source.multiphoton_model must be distinguishable or indistinguishable, got "
                f"{self.multiphoton_model!r}"
            )

    @property
    def transform_limit_uev(self) -> float:
        """hbar / T1, the FWHM of a line without pure dephasing."""
        return HBAR_UEV_NS / self.lifetime_ns

    @property
    def overlap(self) -> float:
        """M: the overlap of two consecutive photons (from the linewidth when it is given)."""
        if self.linewidth_uev is not None:
            return min(1.0, self.transform_limit_uev / self.linewidth_uev)
        return self.indistinguishability

    @property
    def decay_rate_per_ns(self) -> float:
        """Gamma = 1 / T1."""
        return 1.0 / self.lifetime_ns

    @property
    def dephasing_rate_per_ns(self) -> float:
        """gamma* = Gamma (1 - M) / (2 M) (from M = Gamma / (Gamma + 2 gamma*))."""
        m = self.overlap
        return math.inf if m <= 0 else self.decay_rate_per_ns * (1.0 - m) / (2.0 * m)

    @property
    def photon_numbers(self) -> tuple[float, float]:
        """(P(1), P(2)) from brightness and g2 (Perceval's convention)."""
        beta, g = self.brightness, self.g2
        if g == 0.0:
            return beta, 0.0
        gb = g * beta
        p2 = g * beta * beta / ((1.0 - gb) + math.sqrt(max(0.0, 1.0 - 2.0 * gb)))
        return beta - p2, p2

    def moments(self) -> tuple[float, float, float]:
        """(N, G = <n(n-1)>, n0 = mean photons in the pure wavepacket)."""
        p1, p2 = self.photon_numbers
        root = math.sqrt(self.overlap)
        if self.multiphoton_model == "distinguishable":
            pure = p1 * root + p2 * root
        else:
            pure = p1 * root + p2 * (2.0 * root + (1.0 - root))
        return p1 + 2.0 * p2, 2.0 * p2, pure


def _sigma_per_ns(emitter: HomEmitter) -> float:
    return emitter.spectral_diffusion_uev / FWHM_PER_SIGMA / HBAR_UEV_NS


def detuning_uev(a: HomEmitter, b: HomEmitter) -> float:
    """Centre-energy difference E_a - E_b from the two wavelengths."""
    return HC_UEV_NM / a.wavelength_nm - HC_UEV_NM / b.wavelength_nm


def photon_overlap(a: HomEmitter, b: HomEmitter | None = None) -> float:
    """Tr(rho_a rho_b) of two single photons: M for one dot, Kambs-Becher with Voigt averaging."""
    if b is None:
        return a.overlap
    if a.overlap <= 0 or b.overlap <= 0:
        return 0.0
    g1, g2 = a.decay_rate_per_ns, b.decay_rate_per_ns
    gs = (g1 + g2) / 2.0
    width = gs + a.dephasing_rate_per_ns + b.dephasing_rate_per_ns
    delta = detuning_uev(a, b) / HBAR_UEV_NS
    sigma = math.hypot(_sigma_per_ns(a), _sigma_per_ns(b))
    if sigma == 0.0:
        lorentz = width / (width * width + delta * delta)
    else:
        z = complex(delta, width) / (sigma * math.sqrt(2.0))
        lorentz = math.sqrt(math.pi / 2.0) / sigma * float(wofz(z).real)
    return g1 * g2 / gs * lorentz


@dataclass(frozen=True)
class HomResult:
    """Visibility, coincidences per pulse pair and what each imperfection costs."""

    visibility: float
    coincidence_probability: float
    mean_photons: tuple[float, float]
    photon_overlap: float
    contributions: dict[str, float]


def _visibility(a: HomEmitter, b: HomEmitter | None) -> tuple[float, float, float]:
    """(V, <n_c n_d>, single-photon overlap)."""
    other = a if b is None else b
    n_a, g_a, pure_a = a.moments()
    n_b, g_b, pure_b = other.moments()
    overlap = photon_overlap(a, b)
    root = math.sqrt(a.overlap * other.overlap)
    wavepackets = overlap / root if root > 0 else 0.0
    mismatch = 0.0 if b is None else math.radians(b.polarisation_deg - a.polarisation_deg)
    trace = pure_a * pure_b * min(1.0, wavepackets) * math.cos(mismatch) ** 2
    coincidences = (g_a + g_b + 2.0 * n_a * n_b - 2.0 * trace) / 4.0
    side = (n_a + n_b) ** 2 / 4.0
    return 1.0 - 2.0 * coincidences / side, coincidences, overlap


#: The fields behind each imperfection of ``HomResult.contributions``.
IMPERFECTIONS: dict[str, tuple[str, ...]] = {
    "multiphoton": ("g2", "multiphoton_model"),
    "dephasing": ("indistinguishability", "linewidth_uev"),
    "detuning": ("wavelength_nm",),
    "spectral_diffusion": ("spectral_diffusion_uev",),
    "polarisation": ("polarisation_deg",),
}


def _ideal(emitter: HomEmitter, reference: HomEmitter) -> HomEmitter:
    """The emitter without imperfections (its lifetime kept), at the reference's wavelength."""
    return replace(
        emitter,
        g2=0.0,
        indistinguishability=1.0,
        linewidth_uev=None,
        spectral_diffusion_uev=0.0,
        polarisation_deg=0.0,
        wavelength_nm=reference.wavelength_nm,
    )


def hom(a: HomEmitter, b: HomEmitter | None = None) -> HomResult:
    """Pulsed HOM interference of a source with itself (b None) or of two independent sources.

    ``contributions`` gives, per imperfection, the visibility it costs on its own: the visibility
    with every other imperfection removed (lifetimes kept) minus the visibility with it restored;
    ``lifetime_mismatch`` is what two different lifetimes cost with nothing else.
    """
    visibility, coincidences, overlap = _visibility(a, b)
    names = ("multiphoton", "dephasing") if b is None else tuple(IMPERFECTIONS)
    base_a = _ideal(a, a)
    base_b = None if b is None else _ideal(b, a)
    baseline = _visibility(base_a, base_b)[0]
    contributions: dict[str, float] = {}
    for name in names:
        fields = IMPERFECTIONS[name]
        one_a = replace(base_a, **{f: getattr(a, f) for f in fields})
        one_b = None
        if b is not None and base_b is not None:
            one_b = replace(base_b, **{f: getattr(b, f) for f in fields})
        contributions[name] = baseline - _visibility(one_a, one_b)[0]
    if b is not None:
        contributions["lifetime_mismatch"] = 1.0 - baseline
    return HomResult(
        visibility=visibility,
        coincidence_probability=coincidences,
        mean_photons=(a.moments()[0], (a if b is None else b).moments()[0]),
        photon_overlap=overlap,
        contributions=contributions,
    )
