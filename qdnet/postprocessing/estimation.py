"""Parameter estimation: per-class counts of the sifted records, QBER with a confidence bound,
and the :class:`~qdnet.security.finite_key.ObservedCounts` handed to the finite-key formula.

With biased basis choice every X-basis (test) sifted bit is disclosed; the test-basis error rate
bounds the phase error of the Z-basis key in the security layer. The reported confidence bound
on the test QBER is the exact one-sided Clopper-Pearson bound (Clopper and Pearson, Biometrika
26, 404 (1934)) at failure probability ``eps``; the key length itself uses the security layer's
own bounds (Lim et al. 2014; Tomamichel et al. 2012).

Decoy MDI-QKD (:func:`qdnet.postprocessing.sifting.class_pairs`): the classes are (basis, class
pair) as the sifting numbers them, and the QBER that error correction and the abort decision use
is the key sample's (the first n^2 test classes), not the X basis's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import beta

from qdnet.postprocessing.sifting import class_pairs
from qdnet.protocols.records import RecordsMeta
from qdnet.security.finite_key import ObservedCounts


def clopper_pearson_upper(errors: int, trials: int, eps: float) -> float:
    """One-sided upper bound on a binomial rate that fails with probability <= eps."""
    if trials <= 0:
        return 1.0
    if errors >= trials:
        return 1.0
    return float(beta.ppf(1.0 - eps, errors + 1, trials - errors))


@dataclass(frozen=True)
class Estimate:
    """Test-basis statistics both endpoints compute from public data."""

    key_detections: tuple[int, ...]
    test_detections: tuple[int, ...]
    test_errors: tuple[int, ...]
    qber: float
    qber_upper: float
    eps: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "key_detections": list(self.key_detections),
            "test_detections": list(self.test_detections),
            "test_errors": list(self.test_errors),
            "qber_test": self.qber,
            "qber_test_upper": self.qber_upper,
            "qber_confidence_eps": self.eps,
        }


def estimation_classes(meta: RecordsMeta) -> int:
    """Number of classes the estimation counts: one per intensity class, or for decoy MDI-QKD
    one per basis and class pair (module docstring)."""
    n = class_pairs(meta)
    return 2 * n * n if n else len(meta.intensities)


def estimate(
    key_class: NDArray[np.uint8],
    test_class: NDArray[np.uint8],
    test_error: NDArray[np.bool_],
    classes: int,
    eps: float,
    qber_classes: int | None = None,
) -> Estimate:
    """Per-class counts of key and test bits and test errors, and the test QBER over the first
    ``qber_classes`` classes (None: all)."""
    key = np.bincount(key_class, minlength=classes)[:classes]
    test = np.bincount(test_class, minlength=classes)[:classes]
    errors = np.bincount(test_class[test_error], minlength=classes)[:classes]
    total_test = int(test[:qber_classes].sum())
    total_err = int(errors[:qber_classes].sum())
    qber = total_err / total_test if total_test else 1.0
    return Estimate(
        key_detections=tuple(int(v) for v in key),
        test_detections=tuple(int(v) for v in test),
        test_errors=tuple(int(v) for v in errors),
        qber=qber,
        qber_upper=clopper_pearson_upper(total_err, total_test, eps),
        eps=eps,
    )


def estimate_run(
    meta: RecordsMeta,
    key_class: NDArray[np.uint8],
    test_class: NDArray[np.uint8],
    test_error: NDArray[np.bool_],
    eps: float,
) -> Estimate:
    """:func:`estimate` with the classes of the run ``meta`` describes."""
    n = class_pairs(meta)
    classes = estimation_classes(meta)
    return estimate(key_class, test_class, test_error, classes, eps, n * n if n else None)


def _multiphoton(meta: RecordsMeta) -> float:
    """Alice's characterised P(n>=2) of the signal class, published in the run's metadata.

    One-intensity BB84 cannot be secured without it (GLLP's tagged bound), so it is required.
    """
    if meta.multiphoton_probability:
        return float(meta.multiphoton_probability[0])
    if meta.protocol == "bb84":
        raise ValueError(
            "records lack the source's multi-photon probability (meta.json "
            "multiphoton_probability); re-create them with qdnet simulate"
        )
    return 0.0


def observed_counts(meta: RecordsMeta, est: Estimate) -> ObservedCounts:
    """The counts in the security layer's form (one class for bb84/bbm92, signal first; for
    decoy MDI one per basis and class pair, with the pair's total intensity mu_i + mu_j and its
    expected pulses in that basis pair, N p_i p_j q_b^2, p_i from Alice's pulses per class)."""
    classes = len(est.key_detections)
    n = class_pairs(meta)
    if n:
        probability = [k / meta.pulses for k in meta.pulses_per_intensity]
        basis_share = (meta.basis_bias**2, (1.0 - meta.basis_bias) ** 2)
        cells = [(b, c // n, c % n) for b in range(2) for c in range(n * n)]
        intensities = tuple(meta.intensities[i] + meta.intensities[j] for _, i, j in cells)
        pulses: tuple[float, ...] = tuple(
            meta.pulses * probability[i] * probability[j] * basis_share[b] for b, i, j in cells
        )
    else:
        intensities = tuple(float(mu) for mu in meta.intensities[:classes])
        pulses = tuple(int(p) for p in meta.pulses_per_intensity[:classes])
        if len(pulses) < classes:
            pulses = (int(meta.pulses),) * classes
    return ObservedCounts(
        protocol=meta.protocol,
        intensities=intensities,
        pulses=pulses,
        key_detections=est.key_detections,
        test_detections=est.test_detections,
        test_errors=est.test_errors,
        multiphoton_probability=_multiphoton(meta),
        basis_bias=meta.basis_bias,
    )
