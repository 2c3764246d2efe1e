"""Post-processing commands: ``qdnet distill`` (both endpoints in one process over loopback TCP)
and ``qdnet endpoint alice|bob`` (one endpoint per process).

Key folders (:class:`qdnet.postprocessing.keyblock.KeyFolder`): kept blocks at the top level (what
a KMS ingests), Bob's unconfirmed blocks in ``pending/``, the authentication pool in
``auth/pool.json``. A pool starts once per role from a pre-shared secret: ``qdnet endpoint`` needs
``--psk FILE`` (written by ``qdnet auth init FILE`` and copied to both hosts) the first time;
``qdnet distill`` writes a fresh secret of its own to ``RUN/private/auth-psk.bin`` unless ``--psk``
is given. Broken records, a used secret or a run already distilled exit with code 2 and one line
naming the cause; an aborted session exits with code 1; neither leaves a key file.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
MethodOpt = Annotated[
    str, typer.Option("--method", help="Error correction: cascade or ldpc.", case_sensitive=False)
]
RecvTimeoutOpt = Annotated[
    float,
    typer.Option("--recv-timeout", help="Seconds to wait for each message of the peer."),
]
DISTILL_PSK = Path("private") / "auth-psk.bin"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _open_keys(folder: Path, psk: Path | None, role: str, records: Any, meta: Any) -> Any:
    """The role's key folder, refusing records it already distilled or cannot distil."""
    from qdnet.postprocessing.keyblock import KeyFolder
    from qdnet.postprocessing.session import unsupported_reason

    reason = unsupported_reason(meta)
    if reason is not None:
        raise ValueError(reason)
    keys = KeyFolder.open(folder, psk, role)
    if records.digest() in keys.pool.claimed:
        raise ValueError(
            f"{folder}: these {role} records were already distilled with this pool; distilling "
            "the same raw bits twice would give two key blocks from them"
        )
    return keys


def _parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _session_config(
    method: str, frame_bits: int, eps_sec: float, eps_cor: float, qber_max: float, recv: float
) -> Any:
    from qdnet.postprocessing.session import METHODS, SessionConfig

    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if frame_bits < 64:
        raise ValueError("--frame-bits must be at least 64")
    if not (0 < eps_sec < 1 and 0 < eps_cor < 1):
        raise ValueError("--eps-sec and --eps-cor must lie in (0, 1)")
    if not recv > 0:
        raise ValueError(f"--recv-timeout must be > 0, got {recv}")
    return SessionConfig(
        method=method,
        frame_bits=frame_bits,
        eps_sec=eps_sec,
        eps_cor=eps_cor,
        qber_threshold=qber_max,
    )


def _report_table(reports: list[Any]) -> Table:
    table = Table(title="post-processing")
    table.add_column("")
    for r in reports:
        table.add_column(r.role)
    rows = [
        ("block id", lambda r: r.block_id),
        ("method", lambda r: r.method),
        ("aborted", lambda r: f"yes: {r.reason}" if r.aborted else "no"),
        ("sifted key / test bits", lambda r: f"{r.sifted_key_bits} / {r.sifted_test_bits}"),
        ("QBER test (upper bound)", lambda r: _qber(r)),
        ("QBER key (from EC)", lambda r: "-" if r.qber_key is None else f"{r.qber_key:.4%}"),
        (
            "EC leak bits / f",
            lambda r: (
                f"{r.leak_ec_bits} / "
                + ("-" if r.efficiency_f is None else f"{r.efficiency_f:.3f}")
            ),
        ),
        (
            "verification",
            lambda r: (
                "-"
                if r.verified is None
                else f"{'ok' if r.verified else 'FAILED'} ({r.verification_bits} bits)"
            ),
        ),
        ("final key bits", lambda r: str(r.final_key_bits)),
        ("block", lambda r: _block_state(r)),
        (
            "eps sec / cor / auth / total",
            lambda r: (
                "-"
                if r.eps_total is None
                else f"{r.eps_sec:.3g} / {r.eps_cor:.3g} / {r.eps_auth:.3g} / {r.eps_total:.6g}"
            ),
        ),
        (
            "auth consumed / refilled",
            lambda r: f"{r.auth_consumed_bits} / {r.auth_replenished_bits}",
        ),
        ("round trips", lambda r: str(r.round_trips)),
    ]
    for label, fn in rows:
        table.add_row(label, *[fn(r) for r in reports])
    terms = reports[0].finite_key_terms
    for name in terms:
        table.add_row(
            f"  {name}", *[f"{r.finite_key_terms.get(name, float('nan')):.6g}" for r in reports]
        )
    return table


