"""A raw PostgreSQL wire connection, for statements the emulator passes through.

Everything that is not SUBSCRIBE machinery (``SELECT COUNT(*) FROM
orders_search_source_mv``, ``\\d`` in psql, the producer's polling fallback) is
forwarded to PostgreSQL on one link per client session, and PostgreSQL's answer
is relayed message by message, so types, formats, notices and errors are exactly
PostgreSQL's. The link authenticates with trust, cleartext, md5 or SCRAM-SHA-256
and uses the served schema as its search_path.

Over TCP the link negotiates TLS as libpq does with the DSN's ``sslmode``,
``sslrootcert``, ``sslcert`` and ``sslkey`` (or PGSSLMODE, …): the engine's own
connection is psycopg's, so both follow one MZEMU_PG_DSN, and a DSN that says
``verify-full`` never has its pass-through statements go in plain text. ``allow`` is
taken as ``disable``; ``sslrootcert=system`` is the system's roots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from devstack.mzemu import wire
from devstack.mzemu.errors import MzError

__all__ = ["LinkParams", "PgLink", "link_params", "postgres_failure"]

_I32 = struct.Struct("!i")


@dataclass(frozen=True)
class LinkParams:
    host: str
    port: int
    user: str
    database: str
    password: str | None
    schema: str
    sslmode: str = "prefer"  # libpq's default
    sslrootcert: str = ""
    sslcert: str = ""
    sslkey: str = ""


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SSL_REQUEST = struct.pack("!ii", 8, wire.SSL_REQUEST_CODE)


def link_params(dsn: str, env: Mapping[str, str], schema: str) -> LinkParams:
    """Connection parameters from a libpq DSN, falling back to PG* variables.

    Raises ValueError for an sslmode libpq does not know.
    """
    info = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    host = info.get("host") or env.get("PGHOST") or "/var/run/postgresql"
    host = host.split(",")[0]
    user = info.get("user") or env.get("PGUSER") or os.environ.get("USER", "postgres")
    sslmode = info.get("sslmode") or env.get("PGSSLMODE") or "prefer"
    if sslmode not in _SSLMODES:
        raise ValueError(f"invalid sslmode {sslmode!r} for PostgreSQL: expected one of {_SSLMODES}")
    return LinkParams(
        host=host,
        port=int(info.get("port") or env.get("PGPORT") or 5432),
        user=user,
        database=info.get("dbname") or env.get("PGDATABASE") or user,
        password=info.get("password") or env.get("PGPASSWORD"),
        schema=schema,
        sslmode=sslmode,
        sslrootcert=info.get("sslrootcert") or env.get("PGSSLROOTCERT") or "",
        sslcert=info.get("sslcert") or env.get("PGSSLCERT") or "",
        sslkey=info.get("sslkey") or env.get("PGSSLKEY") or "",
    )


def postgres_failure(params: LinkParams, message: str) -> str:
    """``message`` (a connection failure) naming PostgreSQL's address and what to check."""
    text = f"PostgreSQL at {params.host}:{params.port}: {message}"
    if "no encryption" in message:  # an hba file of hostssl lines only
        return text + " (it takes TLS only: sslmode=verify-full and sslrootcert in MZEMU_PG_DSN)"
    if "SSL" in message or "certificate" in message:
        return text + (
            f" (TLS with sslmode={params.sslmode}: check sslrootcert, the CA that issued "
            "PostgreSQL's certificate, in MZEMU_PG_DSN)"
        )
    return text


@lru_cache(maxsize=4)
def _tls_context(params: LinkParams) -> ssl.SSLContext:
    """The client context for ``params.sslmode`` (libpq's rules; built once per params).

    Raises OSError (ssl.SSLError, FileNotFoundError) for an unreadable file.
    """
    rootcert = params.sslrootcert or str(Path.home() / ".postgresql" / "root.crt")
    verify = params.sslmode in ("verify-ca", "verify-full") or (
        # libpq: require with a root certificate file present checks the chain
        params.sslmode == "require" and (bool(params.sslrootcert) or Path(rootcert).exists())
    )
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif rootcert == "system":
        context.check_hostname = True  # libpq forces verify-full with the system's roots
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=rootcert)
        context.check_hostname = params.sslmode == "verify-full"
    if params.sslcert:
        context.load_cert_chain(params.sslcert, params.sslkey or None)
    return context


