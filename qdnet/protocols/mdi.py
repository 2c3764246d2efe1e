"""Expected statistics of measurement-device-independent BB84 (``protocol.kind: mdi-bb84``).

Alice and Bob each send a polarisation BB84 state (Z: H/V, X: +45/-45 degrees) to an untrusted
relay (Lo, Curty, Qi, PRL 108, 130503 (2012)). The relay interferes the two pulses on a 50:50
beam splitter with a polarising beam splitter and two threshold detectors in each output c, d
(four detectors cH, cV, dH, dV) and announces a Bell-state measurement (BSM) when exactly two
detectors click: ``cH dV`` or ``cV dH`` project on Psi-, ``cH cV`` or ``dH dV`` on Psi+
(Lo-Curty-Qi, Fig. 1). Bob flips his bit after any success in Z and after Psi- in X, so that an
error is an announced pair of bits that then differ.

**Channels** (``protocol.relay_position`` = the fraction of the channel, in dB of loss, from Alice
to the relay): Alice's pulse reaches the relay's detectors with ``eta_a = T_a x
receiver.efficiency``, Bob's with ``eta_b``; ``p_d`` = dark and background click probability per
detector and window; ``receiver.misalignment`` ``e_d`` is the misalignment of Bob's polarisation
frame against Alice's (both paths composed): a rotation by ``theta = asin(sqrt(e_d))``, so that
one photon pair gives an error e_d in either basis (the meaning of e_d in Xu et al. 2013).

**Decoy lasers** (phase-randomised weak coherent pulses of mean photon numbers mu_a, mu_b): gains
and error gains per basis in closed form, Xu, Curty, Qi, Lo, New J. Phys. 15, 113007 (2013),
Appendix B (after Ma and Razavi, PRA 86, 062319 (2012)), with ``A = eta_a mu_a``, ``B = eta_b
mu_b``, ``mu' = A + B``, ``x = sqrt(A B)/2``, ``y = (1 - p_d) e^(-mu'/4)``, ``I0`` the modified
Bessel function::

    Q_C = 2 (1-p_d)^2 e^(-mu'/2) [1 - (1-p_d) e^(-A/2)] [1 - (1-p_d) e^(-B/2)]
    Q_E = 2 p_d (1-p_d)^2 e^(-mu'/2) [I0(2x) - (1-p_d) e^(-mu'/2)]
    Q_Z = Q_C + Q_E,   E_Z Q_Z = e_d Q_C + (1 - e_d) Q_E
    Q_X = 2 y^2 [1 + 2 y^2 - 4 y I0(x) + I0(2x)]
    E_X Q_X = e0 Q_X - 2 (e0 - e_d) y^2 [I0(2x) - 1],   e0 = 1/2

(``tests/protocols/test_mdi.py`` checks them against a direct average over the pulses' relative
phase.)

**Quantum-dot single photons**: each source emits 0, 1 or 2 photons (its photon-number
distribution, :class:`~qdnet.sources.quantum_dot.SinglePhotonSource`, P(2) = g2 mu^2/2). The click
patterns are summed over the nine photon-number pairs (n_a, n_b):

- one photon from each: a partially distinguishable pair of single-photon overlap
  ``V = Tr(rho_a rho_b)`` (:func:`qdnet.interference.hom.photon_overlap` of the two sources'
  figures: lifetimes, dephasing, detuning, spectral diffusion; ``source.polarisation_mismatch_deg``
  is not used, the polarisation carrying the qubit: a residual rotation between Alice's and
  Bob's frames is e_d). Coincidence probabilities of two single photons are linear in V (Hong, Ou,
  Mandel, PRL 59, 2044 (1987); Legero et al., Appl. Phys. B 77, 797 (2003)), so they are V times
  those of identical photons plus (1 - V) times those of distinguishable ones. Identical photons
  of polarisations a and b leave the beam splitter in ``a^dag b^dag -> sum u_m v_n m^dag n^dag``,
  ``u = (a_H, a_V, a_H, a_V)/sqrt 2``, ``v = (b_H, b_V, -b_H, -b_V)/sqrt 2`` over (cH, cV, dH,
  dV): probability ``|u_m v_n + u_n v_m|^2`` for two detectors m != n. For the X basis this gives
  the error ``e_X = V e_d + (1 - V)/2`` of the (1, 1) pairs (at e_d = 0: (1 - V)/2), the Z basis
  does not depend on V (``e_Z = e_d``), and each basis succeeds with probability 1/2 per pair
  that reaches the detectors (Lo-Curty-Qi).
- every other pair (a vacuum, or a second photon from one dot): all photons are taken as
  distinguishable, each going independently to a detector (its polarisation, the 50:50 split,
  eta), which is exact for vacuum + photons and, for the rare three- and four-photon terms,
  sets the observed error they add; their security cost is bounded separately (tagging,
  :mod:`qdnet.security.mdi`).

Threshold detectors and dark counts: the probability that exactly the set S of detectors clicks
follows by inclusion-exclusion from the probabilities that no detector outside U clicks,
``(1 - p_d)^(4 - |U|) prod_k (1 - eta_k + q_k(U))`` (q_k(U): photon k's probability to reach a
detector in U).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product

import numpy as np
from numpy.typing import NDArray
from scipy.special import i0

from qdnet.optics.fibre import transmittance_from_loss_db
from qdnet.protocols.link import Link, PrepareMeasureSource
from qdnet.protocols.statistics import LinkStatistics
from qdnet.security import mdi as security
from qdnet.security.entropy import binary_entropy as h
from qdnet.security.mdi import DecoyGains
from qdnet.sources.laser import WeakCoherentSource
from qdnet.sources.quantum_dot import SinglePhotonSource

FloatArray = NDArray[np.float64]

#: Detectors, in the order of the bit masks: cH, cV, dH, dV.
DETECTORS = 4
#: Success patterns (bit masks over DETECTORS): Psi- = cH dV or cV dH; Psi+ = cH cV or dH dV.
PSI_MINUS = (0b1001, 0b0110)
PSI_PLUS = (0b0011, 0b1100)
#: Polarisation angles (degrees) of bit 0 and bit 1 in each basis.
BASIS_ANGLES_DEG = {"z": (0.0, 90.0), "x": (45.0, 135.0)}


@dataclass(frozen=True)
class RelayView:
    """What the relay sees of the two arms (module docstring)."""

    eta_a: float
    eta_b: float
    noise: float
    misalignment: float


@dataclass(frozen=True)
class BasisGains:
    """Per pulse pair, given that both chose the basis: probability of an announced BSM (gain) and
    of an announced BSM with an error (error gain), for Z and X."""

    gain_z: float
    error_gain_z: float
    gain_x: float
    error_gain_x: float

    @property
    def qber_z(self) -> float:
        """E_Z."""
        return self.error_gain_z / self.gain_z if self.gain_z > 0 else 0.5

    @property
    def qber_x(self) -> float:
        """E_X."""
        return self.error_gain_x / self.gain_x if self.gain_x > 0 else 0.5


def relay_view(link: Link) -> RelayView:
    """eta_a, eta_b, p_d and e_d of an mdi-bb84 link."""
    if link.mdi is None:
        raise ValueError(f"protocol.kind {link.protocol.kind} is not mdi-bb84")
    loss_db = link.channel_loss_db
    position = link.mdi.relay_position
    detector = link.receiver.detector
    return RelayView(
        eta_a=transmittance_from_loss_db(position * loss_db) * detector.efficiency,
        eta_b=transmittance_from_loss_db((1.0 - position) * loss_db) * detector.efficiency,
        noise=detector.noise_probability(link.channel.background_rate_hz),
        misalignment=link.receiver.misalignment,
    )


#: Below this x the Bessel differences come from their series (6 terms exact to double
#: precision there); above it from scipy's I0, where they no longer cancel.
SERIES_BELOW = 0.1


def _bessel_differences(x: float) -> tuple[float, float, float]:
    """(I0(2x) - 1, I0(x) - 1, I0(2x) - 1 - 4 (I0(x) - 1)) without cancellation: the series
    ``sum_k c_k x^(2k) / (k!)^2`` (c_k = 1, 4^-k, 1 - 4^(1-k)) below SERIES_BELOW."""
    if x == 0.0:
        return 0.0, 0.0, 0.0
    if x >= SERIES_BELOW:
        b, a = float(i0(2.0 * x)) - 1.0, float(i0(x)) - 1.0
        return b, a, b - 4.0 * a
    term = 1.0
    b = a = c = 0.0
    for k in range(1, 7):
        term *= x * x / (k * k)
        b += term
        a += term / 4.0**k
        c += (1.0 - 4.0 ** (1 - k)) * term
    return b, a, c


def coherent_gains(
    arriving_a: float, arriving_b: float, noise: float, misalignment: float
) -> tuple[float, float, float, float]:
    """(Q_Z, E_Z Q_Z, Q_X, E_X Q_X) of two phase-randomised coherent pulses whose mean photon
    numbers at the relay's detectors are ``arriving_a`` = eta_a mu_a and ``arriving_b``
    (Xu et al. 2013, Appendix B; module docstring).

    Evaluated without cancellation (the decoy bounds difference these gains at intensities near
    0): with ``d = 1 - y``, ``b = I0(2x) - 1`` and ``a = I0(x) - 1``, ``1 + 2y^2 - 4y I0(x) +
    I0(2x) = 2 d^2 + (b - 4a) + 4 a d``, each term >= 0 (:func:`_bessel_differences`)."""
    a, b = arriving_a, arriving_b
    log_keep = math.log1p(-noise) if noise < 1.0 else -math.inf
    keep = 1.0 - noise
    total = a + b
    i0_2x_minus_1, i0_x_minus_1, difference = _bessel_differences(math.sqrt(a * b) / 2.0)
    half = math.exp(-total / 2.0)
    correct = (
        2.0 * keep**2 * half * -math.expm1(log_keep - a / 2.0) * -math.expm1(log_keep - b / 2.0)
    )
    wrong = 2.0 * noise * keep**2 * half * (i0_2x_minus_1 - math.expm1(log_keep - total / 2.0))
    gain_z = correct + wrong
    error_z = misalignment * correct + (1.0 - misalignment) * wrong
    y = keep * math.exp(-total / 4.0)
    d = -math.expm1(log_keep - total / 4.0)
    gain_x = 2.0 * y * y * (2.0 * d * d + difference + 4.0 * i0_x_minus_1 * d)
    error_x = 0.5 * gain_x - 2.0 * (0.5 - misalignment) * y * y * i0_2x_minus_1
    return gain_z, error_z, gain_x, error_x


_MASK_BITS = np.array(
    [[(mask >> j) & 1 for j in range(DETECTORS)] for mask in range(1 << DETECTORS)]
)
_MASK_SIZES = _MASK_BITS.sum(axis=1)
_SUBSET = np.array([[(u & ~s) == 0 for u in range(1 << DETECTORS)] for s in range(1 << DETECTORS)])
#: Moebius inversion over the subsets: P(exactly S clicks) = sum_{U in S} (-1)^|S - U| f(U).
_MOEBIUS = np.where(_SUBSET, (-1.0) ** (_MASK_SIZES[:, None] - _MASK_SIZES[None, :]), 0.0)


def _dark_count_matrix(noise: float) -> FloatArray:
    """D[S, O] = P(exactly S clicks | photons occupy exactly O): O in S, dark counts on S - O and
    none elsewhere."""
    extra = _MASK_SIZES[:, None] - _MASK_SIZES[None, :]
    silent = DETECTORS - _MASK_SIZES[:, None]
    return np.where(_SUBSET, noise ** np.maximum(extra, 0) * (1.0 - noise) ** silent, 0.0)


def _detector_shares(angle_deg: float, sign: float) -> FloatArray:
    """Amplitudes of one photon of linear polarisation ``angle_deg`` over (cH, cV, dH, dV) after
    the 50:50 beam splitter (``sign`` -1 for Bob's input port)."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([c, s, sign * c, sign * s]) / math.sqrt(2.0)


def _distinguishable_clicks(photons: list[tuple[FloatArray, float]], noise: float) -> FloatArray:
    """P(exactly S clicks) for independent (distinguishable) photons, each (amplitudes, eta):
    Moebius inversion of f(U) = P(no click outside U) (module docstring)."""
    f = (1.0 - noise) ** (DETECTORS - _MASK_SIZES)
    for amplitudes, eta in photons:
        f = f * (1.0 - eta + eta * (_MASK_BITS @ (amplitudes * amplitudes)))
    return np.asarray(_MOEBIUS @ f, dtype=np.float64)


def _identical_pair_clicks(
    u: FloatArray, v: FloatArray, eta_a: float, eta_b: float, dark: FloatArray
) -> FloatArray:
    """P(exactly S clicks) for one photon from each side in the same spatio-temporal mode
    (``dark``: :func:`_dark_count_matrix`)."""
    occupied = np.zeros(1 << DETECTORS)
    both = eta_a * eta_b
    for m in range(DETECTORS):
        occupied[1 << m] += both * 2.0 * (u[m] * v[m]) ** 2
        for n in range(m + 1, DETECTORS):
            occupied[(1 << m) | (1 << n)] += both * (u[m] * v[n] + u[n] * v[m]) ** 2
    for amplitudes, alone in ((u, eta_a * (1.0 - eta_b)), (v, eta_b * (1.0 - eta_a))):
        for m in range(DETECTORS):
            occupied[1 << m] += alone * amplitudes[m] ** 2
    occupied[0] += (1.0 - eta_a) * (1.0 - eta_b)
    return np.asarray(dark @ occupied, dtype=np.float64)


#: Photon numbers per party in the dot model (P(0), P(1), P(2)).
MAX_DOT_PHOTONS = 2


@lru_cache(maxsize=512)
def conditional_gains(view: RelayView, overlap: float) -> tuple[FloatArray, FloatArray]:
    """(gain, error gain), each of shape (2 bases Z/X, 3, 3): per pulse pair given that Alice sent
    n_a and Bob n_b photons (module docstring); the sources' photon numbers only weight them."""
    rotation = math.degrees(math.asin(math.sqrt(view.misalignment)))
    dark = _dark_count_matrix(view.noise)
    size = MAX_DOT_PHOTONS + 1
    gain = np.zeros((2, size, size))
    error = np.zeros((2, size, size))
    for index, angles in enumerate(BASIS_ANGLES_DEG.values()):
        for bit_a, bit_b in product((0, 1), repeat=2):
            u = _detector_shares(angles[bit_a], 1.0)
            v = _detector_shares(angles[bit_b] + rotation, -1.0)
            same = bit_a == bit_b
            for n_a, n_b in product(range(size), repeat=2):
                photons = [(u, view.eta_a)] * n_a + [(v, view.eta_b)] * n_b
                clicks = _distinguishable_clicks(photons, view.noise)
                if n_a == 1 and n_b == 1:
                    identical = _identical_pair_clicks(u, v, view.eta_a, view.eta_b, dark)
                    clicks = overlap * identical + (1.0 - overlap) * clicks
                minus = clicks[PSI_MINUS[0]] + clicks[PSI_MINUS[1]]
                plus = clicks[PSI_PLUS[0]] + clicks[PSI_PLUS[1]]
                # Z: every success anti-correlates the bits; X: Psi- anti-, Psi+ correlates them.
                z_wrong = minus + plus if same else 0.0
                wrong = z_wrong if index == 0 else (minus if same else plus)
                gain[index, n_a, n_b] += (minus + plus) / 4.0
                error[index, n_a, n_b] += wrong / 4.0
    return gain, error


def single_photon_gains(
    view: RelayView,
    photons_a: FloatArray,
    photons_b: FloatArray,
    overlap: float,
) -> BasisGains:
    """Gains and error gains of two quantum-dot sources of photon-number distributions
    ``photons_a`` and ``photons_b`` (P(0), P(1), P(2)) and single-photon overlap ``overlap``:
    :func:`conditional_gains` weighted by P_a(n_a) P_b(n_b) (module docstring)."""
    if len(photons_a) != MAX_DOT_PHOTONS + 1 or len(photons_b) != MAX_DOT_PHOTONS + 1:
        raise ValueError("single_photon_gains: photon-number distributions over 0, 1, 2 photons")
    gain, error = conditional_gains(view, float(overlap))
    weights = np.outer(photons_a, photons_b)
    z_gain, x_gain = (float(np.sum(weights * g)) for g in gain)
    z_error, x_error = (float(np.sum(weights * e)) for e in error)
    return BasisGains(z_gain, z_error, x_gain, x_error)


def sources(link: Link) -> tuple[PrepareMeasureSource, PrepareMeasureSource]:
    """(Alice's source, Bob's source)."""
    if link.mdi is None:
        raise ValueError(f"protocol.kind {link.protocol.kind} is not mdi-bb84")
    alice = link.source
    assert isinstance(alice, SinglePhotonSource | WeakCoherentSource)
    return alice, link.mdi.bob_source


def tagged_pairs(link: Link, scale: float = 1.0) -> security.TaggedPairs:
    """P_both and P_vac (:mod:`qdnet.security.mdi`) with both sources attenuated by ``scale``:
    each party's P(n>=2) <= g2 mu^2/2 for a dot (Waks et al., Nature 420, 762 (2002)) and
    P(n>=1)."""
    alice, bob = sources(link)
    mu_a = scale * (alice.mean_photon_number or 0.0)
    mu_b = scale * (bob.mean_photon_number or 0.0)
    return security.tagged_pairs(
        alice.multiphoton_probability(mu_a),
        1.0 - float(alice.photon_number_distribution(mu_a)[0]),
        bob.multiphoton_probability(mu_b),
        1.0 - float(bob.photon_number_distribution(mu_b)[0]),
    )


def dot_gains(link: Link, scale: float = 1.0) -> BasisGains:
    """Gains of an mdi-bb84 link with a quantum-dot single-photon source at each end, both
    attenuated by ``scale`` (1: as configured)."""
    alice, bob = sources(link)
    if not isinstance(alice, SinglePhotonSource) or not isinstance(bob, SinglePhotonSource):
        raise ValueError("dot_gains needs source.kind single-photon at both ends")
    assert link.mdi is not None
    return single_photon_gains(
        relay_view(link),
        alice.photon_number_distribution(scale * alice.mean_photon_number),
        bob.photon_number_distribution(scale * bob.mean_photon_number),
        link.mdi.photon_overlap,
    )


def statistics(gains: BasisGains, intensities: tuple[float, ...], tagged: float) -> LinkStatistics:
    """The report form (:class:`LinkStatistics`) of the signal pair's gains."""
    return LinkStatistics(
        protocol="mdi-bb84",
        intensities=intensities,
        gain=(gains.gain_z,),
        qber_z=(gains.qber_z,),
        qber_x=(gains.qber_x,),
        multiphoton_probability=(tagged,),
    )


def is_laser_link(link: Link) -> bool:
    """Decoy lasers at both ends (else quantum dots at both ends)."""
    alice, bob = sources(link)
    return isinstance(alice, WeakCoherentSource) and isinstance(bob, WeakCoherentSource)


def decoy_gains(link: Link, signal: float, decoy: float) -> DecoyGains:
    """Q_ab and E_ab Q_ab of every class (mu, nu, 0) x (mu, nu, 0), both parties sending the same
    three intensities (Xu et al. 2013's closed forms, :func:`coherent_gains`)."""
    view = relay_view(link)
    intensities = (signal, decoy, 0.0)
    tables: tuple[dict[tuple[int, int], float], ...] = ({}, {}, {}, {})
    for i, j in product(range(3), repeat=2):
        values = coherent_gains(
            view.eta_a * intensities[i], view.eta_b * intensities[j], view.noise, view.misalignment
        )
        for table, value in zip(tables, values, strict=True):
            table[(i, j)] = value
    return DecoyGains(intensities, *tables)


@dataclass(frozen=True)
class MdiKey:
    """Key per pulse pair at one choice of the free parameters, and what produced it."""

    bits_per_pulse: float
    statistics: LinkStatistics
    parameters: dict[str, float]
    terms: dict[str, float] = field(default_factory=dict)


#: Smallest intensity or probability searched, and the laser's largest signal intensity.
MIN_PARAMETER = 1e-4
MAX_LASER_INTENSITY = 1.0


def free_parameters(link: Link) -> tuple[tuple[str, float, float, bool], ...]:
    """(name, lower, upper, searched as log(1 - x)) of each parameter the optimiser chooses:
    lasers, the signal and weak-decoy intensities (both parties the same) and, for finite keys,
    P(mu), the weak decoy's share of the rest and P(Z); dots, Alice's mean photon number (both
    dots attenuated by the same factor, never brighter than configured) and P(Z) for finite keys."""
    settings = link.protocol
    finite = settings.block_size is not None
    parameters: list[tuple[str, float, float, bool]] = []
    if is_laser_link(link) and settings.optimise_intensity:
        alice = sources(link)[0]
        top = max(MAX_LASER_INTENSITY, alice.mean_photon_number or 0.0)
        parameters += [
            ("mean_photon_number", 2.0 * MIN_PARAMETER, top, False),
            ("decoy_intensity", MIN_PARAMETER, top / 2.0, False),
        ]
    if is_laser_link(link) and finite:
        parameters += [
            ("signal_probability", 0.05, 1.0 - MIN_PARAMETER, True),
            ("decoy_share", 0.02, 0.98, False),
        ]
    dot_mu = 0.0 if is_laser_link(link) else (sources(link)[0].mean_photon_number or 0.0)
    if settings.optimise_intensity and dot_mu > MIN_PARAMETER:
        parameters.append(("mean_photon_number", MIN_PARAMETER, dot_mu, False))
    if finite and settings.basis_bias is None:
        parameters.append(("basis_bias", 0.5, 1.0 - MIN_PARAMETER, True))
    return tuple(parameters)


def _fixed_intensities(link: Link) -> tuple[float, float]:
    alice, _ = sources(link)
    if alice.mean_photon_number is None or not alice.decoy_intensities:
        raise ValueError(
            "protocol.optimise_intensity false needs source.mean_photon_number and "
            "source.decoy_intensities (the weak decoy; the third intensity is vacuum)"
        )
    return float(alice.mean_photon_number), float(alice.decoy_intensities[0])


def _laser_key(link: Link, values: dict[str, float]) -> MdiKey:
    settings = link.protocol
    if settings.optimise_intensity:
        signal, decoy = values["mean_photon_number"], values["decoy_intensity"]
    else:
        signal, decoy = _fixed_intensities(link)
    gains = decoy_gains(link, signal, decoy)
    report = BasisGains(
        gains.gain_z[(0, 0)],
        gains.error_gain_z[(0, 0)],
        gains.gain_x[(0, 0)],
        gains.error_gain_x[(0, 0)],
    )
    stats = statistics(report, gains.intensities, 1.0 - math.exp(-signal) * (1.0 + signal))
    parameters = {"mean_photon_number": signal, "decoy_intensity": decoy}
    if decoy >= signal:
        return MdiKey(0.0, stats, parameters)
    f = settings.error_correction_efficiency
    if settings.block_size is None:
        asymptotic = security.decoy_key_per_pulse(gains, f)
        parameters.update(
            {
                "single_pair_yield_lower": asymptotic.yield_z_lower,
                "single_pair_error_upper": asymptotic.error_x_upper,
            }
        )
        return MdiKey(asymptotic.bits_per_pulse, stats, parameters)
    bias = values.get("basis_bias", settings.basis_bias or 0.5)
    p_signal, share = values["signal_probability"], values["decoy_share"]
    probs = (p_signal, share * (1.0 - p_signal), (1.0 - share) * (1.0 - p_signal))
    weight = {(i, j): probs[i] * probs[j] for i, j in product(range(3), repeat=2)}
    mean_gain = sum(weight[c] * gains.gain_z[c] for c in weight)
    block = float(settings.block_size)
    pulses = block / (bias * bias * mean_gain) if mean_gain > 0 else math.inf
    test = (1.0 - bias) ** 2 * pulses
    counts = security.DecoyCounts(
        intensities=gains.intensities,
        probabilities=probs,
        key_detections={c: block * weight[c] * gains.gain_z[c] / mean_gain for c in weight},
        test_detections={c: test * weight[c] * gains.gain_x[c] for c in weight},
        test_errors={c: test * weight[c] * gains.error_gain_x[c] for c in weight},
    )
    mean_qber = sum(weight[c] * gains.error_gain_z[c] for c in weight) / mean_gain
    leak = f * block * h(mean_qber)
    result = security.decoy_key_length(
        counts, leak, settings.eps_sec, settings.eps_cor, settings.eps_split
    )
    parameters.update(
        {
            "signal_probability": probs[0],
            "decoy_probability": probs[1],
            "basis_bias": bias,
            "pulses_per_block": min(pulses, 1e30),
        }
    )
    return MdiKey(max(0.0, result.length_bits) / pulses, stats, parameters, result.terms)


def _dot_key(link: Link, values: dict[str, float]) -> MdiKey:
    settings = link.protocol
    alice, bob = sources(link)
    assert isinstance(alice, SinglePhotonSource) and isinstance(bob, SinglePhotonSource)
    assert link.mdi is not None
    mu_a = values.get("mean_photon_number", alice.mean_photon_number)
    scale = mu_a / alice.mean_photon_number if alice.mean_photon_number > 0 else 1.0
    mu_b = scale * bob.mean_photon_number
    gains = dot_gains(link, scale)
    tagged = tagged_pairs(link, scale)
    stats = statistics(gains, (mu_a, mu_b), tagged.both + tagged.vacuum_side)
    parameters = {
        "mean_photon_number": mu_a,
        "bob_mean_photon_number": mu_b,
        "photon_overlap": link.mdi.photon_overlap,
        "tagged_both_probability": tagged.both,
        "tagged_vacuum_side_probability": tagged.vacuum_side,
    }
    if link.mdi.hom_visibility is not None:
        parameters["hom_visibility"] = link.mdi.hom_visibility
    f = settings.error_correction_efficiency
    if settings.block_size is None:
        bits = security.tagged_key_per_pulse(
            gains.gain_z, gains.qber_z, gains.gain_x, gains.qber_x, tagged, f
        )
        return MdiKey(bits, stats, parameters)
    bias = values.get("basis_bias", settings.basis_bias or 0.5)
    block = float(settings.block_size)
    if gains.gain_z <= 0:
        return MdiKey(0.0, stats, parameters)
    pulses = block / (bias * bias * gains.gain_z)
    test = pulses * (1.0 - bias) ** 2 * gains.gain_x
    counts = security.DotCounts(
        pulses=pulses,
        basis_bias=bias,
        key_detections=block,
        key_errors=block * gains.qber_z,
        test_detections=test,
        test_errors=test * gains.qber_x,
    )
    result = security.dot_key_length(
        counts,
        tagged,
        f * block * h(gains.qber_z),
        settings.eps_sec,
        settings.eps_cor,
        settings.eps_split,
    )
    parameters.update({"basis_bias": bias, "pulses_per_block": min(pulses, 1e30)})
    return MdiKey(max(0.0, result.length_bits) / pulses, stats, parameters, result.terms)


def key_per_pulse(link: Link, values: dict[str, float]) -> MdiKey:
    """Secret bits per pulse pair of an mdi-bb84 link at the free parameters ``values`` (named as
    :func:`free_parameters`): decoy lasers or quantum dots (:mod:`qdnet.security.mdi`)."""
    return _laser_key(link, values) if is_laser_link(link) else _dot_key(link, values)
