"""Detection-time profile and time-gate acceptance against closed forms and sampled times."""

import math

import numpy as np
import pytest

from qdnet.sources.time_profile import detection_time_cdf, gate_acceptance


@pytest.mark.parametrize("gate_ns", [0.1, 0.5, 1.0, 3.0])
def test_closed_forms_without_jitter_or_without_lifetime(gate_ns: float) -> None:
    # Exponential decay alone: the gate opens at the emission, 1 - exp(-w/tau).
    assert gate_acceptance(gate_ns, 0.8, 0.0) == pytest.approx(-math.expm1(-gate_ns / 0.8))
    # Gaussian jitter alone: a centred gate, erf(w / (2 sqrt(2) sigma)).
    expected = math.erf(gate_ns / (2 * math.sqrt(2) * 0.3))
    assert gate_acceptance(gate_ns, 0.0, 0.3) == pytest.approx(expected)


def test_cdf_is_a_distribution() -> None:
    times = np.linspace(-2.0, 20.0, 500)
    values = [detection_time_cdf(t, 1.0, 0.2) for t in times]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values[-1] == pytest.approx(1.0, abs=1e-8)
    assert np.all(np.diff(values) >= -1e-15)
    # Jitter far wider than the lifetime: no overflow, close to the Gaussian.
    assert detection_time_cdf(0.0, 1e-3, 1.0) == pytest.approx(0.5, abs=2e-3)


@pytest.mark.parametrize(("lifetime_ns", "sigma_ns"), [(1.0, 0.1), (0.25, 0.3), (1.0, 0.5)])
@pytest.mark.parametrize("gate_ns", [0.3, 1.0, 2.5])
def test_best_gate_matches_sampled_detection_times(
    lifetime_ns: float, sigma_ns: float, gate_ns: float
) -> None:
    rng = np.random.default_rng(11)
    size = 400_000
    times = np.sort(rng.exponential(lifetime_ns, size) + rng.normal(0.0, sigma_ns, size))
    # Fraction in the best window of the samples (every sample as a possible start).
    kept = np.searchsorted(times, times + gate_ns) - np.arange(size)
    best = kept.max() / size
    accepted = gate_acceptance(gate_ns, lifetime_ns, sigma_ns)
    sigma = math.sqrt(accepted * (1 - accepted) / size)
    # The sample maximum is biased up by at most a few standard deviations of one window.
    assert best - 6 * sigma <= accepted <= best + 4 * sigma
