"""Intercept-resend attacks (Bennett, Brassard 1984; Curty, Luetkenhaus, PRA 69, 042321 (2004)).

Eve intercepts a fraction of the pulses at Alice's output, measures every non-empty pulse in her
basis (Z with probability ``eve_basis_z_probability``: 0.5 random, 1.0 always Z) and resends one
photon in the state she found into the rest of the channel. Against BB84 with random bases and
fraction 1 the sifted QBER is 25 % (plus misalignment on her correctly-guessed half). On BBM92 she
does the same on one arm's photon: the correlation of the bases she guessed wrongly is destroyed.
"""

from __future__ import annotations

from dataclasses import dataclass

from qdnet.attacks.base import ChannelContext, FloatArray, faithful_table

BASIS_STRATEGIES = {"random": 0.5, "z": 1.0, "x": 0.0}


def _check(fraction: float, p_z: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"attack fraction must be in [0, 1], got {fraction}")
    if not 0.0 <= p_z <= 1.0:
        raise ValueError(f"Eve's P(Z) must be in [0, 1], got {p_z}")


@dataclass(frozen=True)
class InterceptResend:
    """Intercept a fraction of the pulses, measure, resend a single photon."""

    fraction: float = 1.0
    eve_basis_z_probability: float = 0.5
    name: str = "intercept-resend"

    def __post_init__(self) -> None:
        _check(self.fraction, self.eve_basis_z_probability)

    def arrival_table(self, distribution: FloatArray, context: ChannelContext) -> FloatArray:
        """Untouched pulses thin as usual; intercepted non-empty pulses become one resent photon."""
        eta = context.eta_channel * context.eta_detector
        table = (1.0 - self.fraction) * faithful_table(distribution, eta)
        occupied = 1.0 - float(distribution[0])
        table[0, 0] += self.fraction * float(distribution[0])
        table[0, 1] += self.fraction * occupied * (1.0 - eta)
        table[1, 1] += self.fraction * occupied * eta
        return table

    def describe(self) -> dict[str, object]:
        """Parameters for reports."""
        return {
            "attack": self.name,
            "fraction": self.fraction,
            "eve_basis_z_probability": self.eve_basis_z_probability,
        }


@dataclass(frozen=True)
class ArmInterceptResend:
    """Intercept-resend on one arm of BBM92 (``arm`` 'a' or 'b', default Bob's)."""

    fraction: float = 1.0
    eve_basis_z_probability: float = 0.5
    arm: str = "b"
    name: str = "intercept-resend"

    def __post_init__(self) -> None:
        _check(self.fraction, self.eve_basis_z_probability)
        if self.arm not in ("a", "b"):
            raise ValueError(f"arm must be 'a' or 'b', got {self.arm!r}")

    def describe(self) -> dict[str, object]:
        """Parameters for reports."""
        return {
            "attack": self.name,
            "fraction": self.fraction,
            "eve_basis_z_probability": self.eve_basis_z_probability,
            "arm": self.arm,
        }


def strategy_probability(strategy: str) -> float:
    """Eve's P(Z) for a named basis strategy (``random``, ``z``, ``x``) or a number in [0, 1]."""
    if strategy in BASIS_STRATEGIES:
        return BASIS_STRATEGIES[strategy]
    try:
        value = float(strategy)
    except ValueError:
        raise ValueError(
            f"basis strategy must be one of {sorted(BASIS_STRATEGIES)} or P(Z) in [0, 1], got {strategy!r}"
        ) from None
    _check(0.0, value)
    return value


__all__ = ["ArmInterceptResend", "InterceptResend", "strategy_probability"]
