"""Pydantic models of the network YAML (a public contract: see README, "Networks").

A network file names its nodes, the QKD links between them (each either modelled from a link file
or given by a measured secret-key rate), the applications (SAEs) at the nodes and the key demands
between applications. Paths inside the file (``link_defaults``, ``links[i].link``) are relative to
the file. Errors name the field path and what was expected, as for link files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qdnet.config import (
    ConfigError,
    LinkConfig,
    apply_overrides,
    read_yaml_mapping,
    resolve_link_paths,
    validation_message,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Strict):
    """``nodes[i]``: a site with a KMS. A trusted node may relay keys; an untrusted one may not."""

    name: str = Field(min_length=1)
    trusted: bool = True


class NetworkLinkConfig(_Strict):
    """``links[i]``: a QKD link, modelled from a link file or given by its measured key rate.

    A modelled link takes ``link`` (or the network's ``link_defaults``), sets ``length_km`` on its
    channel and applies ``set`` (dotted fields, as ``--set`` on the command line). A link given by
    ``key_rate_bps`` delivers blocks of ``block_bits`` at error rate ``qber``; its ``length_km``
    (optional) only sets the relay latency.

    ``via`` names the untrusted node (``trusted: false``) of an MDI link (issue 16): the two ends
    each send to that relay, which only announces Bell-measurement results, so the link is one
    end-to-end link A-B (its key never passes through the relay, which can relay no key either);
    a modelled one needs a link file of ``protocol.kind: mdi-bb84``, whose ``length_km`` is the
    whole A-B fibre split at ``protocol.relay_position``.
    """

    between: tuple[str, str]
    length_km: float | None = Field(default=None, ge=0)
    link: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    key_rate_bps: float | None = Field(default=None, gt=0)
    block_bits: float = Field(default=1e6, ge=1e3)
    qber: float = Field(default=0.01, ge=0, lt=0.5)
    via: str | None = None

    @model_validator(mode="after")
    def _given_or_modelled(self) -> NetworkLinkConfig:
        if self.between[0] == self.between[1]:
            raise ValueError(f"a link from {self.between[0]} to itself")
        if self.key_rate_bps is not None and (self.link is not None or self.set):
            raise ValueError("give key_rate_bps (a measured link) or link/set (a modelled link)")
        return self

    @property
    def name(self) -> str:
        """``A-B`` as the command-line options write it."""
        return f"{self.between[0]}-{self.between[1]}"


class SaeConfig(_Strict):
    """``saes[i]``: an application (ETSI SAE) at a node."""

    name: str = Field(min_length=1)
    node: str


class DemandConfig(_Strict):
    """``demands[i]``: key wanted from one SAE to another, in bits per second."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    rate_bps: float = Field(gt=0)
    key_bits: int = Field(default=256, ge=8, le=1 << 16)


class NetworkConfig(_Strict):
    """A whole network file."""

    name: str = Field(min_length=1)
    description: str | None = None
    link_defaults: str | None = None
    nodes: list[NodeConfig] = Field(min_length=2)
    links: list[NetworkLinkConfig] = Field(min_length=1)
    saes: list[SaeConfig] = Field(default_factory=list)
    demands: list[DemandConfig] = Field(default_factory=list)

    @field_validator("nodes")
    @classmethod
    def _unique_nodes(cls, nodes: list[NodeConfig]) -> list[NodeConfig]:
        seen: set[str] = set()
        for node in nodes:
            if node.name in seen:
                raise ValueError(f"node {node.name!r} is listed twice")
            seen.add(node.name)
        return nodes

    @model_validator(mode="after")
    def _references(self) -> NetworkConfig:
        names = {node.name for node in self.nodes}
        pairs: set[frozenset[str]] = set()
        for i, link in enumerate(self.links):
            for end in link.between:
                if end not in names:
                    raise ValueError(f"links[{i}].between: unknown node {end!r}")
            pair = frozenset(link.between)
            if pair in pairs:
                raise ValueError(f"links[{i}]: a second link between {link.name}")
            pairs.add(pair)
            if link.via is not None:
                _check_relay(self, i, link.via)
            if link.key_rate_bps is None and link.link is None and self.link_defaults is None:
                raise ValueError(
                    f"links[{i}]: needs key_rate_bps, link, or the network's link_defaults"
                )
        saes: dict[str, str] = {}
        for i, sae in enumerate(self.saes):
            if sae.node not in names:
                raise ValueError(f"saes[{i}].node: unknown node {sae.node!r}")
            if sae.name in saes:
                raise ValueError(f"saes[{i}].name: SAE {sae.name!r} is listed twice")
            saes[sae.name] = sae.node
        graph = relay_graph(self)
        for i, demand in enumerate(self.demands):
            for field, name in (("from", demand.source), ("to", demand.target)):
                if name not in saes:
                    raise ValueError(f"demands[{i}].{field}: unknown SAE {name!r}")
            a, b = saes[demand.source], saes[demand.target]
            if a == b:
                raise ValueError(
                    f"demands[{i}]: {demand.source} and {demand.target} share node {a}"
                )
            if not has_relay_path(graph, a, b):
                raise ValueError(
                    f"demands[{i}]: no path from node {a} to node {b} through trusted nodes"
                )
        return self

    def node_of(self, sae: str) -> str:
        """The node an SAE sits at."""
        return next(s.node for s in self.saes if s.name == sae)


def _check_relay(network: NetworkConfig, index: int, via: str) -> None:
    """``links[index].via``: an untrusted node other than the link's ends."""
    link = network.links[index]
    node = next((n for n in network.nodes if n.name == via), None)
    if node is None:
        raise ValueError(f"links[{index}].via: unknown node {via!r}")
    if via in link.between:
        raise ValueError(f"links[{index}].via: {via} is an end of the link {link.name}")
    if node.trusted:
        raise ValueError(
            f"links[{index}].via: node {via} is trusted; the relay of an MDI link is an "
            "untrusted node (trusted: false)"
        )


def relay_graph(network: NetworkConfig) -> nx.Graph:
    """Nodes and links as an undirected graph; node attribute ``trusted``."""
    graph = nx.Graph()
    for node in network.nodes:
        graph.add_node(node.name, trusted=node.trusted)
    for index, link in enumerate(network.links):
        graph.add_edge(*link.between, index=index)
    return graph


def has_relay_path(graph: nx.Graph, source: str, target: str) -> bool:
    """A path whose intermediate nodes are all trusted (one-time-pad relay needs them)."""
    allowed = {n for n, trusted in graph.nodes(data="trusted") if trusted} | {source, target}
    return bool(nx.has_path(graph.subgraph(allowed), source, target))


def load_network_config(path: str | Path) -> NetworkConfig:
    """Read and validate a network YAML file."""
    document = read_yaml_mapping(path, "name, nodes, links, saes, demands")
    try:
        return NetworkConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(validation_message(str(path), error, "network file")) from None


def link_document(network: NetworkConfig, index: int, base_dir: Path) -> dict[str, Any]:
    """The raw link document of a modelled link: its file, ``length_km`` and ``set`` applied."""
    link = network.links[index]
    relative = link.link if link.link is not None else network.link_defaults
    assert relative is not None
    where = "link" if link.link is not None else "link_defaults"
    path = (base_dir / relative).resolve()
    if not path.is_file():
        raise ConfigError(f"links[{index}].{where}: no such link file {path}")
    try:
        document = read_yaml_mapping(path, "name, source, channel, receiver, protocol")
    except ConfigError as error:
        raise ConfigError(f"links[{index}].{where}: {error}") from None
    document = resolve_link_paths(document, path)
    document["name"] = link.name
    if link.length_km is not None:
        channel = document.setdefault("channel", {})
        if isinstance(channel, dict):
            channel["length_km"] = link.length_km
            channel.pop("loss_db", None)
    overrides = [f"{key}={json.dumps(value)}" for key, value in link.set.items()]
    try:
        return apply_overrides(document, overrides)
    except ConfigError as error:
        raise ConfigError(f"links[{index}].set: {error}") from None


def link_config(network: NetworkConfig, index: int, base_dir: Path) -> LinkConfig:
    """The validated link model of a modelled link."""
    document = link_document(network, index, base_dir)
    origin = f"links[{index}] ({network.links[index].name})"
    try:
        config = LinkConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(validation_message(origin, error, "link")) from None
    if network.links[index].via is not None and config.protocol.kind != "mdi-bb84":
        raise ConfigError(
            f"{origin}: via {network.links[index].via} needs a link file of protocol.kind "
            f"mdi-bb84, got {config.protocol.kind}"
        )
    return config