async def _open(params: LinkParams) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A session's socket, TLS as ``params.sslmode`` asks (TLS handshake: 30 s at most).

    Raises OSError (ssl.SSLError for a failed handshake), or MzError when the server
    does not take TLS and the mode requires it.
    """
    if params.host.startswith("/"):  # libpq never uses TLS on a Unix socket either
        return await asyncio.open_unix_connection(f"{params.host}/.s.PGSQL.{params.port}")
    reader, writer = await asyncio.open_connection(params.host, params.port)
    if params.sslmode in ("disable", "allow"):
        return reader, writer
    try:
        writer.write(_SSL_REQUEST)
        await writer.drain()
        answer = await reader.readexactly(1)
        if answer == b"S":
            await writer.start_tls(
                _tls_context(params), server_hostname=params.host, ssl_handshake_timeout=30.0
            )
        elif params.sslmode != "prefer":
            raise MzError(
                "08001",
                postgres_failure(
                    params, f"the server does not take TLS, and sslmode={params.sslmode}"
                ),
            )
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _open_plain(params: LinkParams) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # a CancelRequest is read before pg_hba.conf and TLS are looked at (libpq sends it plain)
    if params.host.startswith("/"):
        return await asyncio.open_unix_connection(f"{params.host}/.s.PGSQL.{params.port}")
    return await asyncio.open_connection(params.host, params.port)


class PgLink:
    """One authenticated PostgreSQL session used for pass-through statements."""

    def __init__(
        self, params: LinkParams, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.params = params
        self.reader = reader
        self.writer = writer
        self.frames = wire.FrameReader()
        self.pid = 0
        self.secret = 0
        self.status = "I"  # PostgreSQL's transaction status from the last ReadyForQuery

    @classmethod
    async def connect(cls, params: LinkParams, settings: Mapping[str, str]) -> PgLink:
        """Open and authenticate a session. Raises MzError (08006) if PostgreSQL refuses."""
        try:
            reader, writer = await _open(params)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise MzError(
                "08006", f"could not connect to {postgres_failure(params, str(exc))}"
            ) from exc
        link = cls(params, reader, writer)
        try:
            await link._startup(settings)
        except BaseException:
            writer.close()
            raise
        return link

    async def _startup(self, settings: Mapping[str, str]) -> None:
        options = {
            "user": self.params.user,
            "database": self.params.database,
            "application_name": "mzemu-passthrough",
            "client_encoding": "UTF8",
            "search_path": self.params.schema,
            **settings,
        }
        body = (
            _I32.pack(wire.PROTOCOL_V3)
            + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())
            + b"\0"
        )
        self.writer.write(_I32.pack(len(body) + 4) + body)
        scram: _Scram | None = None
        while True:
            kind, msg = await self.read_message()
            if kind == b"R":
                (code,) = _I32.unpack_from(msg, 0)
                if code == 0:
                    continue
                password = self.params.password or ""
                if code == 3:
                    await self._send(wire.message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    salt = msg[4:8]
                    inner = hashlib.md5(password.encode() + self.params.user.encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + salt).hexdigest()
                    await self._send(wire.message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    scram = _Scram(password)
                    first = scram.client_first()
                    payload = b"SCRAM-SHA-256\0" + _I32.pack(len(first)) + first
                    await self._send(wire.message(b"p", payload))
                elif code == 11 and scram is not None:
                    await self._send(wire.message(b"p", scram.client_final(msg[4:])))
                elif code == 12 and scram is not None:
                    scram.verify(msg[4:])
                else:
                    raise MzError("08004", f"unsupported PostgreSQL authentication method {code}")
            elif kind == b"K":
                self.pid, self.secret = struct.unpack_from("!ii", msg, 0)
            elif kind == b"E":
                fields = wire.parse_error_fields(msg)
                raise MzError(fields.get("C", "08006"), fields.get("M", "connection refused"))
            elif kind == b"Z":
                self.status = msg.decode()
                return

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_message(self) -> tuple[bytes, bytes]:
        """The next backend message. Raises MzError (08006) if PostgreSQL hung up."""
        while True:
            msg = self.frames.next_message()
            if msg is not None:
                return msg
            try:
                data = await self.reader.read(1 << 16)
            except OSError as exc:
                raise MzError("08006", f"lost the PostgreSQL connection: {exc}") from exc
            if not data:
                raise MzError("08006", "lost the PostgreSQL connection")
            self.frames.feed(data)

    async def run_internal(self, sql: str) -> None:
        """Run ``sql`` for the emulator's own purposes; raises its error as MzError."""
        await self._send(wire.message(b"Q", sql.encode() + b"\0"))
        error: MzError | None = None
        while True:
            kind, body = await self.read_message()
            if kind == b"E":
                fields = wire.parse_error_fields(body)
                error = MzError(
                    fields.get("C", "XX000"), fields.get("M", ""), fields.get("D"), fields.get("H")
                )
            elif kind == b"Z":
                self.status = body.decode()
                if error is not None:
                    raise error
                return

    async def cancel(self) -> None:
        """Ask PostgreSQL to cancel what this link runs (a CancelRequest on a new socket)."""
        try:
            _reader, writer = await _open_plain(self.params)
        except OSError:
            return
        writer.write(struct.pack("!iiii", 16, wire.CANCEL_REQUEST_CODE, self.pid, self.secret))
        try:
            await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(wire.message(b"X"))
        self.writer.close()


class _Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677), without channel binding."""

    def __init__(self, password: str) -> None:
        self.password = password.encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        attrs = dict(item.split("=", 1) for item in server_first.decode().split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise MzError("08004", "SCRAM: server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{server_first.decode()},{final_bare}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{final_bare},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = dict(item.split("=", 1) for item in server_final.decode().split(","))
        if base64.b64decode(attrs.get("v", "")) != self.server_signature:
            raise MzError("08004", "SCRAM: server signature mismatch")
