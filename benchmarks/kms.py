"""KMS benchmark: ETSI GS QKD 014 requests/s and latency over keep-alive mutual TLS.

Cases, on SQLite and (when reachable) PostgreSQL:
* ``enc_1x256``   GET enc_keys?number=1&size=256 on kme-alice (app-a master, app-b slave);
* ``enc_128x256`` GET enc_keys?number=128&size=256;
* ``enc_dec_pair`` enc_keys (1 x 256) on kme-alice, then dec_keys of that key on kme-bob;
* ``relay_line`` (SQLite): 5 KMS in a line kme-1 - kme-2 - ... - kme-5; half the connections
  run relayed pairs (enc_keys 1 x 256 at kme-1 for app-5, relayed across 4 hops, then dec_keys
  at kme-5: ``relay4_pair``), the other half single-hop pairs beside them in the same run
  (enc_keys at kme-1 for app-2, dec_keys at kme-2: ``hop1_pair``).

Both KMS run as their own processes (``qdnet kms serve``); the load generator runs in
``--procs`` separate processes (default 2) sharing C keep-alive mTLS connections between them
(a minimal HTTP/1.1 client on asyncio, on uvloop when installed: much cheaper per request than
httpx, so it measures the server, not the client). All load processes start measuring at the
same instant; their latencies are merged before taking percentiles. Each enc_keys is reserved
at the peer KMS before it is answered. Prints a table and one JSON line per figure.

    python benchmarks/kms.py                 # full run (about a minute)
    python benchmarks/kms.py --tiny          # one quick pass (CI)
    QDNET_BENCH_POSTGRES_URL=postgresql://user:pw@127.0.0.1/postgres python benchmarks/kms.py

Before/after in one run: ``--baseline DIR`` serves the same cases from another checkout of
qdnet (e.g. ``git worktree add /tmp/base e5c5b16``; its KMS processes run in DIR with
``PYTHONPATH=DIR``, the load generator stays this one), alternating ``--rounds`` times with this tree, and prints
the ratio this/baseline of each figure (medians over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import multiprocessing as mp
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from qdnet.kms.link import free_port, link_settings, spawn_kms, wait_until_serving
from qdnet.kms.pki import PKI, create_pki
from qdnet.kms.tls import client_context

CASES = ("enc_1x256", "enc_128x256", "enc_dec_pair", "relay_line")
LINE = [f"kme-{i}" for i in range(1, 6)]
"""The relay_line network: app-1 at kme-1, app-2 at kme-2, app-5 at kme-5."""
PG_ENVS = ("QDNET_BENCH_POSTGRES_URL", "QDNET_TEST_POSTGRES_URL")


class _Conn:
    """One keep-alive HTTP/1.1 connection over TLS."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext) -> None:
        self.host, self.port, self.ctx = host, port, ctx
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ctx, server_hostname="localhost"
        )

    async def get(self, path: str) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)


async def _run_case(
    case: str,
    url_a: str,
    url_b: str,
    ctx_a: ssl.SSLContext,
    ctx_b: ssl.SSLContext,
    conns: int,
    duration: float,
    warmup: float,
    t0_wall: float,
) -> dict[str, Any]:
    ha, pa = url_a.removeprefix("https://").split(":")
    hb, pb = url_b.removeprefix("https://").split(":")
    number = 128 if case == "enc_128x256" else 1
    enc_path = f"/api/v1/keys/app-b/enc_keys?number={number}&size=256"
    lat: list[float] = []
    errors = 0
    await asyncio.sleep(max(0.0, t0_wall - time.time()))  # common start of all load processes
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + duration

    async def worker() -> None:
        nonlocal errors
        a = _Conn(ha, int(pa), ctx_a)
        await a.open()
        b = None
        if case == "enc_dec_pair":
            b = _Conn(hb, int(pb), ctx_b)
            await b.open()
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            status, body = await a.get(enc_path)
            ok = status == 200
            if ok and b is not None:
                key_id = json.loads(body)["keys"][0]["key_ID"]
                status, _ = await b.get(f"/api/v1/keys/app-a/dec_keys?key_ID={key_id}")
                ok = status == 200
            t1 = time.perf_counter()
            if t0 >= t_measure:
                if ok:
                    lat.append(t1 - t0)
                else:
                    errors += 1

    await asyncio.gather(*(worker() for _ in range(conns)))
    return {"lat": lat, "errors": errors}


