"""An HTTP/1.1 proxy in front of OpenSearch that can start refusing every request with 401.

A TCP forwarder (tests.support.services.Proxy) can only cut connections; a
credential rotation or a security plugin gone wrong looks different: the node
answers, promptly and on the same keep-alive connections, with 401 and the
security plugin's body. This proxy parses each exchange (request line, headers,
``Content-Length`` or chunked bodies; HEAD and 204/304 answers have none) so that it
can answer a request itself without breaking the framing of the connection.

* forwarding mode: each client connection gets its own upstream connection, opened
  on the first request and re-opened if the node closed it; when the node cannot be
  reached the client connection is closed without an answer (what a client of a
  stopped node sees: no answer, not an HTTP error);
* unauthorized mode (:meth:`HttpProxy.set_unauthorized`): every request is read in
  full and answered with 401, ``WWW-Authenticate`` and the plugin's JSON, and the
  connection stays open for the next request;
* per request, :meth:`HttpProxy.action` may also decide to ``reset`` the connection
  without an answer (a proxy with a body limit) or ``swallow`` the request (a node
  that hangs on it): tests override it.

It runs its own event loop in a daemon thread, so synchronous code can drive it::

    proxy = HttpProxy("127.0.0.1", 9200); proxy.start()
    ... OS_PORT=proxy.port ...
    proxy.set_unauthorized(True); ...; proxy.set_unauthorized(False)
    proxy.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from dataclasses import dataclass
from typing import Literal

__all__ = ["UNAUTHORIZED_BODY", "Action", "HttpProxy", "RequestHead"]

UNAUTHORIZED_BODY = (
    b'{"error":{"root_cause":[{"type":"security_exception","reason":"Unauthorized"}],'
    b'"type":"security_exception","reason":"Unauthorized"},"status":401}'
)
_HEADER_LIMIT = 1 << 20
_CHUNK = 1 << 16


Action = Literal["forward", "unauthorized", "reset", "swallow", "forbidden"]


class _Closed(Exception):
    """The peer closed the connection (or sent something that is not HTTP)."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request or response head: the start line, the raw bytes, the headers we need."""

    start_line: str
    raw: bytes
    content_length: int | None
    chunked: bool
    close: bool  # "Connection: close" (or HTTP/1.0 without keep-alive)


def _parse_head(raw: bytes) -> RequestHead:
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    start = lines[0]
    length: int | None = None
    chunked = False
    connection = ""
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            connection = value
    http10 = start.upper().startswith("HTTP/1.0") or start.upper().endswith("HTTP/1.0")
    close = "close" in connection or (http10 and "keep-alive" not in connection)
    return RequestHead(start, raw, length, chunked, close)


