"""Serving a KMS node: the SAE API and the peer API, each on its own mTLS listener (uvicorn).

* ``run_kms(settings)``: blocking, for ``qdnet kms serve`` (SIGINT/SIGTERM stop it cleanly).
* :class:`KMSNode`: a node in a background thread of this process (tests, demos).
* ``python -m qdnet.kms.server kms-alice.yaml``: the same as ``qdnet kms serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import socket
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import uvicorn

from qdnet.kms.api import create_peer_asgi, create_sae_asgi
from qdnet.kms.service import KMSService
from qdnet.kms.settings import KMSSettings, Listen, load_settings
from qdnet.kms.tls import FAST_PROTOCOL, GUARD_KEY, ConnectionGuard, server_context


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` on uvloop when it is installed (several times faster I/O and TLS)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


class _Server(uvicorn.Server):
    """uvicorn server whose signals are handled by :func:`serve_kms` (two servers, one loop),
    with a TLS handshake deadline and a :class:`ConnectionGuard` on its listener."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard, handshake_s: float) -> None:
        super().__init__(config)
        self.guard = guard
        self.handshake_s = handshake_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Like uvicorn's, on a socket of our own, with ``ssl_handshake_timeout``."""
        config = self.config
        state = self.lifespan.state
        state[GUARD_KEY] = self.guard

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=state, _loop=_loop
            )

        if not sockets:
            sockets = [bind_socket(config.host, config.port)]
        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=self.handshake_s,
            )
            for sock in sockets
        ]
        self.started = True


def _raise_fd_limit(wanted: int) -> None:
    """Let the process hold ``wanted`` descriptors if the hard limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _uvicorn(app: Any, listen: Listen, settings: KMSSettings, require_client_cert: bool) -> _Server:
    tls = settings.tls
    lim, tmo = settings.limits, settings.timeouts
    config = uvicorn.Config(
        app,
        host=listen.host,
        port=listen.port,
        http=FAST_PROTOCOL,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        ssl_ca_certs=str(tls.ca),
        lifespan="off",
        access_log=False,
        log_level=settings.log_level,
        timeout_keep_alive=int(max(1.0, tmo.idle_s)),
        backlog=1024,
        timeout_graceful_shutdown=3,
    )
    config.load()
    config.ssl = server_context(tls, require_client_cert=require_client_cert)
    guard = ConnectionGuard(lim.max_connections, lim.reserved_connections, tmo.idle_s, tmo.header_s)
    return _Server(config, guard, tmo.handshake_s)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket (port 0: a free port chosen by the OS)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


async def serve_kms(
    settings: KMSSettings,
    *,
    sae_socket: socket.socket | None = None,
    peer_socket: socket.socket | None = None,
    stop: asyncio.Event | None = None,
    started: threading.Event | None = None,
    handle_signals: bool = False,
) -> None:
    """Serve both listeners until ``stop`` is set (or SIGINT/SIGTERM with ``handle_signals``)."""
    # both listeners at their cap, handshakes in flight, database and peer connections
    _raise_fd_limit(4 * settings.limits.max_connections + 256)
    service = KMSService(settings)
    sae = _uvicorn(create_sae_asgi(service), settings.listen, settings, False)
    peer = _uvicorn(create_peer_asgi(service), settings.peer_listen, settings, True)
    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await service.start()
    tasks = [
        asyncio.create_task(sae.serve([sae_socket] if sae_socket else None)),
        asyncio.create_task(peer.serve([peer_socket] if peer_socket else None)),
    ]
    try:
        while not (sae.started and peer.started):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        if started is not None:
            started.set()
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        sae.should_exit = peer.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.stop()
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise RuntimeError(f"KMS {settings.kme_id} listener failed") from t.exception()
        if t.done() and not t.cancelled() and sae.started is False:
            raise RuntimeError(f"KMS {settings.kme_id} could not start its listeners")


def run_kms(settings: KMSSettings) -> None:
    """Serve in the foreground until SIGINT or SIGTERM.

    The objects made so far (every module, class and function imported: most of the process)
    are frozen out of the garbage collector first (``gc.freeze``), so that the full collections
    a long-running server makes now and then walk only what serving creates; one of them over
    the whole heap took 100-300 ms on the 2-core test machine, a pause every request in flight
    would wait for."""
    gc.freeze()
    run_loop(serve_kms(settings, handle_signals=True))


class KMSNode:
    """A KMS node served from a background thread of this process.

    Pass pre-bound sockets (:func:`bind_socket`) so the ports are known before starting.
    """

    def __init__(
        self,
        settings: KMSSettings,
        sae_socket: socket.socket | None = None,
        peer_socket: socket.socket | None = None,
    ) -> None:
        self.settings = settings
        self._sockets = (sae_socket, peer_socket)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"kms-{settings.kme_id}", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL of the SAE API."""
        sock = self._sockets[0]
        port = sock.getsockname()[1] if sock else self.settings.listen.port
        return f"https://{self.settings.listen.host}:{port}"

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve_kms(
                self.settings,
                sae_socket=self._sockets[0],
                peer_socket=self._sockets[1],
                stop=self._stop,
                started=self._started,
            )

        try:
            run_loop(main())
        except BaseException as err:
            self._error = err
        finally:
            self._started.set()

    def start(self, timeout_s: float = 20.0) -> KMSNode:
        """Start serving; returns once both listeners accept connections."""
        self._thread.start()
        if not self._started.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"KMS {self.settings.kme_id} failed to start") from self._error
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop both listeners and background tasks; waits for the thread to end."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        for sock in self._sockets:
            if sock is not None:
                sock.close()

    def __enter__(self) -> KMSNode:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m qdnet.kms.server kms-alice.yaml``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m qdnet.kms.server SETTINGS.yaml", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_kms(load_settings(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