async def _run_line(
    urls: dict[str, str],
    ctx: dict[str, ssl.SSLContext],
    conns: int,
    duration: float,
    warmup: float,
    t0_wall: float,
) -> dict[str, Any]:
    """Half the workers: relayed pairs (kme-1 -> kme-5); the other half: single-hop pairs."""
    lat: dict[str, list[float]] = {"relay4_pair": [], "hop1_pair": []}
    errors = {k: 0 for k in lat}
    first_error: dict[str, str] = {}
    await asyncio.sleep(max(0.0, t0_wall - time.time()))
    t_measure = time.perf_counter() + warmup
    t_end = t_measure + duration

    async def worker(i: int) -> None:
        kind, far, slave = (
            ("relay4_pair", "kme-5", "app-5") if i % 2 == 0 else ("hop1_pair", "kme-2", "app-2")
        )
        ha, pa = urls["kme-1"].removeprefix("https://").split(":")
        hb, pb = urls[far].removeprefix("https://").split(":")
        a, b = _Conn(ha, int(pa), ctx["app-1"]), _Conn(hb, int(pb), ctx[slave])
        await a.open()
        await b.open()
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            status, body = await a.get(f"/api/v1/keys/{slave}/enc_keys?number=1&size=256")
            ok = status == 200
            if ok:
                key_id = json.loads(body)["keys"][0]["key_ID"]
                status, body = await b.get(f"/api/v1/keys/app-1/dec_keys?key_ID={key_id}")
                ok = status == 200
            if not ok:
                first_error.setdefault(kind, f"HTTP {status}: {body[:300]!r}")
            t1 = time.perf_counter()
            if t0 >= t_measure:
                if ok:
                    lat[kind].append(t1 - t0)
                else:
                    errors[kind] += 1

    await asyncio.gather(*(worker(i) for i in range(conns)))
    return {"lat": lat, "errors": errors, "first_error": first_error}


