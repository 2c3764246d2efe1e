"""The secret-key rate of every link of a network, from the link model or as given.

A modelled link's rate is the optimised (finite-key where ``protocol.block_size`` is set) secret-key
rate of :func:`qdnet.keyrate.key_rate_point`; identical links (same validated link document) are
optimised once (:func:`modelled_link_rate` is cached on the document's JSON). A link given by
``key_rate_bps`` keeps that rate, its ``qber`` and ``block_bits``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qdnet.config import LinkConfig
from qdnet.keyrate import key_rate_point
from qdnet.network.config import NetworkConfig, link_config

#: Link-model optimisations remembered per process (a 300-link network needs at most 300).
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class LinkRate:
    """What one network link delivers.

    ``block_bits`` is the sifted key-basis bits per post-processing block (``protocol.block_size``
    of a modelled finite-key link, ``block_bits`` of a given one; None for an asymptotic model) and
    ``secret_bits_per_block`` what privacy amplification keeps of one block.
    """

    index: int
    between: tuple[str, str]
    secret_key_rate_bps: float
    qber: float
    length_km: float | None
    modelled: bool
    protocol: str | None
    block_bits: float | None
    secret_bits_per_block: float | None
    parameters: dict[str, float]
    #: The untrusted relay of an MDI link (``links[i].via``), None otherwise.
    via: str | None = None

    @property
    def name(self) -> str:
        """``A-B``."""
        return f"{self.between[0]}-{self.between[1]}"

    def to_json(self) -> dict[str, object]:
        """The ``links[]`` entry of ``qdnet network plan --json``."""
        return {
            "between": list(self.between),
            "secret_key_rate_bps": self.secret_key_rate_bps,
            "qber": self.qber,
            "length_km": self.length_km,
            "source": "model" if self.modelled else "given",
            "protocol": self.protocol,
            "block_bits": self.block_bits,
            "secret_bits_per_block": self.secret_bits_per_block,
            "parameters": self.parameters,
            "via": self.via,
        }


@lru_cache(maxsize=_CACHE_SIZE)
def _optimised(document_json: str) -> tuple[float, float, float, dict[str, float]]:
    config = LinkConfig.model_validate_json(document_json)
    link = config.build()
    point, _ = key_rate_point(link, config.channel.length_km)
    return (
        point.secret_key_rate_bps,
        point.qber["z"],
        point.secret_bits_per_pulse,
        dict(point.parameters),
    )


def modelled_link_rate(config: LinkConfig) -> tuple[float, float, float, dict[str, float]]:
    """(secret key rate in bit/s, QBER Z, secret bits per pulse, optimised parameters), cached."""
    document = config.model_dump(mode="json")
    document["name"] = "link"  # the name does not change the physics: share the optimisation
    return _optimised(json.dumps(document, sort_keys=True))


def link_rates(
    network: NetworkConfig, base_dir: Path, progress: Callable[[], None] | None = None
) -> list[LinkRate]:
    """Every link's rate, in the order of the file's ``links`` (``progress`` after each)."""
    rates: list[LinkRate] = []
    for index in range(len(network.links)):
        rates.append(_link_rate(network, index, base_dir))
        if progress is not None:
            progress()
    return rates


def _link_rate(network: NetworkConfig, index: int, base_dir: Path) -> LinkRate:
    link = network.links[index]
    if link.key_rate_bps is not None:
        return LinkRate(
            index=index,
            between=link.between,
            secret_key_rate_bps=link.key_rate_bps,
            qber=link.qber,
            length_km=link.length_km,
            modelled=False,
            protocol=None,
            block_bits=link.block_bits,
            secret_bits_per_block=None,
            parameters={},
            via=link.via,
        )
    config = link_config(network, index, base_dir)
    rate_bps, qber, bits_per_pulse, parameters = modelled_link_rate(config)
    pulses = parameters.get("pulses_per_block")
    return LinkRate(
        index=index,
        between=link.between,
        secret_key_rate_bps=rate_bps,
        qber=qber,
        length_km=config.channel.length_km,
        modelled=True,
        protocol=config.protocol.kind,
        block_bits=config.protocol.block_size,
        secret_bits_per_block=bits_per_pulse * pulses if pulses is not None else None,
        parameters=parameters,
        via=link.via,
    )