def _qber(r: Any) -> str:
    est = r.estimate
    if not est:
        return "-"
    return f"{est['qber_test']:.4%} ({est['qber_test_upper']:.4%})"


def _block_state(r: Any) -> str:
    if r.block is None:
        return "pending (awaiting the peer's confirmation)" if r.pending else "none"
    state = "pending (awaiting Alice's confirmation)" if r.pending else "kept"
    return state + (" - SIMULATED records: not secret" if r.simulated else "")


def _emit(reports: list[Any], as_json: bool, wall_s: float) -> None:
    if as_json:
        doc: dict[str, Any] = {r.role: r.as_dict() for r in reports}
        doc["wall_s"] = wall_s
        typer.echo(json.dumps(doc, default=float))
    else:
        Console().print(_report_table(reports))
    for r in reports:
        if r.auth_warning:
            typer.echo(f"warning ({r.role}): {r.auth_warning}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``distill`` and ``endpoint`` to the root app."""

    @app.command()
    def distill(
        run: Annotated[
            Path, typer.Argument(help="Raw-records folder (meta.json, alice.npz, bob.npz).")
        ],
        keys: Annotated[
            Path | None,
            typer.Option(
                help="Key folder (default RUN/keys); blocks go to KEYS/alice and KEYS/bob."
            ),
        ] = None,
        method: MethodOpt = "cascade",
        frame_bits: Annotated[int, typer.Option(help="Cascade frame size in bits.")] = 1_000_000,
        eps_sec: Annotated[float, typer.Option(help="Secrecy parameter.")] = 1e-10,
        eps_cor: Annotated[float, typer.Option(help="Correctness parameter.")] = 1e-15,
        qber_max: Annotated[float, typer.Option(help="Abort above this QBER upper bound.")] = 0.11,
        psk: Annotated[
            Path | None,
            typer.Option(
                "--psk",
                help="Pre-shared secret (default: a fresh one in RUN/private/auth-psk.bin).",
            ),
        ] = None,
        recv_timeout: RecvTimeoutOpt = 120.0,
        as_json: JsonOpt = False,
    ) -> None:
        """Run both endpoints in one process over loopback TCP and write identical key blocks."""
        from qdnet.postprocessing.loopback import distill_loopback_async
        from qdnet.protocols.records import load_meta, load_party_records
        from qdnet.transport.authentication import write_psk

        try:
            meta = load_meta(run)  # clean errors before any socket is opened
            rec_a = load_party_records(run, "alice")
            rec_b = load_party_records(run, "bob")
            cfg = _session_config(method, frame_bits, eps_sec, eps_cor, qber_max, recv_timeout)
            key_dir = keys if keys is not None else run / "keys"
            psk_path = psk if psk is not None else run / DISTILL_PSK
            if psk is None and not (key_dir / "alice").exists() and not psk_path.exists():
                psk_path.parent.mkdir(mode=0o700, exist_ok=True)
                write_psk(psk_path)
            keys_a = _open_keys(key_dir / "alice", psk_path, "alice", rec_a, meta)
            keys_b = _open_keys(key_dir / "bob", psk_path, "bob", rec_b, meta)
        except (ValueError, OSError) as exc:
            raise _fail(str(exc)) from None

        async def both(progress: Progress | None) -> list[Any]:
            task = progress.add_task("distilling", total=None) if progress else None

            def tick(stage: str, fraction: float) -> None:
                if progress is not None and task is not None:
                    progress.update(task, description=f"{stage} ({fraction:.0%})")

            result = await distill_loopback_async(
                run, keys_a, keys_b, cfg, progress=tick, recv_timeout_s=recv_timeout
            )
            return [result.alice, result.bob]

        start = time.perf_counter()
        try:
            if as_json:
                reports = asyncio.run(both(None))
            else:
                with Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    TimeElapsedColumn(),
                    transient=True,
                ) as bar:
                    reports = asyncio.run(both(bar))
        except (ValueError, OSError) as exc:
            raise _fail(str(exc)) from None
        _emit(reports, as_json, time.perf_counter() - start)
        if any(r.aborted for r in reports):
            raise typer.Exit(1)

    @app.command()
    def endpoint(
        role: Annotated[str, typer.Argument(help="alice or bob")],
        records: Annotated[
            Path, typer.Option("--records", help="Raw-records folder (only ROLE's file is read).")
        ],
        keys: Annotated[
            Path, typer.Option("--keys", help="Folder for key blocks and the auth pool.")
        ],
        listen: Annotated[str | None, typer.Option(help="HOST:PORT to listen on.")] = None,
        connect: Annotated[
            str | None, typer.Option(help="HOST:PORT of the listening peer.")
        ] = None,
        method: MethodOpt = "cascade",
        frame_bits: Annotated[
            int, typer.Option(help="Cascade frame size (Alice decides).")
        ] = 1_000_000,
        eps_sec: Annotated[float, typer.Option(help="Secrecy parameter (Alice decides).")] = 1e-10,
        eps_cor: Annotated[
            float, typer.Option(help="Correctness parameter (Alice decides).")
        ] = 1e-15,
        qber_max: Annotated[float, typer.Option(help="Abort threshold (Alice decides).")] = 0.11,
        timeout: Annotated[
            float, typer.Option(help="Seconds to wait for the peer to connect.")
        ] = 60.0,
        recv_timeout: RecvTimeoutOpt = 120.0,
        psk: Annotated[
            Path | None,
            typer.Option(
                "--psk",
                help="Pre-shared secret from `qdnet auth init` (needed when KEYS has no pool).",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Run one endpoint as its own process; exchange only classical messages with the peer."""
        from qdnet.postprocessing.session import run_alice, run_bob
        from qdnet.protocols.records import load_meta, load_party_records
        from qdnet.transport.authentication import AuthenticatedChannel
        from qdnet.transport.channel import TcpChannel
        from qdnet.transport.messages import ProtocolError

        role = role.lower()
        try:
            if role not in ("alice", "bob"):
                raise ValueError(f"ROLE must be alice or bob, got {role!r}")
            if (listen is None) == (connect is None):
                raise ValueError("give exactly one of --listen HOST:PORT or --connect HOST:PORT")
            address = _parse_hostport(listen or connect or "")
            meta = load_meta(records)
            rec = load_party_records(records, "alice" if role == "alice" else "bob")
            cfg = _session_config(method, frame_bits, eps_sec, eps_cor, qber_max, recv_timeout)
            key_folder = _open_keys(keys, psk, role, rec, meta)
        except (ValueError, OSError) as exc:
            raise _fail(str(exc)) from None

        async def one() -> Any:
            if listen is not None:
                raw = await TcpChannel.accept_one(address[0], address[1], timeout)
            else:
                raw = await TcpChannel.connect(address[0], address[1], retry_s=timeout)
            chan = AuthenticatedChannel(raw, key_folder.pool, role, recv_timeout)
            if role == "alice":
                report = await run_alice(chan, rec, meta, key_folder, cfg)
            else:
                report = await run_bob(chan, rec, meta, key_folder)
            await chan.close()
            return report

        start = time.perf_counter()
        try:
            report = asyncio.run(one())
        except ProtocolError as exc:
            raise _fail(str(exc)) from None
        _emit([report], as_json, time.perf_counter() - start)
        if report.aborted:
            raise typer.Exit(1)