def _summary(parts: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    lat = sorted(x for p in parts for x in p["lat"])
    n = len(lat)

    def pct(p: float) -> float:
        return 1000 * lat[min(n - 1, int(p * n))] if n else float("nan")

    return {
        "requests": n,
        "errors": sum(p["errors"] for p in parts),
        "req_per_s": n / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def _load_process(args: dict[str, Any], out: Any) -> None:
    pki = PKI.at(args["pki"])
    if args["case"] == "relay_line":
        ctxs = {
            sae: client_context(pki.ca_cert, pki.credential(sae).cert, pki.credential(sae).key)
            for sae in ("app-1", "app-2", "app-5")
        }
        coro = _run_line(
            args["urls"], ctxs, args["conns"], args["duration"], args["warmup"], args["t0_wall"]
        )
        try:
            import uvloop

            out.put(uvloop.run(coro))
        except ImportError:
            out.put(asyncio.run(coro))
        return
    ca, a, b = pki.ca_cert, pki.credential("app-a"), pki.credential("app-b")
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    res = run(
        _run_case(
            args["case"],
            args["url_a"],
            args["url_b"],
            client_context(ca, a.cert, a.key),
            client_context(ca, b.cert, b.key),
            args["conns"],
            args["duration"],
            args["warmup"],
            args["t0_wall"],
        )
    )
    out.put(res)


def _blocks(folders: list[Path], total_bytes: int, version: int = 2) -> None:
    """Key-block files (format ``version``: 1 for a baseline that reads only that), 1 MiB each,
    not from a simulated link."""
    per = 1 << 20
    for _ in range(max(1, total_bytes // per)):
        doc: dict[str, Any] = {
            "format_version": version,
            "block_id": str(uuid.uuid4()),
            "link_name": "bench",
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "length_bits": per * 8,
            "protocol": "bb84",
            "eps_sec": 1e-10,
            "eps_cor": 1e-15,
            "qber": 0.02,
            "key_b64": base64.b64encode(os.urandom(per)).decode("ascii"),
        }
        if version == 2:
            doc.update(simulated=False, eps_auth=0.0, eps_total=1e-10 + 1e-15)
        for f in folders:
            f.mkdir(parents=True, exist_ok=True)
            (f / f"{doc['block_id']}.json").write_text(json.dumps(doc))


def _pg_urls(base: str) -> tuple[str, str, list[str]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base).set(drivername="postgresql+psycopg")
    names = [f"qdnet_bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        for n in names:
            c.execute(text(f'CREATE DATABASE "{n}"'))
    eng.dispose()
    a, b = (url.set(database=n).render_as_string(hide_password=False) for n in names)
    return a, b, names


def _drop_pg(base: str, names: list[str]) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    eng = create_engine(
        make_url(base).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with eng.connect() as c:
        for n in names:
            c.execute(text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))
    eng.dispose()


_INGEST = (
    "import sys; from qdnet.kms.link import ingest; from qdnet.kms.settings import load_settings;"
    " ingest(load_settings(sys.argv[1]), sys.argv[2], remove=True)"
)


def run_backend(
    backend: str, work: Path, pki: PKI, cases: list[str], conns: int, duration: float,
    warmup: float, pool_bytes: int, pg_base: str | None, load_procs: int = 2,
    code: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Start two KMS processes on ``backend`` (served from checkout ``code``, default this one)
    and run every case against them."""
    wd = work / f"{backend}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = code
    ports = (free_port(), free_port(), free_port(), free_port())
    dbs: tuple[str | None, str | None] = (None, None)
    names: list[str] = []
    if backend == "postgresql":
        assert pg_base is not None
        a, b, names = _pg_urls(pg_base)
        dbs = (a, b)
    link_settings(  # writes kme-alice.yaml and kme-bob.yaml
        wd, pki, saes=(["app-a"], ["app-b"]), ports=ports, database_urls=dbs,
        extra={"ingest_interval_s": 0.2, "log_level": "error"},
    )  # fmt: skip
    _blocks([wd / "ka", wd / "kb"], pool_bytes, 1 if code else 2)
    if code is not None:  # an older KMS knows no keyring_path and one `peer:` (no `peers:`)
        for kme in ("kme-alice", "kme-bob"):
            path = wd / f"{kme}.yaml"
            raw = yaml.safe_load(path.read_text())
            raw.pop("keyring_path", None)
            (peer,) = raw.pop("peers")
            if peer.get("key_blocks_dir") is not None:
                raw["key_blocks_dir"] = peer["key_blocks_dir"]
            raw["peer"] = {k: v for k, v in peer.items() if k != "key_blocks_dir"}
            path.write_text(yaml.safe_dump(raw))
    for kme, folder in (("kme-alice", "ka"), ("kme-bob", "kb")):
        cmd = [sys.executable, "-c", _INGEST, str(wd / f"{kme}.yaml"), str(wd / folder)]
        subprocess.run(cmd, env=env, cwd=code, check=True)
    procs = [spawn_kms(wd / "kme-alice.yaml", wd / "kms.log", env, code)]
    procs.append(spawn_kms(wd / "kme-bob.yaml", wd / "kms.log", env, code))
    url_a, url_b = f"https://127.0.0.1:{ports[0]}", f"https://127.0.0.1:{ports[2]}"
    results = []
    try:
        wait_until_serving(url_a, pki, "app-a", "app-b")
        wait_until_serving(url_b, pki, "app-b", "app-a")
        time.sleep(1.0)  # first inventory exchange
        ctx = mp.get_context("spawn")
        for case in cases:
            q = ctx.Queue()
            t0_wall = time.time() + 3.0  # leaves time for the load processes to start
            loadgens = []
            for i in range(load_procs):
                args = {
                    "case": case, "url_a": url_a, "url_b": url_b, "pki": str(pki.root),
                    "conns": conns // load_procs + (i < conns % load_procs), "duration": duration,
                    "warmup": warmup, "t0_wall": t0_wall,
                }  # fmt: skip
                loadgens.append(ctx.Process(target=_load_process, args=(args, q)))
                loadgens[-1].start()
            parts = [q.get(timeout=duration + warmup + 120) for _ in loadgens]
            for lg in loadgens:
                lg.join(30)
            res = _summary(parts, duration)
            res.update(
                {
                    "backend": backend,
                    "case": case,
                    "connections": conns,
                    "procs": load_procs,
                    "code": "baseline" if code else "this",
                }
            )
            results.append(res)
    finally:
        for server in procs:
            server.send_signal(signal.SIGTERM)
        for server in procs:
            server.wait(30)
        if names and pg_base:
            _drop_pg(pg_base, names)
    return results


def run_relay_line(
    work: Path, conns: int, duration: float, warmup: float, pool_bytes: int, load_procs: int = 2,
    code: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Five KMS processes in a line (SQLite; served from checkout ``code``, default this one);
    relayed and single-hop pairs side by side."""
    from qdnet.kms.settings import dump_settings
    from qdnet.kms.topology import mesh_settings

    wd = work / f"line-{uuid.uuid4().hex[:6]}"
    pki = create_pki(wd / "pki", LINE, ["app-1", "app-2", "app-5"])
    nodes: dict[str, list[str]] = {k: [] for k in LINE}
    nodes.update({"kme-1": ["app-1"], "kme-2": ["app-2"], "kme-5": ["app-5"]})
    links = list(itertools.pairwise(LINE))
    settings = mesh_settings(
        wd, pki, nodes=nodes, links=links,
        extra={"ingest_interval_s": 0.2, "log_level": "error"},
    )  # fmt: skip
    for kme, st in settings.items():
        (wd / kme / f"{kme}.yaml").write_text(dump_settings(st))
    for a, b in links:
        _blocks([wd / a / "keys" / b, wd / b / "keys" / a], pool_bytes)
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = code
    procs = [spawn_kms(wd / k / f"{k}.yaml", wd / "kms.log", env, code) for k in LINE]
    urls = {k: f"https://127.0.0.1:{settings[k].listen.port}" for k in LINE}
    try:
        wait_until_serving(urls["kme-1"], pki, "app-1", "app-5")
        wait_until_serving(urls["kme-5"], pki, "app-5", "app-1")
        _wait_line_pools(urls, pki)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        t0_wall = time.time() + 3.0
        loadgens = []
        for i in range(load_procs):
            args = {
                "case": "relay_line", "urls": urls, "pki": str(pki.root),
                "conns": conns // load_procs + (i < conns % load_procs), "duration": duration,
                "warmup": warmup, "t0_wall": t0_wall,
            }  # fmt: skip
            loadgens.append(ctx.Process(target=_load_process, args=(args, q)))
            loadgens[-1].start()
        time.sleep(max(0.0, t0_wall + warmup - time.time()))
        cpu0 = sum(_cpu_s(server.pid) for server in procs)
        time.sleep(duration)
        cpu_s = sum(_cpu_s(server.pid) for server in procs) - cpu0
        parts = [q.get(timeout=duration + warmup + 120) for _ in loadgens]
        for lg in loadgens:
            lg.join(30)
    finally:
        for server in procs:
            server.send_signal(signal.SIGTERM)
        for server in procs:
            server.wait(30)
    rows = []
    pairs = sum(len(p["lat"][kind]) for p in parts for kind in ("relay4_pair", "hop1_pair"))
    for kind in ("relay4_pair", "hop1_pair"):
        per = [{"lat": p["lat"][kind], "errors": p["errors"][kind]} for p in parts]
        res = _summary(per, duration)
        # CPU of the five KMS processes over the measured window, per pair of either kind
        res["kms_cpu_ms_per_pair"] = 1000 * cpu_s / pairs if pairs else float("nan")
        first = [p["first_error"][kind] for p in parts if kind in p["first_error"]]
        if first:
            print(f"# {kind}: first error {first[0]}", file=sys.stderr)
        res.update(
            {"backend": "sqlite", "case": kind, "procs": load_procs,
             "connections": (conns + 1) // 2 if kind == "relay4_pair" else conns // 2,
             "code": "baseline" if code else "this"}
        )  # fmt: skip
        rows.append(res)
    return rows


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_line_pools(urls: dict[str, str], pki: PKI, wait_s: float = 60) -> None:
    """Until a relayed key crosses the whole line (every link shared at both ends), and the
    origin's memory of hops without key (a few seconds) has passed."""
    from qdnet.kms.client import SAEClient

    a, f = pki.credential("app-1"), pki.credential("app-5")
    deadline = time.monotonic() + wait_s
    with (
        SAEClient(urls["kme-1"], pki.ca_cert, a.cert, a.key) as one,
        SAEClient(urls["kme-5"], pki.ca_cert, f.cert, f.key) as five,
    ):
        while True:
            try:
                key = one.enc_keys("app-5", 1, 256)[0]
                five.dec_keys("app-1", [key.key_id])
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    time.sleep(2.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="one short pass (CI smoke run)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds measured per case")
    ap.add_argument("--connections", type=int, default=16, help="keep-alive mTLS connections")
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    ap.add_argument(
        "--case", action="append", choices=CASES, help="run only this case (repeatable)"
    )
    ap.add_argument("--baseline", help="checkout of qdnet to compare with (before/after)")
    ap.add_argument("--rounds", type=int, default=1, help="baseline/this alternations")
    args = ap.parse_args(argv)
    duration, warmup, conns = args.duration, 1.0, args.connections
    pool = 48 << 20
    if args.tiny:
        duration, warmup, conns, pool = 1.0, 0.3, 4, 4 << 20
    pg_base = next((os.environ[e] for e in PG_ENVS if os.environ.get(e)), None)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and pg_base is None:
        print(f"# PostgreSQL skipped: set {PG_ENVS[0]}", file=sys.stderr)
        backends.remove("postgresql")
    cases = args.case or list(CASES)
    line = "relay_line" in cases
    cases = [c for c in cases if c != "relay_line"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qdnet-kms-bench-") as tmp:
        work = Path(tmp)
        pki = create_pki(work / "pki", ["kme-alice", "kme-bob"], ["app-a", "app-b"])
        codes: list[str | None] = [args.baseline, None] if args.baseline else [None]
        for _ in range(args.rounds):
            for backend in backends if cases else []:
                for code in codes:
                    rows += run_backend(
                        backend, work, pki, cases, conns, duration, warmup, pool, pg_base,
                        args.procs, code,
                    )  # fmt: skip
        for _ in range(args.rounds) if line else []:
            for code in codes:
                rows += run_relay_line(work, conns, duration, warmup, 4 << 20, args.procs, code)
    print(
        f"{'code':<9} {'backend':<11} {'case':<13} {'conns':>5} {'req/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6} {'kms cpu ms/pair':>15}"
    )
    for r in rows:
        print(
            f"{r['code']:<9} {r['backend']:<11} {r['case']:<13} {r['connections']:>5} "
            f"{r['req_per_s']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['errors']:>6} "
            f"{r.get('kms_cpu_ms_per_pair', float('nan')):>15.1f}"
        )
    for r in rows:
        print(json.dumps({"benchmark": "kms", "cpus": os.cpu_count(), **r}))
    if args.baseline:
        compared = [(b, c) for b in backends for c in cases]
        compared += [("sqlite", c) for c in ("relay4_pair", "hop1_pair") if line]
        for backend, case in compared:

            def med(code: str, key: str, b: str = backend, c: str = case) -> float:
                vals = [
                    r[key]
                    for r in rows
                    if r["code"] == code and r["backend"] == b and r["case"] == c
                ]
                return statistics.median(vals)

            keys = ["req_per_s", "p50_ms", "p99_ms"]
            keys += ["kms_cpu_ms_per_pair"] if case in ("relay4_pair", "hop1_pair") else []
            ratio = {k: med("this", k) / (med("baseline", k) or float("nan")) for k in keys}
            print(
                json.dumps(
                    {"benchmark": "kms_vs_baseline", "backend": backend, "case": case,
                     "rounds": args.rounds, **{f"ratio_{k}": round(v, 3) for k, v in ratio.items()}}
                )
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
