"""The listening socket, the registry of sessions, cancellation and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import ssl
import struct
import sys
from typing import Any

import psycopg

from devstack.mzemu import wire
from devstack.mzemu.backend import LinkParams, link_params, postgres_failure
from devstack.mzemu.config import EmulatorConfig
from devstack.mzemu.engine import Engine
from devstack.mzemu.errors import MzError
from devstack.mzemu.memory import report
from devstack.mzemu.session import Session

__all__ = ["Server", "serve"]

log = logging.getLogger("mzemu.server")


class Server:
    """Accepts connections and runs one :class:`Session` per client."""

    def __init__(self, config: EmulatorConfig, engine: Engine, link: LinkParams) -> None:
        self.config = config
        self.engine = engine
        self.link_params = link
        self.sessions: dict[int, Session] = {}
        self._next_pid = 1
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tls: ssl.SSLContext | None = None
        if config.tls_cert:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(config.tls_cert, config.tls_key)

    async def start(self) -> int:
        """Listen; returns the bound port (useful with MZEMU_PORT=0)."""
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, limit=1 << 20
        )
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def _negotiate_tls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext
    ) -> bytes | None:
        """Materialize's pgwire TLS with TLS required: an SSLRequest gets ``S`` and the
        socket is wrapped; a GSSENCRequest gets ``N`` (the client then asks for SSL).
        Returns bytes already read that belong to the session (a CancelRequest, which
        libpq may send in plain text), or None when the connection was refused: a
        plain-text startup gets FATAL "TLS encryption is required", as from Materialize.
        Waits at most 30 s for each request; a failed handshake raises OSError."""
        while True:
            head = await asyncio.wait_for(reader.readexactly(8), 30.0)
            length, code = struct.unpack("!ii", head)
            if length == 8 and code == wire.GSSENC_REQUEST_CODE:
                writer.write(b"N")
                await writer.drain()
                continue
            if length == 8 and code == wire.SSL_REQUEST_CODE:
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(tls, ssl_handshake_timeout=30.0)
                return b""
            if code == wire.CANCEL_REQUEST_CODE:
                return head
            refusal = MzError("28000", "TLS encryption is required", severity="FATAL")
            writer.write(wire.error_response(refusal))
            await writer.drain()
            writer.close()
            return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        early = b""
        if self.tls is not None:
            try:
                negotiated = await self._negotiate_tls(reader, writer, self.tls)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                log.info("TLS negotiation failed: %s", exc)
                writer.close()
                return
            if negotiated is None:
                return
            early = negotiated
        pid = self._next_pid
        self._next_pid += 1
        session = Session(self, reader, writer, pid, secrets.randbits(31))
        session.frames.feed(early)
        self.sessions[pid] = session
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        finally:
            self.sessions.pop(pid, None)
            if task is not None:
                self._tasks.discard(task)

    def cancel(self, pid: int, secret: int) -> None:
        session = self.sessions.get(pid)
        if session is not None and session.secret == secret:
            log.info("cancel request for session %d", pid)
            session.request_cancel()

    def drop_connections(self, except_pid: int) -> int:
        victims = [s for pid, s in self.sessions.items() if pid != except_pid]
        for session in victims:
            session.kill()
        log.warning("dropped %d client connections on request", len(victims))
        return len(victims)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions.values()):
            session.kill()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


async def serve(config: EmulatorConfig) -> int:
    """Run the emulator until SIGTERM/SIGINT. Returns a process exit status."""
    link = link_params(config.pg_dsn, os.environ, config.pg_schema)
    engine = Engine(config)
    try:
        await engine.start()
    except psycopg.OperationalError as exc:  # libpq's words lack whom it failed to reach
        log.error("cannot start: %s", postgres_failure(link, str(exc)))
        await engine.close()
        return 1
    except Exception as exc:
        log.error("cannot start: %s", exc)
        await engine.close()
        return 1
    server = Server(config, engine, link)
    try:
        port = await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        await engine.close()
        return 1
    loop = asyncio.get_running_loop()
    if config.tracemalloc_path:  # before the line below: until then SIGUSR2 would kill
        path = config.tracemalloc_path
        loop.add_signal_handler(
            signal.SIGUSR2, lambda: _memory_report(path, "SIGUSR2", engine, server)
        )
    # Printed whatever the log level: tests and tools wait for this line (and read the
    # port from it when MZEMU_PORT=0).
    print(
        f"mzemu listening on {config.host}:{port} "
        f"({'TLS required, ' if server.tls else ''}PostgreSQL schema {config.pg_schema}, "
        f"view {config.view}, tick {config.tick_ms} ms, retain {config.retain_ms} ms)",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("mzemu shutting down")
    if config.tracemalloc_path:
        _memory_report(config.tracemalloc_path, "exit", engine, server)
    await server.close()
    await engine.close()
    return 0


def _memory_report(path: str, reason: str, engine: Engine, server: Server) -> None:
    try:
        report(path, reason, engine, server.sessions.values())
    except OSError as exc:
        log.warning("cannot write the memory report to %s: %s", path, exc)
    else:
        log.info("memory report (%s) written to %s", reason, path)
