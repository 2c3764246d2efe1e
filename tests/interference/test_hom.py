"""HOM interference: Perceval to 1e-6, closed forms for two emitters, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from qdnet.interference.hom import HC_UEV_NM, HomEmitter, hom, photon_overlap
from qdnet.sources.entangled import HBAR_UEV_NS


def _perceval_visibility(brightness: float, g2: float, m: float, distinguishable: bool) -> float:
    """V = 1 - 2 <n_c n_d> / (<n_c><n_d>) from Perceval: two of its sources into a BS, SLOS
    at full precision (the default relative precision 1e-6 drops the four-photon terms)."""
    pcvl = pytest.importorskip("perceval")
    model = "distinguishable" if distinguishable else "indistinguishable"
    source = pcvl.Source(
        emission_probability=brightness,
        multiphoton_component=g2,
        indistinguishability=m,
        multiphoton_model=model,
    )
    simulator = pcvl.Simulator(pcvl.BackendFactory.get_backend("SLOS"))
    simulator.set_circuit(pcvl.BS())
    simulator.set_precision(1e-15)
    both = c = d = 0.0
    results = simulator.probs_svd(source.generate_distribution(pcvl.BasicState([1, 1])))
    for state, probability in results["results"].items():
        both += probability * state[0] * state[1]
        c += probability * state[0]
        d += probability * state[1]
    return 1.0 - 2.0 * both / (c * d)


@pytest.mark.parametrize(
    ("brightness", "g2", "m"),
    [(0.8, 0.05, 0.9), (0.3, 0.1, 0.7), (0.55, 0.02, 0.97), (0.9, 0.0, 0.85), (0.05, 0.2, 0.5)],
)
@pytest.mark.parametrize("model", ["distinguishable", "indistinguishable"])
def test_one_source_matches_perceval(brightness: float, g2: float, m: float, model: str) -> None:
    emitter = HomEmitter(brightness, g2, m, model)  # type: ignore[arg-type]
    expected = _perceval_visibility(brightness, g2, m, model == "distinguishable")
    assert hom(emitter).visibility == pytest.approx(expected, abs=1e-6)


def test_ollivier_first_order_and_ideal_limits() -> None:
    """V ~ M - (1 + M) g2 for small g2 and distinguishable noise (Ollivier et al. 2021)."""
    m, g2 = 0.92, 0.01
    result = hom(HomEmitter(1.0 - 1e-9, g2, m))
    assert result.visibility == pytest.approx(m - (1 + m) * g2, abs=2e-4)
    assert hom(HomEmitter(0.4, 0.0, m)).visibility == pytest.approx(m, abs=1e-12)
    assert hom(HomEmitter(0.4)).visibility == pytest.approx(1.0, abs=1e-12)


def _two_dots(**changes: object) -> tuple[HomEmitter, HomEmitter]:
    a = HomEmitter(0.5, lifetime_ns=0.25, wavelength_nm=780.0)
    b = HomEmitter(0.5, lifetime_ns=0.25, wavelength_nm=780.0)
    fields_b = {k.removesuffix("_b"): v for k, v in changes.items() if k.endswith("_b")}
    fields_a = {k: v for k, v in changes.items() if not k.endswith("_b")}
    return (
        HomEmitter(**{**a.__dict__, **fields_a}),  # type: ignore[arg-type]
        HomEmitter(**{**b.__dict__, **fields_b}),  # type: ignore[arg-type]
    )


def test_detuned_transform_limited_dots_are_lorentzian() -> None:
    """Equal lifetimes, no dephasing: V = 1 / (1 + (Delta T1)^2) (Legero et al. 2003)."""
    t1 = 0.25
    for detuning in (0.0, 1.0, 2.6, 8.0):  # ueV
        wavelength_b = HC_UEV_NM / (HC_UEV_NM / 780.0 - detuning)
        a, b = _two_dots(wavelength_nm_b=wavelength_b)
        x = detuning / HBAR_UEV_NS * t1
        assert hom(a, b).visibility == pytest.approx(1.0 / (1.0 + x * x), rel=1e-9)


def test_lifetime_mismatch_closed_form() -> None:
    """No dephasing, on resonance: V = 4 T1 T2 / (T1 + T2)^2 (Kambs and Becher 2018)."""
    a, b = _two_dots(lifetime_ns_b=0.5)
    assert hom(a, b).visibility == pytest.approx(4 * 0.25 * 0.5 / 0.75**2, rel=1e-9)
    assert hom(a, b).contributions["lifetime_mismatch"] == pytest.approx(1 - 8 / 9, rel=1e-9)


def test_spectral_diffusion_is_a_voigt_average() -> None:
    """Gaussian wander of both lines: the Lorentzian overlap averaged over the detuning."""
    a, b = _two_dots(
        spectral_diffusion_uev=3.0, spectral_diffusion_uev_b=4.0, indistinguishability=0.9
    )
    sigma = math.hypot(3.0, 4.0) / (2 * math.sqrt(2 * math.log(2)))  # ueV
    single = lambda d: photon_overlap(  # noqa: E731
        HomEmitter(0.5, indistinguishability=0.9, wavelength_nm=780.0),
        HomEmitter(0.5, wavelength_nm=HC_UEV_NM / (HC_UEV_NM / 780.0 - d)),
    )
    weight = lambda d: math.exp(-d * d / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))  # noqa: E731
    expected, _ = quad(lambda d: single(d) * weight(d), -12 * sigma, 12 * sigma, limit=200)
    assert photon_overlap(a, b) == pytest.approx(expected, rel=1e-7)
    # Consecutive photons of one dot do not see the wander.
    assert hom(a).visibility == pytest.approx(0.9, abs=1e-12)


def test_polarisation_mismatch_is_cos_squared() -> None:
    a, b = _two_dots(polarisation_deg_b=30.0)
    assert hom(a, b).visibility == pytest.approx(math.cos(math.radians(30.0)) ** 2, rel=1e-9)


def test_contributions_add_up_to_first_order() -> None:
    a, b = _two_dots(
        g2=0.01, indistinguishability=0.97, spectral_diffusion_uev=0.5, polarisation_deg_b=3.0
    )
    result = hom(a, b)
    lost = sum(result.contributions.values())
    assert 1 - result.visibility == pytest.approx(lost, rel=0.05)
    assert set(result.contributions) == {
        "multiphoton",
        "dephasing",
        "detuning",
        "spectral_diffusion",
        "polarisation",
        "lifetime_mismatch",
    }
    assert np.isclose(result.contributions["detuning"], 0.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"brightness": 0.0}, "brightness must be > 0"),
        ({"g2": 1.5}, r"source.g2 must be in \[0.0, 1.0\]"),
        ({"linewidth_uev": 1.0}, "below the transform limit"),
        ({"spectral_diffusion_uev": -1.0}, "spectral_diffusion_uev must be >= 0"),
        ({"multiphoton_model": "both"}, "multiphoton_model must be"),
    ],
)
def test_bad_input_is_named(changes: dict[str, object], message: str) -> None:
    fields = {"brightness": 0.5, "lifetime_ns": 0.25, **changes}
    with pytest.raises(ValueError, match=message):
        HomEmitter(**fields)  # type: ignore[arg-type]


def test_photon_energy_constant() -> None:
    """A 780 nm photon carries 1.58954 eV (h c = 1239.841984 eV nm, CODATA 2018)."""
    energy_uev = HC_UEV_NM / 780.0
    assert energy_uev == pytest.approx(1.589541e6, rel=1e-6)
