"""Published experiments reproduced by the link model (figures copied from
../shared/cases/public.yaml with their sources; the example links hold the calibrated inputs)."""

import numpy as np
import pytest
from scipy.optimize import brentq

from qdnet.cli.link_reports import source_report
from qdnet.keyrate import key_rate_point
from qdnet.sources.entangled import EntangledPairSource
from tests.conftest import example_link


def test_schimpf2021_bbm92_campus_link() -> None:
    # Schimpf et al., Sci. Adv. 7, eabe8905 (2021): F = 0.987, 350 m fibre, 80 MHz,
    # QBER 1.9 % (tolerance 0.5 % abs), raw (sifted) 135 bit/s, secure 86 bit/s (tolerance 20 %).
    link = example_link("gaas-dot-bbm92")
    assert link.source.fidelity() == pytest.approx(0.987, abs=1e-3)
    point = key_rate_point(link, 0.35)[0]
    mean_qber = (point.qber["z"] + point.qber["x"]) / 2
    assert mean_qber == pytest.approx(0.019, abs=0.005)
    sifted_bps = point.gain * link.repetition_rate_hz * point.parameters["sifting_factor"]
    assert sifted_bps == pytest.approx(135, rel=0.05)  # calibration target of the example
    assert point.secret_key_rate_bps == pytest.approx(86, rel=0.20)


def _max_distance_km(overrides: list[str]) -> float:
    link = example_link("telecom-dot-bb84", overrides)
    return brentq(
        lambda d: key_rate_point(link.with_distance_km(d), d)[0].secret_bits_per_pulse - 1e-12,
        100,
        300,
        xtol=0.1,
    )


def test_morrison2023_reach_and_finite_key() -> None:
    # Morrison et al., Nat. Commun. (2023): g2 = 3.6 %, 1.6 MHz detected at 0 km; asymptotic key up to
    # 175 km (tolerance 15 km); 13 kbit/s finite key at 100 km after 60 s (tolerance 30 %).
    fixed = ["protocol.optimise_intensity=false"]
    link = example_link("telecom-dot-bb84", fixed)
    detected_hz = key_rate_point(link.with_distance_km(0), 0)[0].gain * link.repetition_rate_hz
    assert detected_hz == pytest.approx(1.6e6, rel=0.01)
    assert _max_distance_km(fixed) == pytest.approx(175, abs=15)

    at_100 = link.with_distance_km(100)

    def seconds_minus_60(log_block: float) -> float:
        point = key_rate_point(at_100.with_protocol(block_size=10**log_block), 100)[0]
        return point.parameters["pulses_per_block"] / link.repetition_rate_hz - 60.0

    log_block = brentq(seconds_minus_60, 4, 9, xtol=1e-4)
    point = key_rate_point(at_100.with_protocol(block_size=10**log_block), 100)[0]
    assert point.secret_key_rate_bps == pytest.approx(13000, rel=0.30)


def test_optimiser_extends_reach_by_attenuating_the_dot() -> None:
    # Pousa et al., arXiv:2405.19963: optimising the mean photon number of a single-photon source
    # raises its maximum tolerable loss; the optimiser must never do worse than the fixed source.
    assert _max_distance_km([]) > _max_distance_km(["protocol.optimise_intensity=false"]) + 10


def test_huber2018_strain_tuned_gaas_dot() -> None:
    # Huber et al., PRL 121, 033902 (2018): FSS tuned to ~0 by strain, F = 0.978, C = 0.97.
    # Calibrate the residual (cross-)dephasing to the fidelity, then predict the concurrence
    # (the X-state model gives C = 2F - 1; reported C is 0.014 above it).
    def fidelity(ratio: float) -> float:
        return EntangledPairSource(
            pair_efficiency=0.8,
            repetition_rate_hz=80e6,
            fss_uev=0.0,
            exciton_lifetime_ns=0.25,
            cross_dephasing_time_ns=0.25 / ratio,
        ).fidelity()

    ratio = brentq(lambda r: fidelity(r) - 0.978, 1e-6, 1.0)
    source = EntangledPairSource(
        pair_efficiency=0.8,
        repetition_rate_hz=80e6,
        fss_uev=0.0,
        exciton_lifetime_ns=0.25,
        cross_dephasing_time_ns=0.25 / ratio,
    )
    assert source.concurrence() == pytest.approx(0.97, abs=0.02)


def test_kuroda2013_droplet_epitaxy_dot_qber() -> None:
    # Kuroda et al., PRB 88, 041306(R) (2013): strain-free droplet-epitaxy dot, F = 0.86 without
    # post-selection. As white noise (background), BBM92 errors are e = 2(1 - F)/3 = 9.3 % in both
    # bases: below the 11 % one-way threshold, so a small key remains with ideal error correction.
    k = (4 * 0.86 - 1) / 3
    source = EntangledPairSource(
        pair_efficiency=0.8, repetition_rate_hz=80e6, background_fraction=1 - k
    )
    assert source.fidelity() == pytest.approx(0.86)
    assert source.qber_z() == pytest.approx(2 * (1 - 0.86) / 3)
    assert source.qber_x() == pytest.approx(np.float64(2 * (1 - 0.86) / 3))


def test_strobel2024_fidelity_after_conversion_and_field_fibre() -> None:
    # Strobel et al., arXiv 2405.14557 (2024), GaAs dot at 780 nm, polarisation-preserving
    # conversion of one photon to 1515 nm, 35.8 km of field fibre: fidelity to Phi+
    # 0.972 +- 0.006 after conversion and 0.945 +- 0.01 after the fibre (the figures; the
    # v2 abstract gives +-0.003 and +-0.005). The example's fss_uev is calibrated to the first and
    # its polarisation_visibility to the second (the other inputs are assumed): this checks that
    # conversion, fibre and accidentals compose to both published figures at once, and that the
    # fibre's loss at the converted wavelength (not 780 nm) leaves the link a key.
    after_fibre = source_report(example_link("strobel2024-qfc-fibre"))
    after_conversion = source_report(
        example_link(
            "strobel2024-qfc-fibre", ["channel.length_km=0", "channel.polarisation_visibility=1"]
        )
    )
    assert after_conversion["fidelity_detected"] == pytest.approx(0.972, abs=0.006)
    assert after_fibre["fidelity_detected"] == pytest.approx(0.945, abs=0.01)
    link = example_link("strobel2024-qfc-fibre")
    assert link.channel_loss_db == pytest.approx(35.8 * 0.2, rel=0.05)  # ~0.2 dB/km at 1515 nm
    assert key_rate_point(link, 35.8)[0].secret_bits_per_pulse > 0


def test_bassobasset2023_daylight_free_space_key() -> None:
    # Basso Basset et al., Quantum Sci. Technol. 8, 025002 (2023): BBM92 keys from a GaAs dot over
    # a 270 m urban free-space link in daylight. No per-condition figure (QBER, rates) was found in
    # the sources at hand, so this checks the published claim (key in daylight) with the assumed
    # example, and that the daylight budget is what removes it: a sky 30x brighter leaves no key.
    link = example_link("bassobasset2023-daylight")
    assert link.channel.length_km == pytest.approx(0.27)  # type: ignore[union-attr]
    assert key_rate_point(link, 0.27)[0].secret_bits_per_pulse > 0
    glare = example_link(
        "bassobasset2023-daylight", ["channel.daylight.sky_radiance_w_m2_sr_nm=0.3"]
    )
    assert key_rate_point(glare, 0.27)[0].secret_bits_per_pulse == 0
