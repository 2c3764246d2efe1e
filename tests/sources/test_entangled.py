"""Biexciton-cascade pairs: published fidelity/concurrence vs fine-structure splitting."""

import numpy as np
import pytest

from qdnet.sources.entangled import EntangledPairSource

# ../shared/cases/public.yaml, analytic.cascade_fidelity_vs_fss: x = S tau/hbar,
# F = (1 + 1/(1+x^2))/2, C = 1/sqrt(1+x^2) (Keil et al., Nat. Commun. 8, 15501 (2017)).
PUBLISHED = [
    (0.5, 0.25, 0.9826, 0.9824),
    (1.0, 0.25, 0.9370, 0.9348),
    (2.0, 0.25, 0.8170, 0.7963),
    (5.0, 0.25, 0.6085, 0.4659),
]


@pytest.mark.parametrize(("fss", "tau", "fidelity", "concurrence"), PUBLISHED)
def test_fidelity_and_concurrence_vs_fss(
    fss: float, tau: float, fidelity: float, concurrence: float
) -> None:
    source = EntangledPairSource(
        pair_efficiency=0.5, repetition_rate_hz=80e6, fss_uev=fss, exciton_lifetime_ns=tau
    )
    assert source.fidelity() == pytest.approx(fidelity, abs=1e-4)
    assert source.concurrence() == pytest.approx(concurrence, abs=1e-4)


def test_density_matrix_is_physical_and_consistent() -> None:
    source = EntangledPairSource(
        pair_efficiency=0.8,
        repetition_rate_hz=80e6,
        fss_uev=1.2,
        exciton_lifetime_ns=0.3,
        spin_scattering_time_ns=5.0,
        cross_dephasing_time_ns=3.0,
        background_fraction=0.03,
    )
    rho = source.density_matrix()
    np.testing.assert_allclose(rho, rho.conj().T)
    assert np.trace(rho).real == pytest.approx(1.0)
    assert np.linalg.eigvalsh(rho).min() >= -1e-12
    phi_plus = np.array([1, 0, 0, 1]) / np.sqrt(2)
    assert float(np.real(phi_plus @ rho @ phi_plus)) == pytest.approx(source.fidelity())
    # Bit and phase errors of a Phi+ measurement, from the matrix directly.
    assert rho[1, 1].real + rho[2, 2].real == pytest.approx(source.qber_z())
    assert (1 - 2 * rho[0, 3].real) / 2 == pytest.approx(source.qber_x())


def test_time_resolved_detection_recovers_entanglement() -> None:
    common = {
        "pair_efficiency": 0.5,
        "repetition_rate_hz": 80e6,
        "fss_uev": 5.0,
        "exciton_lifetime_ns": 0.25,
    }
    integrated = EntangledPairSource(**common)
    resolved = EntangledPairSource(**common, time_resolved=True, detector_time_resolution_ps=10.0)
    assert integrated.fidelity() < 0.61
    # exp(-(S sigma/hbar)^2/2) with S sigma/hbar = 5 ueV x 0.01 ns / 0.658 ueV ns = 0.076.
    assert resolved.concurrence() == pytest.approx(
        np.exp(-((5 * 0.01 / 0.6582119569) ** 2) / 2), rel=1e-9
    )


def test_white_noise_identity() -> None:
    # Background (white noise) alone: e_Z = e_X = 2(1-F)/3 (../shared/models.md).
    source = EntangledPairSource(
        pair_efficiency=0.5, repetition_rate_hz=1e6, background_fraction=0.2
    )
    assert source.qber_z() == pytest.approx(2 * (1 - source.fidelity()) / 3)
    assert source.qber_x() == pytest.approx(2 * (1 - source.fidelity()) / 3)


def test_invalid_multi_pair_named() -> None:
    with pytest.raises(ValueError, match=r"source\.multi_pair_probability"):
        EntangledPairSource(
            pair_efficiency=0.01, repetition_rate_hz=1e6, multi_pair_probability=0.1
        )
