"""Channels and detectors: losses, default attenuation, background, dead time, afterpulsing."""

import pytest

from qdnet.optics.detectors import Detector
from qdnet.optics.fibre import FibreChannel, default_attenuation_db_per_km
from qdnet.optics.free_space import FreeSpaceChannel
from qdnet.protocols import prepare_measure
from tests.conftest import example_link


@pytest.mark.parametrize(
    ("wavelength", "expected"), [(780, 4.0), (930, 2.0), (1310, 0.32), (1550, 0.18)]
)
def test_default_attenuation(wavelength: float, expected: float) -> None:
    assert default_attenuation_db_per_km(wavelength) == pytest.approx(expected)


def test_fibre_loss_and_override() -> None:
    fibre = FibreChannel(length_km=79, attenuation_db_per_km=0.2, extra_loss_db=1.0)
    assert fibre.loss_db == pytest.approx(16.8)
    # Hannover-Braunschweig deployed link: 79 km, 25.49 dB (Yang et al. 2024) as a total-loss override.
    deployed = FibreChannel(length_km=79, attenuation_db_per_km=0.2, loss_db_override=25.49)
    assert deployed.transmittance == pytest.approx(10 ** (-2.549))


def test_free_space_background_raises_qber() -> None:
    quiet = example_link("telecom-dot-bb84", ["channel.kind=free-space", "channel.loss_db=30"])
    bright = example_link(
        "telecom-dot-bb84",
        ["channel.kind=free-space", "channel.loss_db=30", "channel.background_rate_hz=2e4"],
    )
    assert isinstance(bright.channel, FreeSpaceChannel)
    q_quiet = prepare_measure.expected_statistics(quiet, (0.025,)).qber_z[0]
    q_bright = prepare_measure.expected_statistics(bright, (0.025,)).qber_z[0]
    assert q_bright > q_quiet + 0.005


def test_detector_noise_dead_time_factor() -> None:
    det = Detector(efficiency=0.8, dark_count_rate_hz=100, window_ns=2, dead_time_ns=50)
    assert det.noise_probability() == pytest.approx(2e-7)
    assert det.noise_probability(background_rate_hz=900) == pytest.approx(2e-6)
    # Non-paralysable dead time: 1/(1 + R tau); 1 MHz x 50 ns -> 1/1.05.
    assert det.dead_time_factor(1e6) == pytest.approx(1 / 1.05)


def test_dead_time_and_afterpulsing_cost_key() -> None:
    base = example_link("telecom-dot-bb84", ["channel.loss_db=3"])
    slow = example_link("telecom-dot-bb84", ["channel.loss_db=3", "receiver.dead_time_ns=100"])
    noisy = example_link(
        "telecom-dot-bb84", ["channel.loss_db=3", "receiver.afterpulse_probability=0.05"]
    )
    s_base = prepare_measure.expected_statistics(base, (0.025,))
    s_slow = prepare_measure.expected_statistics(slow, (0.025,))
    s_noisy = prepare_measure.expected_statistics(noisy, (0.025,))
    assert s_slow.gain[0] < s_base.gain[0]
    assert s_noisy.qber_z[0] > s_base.qber_z[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"efficiency": 0.0},
        {"efficiency": 0.5, "window_ns": 0},
        {"efficiency": 0.5, "afterpulse_probability": 1.0},
    ],
)
def test_detector_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="receiver"):
        Detector(**kwargs)
