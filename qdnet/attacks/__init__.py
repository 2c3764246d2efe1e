"""Channel interceptors for the Monte Carlo (see :mod:`qdnet.attacks.base`)."""

from __future__ import annotations

from qdnet.attacks.base import ChannelContext, Interceptor, NoAttack, PairInterceptor
from qdnet.attacks.beam_splitting import BeamSplittingTap
from qdnet.attacks.intercept_resend import ArmInterceptResend, InterceptResend, strategy_probability
from qdnet.attacks.photon_number_splitting import PhotonNumberSplitting

ATTACKS = ("intercept-resend", "pns", "beam-splitting")


def make_attack(
    name: str, fraction: float = 1.0, basis: str = "random", protocol: str = "bb84"
) -> Interceptor | PairInterceptor:
    """Build an interceptor by its CLI name for the given protocol."""
    p_z = strategy_probability(basis)
    if name == "intercept-resend":
        if protocol == "bbm92":
            return ArmInterceptResend(fraction=fraction, eve_basis_z_probability=p_z)
        return InterceptResend(fraction=fraction, eve_basis_z_probability=p_z)
    if protocol == "bbm92":
        raise ValueError(
            f"attack {name!r} applies to prepare-and-measure links; bbm92 supports intercept-resend"
        )
    if name == "pns":
        return PhotonNumberSplitting()
    if name == "beam-splitting":
        return BeamSplittingTap(fraction=fraction)
    raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(ATTACKS)}")


__all__ = [
    "ATTACKS",
    "ArmInterceptResend",
    "BeamSplittingTap",
    "ChannelContext",
    "InterceptResend",
    "Interceptor",
    "NoAttack",
    "PairInterceptor",
    "PhotonNumberSplitting",
    "make_attack",
]
