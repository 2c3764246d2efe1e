"""Asymptotic secret-key rates per pulse (before the basis-sifting factor q)."""

from __future__ import annotations

import math

from qdnet.security.entropy import binary_entropy as h


def gllp_key_per_pulse(
    gain: float,
    qber_bit: float,
    qber_phase: float,
    multiphoton_probability: float,
    error_correction_efficiency: float,
) -> float:
    """GLLP rate ``Q (1-D)[1 - h(e_ph/(1-D))] - Q f h(E)``, ``D = p_multi/Q``
    (Gottesman, Lo, Luetkenhaus, Preskill, QIC 4, 325 (2004), Eq. 52). Worst case: every
    multi-photon pulse is detected and known to Eve. Negative values are clipped to 0."""
    if gain <= 0.0:
        return 0.0
    tagged = multiphoton_probability / gain
    if tagged >= 1.0:
        return 0.0
    untagged = 1.0 - tagged
    phase = qber_phase / untagged
    if phase >= 0.5:
        return 0.0
    value = gain * untagged * (1.0 - h(phase)) - gain * error_correction_efficiency * h(qber_bit)
    return max(0.0, value)


def decoy_vacuum_weak_bounds(
    signal: float,
    decoy: float,
    gain_signal: float,
    qber_signal: float,
    gain_decoy: float,
    qber_decoy: float,
    vacuum_yield: float,
) -> tuple[float, float]:
    """Lower bound on Y1 and upper bound on e1 from vacuum + weak decoy (Ma, Qi, Zhao, Lo,
    PRA 72, 012326 (2005), Eqs. 34 and 37)::

        Y1 >= mu/(mu nu - nu^2) [Q_nu e^nu - Q_mu e^mu nu^2/mu^2 - (mu^2-nu^2)/mu^2 Y0]
        e1 <= (E_nu Q_nu e^nu - e0 Y0)/(Y1 nu),  e0 = 1/2
    """
    mu, nu = signal, decoy
    y1 = (
        mu
        / (mu * nu - nu * nu)
        * (
            gain_decoy * math.exp(nu)
            - gain_signal * math.exp(mu) * nu * nu / (mu * mu)
            - (mu * mu - nu * nu) / (mu * mu) * vacuum_yield
        )
    )
    y1 = max(y1, 0.0)
    if y1 <= 0.0:
        return 0.0, 0.5
    e1 = (qber_decoy * gain_decoy * math.exp(nu) - 0.5 * vacuum_yield) / (y1 * nu)
    return y1, min(max(e1, 0.0), 0.5)


def single_photon_key_per_pulse(
    single_photon_gain: float,
    gain_signal: float,
    qber_signal: float,
    single_photon_error: float,
    error_correction_efficiency: float,
) -> float:
    """``-Q_mu f h(E_mu) + Q1 [1 - h(e1)]`` (Lo, Ma, Chen, PRL 94, 230504 (2005), Eq. 1;
    GLLP with the single-photon gain Q1 bounded by decoys). Clipped to 0."""
    value = single_photon_gain * (1.0 - h(single_photon_error)) - (
        gain_signal * error_correction_efficiency * h(qber_signal)
    )
    return max(0.0, value)


def decoy_key_per_pulse(
    signal: float,
    gain_signal: float,
    qber_signal: float,
    single_photon_yield: float,
    single_photon_error: float,
    error_correction_efficiency: float,
) -> float:
    """Decoy rate for Poisson pulses: Q1 = Y1 mu e^-mu (Ma et al. 2005, Eq. 1)."""
    return single_photon_key_per_pulse(
        single_photon_yield * signal * math.exp(-signal),
        gain_signal,
        qber_signal,
        single_photon_error,
        error_correction_efficiency,
    )


def bbm92_key_per_coincidence(
    qber_bit: float, qber_phase: float, error_correction_efficiency: float
) -> float:
    """``1 - f h(e_bit) - h(e_ph)`` per sifted coincidence (Shor, Preskill, PRL 85, 441 (2000);
    Ma, Fung, Lo, PRA 76, 012307 (2007), Eq. 8). Clipped to 0."""
    return max(0.0, 1.0 - error_correction_efficiency * h(qber_bit) - h(qber_phase))
