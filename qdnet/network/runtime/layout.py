"""The working folder of ``qdnet network up`` and its ``network.json`` (a public contract).

``prepare_workdir`` turns a network file into a folder that every process of the running network
reads::

    DIR/network.json                 what clients read (below); rewritten atomically
    DIR/pki/                         CA, one certificate per KME and per SAE (qdnet.kms.pki)
    DIR/<kme>/<kme>.yaml             the node's KMS settings (qdnet.kms.topology.mesh_settings)
    DIR/<kme>/keys/<peer kme>/       the link's key blocks (what the KMS ingests) and the link
                                     endpoint's authentication pool (auth/pool.json)
    DIR/<kme>/kms.log                the KMS process's log
    DIR/links/<A-B>/spec.json        what the link's loop runs (below); stats.json, link.log

KME IDs are ``kme-<node>``. ``network.json`` (``format_version`` 1)::

    {"format_version": 1, "network": "line-3", "source": "/abs/line-3.yaml",
     "workdir": "/abs/DIR", "state": "running", "started_utc": "2026-12-07T04:00:00+00:00",
     "fast": true, "seed": 1, "ca": "/abs/DIR/pki/ca.crt",
     "supervisor": {"pid": 4242, "start_ticks": 991}, "supervisor_log": "/abs/DIR/supervisor.log",
     "nodes": {"A": {"kme_id": "kme-A", "kms_url": "https://127.0.0.1:40001",
                     "peer_url": "https://127.0.0.1:40002", "settings": "/abs/DIR/kme-A/kme-A.yaml",
                     "log": "/abs/DIR/kme-A/kms.log", "saes": ["app-a"], "status_sae": "app-a",
                     "process": {"pid": 4250, "start_ticks": 1002}}, ...},
     "saes": {"app-a": {"node": "A", "kme_id": "kme-A", "kms_url": "https://127.0.0.1:40001",
                        "ca": "/abs/DIR/pki/ca.crt", "cert": "/abs/DIR/pki/app-a.crt",
                        "key": "/abs/DIR/pki/app-a.key"}, ...},
     "links": {"A-B": {"between": ["A", "B"], "kind": "modelled", "key_rate_bps": null,
                       "folders": {"A": "/abs/DIR/kme-A/keys/kme-B",
                                   "B": "/abs/DIR/kme-B/keys/kme-A"},
                       "tap": {"from_s": 0.0, "fraction": 0.5},
                       "spec": "/abs/DIR/links/A-B/spec.json",
                       "stats": "/abs/DIR/links/A-B/stats.json",
                       "log": "/abs/DIR/links/A-B/link.log",
                       "process": {"pid": 4260, "start_ticks": 1010}}, ...}}

A node's ``status_sae`` is the SAE whose certificate ``network status`` uses there: its first
application, or for a node with none (a pure relay node) an SAE ``monitor-<node>`` that the node's
KMS serves for this alone (certificate in ``DIR/pki``; not listed under ``saes``).
``state`` is ``starting`` (processes being started), ``running`` (every KMS answered),
``stopping`` or ``stopped``; ``process`` entries are null until the process is started. Any ETSI GS
QKD 014 client reaches SAE ``app-a`` with ``saes["app-a"]``'s URL, CA, certificate and key.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from qdnet.config import ConfigError
from qdnet.network.config import (
    NetworkConfig,
    NodeConfig,
    link_config,
    link_document,
    load_network_config,
)
from qdnet.network.runtime.processes import ProcessRef
from qdnet.network.runtime.state import (
    FORMAT_VERSION,
    NETWORK_JSON,
    WorkdirError,
    read_state,
    write_json_atomic,
)

if TYPE_CHECKING:
    from qdnet.kms.settings import KMSSettings

# The KMS, PKI and planning modules load only when a folder is written or a tap parsed, so that
# `up` refuses bad input (and `down`, `status` run) without their start-up time.

#: How often a KMS looks for new key blocks of its links (seconds; the KMS default is 1 s).
INGEST_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Tap:
    """An intercept-resend eavesdropper on a link from ``from_s`` after start, on ``fraction``."""

    from_s: float
    fraction: float


def kme_id(node: str) -> str:
    """The KME ID of a node."""
    return f"kme-{node}"


def monitor_sae(node: str) -> str:
    """The SAE that ``network status`` asks a node with no application for its status: a KMS
    answers ETSI GS QKD 014 ``status`` only to the SAEs it serves."""
    return f"monitor-{node}"


def kms_nodes(network: NetworkConfig, network_file: Path) -> list[NodeConfig]:
    """The nodes that run a KMS: all but an untrusted MDI relay station (a node named only by
    links' ``via``: it measures, announces, and holds no key). ``ConfigError`` for an untrusted
    node with links of its own (the KMSs would relay keys through it) or with an SAE."""
    ends = {end for link in network.links for end in link.between}
    out = []
    for i, node in enumerate(network.nodes):
        if node.trusted:
            out.append(node)
            continue
        if node.name in ends:
            raise ConfigError(
                f"{network_file}: nodes[{i}]: untrusted node {node.name} ends links of its own: "
                "`network up` would relay keys through its KMS (an untrusted node can only be "
                "an MDI relay there, named by links' via)"
            )
        for j, sae in enumerate(network.saes):
            if sae.node == node.name:
                raise ConfigError(
                    f"{network_file}: saes[{j}].node: {node.name} is an untrusted MDI relay, "
                    "which runs no KMS"
                )
    return out


def parse_taps(network: NetworkConfig, taps: list[str]) -> dict[str, Tap]:
    """``--tap C-B@0s:0.5`` options (the parser of ``network simulate``) by link name."""
    if not taps:
        return {}
    from qdnet.network.planning import PlannedNetwork
    from qdnet.network.scenario import parse_tap

    index = SimpleNamespace(
        rates=[
            SimpleNamespace(index=i, between=link.between) for i, link in enumerate(network.links)
        ]
    )
    out: dict[str, Tap] = {}
    for text in taps:
        event = parse_tap(text, cast(PlannedNetwork, index))
        assert event.fraction is not None
        name = network.links[event.link].name
        if name in out:
            raise ValueError(f"--tap {text!r}: link {name} is tapped twice")
        out[name] = Tap(event.start_s, event.fraction)
    return out


def _check_empty(workdir: Path) -> None:
    if (workdir / NETWORK_JSON).exists():
        supervisor = read_state(workdir).get("supervisor")
        if supervisor and ProcessRef.from_json(supervisor).alive():
            raise WorkdirError(
                f"--workdir {workdir}: already holds a network, running (supervisor PID "
                f"{supervisor['pid']}); `qdnet network down {workdir}` stops it"
            )
        raise WorkdirError(
            f"--workdir {workdir}: already holds a network (stopped); use a new folder"
        )
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise WorkdirError(f"--workdir {workdir}: expected a new or empty folder")


def _blocks_dir(settings: dict[str, KMSSettings], node: str, peer: str) -> str:
    """Where node ``node``'s KMS takes the key blocks of its link to ``peer``."""
    folder = next(
        p.key_blocks_dir for p in settings[kme_id(node)].peers if p.kme_id == kme_id(peer)
    )
    assert folder is not None
    return str(folder)


def _link_spec(
    network: NetworkConfig,
    index: int,
    base_dir: Path,
    workdir: Path,
    settings: dict[str, KMSSettings],
    tap: Tap | None,
    fast: bool,
    seed: int,
    slots: int,
) -> dict[str, Any]:
    link = network.links[index]
    a, b = link.between
    folder = workdir / "links" / link.name
    folder.mkdir(parents=True)
    spec: dict[str, Any] = {
        "name": link.name,
        "index": index,
        "between": [a, b],
        "folders": {"alice": _blocks_dir(settings, a, b), "bob": _blocks_dir(settings, b, a)},
        "folder": str(folder),
        "tap": None if tap is None else {"from_s": tap.from_s, "fraction": tap.fraction},
        "fast": fast,
        "seed": seed,
        "cpu_slots": slots,
        "slots_dir": str(workdir / "links" / ".cpu-slots"),
    }
    from qdnet.postprocessing.keyblock import KeyFolder
    from qdnet.transport.authentication import write_psk

    if link.key_rate_bps is not None:
        spec.update(kind="given", key_rate_bps=link.key_rate_bps, qber=link.qber)
    else:
        spec.update(kind="modelled", link_document=link_document(network, index, base_dir))
        psk = folder / "private" / "auth-psk.bin"
        psk.parent.mkdir(mode=0o700)
        write_psk(psk)
        # Each end's pool starts now, once, from the link's own secret (as `qdnet distill`).
        KeyFolder.open(spec["folders"]["alice"], psk, "alice")
        KeyFolder.open(spec["folders"]["bob"], psk, "bob")
    write_json_atomic(folder / "spec.json", spec)
    return spec


def prepare_workdir(
    network_file: Path,
    workdir: Path,
    *,
    taps: list[str],
    fast: bool,
    seed: int,
    cpu_slots: int,
) -> dict[str, Any]:
    """Validate everything, then write PKI, KMS settings, link specs and ``network.json``
    (``state`` starting, no process yet). Nothing is written when an input is wrong."""
    network = load_network_config(network_file)
    base_dir = network_file.resolve().parent
    tapped = parse_taps(network, taps)
    if len(network.saes) < 2:
        raise ConfigError(
            f"{network_file}: saes: `network up` needs at least two SAEs (keys go between SAEs)"
        )
    if cpu_slots < 1:
        raise ValueError(f"--workers must be >= 1, got {cpu_slots}")
    kmes = {node.name: kme_id(node.name) for node in kms_nodes(network, network_file)}
    reserved = set(kmes.values()) | {monitor_sae(node.name) for node in network.nodes}
    clash = sorted(reserved & {sae.name for sae in network.saes})
    if clash:
        raise ConfigError(
            f"{network_file}: saes: {clash[0]!r} is a name `network up` gives a KME or a "
            "node's monitoring SAE"
        )
    for i in range(len(network.links)):  # every link model, before anything is written
        if network.links[i].key_rate_bps is None:
            link_config(network, i, base_dir)
    workdir = workdir.resolve()
    _check_empty(workdir)
    new = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _write_workdir(network, network_file, workdir, tapped, fast, seed, cpu_slots)
    except BaseException:
        # The folder was new or empty: leave it as it was (mesh_settings may still refuse).
        if new:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            for child in workdir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise


def _write_workdir(
    network: NetworkConfig,
    network_file: Path,
    workdir: Path,
    tapped: dict[str, Tap],
    fast: bool,
    seed: int,
    cpu_slots: int,
) -> dict[str, Any]:
    from qdnet.kms.pki import create_pki
    from qdnet.kms.settings import dump_settings
    from qdnet.kms.topology import mesh_settings

    base_dir = network_file.resolve().parent
    served = kms_nodes(network, network_file)
    kmes = {node.name: kme_id(node.name) for node in served}
    apps = {node.name: [s.name for s in network.saes if s.node == node.name] for node in served}
    monitors = [monitor_sae(node) for node, names in apps.items() if not names]
    pki = create_pki(
        workdir / "pki", list(kmes.values()), [s.name for s in network.saes] + monitors
    )
    node_saes = {kmes[node]: names or [monitor_sae(node)] for node, names in apps.items()}
    settings = mesh_settings(
        workdir,
        pki,
        nodes=node_saes,
        links=[(kmes[link.between[0]], kmes[link.between[1]]) for link in network.links],
        extra={"ingest_interval_s": INGEST_INTERVAL_S},
    )
    nodes: dict[str, Any] = {}
    for node in served:
        kme = kmes[node.name]
        s = settings[kme]
        path = workdir / kme / f"{kme}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_settings(s))
        nodes[node.name] = {
            "kme_id": kme,
            "kms_url": f"https://{s.listen.host}:{s.listen.port}",
            "peer_url": f"https://{s.peer_listen.host}:{s.peer_listen.port}",
            "settings": str(path),
            "log": str(workdir / kme / "kms.log"),
            "saes": apps[node.name],
            "status_sae": node_saes[kme][0],
            "process": None,
        }
    saes = {
        sae.name: {
            "node": sae.node,
            "kme_id": kmes[sae.node],
            "kms_url": nodes[sae.node]["kms_url"],
            "ca": str(pki.ca_cert),
            "cert": str(pki.credential(sae.name).cert),
            "key": str(pki.credential(sae.name).key),
        }
        for sae in network.saes
    }
    links: dict[str, Any] = {}
    for index, link in enumerate(network.links):
        spec = _link_spec(
            network,
            index,
            base_dir,
            workdir,
            settings,
            tapped.get(link.name),
            fast,
            seed,
            cpu_slots,
        )
        folder = Path(spec["folder"])
        tap = tapped.get(link.name)
        links[link.name] = {
            "between": list(link.between),
            "kind": spec["kind"],
            "key_rate_bps": link.key_rate_bps,
            "folders": {
                link.between[0]: spec["folders"]["alice"],
                link.between[1]: spec["folders"]["bob"],
            },
            "tap": None if tap is None else {"from_s": tap.from_s, "fraction": tap.fraction},
            "spec": str(folder / "spec.json"),
            "stats": str(folder / "stats.json"),
            "log": str(folder / "link.log"),
            "process": None,
        }
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "network": network.name,
        "source": str(network_file.resolve()),
        "workdir": str(workdir),
        "state": "starting",
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "fast": fast,
        "seed": seed,
        "ca": str(pki.ca_cert),
        "supervisor": None,
        "supervisor_log": str(workdir / "supervisor.log"),
        "nodes": nodes,
        "saes": saes,
        "links": links,
    }
    write_json_atomic(workdir / NETWORK_JSON, state)
    return state
