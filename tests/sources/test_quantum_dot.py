"""Single-photon source: published distributions, Perceval's convention, validation."""

import numpy as np
import pytest

from qdnet.sources.photon_statistics import g2_of, mean_photon_number, thin
from qdnet.sources.quantum_dot import SinglePhotonSource

# ../shared/cases/public.yaml, analytic.single_photon_source_distribution
# (p2 = g2 mu^2/2, p1 = mu - 2 p2, p0 = 1 - p1 - p2; Waks et al., Nature 420, 762 (2002)).
PUBLISHED = [
    (0.5, 0.036, 0.5045, 0.491, 4.5e-3),
    (0.1, 0.056, 0.90028, 0.09944, 2.8e-4),
]


@pytest.mark.parametrize(("mu", "g2", "p0", "p1", "p2"), PUBLISHED)
def test_truncated_distribution_matches_published(
    mu: float, g2: float, p0: float, p1: float, p2: float
) -> None:
    dist = SinglePhotonSource(mu, g2, 80e6).photon_number_distribution()
    np.testing.assert_allclose(dist, [p0, p1, p2], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("brightness", "g2"), [(0.5, 0.02), (0.5, 0.1), (0.9, 0.05), (0.3, 0.3), (0.05, 0.01)]
)
def test_brightness_matches_perceval(brightness: float, g2: float) -> None:
    perceval = pytest.importorskip("perceval")
    source = perceval.Source(emission_probability=brightness, multiphoton_component=g2)
    expected = np.zeros(3)
    for state, probability in source.probability_distribution().items():
        photons = state.n
        expected[next(iter(photons)) if isinstance(photons, set) else photons] += probability
    ours = SinglePhotonSource.from_brightness(brightness, g2, 80e6).photon_number_distribution()
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_perceval_reference_values_without_perceval() -> None:
    # Perceval Source(emission_probability=0.5, multiphoton_component=0.02): P = 0.5, 0.4975, 0.0025
    # (../shared/notes/peers.md; exact values from perceval-quandela 1.3.1).
    dist = SinglePhotonSource.from_brightness(0.5, 0.02, 80e6).photon_number_distribution()
    np.testing.assert_allclose(dist, [0.5, 0.4974746830583294, 0.0025253169416705745], atol=1e-9)


@pytest.mark.parametrize("t", [1.0, 0.5, 0.1, 1e-3])
def test_loss_keeps_g2_and_scales_mean(t: float) -> None:
    source = SinglePhotonSource(0.6, 0.04, 80e6)
    after = thin(source.photon_number_distribution(), t)
    assert g2_of(after) == pytest.approx(0.04, rel=1e-9)
    assert mean_photon_number(after) == pytest.approx(0.6 * t, rel=1e-12)
    assert after.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mean_photon_number": 0.5, "g2": 1.5, "repetition_rate_hz": 1e6}, "source.g2"),
        (
            {"mean_photon_number": 1.5, "g2": 0.05, "repetition_rate_hz": 1e6},
            "source.mean_photon_number",
        ),
        (
            {"mean_photon_number": 0.5, "g2": 0.05, "repetition_rate_hz": 0},
            "source.repetition_rate_hz",
        ),
        (
            {
                "mean_photon_number": 0.5,
                "g2": 0.05,
                "repetition_rate_hz": 1e6,
                "decoy_intensities": (0.7,),
            },
            "source.decoy_intensities",
        ),
    ],
)
def test_invalid_inputs_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SinglePhotonSource(**kwargs)
