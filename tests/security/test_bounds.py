"""PLOB bound and one-way QBER thresholds from ../shared/cases/public.yaml."""

import pytest
from scipy.optimize import brentq

from qdnet.optics.fibre import transmittance_from_loss_db
from qdnet.security.asymptotic import bbm92_key_per_coincidence
from qdnet.security.bounds import plob_bits_per_channel_use
from qdnet.security.entropy import binary_entropy

# Pirandola et al., Nat. Commun. 8, 15043 (2017): -log2(1 - eta).
PLOB = [(9.6, 0.16755), (14.6, 0.050911), (25.49, 4.0812e-3), (44.0, 5.7436e-5)]


@pytest.mark.parametrize(("loss_db", "value"), PLOB)
def test_plob(loss_db: float, value: float) -> None:
    assert plob_bits_per_channel_use(transmittance_from_loss_db(loss_db)) == pytest.approx(
        value, rel=2e-4
    )


@pytest.mark.parametrize(("f", "threshold"), [(1.0, 0.110028), (1.16, 0.098106)])
def test_qber_threshold(f: float, threshold: float) -> None:
    # 1 - h(e) - f h(e) = 0 (../shared/models.md, BBM92).
    e = brentq(lambda q: 1 - binary_entropy(q) - f * binary_entropy(q), 1e-6, 0.2)
    assert e == pytest.approx(threshold, abs=1e-6)
    assert bbm92_key_per_coincidence(threshold - 1e-4, threshold - 1e-4, f) > 0
    assert bbm92_key_per_coincidence(threshold + 1e-4, threshold + 1e-4, f) == 0
