"""Binary entropy and its inverse-free helpers."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray


def binary_entropy(x: float) -> float:
    """h(x) = -x log2 x - (1-x) log2(1-x), with h(0) = h(1) = 0; clipped to [0, 1/2] -> [0, 1]."""
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return -x * math.log2(x) - (1.0 - x) * math.log2(1.0 - x)


def binary_entropy_array(x: ArrayLike) -> NDArray[np.float64]:
    """Vectorised h(x)."""
    arr = np.clip(np.asarray(x, dtype=np.float64), 1e-300, 1 - 1e-16)
    out = -arr * np.log2(arr) - (1 - arr) * np.log2(1 - arr)
    return np.where((np.asarray(x) <= 0) | (np.asarray(x) >= 1), 0.0, out)