async def _read_head(reader: asyncio.StreamReader) -> RequestHead:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as error:
        raise _Closed from error
    try:
        return _parse_head(raw)
    except ValueError as error:  # a Content-Length that is not a number
        raise _Closed from error


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body exactly as sent (sizes, data, trailers), to be forwarded as is."""
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        out += size_line
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer = await reader.readuntil(b"\r\n")
                out += trailer
                if trailer == b"\r\n":
                    return bytes(out)
        out += await reader.readexactly(size + 2)


async def _read_body(
    reader: asyncio.StreamReader, head: RequestHead, *, until_eof: bool = False
) -> bytes:
    try:
        if head.chunked:
            return await _read_chunked(reader)
        if head.content_length is not None:
            return await reader.readexactly(head.content_length)
        return await reader.read() if until_eof else b""
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as error:
        raise _Closed from error
    except ValueError as error:  # a chunk size that is not hex
        raise _Closed from error


def _forbidden(method: str, body: bytes) -> bytes:
    head = (
        "HTTP/1.1 403 Forbidden\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


def _response_has_body(method: str, status: int) -> bool:
    return method != "HEAD" and not (100 <= status < 200) and status not in (204, 304)


def _unauthorized(method: str) -> bytes:
    head = (
        "HTTP/1.1 401 Unauthorized\r\n"
        'WWW-Authenticate: Basic realm="OpenSearch Security"\r\n'
        "content-type: application/json; charset=UTF-8\r\n"
        f"content-length: {len(UNAUTHORIZED_BODY)}\r\n"
        "\r\n"
    ).encode()
    return head if method == "HEAD" else head + UNAUTHORIZED_BODY


class _Upstream:
    """The one upstream connection of one client connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.close()
            self.reader, self.writer = await asyncio.open_connection(
                *self.target, limit=_HEADER_LIMIT
            )
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpProxy:
    """See the module docstring. ``port`` is bound by :meth:`start`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.tls = tls  # HTTPS to clients (tests.support.tls), plain HTTP to the node
        self.port = 0
        self.refused = 0  # requests answered 401
        self.forwarded = 0
        self.unanswered = 0  # requests the node did not answer (down, or closed on us)
        self._unauthorized = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control, from any thread

    def set_unauthorized(self, on: bool) -> None:
        """From now on, answer every request with 401 (True) or forward it (False)."""
        self._unauthorized = on

    @property
    def unauthorized(self) -> bool:
        return self._unauthorized

    def start(self) -> None:
        """Listen on a free port (``self.port``) and serve in a daemon thread."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._serve, self.listen_host, self.port, limit=_HEADER_LIMIT, ssl=self.tls
                    )
                )
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as error:
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="http-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]

    def close(self) -> None:
        """Stop listening, close every connection, end the thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def action_with_body(self, request: RequestHead, body: bytes) -> tuple[Action, bytes]:
        """A second look at a request :meth:`action` let through, with its body:
        ``("forward", b"")``, or ``("forbidden", json)`` to answer 403 with that body
        (tests.support.sigv4 checks signatures here). Runs in the proxy's thread."""
        return "forward", b""

    def action(self, request: RequestHead) -> Action:
        """What to do with ``request`` (its head is read, its body not yet): ``forward``,
        answer ``unauthorized``, ``reset`` the connection without an answer, or
        ``swallow`` it (read it, never answer). Override in a test; runs in the proxy's
        thread. This one follows :meth:`set_unauthorized`."""
        return "unauthorized" if self._unauthorized else "forward"

    # -- serving, in the proxy's loop

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream = _Upstream(*self.target)
        try:
            while await self._exchange(reader, writer, upstream):
                pass
        except (_Closed, ConnectionError, OSError):
            pass
        finally:
            upstream.close()
            self._writers.discard(writer)
            writer.close()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: _Upstream
    ) -> bool:
        """One request and its answer; False when the client connection is to be closed."""
        if reader.at_eof():
            return False
        request = await _read_head(reader)
        action = self.action(request)
        if action == "reset":
            self.refused += 1
            writer.transport.abort()
            return False
        body = await _read_body(reader, request)
        if action == "swallow":
            await reader.read()  # nothing comes back until the client goes away
            return False
        method = request.start_line.split(" ", 1)[0].upper()
        if action == "forward":
            action, answer_body = self.action_with_body(request, body)
            if action == "forbidden":
                self.refused += 1
                writer.write(_forbidden(method, answer_body))
                await writer.drain()
                return not request.close
        if action == "unauthorized":
            self.refused += 1
            writer.write(_unauthorized(method))
            await writer.drain()
            return not request.close
        sent = await self._send(upstream, request.raw + body)
        if sent is None:
            self.unanswered += 1
            return False  # the node is down or dropped us: the client sees no answer either
        up_reader, response = sent
        status = int(response.start_line.split(" ")[1])
        answer = b""
        if _response_has_body(method, status):
            answer = await _read_body(up_reader, response, until_eof=True)
        self.forwarded += 1  # before the client can see the answer (tests read it then)
        writer.write(response.raw + answer)
        await writer.drain()
        reusable = not response.close and (
            not _response_has_body(method, status)
            or response.chunked
            or response.content_length is not None
        )
        if not reusable:
            upstream.close()
        return not request.close and reusable

    async def _send(
        self, upstream: _Upstream, request: bytes
    ) -> tuple[asyncio.StreamReader, RequestHead] | None:
        """Send ``request`` and read the answer's head; None when the node does not answer.

        A kept-alive upstream connection the node closed while idle fails on first use:
        that one is retried once on a new connection (OpenSearch requests searchsync
        sends are idempotent: external versions), so only a node that is really gone
        looks gone to the client.
        """
        for attempt in (1, 2):
            reused = upstream.writer is not None and not upstream.writer.is_closing()
            try:
                up_reader, up_writer = await upstream.ensure()
                up_writer.write(request)
                await up_writer.drain()
                return up_reader, await _read_head(up_reader)
            except (OSError, _Closed):
                upstream.close()
                if not reused or attempt == 2:
                    return None
        return None
